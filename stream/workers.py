"""The worker process: analyzes chunks in place in the shared slots, or records them.

One loop for both roles. Each worker owns a PULL socket for its tasks (so the host
decides who gets what, and a pixel tile's chunks arrive in order) and PUSHes replies
to the host's single result socket. An exception in an analyzer is reported, not fatal.
"""

from __future__ import annotations

import logging
import traceback

import zmq

from .ipc import ChunkTask, FinishTask, StartTask, StopTask, encode_done, task_decoder
from .protocol import HeaderDecoder
from .codecs import split_payload
from .runner import AnalyzerRunner, frame_chunk, resolve_factory
from .slots import attach, slot_view
from .types import RunInfo, Tile

logger = logging.getLogger(__name__)


def worker_main(worker: int, task_address: str, result_address: str) -> None:
    """Entry point of a worker process (spawned, so nothing is inherited but these arguments)."""
    ctx = zmq.Context()
    tasks = ctx.socket(zmq.PULL)
    tasks.connect(task_address)
    results = ctx.socket(zmq.PUSH)
    results.linger = 5000
    results.connect(result_address)
    state = _WorkerState(worker)
    try:
        while True:
            parts = tasks.recv_multipart(copy=False)
            task = task_decoder.decode(parts[0].buffer)
            if isinstance(task, StopTask):
                break
            try:
                reply = state.handle(task, parts[1:])
            except Exception:  # an analyzer or the disk failed: tell the host, keep serving
                logger.exception("worker %d failed on %s", worker, type(task).__name__)
                reply = encode_done(worker, getattr(task, "task", -1), [], error=traceback.format_exc())
            if reply is not None:
                results.send_multipart(reply)
    finally:
        state.close()
        tasks.close(linger=0)
        results.close()
        ctx.term()


class _WorkerState:
    def __init__(self, worker: int) -> None:
        self.worker = worker
        self.runner: AnalyzerRunner | None = None
        self.recorder = None
        self.mm = None
        self.mm_path = ""
        self.start_msg = None
        self.slot_bytes = 0

    def handle(self, task, extra) -> list | None:
        if isinstance(task, StartTask):
            self.close()
            self.start_msg = HeaderDecoder().decode(task.start)
            run = RunInfo.from_start(self.start_msg)
            if self.mm_path != task.shm_path:  # the pool file outlives runs: map it once
                self.mm, self.mm_path = attach(task.shm_path), task.shm_path
            self.slot_bytes = task.slot_bytes
            if task.record:
                from .recorder import Recorder  # only the recorder process needs h5py
                self.recorder = Recorder(task.record["path"], self.start_msg,
                                         compression=task.record.get("compression", "none"))
            else:
                factory = resolve_factory(task.factory)
                analyzers = [factory(name, params) for name, params in task.analyzers]
                tile = Tile(*task.tile) if task.tile else None
                self.runner = AnalyzerRunner(run, analyzers, tile)
            return None
        if isinstance(task, ChunkTask):
            start = self.start_msg
            frames = slot_view(self.mm, self.slot_bytes, task.slot, task.count,
                               tuple(start.frame_shape), start.dtype)
            if self.recorder is not None:
                compressed = split_payload(extra[0].buffer, task.compressed_sizes) if task.compressed_sizes else None
                self.recorder.write(task.first, frames, timestamps=task.timestamps or None,
                                    positions=task.positions or None, compressed=compressed)
                return encode_done(self.worker, task.task, [], frames_written=self.recorder.frames_written)
            chunk = frame_chunk(task.seq, task.first, frames, task.timestamps, task.positions)
            return encode_done(self.worker, task.task, self.runner.process(chunk, task.frame_work))
        if isinstance(task, FinishTask):
            if self.recorder is not None:
                written = self.recorder.frames_written
                self.recorder.close(task.summary)
                self.recorder = None
                return encode_done(self.worker, -1, [], frames_written=written)
            partials = self.runner.finish() if self.runner else []
            self.runner = None
            return encode_done(self.worker, -1, partials)
        raise TypeError(f"unexpected task {task!r}")

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close({"status": "closed by a new run"})
            self.recorder = None
        self.runner = None
