"""``emlive demo``: a simulated 4D-STEM acquisition analysed live, then replayed through the same pipeline.

Writes to ``OUT/``: ``data/<run>/raw.h5`` (the recording), ``results.h5`` and
``summary.json`` for the live run and for its replay, ``maps/*.png`` (the live maps), and ``demo_summary.json``
saying whether the replay reproduced the live results bit for bit and how well the
maps recover the simulator's ground truth.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from emlive.simulators.synthetic import SyntheticScan
from emlive.stream.protocol import Calibration
from emlive.stream.publisher import FramePublisher
from emlive.stream.replay import replay

from .app import make_server, shutdown
from .config import AnalyzerConfig, ServiceConfig
from .export import export_maps

logger = logging.getLogger(__name__)


def run_demo(out: str | Path, scan_shape=(64, 64), frame_shape=(128, 128), executor: str = "processes",
             encoding: str = "bslz4", chunk_frames: int = 64) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sim = SyntheticScan(scan_shape=scan_shape, frame_shape=frame_shape, dose=5000.0, seed=0)
    # detectors placed on the simulated pattern: BF on the (shifting) disk, ADF across the ring,
    # CoM within twice the disk so the amorphous ring does not dilute the deflection
    r = sim.disk_radius
    virtual = AnalyzerConfig("virtual", {"bf_radius": r + sim.max_shift + 1,
                                         "adf_inner": sim.ring_radius - 4 * sim.ring_width,
                                         "adf_outer": sim.ring_radius + 4 * sim.ring_width,
                                         "com_radius": 2 * r})
    cfg = ServiceConfig(analyzers=[virtual], data_address="tcp://127.0.0.1:0", query_address="tcp://127.0.0.1:0",
                        snapshot_address="tcp://127.0.0.1:0", data_dir=str(out / "data"), executor=executor,
                        record_compression="bslz4")
    server = make_server(cfg)
    thread = threading.Thread(target=server.serve, kwargs={"runs": 2}, name="emlive-serve", daemon=True)
    thread.start()
    try:
        pub = FramePublisher(server.data_address)
        t0 = time.perf_counter()
        pub.start(frame_shape, "uint16", scan_shape, chunk_frames=chunk_frames, encoding=encoding,
                  calibration=Calibration(beam_energy_kev=300.0, reciprocal_pixel_size=0.02,
                                          center=((frame_shape[0] - 1) / 2, (frame_shape[1] - 1) / 2)),
                  sample={"name": "synthetic disk + ring"},
                  plan={"plan_name": "demo_raster", "shape": list(scan_shape)})
        n = int(np.prod(scan_shape))
        with tqdm(total=n, unit="frame", desc="acquiring") as bar:
            for first, frames in sim.iter_chunks(chunk_frames):
                pub.send(frames, first)
                bar.update(len(frames))
        pub.end()
        live_uid = _wait_closed(server, 1)
        t_live = time.perf_counter() - t0
        live = server.pipeline.runs[live_uid]
        replay(live.recording, server.data_address, rate="max")
        thread.join(timeout=600)
        replay_uid = [u for u in server.pipeline.runs if u != live_uid][-1]
        rerun = server.pipeline.runs[replay_uid]
        equal = _results_equal(live.results_path, rerun.results_path)
        truth = sim.ground_truth()
        com_x = live.stores["virtual"].view("com_x")
        err = float(np.nanmedian(np.abs(com_x - truth["shift_x"]))) if "shift_x" in truth else None
        summary = {
            "ok": bool(equal and live.status == "complete" and rerun.status == "complete"),
            "live": live.summary(), "replay": rerun.summary(), "replay_equals_live": equal,
            "live_seconds": round(t_live, 2), "com_x_median_abs_error_px": err, "output": str(out.resolve()),
        }
        summary["maps"] = [str(p) for p in export_maps(live.results_path, out / "maps")]
        (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
        return summary
    finally:
        server.stop()
        thread.join(timeout=30)
        shutdown(server)


def _wait_closed(server, n: int, timeout: float = 600.0) -> str:
    """Wait (by polling the host's run table, not sleeping blindly) until ``n`` runs have closed."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        done = [u for u, r in list(server.pipeline.runs.items()) if r.t_end is not None]
        if len(done) >= n:
            return done[n - 1]
        time.sleep(0.05)
    raise TimeoutError("the pipeline did not close the run")


def _results_equal(a: Path, b: Path) -> bool:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names: list[str] = []
        fa["results"].visit(lambda k: names.append(k) if isinstance(fa["results"][k], h5py.Dataset) else None)
        return all(np.array_equal(fa["results"][k][()], fb["results"][k][()], equal_nan=True) for k in names)
