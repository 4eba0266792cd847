"""``emlive demo``: a simulated SNEM acquisition driven by Bluesky, analysed live, then replayed.

The whole chain of the instrument, on this machine: the pipeline host (virtual detectors and
the SNEM electron-PDF analyzer) and an embedded
Tiled catalog start; a RunEngine runs ``snem_map`` with the ophyd-async devices on the
simulated Ni | metallic glass | Ni laminate; the camera streams into the pipeline, which
records and analyses while the scan runs; the run is read back through Tiled; the
recording is replayed through the same pipeline and must give the same results.

Writes to ``OUT/``: ``data/<run>/raw.h5`` (recording), ``results.h5`` and ``summary.json``
for the live run and its replay, ``catalog/`` (the Tiled catalog), ``maps/*.png`` (the
live maps) and ``demo_summary.json``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from emlive.devices import (Camera, PrecessionUnit, ScanGenerator, SimCameraDriver, SimPrecessionDriver,
                            SimScanGeneratorDriver, SimStageDriver, Stage, snem_map, start_catalog,
                            subscribe_catalog)
from emlive.simulators import SnemLaminate
from emlive.stream.protocol import Calibration
from emlive.stream.replay import replay

from .app import make_server, shutdown
from .config import AnalyzerConfig, ServiceConfig
from .export import export_maps

logger = logging.getLogger(__name__)

# virtual detectors placed on the laminate's patterns (q = 2π/d, Å⁻¹): the direct beam,
# and an annulus across the glass's first diffuse ring (Q1 ≈ 2.5-2.9 Å⁻¹), inside Ni {200}
VIRTUAL = {"units": "inv_angstrom", "bf_radius": 0.5, "adf_inner": 2.0, "adf_outer": 3.4, "com_radius": 0.5}


def run_demo(out: str | Path, scan_shape=(32, 48), executor: str = "processes", encoding: str = "bslz4",
             chunk_frames: int = 64, on_serving=None, hold=None) -> dict:
    """Run the demo; ``on_serving(server)`` is called once the pipeline serves (``demo --view`` opens
    the viewer there) and ``hold()`` before it shuts down (waits for the viewer to close)."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    phantom = SnemLaminate(scan_shape=scan_shape, seed=0, dose=2e5)
    snem = {"mask": {"saturation": phantom.calibration["saturation"]}}
    cfg = ServiceConfig(analyzers=[AnalyzerConfig("virtual", VIRTUAL), AnalyzerConfig("snem", snem)],
                        data_address="tcp://127.0.0.1:0",
                        query_address="tcp://127.0.0.1:0", snapshot_address="tcp://127.0.0.1:0",
                        data_dir=str(out / "data"), executor=executor, record_compression="bslz4")
    server = make_server(cfg)
    serving = threading.Thread(target=server.serve, name="emlive-serve", daemon=True)
    serving.start()
    if on_serving is not None:
        on_serving(server)
    client, tiled = start_catalog(out / "catalog", readable_storage=[out / "data"])
    try:
        from bluesky import RunEngine
        from ophyd_async.core import init_devices

        RE = RunEngine({})
        subscribe_catalog(RE, client)
        stage_driver = SimStageDriver()
        cam_driver = SimCameraDriver(phantom, server.data_address, query_address=server.query_address,
                                     chunk_frames=chunk_frames, encoding=encoding)
        with init_devices():
            camera = Camera(cam_driver, out / "data")
            scan = ScanGenerator(SimScanGeneratorDriver(cam_driver))
            precession = PrecessionUnit(SimPrecessionDriver(angle=phantom.calibration["precession_angle_deg"],
                                                            frequency=100.0, enabled=True))
            stage = Stage(stage_driver)
        t0 = time.perf_counter()
        with _progress(server, phantom.n_frames):
            (uid,) = RE(snem_map(camera, scan, precession, stage, shape=tuple(scan_shape),
                                 step=10 * phantom.sample["step_nm"], dwell=1e-3,
                                 calibration=_calibration(phantom.calibration), sample=phantom.sample))
        t_live = time.perf_counter() - t0
        live = server.pipeline.runs[camera.run_uid]
        run = client[uid]
        tiled_frame = np.asarray(run["primary"]["camera"][7])
        from_tiled = bool(np.array_equal(tiled_frame.reshape(phantom.frames(7, 1).shape[1:]),
                                         phantom.frames(7, 1)[0]))
        replay(live.recording, server.data_address, rate="max")
        rerun = _wait_closed(server, lambda r: r.start.plan.get("replay_of") == live.uid)
        equal = _results_equal(live.results_path, rerun.results_path)
        truth = phantom.ground_truth()
        adf = live.stores["virtual"].view("adf_sum")
        r_glass = float(np.corrcoef(adf.ravel(), truth["glass_fraction"].ravel())[0, 1])
        maps = [str(p) for p in export_maps(live.results_path, out / "maps")]
        glass = truth["phase"] == 1
        r_max = live.stores["snem"].view("r_max")
        alpha = live.stores["snem"].view("sro_alpha")
        strong = glass & (np.abs(truth["alpha"]) > 0.05) & np.isfinite(alpha)
        snem_check = {
            "r_max_vs_truth_pearson_r": round(float(np.corrcoef(r_max[glass], truth["r_max"][glass])[0, 1]), 4),
            "sro_sign_agreement": round(float(np.mean(np.sign(alpha[strong]) == np.sign(truth["alpha"][strong]))), 3)
            if strong.any() else None,
        }
        summary = {
            "ok": bool(equal and from_tiled and live.status == "complete" and rerun.status == "complete"),
            "bluesky_run_uid": uid, "live": live.summary(), "replay": rerun.summary(),
            "replay_equals_live": equal, "frame_from_tiled_equals_simulator": from_tiled,
            "live_seconds": round(t_live, 2), "adf_vs_glass_fraction_pearson_r": round(r_glass, 4),
            "snem_vs_truth": snem_check,
            "maps": maps, "output": str(out),
        }
        (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
        return summary
    finally:
        if hold is not None:
            hold()
        tiled.close()
        server.stop()
        serving.join(timeout=30)
        shutdown(server)


def _calibration(c: dict) -> Calibration:
    """The phantom's calibration in the stream's terms (its ellipse angle is in radians)."""
    return Calibration(beam_energy_kev=c["beam_energy_kev"], reciprocal_pixel_size=c["reciprocal_pixel_size"],
                       center=tuple(c["center"]), gain=c["gain"],
                       ellipse=(c["ellipse"]["ratio"], math.degrees(c["ellipse"]["angle"])),
                       precession_angle_deg=c["precession_angle_deg"])


class _progress:
    """A progress bar fed by the pipeline's own count of analysed frames, while the plan runs."""

    def __init__(self, server, total: int) -> None:
        self.server, self.total = server, total
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with tqdm(total=self.total, unit="frame", desc="snem_map") as bar:
            while not self._stop.wait(0.1):
                rec = self.server.pipeline.current
                if rec is not None:
                    bar.update(rec.frames_analyzed - bar.n)
            bar.update(self.total - bar.n)


def _wait_closed(server, match, timeout: float = 600.0):
    """Wait (polling the host's run table) for the run selected by ``match`` to close."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        for rec in list(server.pipeline.runs.values()):
            if match(rec) and rec.closed:
                return rec
        time.sleep(0.05)
    raise TimeoutError("the pipeline did not close the run")


def _results_equal(a: Path, b: Path) -> bool:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names: list[str] = []
        fa["results"].visit(lambda k: names.append(k) if isinstance(fa["results"][k], h5py.Dataset) else None)
        return all(np.array_equal(fa["results"][k][()], fb["results"][k][()], equal_nan=True) for k in names)
