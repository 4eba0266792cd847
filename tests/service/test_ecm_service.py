"""ECM through the service: tiles in worker processes (full frames, drift registered in each) equal one inline tile."""

from __future__ import annotations

import threading
import time

import numpy as np

from emlive.service.app import make_server, shutdown
from emlive.service.config import AnalyzerConfig, ServiceConfig
from emlive.simulators import ECMNanowire
from emlive.stream.publisher import FramePublisher


def _run(sim: ECMNanowire, executor: str, tmp_path) -> dict[str, np.ndarray]:
    cfg = ServiceConfig(data_address="tcp://127.0.0.1:0", query_address="tcp://127.0.0.1:0",
                        snapshot_address="tcp://127.0.0.1:0", data_dir=str(tmp_path / executor), executor=executor,
                        workers=2, record=False, analyzers=[AnalyzerConfig("ecm", {"refresh_s": 1e9})])
    server = make_server(cfg)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        with FramePublisher(server.data_address) as pub:
            pub.start(sim.shape, "float32", (sim.n_frames,), chunk_frames=100, run_uid=f"ecm-{executor}",
                      plan={"frame_time_s": sim.frame_time, "temperature_K": sim.temperature})
            for first in range(0, sim.n_frames, 100):
                pub.send(sim.frames(first, 100), first)
            pub.end()
        t_end = time.monotonic() + 120
        while not any(r.closed for r in server.pipeline.runs.values()):
            assert time.monotonic() < t_end
            time.sleep(0.05)
        rec = next(iter(server.pipeline.runs.values()))
        assert rec.status == "complete", rec.reason
        store = rec.stores["ecm"]
        return {k: store.view(k).copy() for k in ("tau", "beta", "A", "g2", "drift", "temperature", "reliable")}
    finally:
        server.stop()
        thread.join(30)
        shutdown(server)


def test_processes_equal_inline(tmp_path):
    sim = ECMNanowire(shape=(24, 24), n_frames=600, seed=6)  # with drift: every tile registers the same frames
    inline = _run(sim, "inline", tmp_path)
    procs = _run(sim, "processes", tmp_path)
    np.testing.assert_allclose(procs["g2"], inline["g2"], rtol=3e-7, equal_nan=True)  # float32: one ulp
    for name in ("drift", "temperature", "reliable"):
        np.testing.assert_array_equal(procs[name], inline[name], err_msg=name)
    # fits agree where τ is trustworthy; an unreliable pixel's fit (τ > T/40) may amplify last-bit differences
    # of the sums (the correlator's SIMD blocks fall differently in one tile and in two)
    ok = inline["reliable"] > 0.5
    for name in ("tau", "beta", "A"):
        np.testing.assert_allclose(procs[name][ok], inline[name][ok], rtol=1e-6, err_msg=name)
    assert inline["temperature"][0] == sim.temperature
    assert np.isfinite(inline["tau"]).sum() > 100
