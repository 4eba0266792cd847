"""Helpers of the viewer tests: a pipeline host in a thread (virtual + SNEM by default), the laminate's calibration."""

from __future__ import annotations

import math
import threading
import time

from emlive.service.app import make_server, shutdown
from emlive.service.config import AnalyzerConfig, ServiceConfig
from emlive.simulators import SnemLaminate
from emlive.stream.protocol import Calibration

SCAN = (6, 16)
SNEM = {"mask": {"saturation": 4095}, "nmf": {"enabled": False}}


def laminate_calibration(sim: SnemLaminate) -> Calibration:
    c = sim.calibration
    return Calibration(beam_energy_kev=c["beam_energy_kev"], reciprocal_pixel_size=c["reciprocal_pixel_size"],
                       center=tuple(c["center"]), gain=c["gain"],
                       ellipse=(c["ellipse"]["ratio"], math.degrees(c["ellipse"]["angle"])))


class Serving:
    """A pipeline host serving in a thread; ``stop()`` shuts it down (also done by the fixture)."""

    def __init__(self, data_dir, executor: str = "inline", query_address: str = "tcp://127.0.0.1:0",
                 snapshot_address: str = "tcp://127.0.0.1:0", analyzers=None) -> None:
        analyzers = analyzers or [AnalyzerConfig("virtual"), AnalyzerConfig("snem", SNEM)]
        cfg = ServiceConfig(data_address="tcp://127.0.0.1:0", query_address=query_address,
                            snapshot_address=snapshot_address, data_dir=str(data_dir), executor=executor,
                            workers=2, analyzers=analyzers)
        self.server = make_server(cfg)
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()
        self.stopped = False

    def wait_closed(self, n: int = 1, timeout: float = 120.0):
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            done = [r for r in list(self.server.pipeline.runs.values()) if r.closed]
            if len(done) >= n:
                return done[n - 1]
            time.sleep(0.02)
        raise TimeoutError("the run did not close")

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.server.stop()
            self.thread.join(30)
            shutdown(self.server)
