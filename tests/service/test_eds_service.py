"""EDS tomography through the service: line maps in worker processes, reconstruction per tilt in the host."""

from __future__ import annotations

import threading
import time

import numpy as np

from emlive.devices import EDSSpectrumSource
from emlive.service.app import make_server, shutdown
from emlive.service.config import AnalyzerConfig, ServiceConfig
from emlive.simulators import EDSParticle
from emlive.stream.client import PipelineClient, SnapshotSubscriber
from emlive.stream.publisher import FramePublisher

ANGLES = np.linspace(-60, 60, 7)


def _run(executor: str, tmp_path) -> tuple[dict, list[float]]:
    sim = EDSParticle(shape=32, voxel_nm=2.5, scan_shape=(2, 32), tilt_angles_deg=ANGLES, n_channels=1024,
                      channel_kev=0.02, seed=3)
    src = EDSSpectrumSource(sim)
    per_tilt = 64
    cfg = ServiceConfig(data_address="tcp://127.0.0.1:0", query_address="tcp://127.0.0.1:0",
                        snapshot_address="tcp://127.0.0.1:0", data_dir=str(tmp_path / executor), executor=executor,
                        workers=2, record=False,
                        analyzers=[AnalyzerConfig("eds", {"physics": "seed-table-2", "live_iterations": 5,
                                                          "final_iterations": 20})])
    server = make_server(cfg)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    seen = []
    try:
        with PipelineClient(server.query_address, timeout=10) as client:
            sub = SnapshotSubscriber(client.status()["snapshot_address"])
            time.sleep(0.2)
            with FramePublisher(server.data_address) as pub:
                pub.start(src.frame_shape, "uint16", (ANGLES.size, 2, 32), chunk_frames=32, boundary_frames=per_tilt,
                          positions=["haadf"], run_uid=f"eds-{executor}",
                          plan={"tomo": {"angles": ANGLES.tolist()}, **src.metadata()})
                for first in range(0, ANGLES.size * per_tilt, 32):
                    pub.send(src.frames(first, 32), first, positions=src.positions(first, 32))
                    if (first + 32) % per_tilt == 0:
                        time.sleep(0.2)  # a tilt every 0.2 s: snapshots (20 Hz) see the volume grow
                pub.end()
            t_end = time.monotonic() + 120
            final = False
            while not final:
                assert time.monotonic() < t_end
                got = sub.recv(1.0)
                if got:
                    final = got[0]["final"]
                    if ("eds", "tilts_reconstructed") in got[1]:
                        seen.append(float(got[1][("eds", "tilts_reconstructed")][0]))
            sub.close()
        rec = next(iter(server.pipeline.runs.values()))
        assert rec.status == "complete", rec.reason
        store = rec.stores["eds"]
        return {k: store.view(k).copy() for k in ("lines", "haadf", "wt_Ag", "volume_Ag_La", "shifts")}, seen
    finally:
        server.stop()
        thread.join(30)
        shutdown(server)


def test_processes_equal_inline_and_the_volume_grows_tilt_by_tilt(tmp_path):
    inline, seen = _run("inline", tmp_path)
    procs, _ = _run("processes", tmp_path)
    for name in ("lines", "haadf", "shifts", "volume_Ag_La", "wt_Ag"):
        np.testing.assert_allclose(procs[name], inline[name], rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=name)
    assert np.isfinite(inline["wt_Ag"]).any()
    # live: snapshots carried reconstructions of a growing number of tilts before the end
    assert any(1 < v < ANGLES.size for v in seen) and seen[-1] == ANGLES.size
