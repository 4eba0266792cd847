"""Executors: where analyzers run. ``inline`` (tests, debugging) and ``processes`` (default).

Both take the same calls from the pipeline host and hand back completions in
submission order, so the host merges partials in the same order whichever executor
ran them: results agree bit for bit. A Dask executor fits the same seam later.

The seam::

    start_run(start, analyzers, record)      # per run: build analyzers (and the recorder) everywhere
    capacity() -> int                        # chunks that can be taken now without blocking
    allocate(n, shape, dtype) -> ndarray     # where the receiver decodes the next chunk
    submit(chunk, frames, payload)           # analyze (and record) it
    poll(timeout_ms) -> [Completion]         # finished chunks, in submission order
    finish_run(summary) -> ([Completion], RunOutcome)   # drain, end-of-run partials, close the file
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

from .ipc import ChunkTask, FinishTask, StartTask, StopTask, decode_done, task_encoder
from .protocol import Chunk, Start, encode_header
from .runner import AnalyzerRunner, resolve_factory
from .slots import SlotPool
from .types import FrameChunk, Partial, RunInfo, split_tiles

logger = logging.getLogger(__name__)

DEFAULT_FACTORY = "emlive.analyzers.registry:build_analyzer"


@dataclass
class Completion:
    """A chunk every analyzer has finished with, and the partials it produced."""

    task: int
    chunk: Chunk
    partials: list[tuple[int, Partial]] = field(default_factory=list)


@dataclass
class RunOutcome:
    """End of a run as the executor saw it."""

    final_partials: list[tuple[int, Partial]] = field(default_factory=list)
    frames_recorded: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class RecordSpec:
    path: str
    compression: str = "none"


def _chunk_view(chunk: Chunk, frames: np.ndarray) -> FrameChunk:
    return FrameChunk(chunk.seq, chunk.first, frames,
                      np.asarray(chunk.timestamps) if chunk.timestamps else None,
                      {k: np.asarray(v) for k, v in chunk.positions.items()})


def _split_payload(chunk: Chunk, payload) -> list | None:
    if chunk.encoding != "bslz4" or payload is None:
        return None
    offsets = np.concatenate([[0], np.cumsum(chunk.sizes)])
    return [payload[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


class InlineExecutor:
    """Runs everything in the calling thread: simplest to debug, the reference for the others."""

    name = "inline"

    def __init__(self, factory: str = DEFAULT_FACTORY) -> None:
        self.factory = factory
        self._runner: AnalyzerRunner | None = None
        self._recorder = None
        self._record_passthrough = False
        self._done: list[Completion] = []
        self._task = 0
        self._errors: list[str] = []

    def start_run(self, start: Start, analyzers: list[tuple[str, dict]], record: RecordSpec | None = None) -> None:
        build = resolve_factory(self.factory)
        run = RunInfo.from_start(start)
        self._runner = AnalyzerRunner(run, [build(n, p) for n, p in analyzers], split_tiles(run.frame_shape, 1)[0])
        self._recorder = None
        if record is not None:
            from .recorder import Recorder
            self._recorder = Recorder(record.path, start, compression=record.compression)
            self._record_passthrough = record.compression == "bslz4"
        self._done, self._task, self._errors = [], 0, []

    def capacity(self) -> int:
        return 1 << 30

    @property
    def frames_recorded(self) -> int:
        return self._recorder.frames_written if self._recorder is not None else 0

    def allocate(self, n: int, shape: tuple[int, int], dtype) -> np.ndarray:
        return np.empty((n, *shape), dtype=dtype)

    def discard(self, frames: np.ndarray) -> None:
        pass

    def submit(self, chunk: Chunk, frames: np.ndarray, payload=None) -> None:
        assert self._runner is not None, "start_run first"
        if self._recorder is not None:
            self._recorder.write(chunk.first, frames, timestamps=chunk.timestamps or None,
                                 positions=dict(chunk.positions) or None,
                                 compressed=_split_payload(chunk, payload) if self._record_passthrough else None)
        try:
            partials = self._runner.process(_chunk_view(chunk, frames))
        except Exception as exc:
            logger.exception("analyzer failed on chunk %d", chunk.seq)
            self._errors.append(f"chunk {chunk.seq}: {exc!r}")
            partials = []
        self._done.append(Completion(self._task, chunk, partials))
        self._task += 1

    def poll(self, timeout_ms: int = 0) -> list[Completion]:
        done, self._done = self._done, []
        return done

    def finish_run(self, summary: dict | None = None) -> tuple[list[Completion], RunOutcome]:
        outcome = RunOutcome(errors=self._errors)
        if self._runner is not None:
            outcome.final_partials = self._runner.finish()
        if self._recorder is not None:
            outcome.frames_recorded = self._recorder.frames_written
            self._recorder.close(summary or {})
            self._recorder = None
        self._runner = None
        return self.poll(), outcome

    def close(self) -> None:
        if self._recorder is not None:
            self._recorder.close({"status": "executor closed"})
            self._recorder = None


class _Task:
    __slots__ = ("chunk", "worker", "waiting", "partials")

    def __init__(self, chunk: Chunk, worker: int, waiting: int) -> None:
        self.chunk, self.worker, self.waiting, self.partials = chunk, worker, waiting, []


class ProcessExecutor:
    """Worker processes (one per core by default) plus one recorder process, fed through shared slots.

    Frame-partitioned work goes to the least-busy worker; when the run has
    pixel-partitioned analyzers every worker also gets every chunk for its tile of
    pixels, in order. Memory is bounded by ``max_buffer_bytes`` of slots.
    """

    name = "processes"

    def __init__(self, n_workers: int | None = None, factory: str = DEFAULT_FACTORY,
                 max_buffer_bytes: int = 256 << 20, context: zmq.Context | None = None,
                 start_timeout: float = 60.0) -> None:
        self.n_workers = n_workers or max(1, os.cpu_count() or 1)
        self.factory = factory
        self.max_buffer_bytes = max_buffer_bytes
        self._ctx = context or zmq.Context.instance()
        self._dir = tempfile.mkdtemp(prefix="emlive-ipc-")
        self._results = self._ctx.socket(zmq.PULL)
        self._results.bind(f"ipc://{self._dir}/results")
        spawn = multiprocessing.get_context("spawn")
        from .workers import worker_main
        self._tasks, self._procs = [], []
        for w in range(self.n_workers + 1):  # the last one is the recorder
            sock = self._ctx.socket(zmq.PUSH)
            sock.linger = 0
            addr = f"ipc://{self._dir}/tasks-{w}"
            sock.bind(addr)
            proc = spawn.Process(target=worker_main, args=(w, addr, f"ipc://{self._dir}/results"),
                                 name=f"emlive-worker-{w}", daemon=True)
            proc.start()
            self._tasks.append(sock)
            self._procs.append(proc)
        self._recorder_id = self.n_workers
        # one pool for the life of the executor, faulted in now rather than while the first frames arrive
        self._pool: SlotPool | None = SlotPool(1, max_buffer_bytes)
        self._start: Start | None = None
        self._pixel = False
        self._recording = False
        self._passthrough = False
        self._allocated: dict[int, int] = {}
        self._pending: dict[int, _Task] = {}
        self._slot_of: dict[int, tuple[int, int]] = {}
        self._load = [0] * self.n_workers
        self._next_task = 0
        self._next_release = 0
        self._ready: list[Completion] = []
        self._finish_replies: list = []
        self._errors: list[str] = []
        self._frames_recorded = 0
        logger.info("started %d analyzer workers and a recorder", self.n_workers)

    # -- run lifecycle -----------------------------------------------------------------------
    def start_run(self, start: Start, analyzers: list[tuple[str, dict]], record: RecordSpec | None = None) -> None:
        build = resolve_factory(self.factory)
        self._pixel = any(build(n, p).partitioning == "pixel" for n, p in analyzers)
        frame_bytes = start.frame_shape[0] * start.frame_shape[1] * np.dtype(start.dtype).itemsize
        slot_bytes = start.chunk_frames * frame_bytes
        n_slots = int(np.clip(self.max_buffer_bytes // slot_bytes, 2, 64))
        if self._pool is None or n_slots * slot_bytes > self._pool.nbytes:
            if self._pool is not None:
                self._pool.close()
            self._pool = SlotPool(1, max(self.max_buffer_bytes, n_slots * slot_bytes))
        self._pool.reslice(n_slots, slot_bytes)
        self._start = start
        self._allocated, self._pending, self._ready, self._slot_of = {}, {}, [], {}
        self._load = [0] * self.n_workers
        self._next_task = self._next_release = 0
        self._errors, self._frames_recorded, self._finish_replies = [], 0, []
        header = encode_header(start)
        tiles = split_tiles(tuple(start.frame_shape), self.n_workers)
        for w in range(self.n_workers):
            tile = tiles[w] if w < len(tiles) else None
            t = (tile.y0, tile.y1, tile.x0, tile.x1) if tile else None
            self._send(w, StartTask(header, [tuple(a) for a in analyzers], self.factory, t,
                                    self._pool.path, slot_bytes))
        self._recording = record is not None
        self._passthrough = bool(record and record.compression == "bslz4" and start.encoding == "bslz4")
        if record is not None:
            self._send(self._recorder_id, StartTask(header, [], self.factory, None, self._pool.path, slot_bytes,
                                                    record={"path": record.path, "compression": record.compression}))

    @property
    def frames_recorded(self) -> int:
        """Frames the recorder has flushed in this run (readable from the file now)."""
        return self._frames_recorded

    def capacity(self) -> int:
        # before the first run the pool is one slot: one message is read (it can only be a start)
        return self._pool.n_free if self._pool else 0

    def allocate(self, n: int, shape: tuple[int, int], dtype) -> np.ndarray:
        assert self._pool is not None, "start_run first"
        slot = self._pool.acquire()
        if slot is None:
            raise RuntimeError("no free slot: check capacity() before receiving")
        view = self._pool.view(slot, n, shape, dtype)
        self._allocated[view.ctypes.data] = slot
        return view

    def submit(self, chunk: Chunk, frames: np.ndarray, payload=None) -> None:
        assert self._pool is not None and self._start is not None
        slot = self._allocated.pop(frames.ctypes.data, None)
        if slot is None:  # frames not decoded into a slot: copy them in
            view = self.allocate(len(frames), frames.shape[1:], frames.dtype)
            view[...] = frames
            slot = self._allocated.pop(view.ctypes.data)
        task = self._next_task
        self._next_task += 1
        worker = min(range(self.n_workers), key=self._load.__getitem__)
        analyzers = list(range(self.n_workers)) if self._pixel else [worker]
        consumers = analyzers + ([self._recorder_id] if self._recording else [])
        self._pool.retain(slot, len(consumers) - 1)
        self._slot_of[task] = (slot, len(consumers))
        self._pending[task] = _Task(chunk, worker, len(analyzers))
        self._load[worker] += 1
        base = dict(task=task, slot=slot, seq=chunk.seq, first=chunk.first, count=chunk.count,
                    timestamps=list(chunk.timestamps), positions=dict(chunk.positions))
        for w in analyzers:
            self._send(w, ChunkTask(frame_work=(w == worker), **base))
        if self._recording:
            if self._passthrough:
                self._send(self._recorder_id, ChunkTask(frame_work=False, compressed_sizes=list(chunk.sizes), **base),
                           payload)
            else:
                self._send(self._recorder_id, ChunkTask(frame_work=False, **base))

    def discard(self, frames: np.ndarray) -> None:
        """Give back the slot of a chunk that failed to decode."""
        slot = self._allocated.pop(frames.ctypes.data, None)
        if slot is not None:
            self._pool.release(slot)

    def poll(self, timeout_ms: int = 0) -> list[Completion]:
        if self._results.poll(timeout_ms):
            while True:
                try:
                    parts = self._results.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self._on_reply(parts)
        ready, self._ready = self._ready, []
        return ready

    def finish_run(self, summary: dict | None = None, timeout: float = 600.0) -> tuple[list[Completion], RunOutcome]:
        """Wait for every submitted chunk, collect the end-of-run partials and close the recording."""
        self._release_orphans()
        completions: list[Completion] = []
        for w in range(self.n_workers):
            self._send(w, FinishTask())
        expected = self.n_workers + (1 if self._recording else 0)
        if self._recording:
            self._send(self._recorder_id, FinishTask(summary=summary or {}))
        deadline = time.monotonic() + timeout
        while len(self._finish_replies) < expected:
            completions += self.poll(200)
            dead = [p.name for p in self._procs if not p.is_alive()]
            if dead or time.monotonic() > deadline:
                self._errors.append(f"workers lost or too slow at end of run: {dead or 'timeout'}")
                break
        completions += self.poll(0)
        outcome = RunOutcome(errors=list(self._errors), frames_recorded=self._frames_recorded)
        for done, partials in self._finish_replies:
            outcome.final_partials.extend(partials)
        self._recording = False
        return completions, outcome

    def close(self) -> None:
        for w, sock in enumerate(self._tasks):
            try:
                sock.send(task_encoder.encode(StopTask()), flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        for sock in self._tasks:
            sock.close(linger=0)
        self._results.close(linger=0)
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        shutil.rmtree(self._dir, ignore_errors=True)

    # -- internals ---------------------------------------------------------------------------
    def _send(self, worker: int, task, payload=None) -> None:
        parts = [task_encoder.encode(task)] + ([payload] if payload is not None else [])
        self._tasks[worker].send_multipart(parts, copy=payload is None)

    def _release_orphans(self) -> None:
        """Slots allocated for chunks that failed to decode go back to the pool."""
        for slot in self._allocated.values():
            self._pool.release(slot)
        self._allocated.clear()

    def _on_reply(self, parts) -> None:
        done, partials = decode_done(parts)
        if done.error:
            self._errors.append(f"worker {done.worker}: {done.error.strip().splitlines()[-1]}")
            logger.error("worker %d reported: %s", done.worker, done.error)
        if done.worker == self._recorder_id:
            self._frames_recorded = max(self._frames_recorded, done.frames_written)
        if done.task < 0:
            self._finish_replies.append((done, partials))
            return
        slot, left = self._slot_of[done.task]
        self._pool.release(slot)
        if left == 1:
            del self._slot_of[done.task]
        else:
            self._slot_of[done.task] = (slot, left - 1)
        if done.worker == self._recorder_id:
            return
        task = self._pending[done.task]
        task.partials.extend(partials)
        task.waiting -= 1
        if done.worker == task.worker:
            self._load[done.worker] -= 1
        while self._next_release in self._pending and self._pending[self._next_release].waiting == 0:
            t = self._pending.pop(self._next_release)
            # a fixed order (analyzer, tile) so merges are reproducible whoever answered first
            t.partials.sort(key=lambda ip: (ip[0], ip[1].tile.y0 if ip[1].tile else -1))
            self._ready.append(Completion(self._next_release, t.chunk, t.partials))
            self._next_release += 1
