"""Re-run the analysis of a recording with another configuration, on this machine.

The recording is replayed, chunk for chunk, into a private pipeline built from the
given :class:`~emlive.service.config.ServiceConfig` (its analyzers and their
parameters; loopback ports picked by the system; nothing recorded again), so the
analyzers cannot tell it from the live run. The results land in
``out/<new run uid>/results.h5`` with a ``summary.json``.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import msgspec

from emlive.stream.replay import replay

from .app import make_server, shutdown
from .config import ServiceConfig

logger = logging.getLogger(__name__)


def reanalyze(recording: str | Path, config: ServiceConfig, out: str | Path, *, progress: bool = False,
              timeout: float = 3600.0) -> dict:
    """Analyse ``recording`` again with ``config``'s analyzers; returns the run's summary (with ``results``).

    Raises
    ------
    FileNotFoundError
        If the recording does not exist.
    RuntimeError
        If the run does not complete (the summary's reason is in the message).
    """
    recording = Path(recording)
    if not recording.exists():
        raise FileNotFoundError(f"no recording at {recording}")
    cfg = msgspec.structs.replace(config, data_address="tcp://127.0.0.1:0", query_address="tcp://127.0.0.1:0",
                                  snapshot_address="tcp://127.0.0.1:0", data_dir=str(Path(out).resolve()),
                                  record=False)
    server = make_server(cfg)
    serving = threading.Thread(target=server.serve, name="emlive-reanalysis", daemon=True)
    serving.start()
    try:
        end = replay(recording, server.data_address, rate="max", progress=progress)
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            rec = server.pipeline.runs.get(end.run_uid)
            if rec is not None and rec.closed:
                break
            time.sleep(0.05)
        else:
            raise TimeoutError(f"the re-analysis of {recording} did not finish within {timeout} s")
        summary = rec.summary()
        if rec.status != "complete":
            raise RuntimeError(f"re-analysis ended {rec.status}: {rec.reason}")
        return summary
    finally:
        server.stop()
        serving.join(timeout=30)
        shutdown(server)
