"""Helpers for tests that run a pipeline server in a thread."""

import contextlib
import threading
import time

FACTORY = "example_analyzers:build"


@contextlib.contextmanager
def running_server(executor: str, analyzers, data_dir=None, **kw):
    from emlive.stream.executor import InlineExecutor, ProcessExecutor, ThreadExecutor
    from emlive.stream.pipeline import Pipeline
    from emlive.stream.server import PipelineServer

    max_buffer = kw.pop("max_buffer_bytes", 64 << 20)
    if executor == "inline":
        ex = InlineExecutor(FACTORY)
    elif executor == "threads":
        ex = ThreadExecutor(2, FACTORY)
    else:
        ex = ProcessExecutor(2, FACTORY, max_buffer_bytes=max_buffer)
    pipeline = Pipeline(ex, analyzers, data_dir, factory=FACTORY,
                        record_compression=kw.pop("record_compression", "none"))
    server = PipelineServer(pipeline, **kw)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(30)
        server.close()
        ex.close()


def wait_closed(server, n=1, timeout=60.0):
    """The n-th closed run of the server (polling its run table: the loop runs in another thread)."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        done = [r for r in list(server.pipeline.runs.values()) if r.closed]
        if len(done) >= n:
            return done[n - 1]
        time.sleep(0.01)
    raise TimeoutError(f"{n} runs did not close within {timeout} s")
