"""Executors: where analyzers run. ``inline`` (tests, debugging), ``threads`` and ``processes`` (default).

All take the same calls from the pipeline host and hand back completions in
submission order, so the host merges partials in the same order whichever executor
ran them: results agree bit for bit. A Dask executor fits the same seam later.

The seam::

    start_run(start, analyzers, record)      # per run: build analyzers (and the recorder) everywhere
    capacity() -> int                        # chunks that can be taken now without blocking
    allocate(n, shape, dtype) -> ndarray     # where the receiver decodes the next chunk ...
    needs_buffer: bool                       # ... False: a raw chunk may stay where it arrived (no copy)
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
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import zmq

from .ipc import ChunkTask, FinishTask, StartTask, StopTask, decode_done, task_encoder
from .protocol import Chunk, Start, encode_header
from .codecs import split_payload
from .runner import AnalyzerRunner, frame_chunk, resolve_factory
from .slots import SlotPool
from .types import Partial, RunInfo, split_tiles

logger = logging.getLogger(__name__)

DEFAULT_FACTORY = "emlive.analyzers.registry:build_analyzer"
DEATH_GRACE_S = 0.5  # a dead worker's last replies may still be in the results socket


@dataclass
class Completion:
    """A chunk every analyzer has finished with, and the partials it produced."""

    task: int
    chunk: Chunk
    partials: list[tuple[int, Partial]] = field(default_factory=list)
    lost: bool = False  # a worker died holding it: not analyzed


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


class InlineExecutor:
    """Runs everything in the calling thread: simplest to debug, the reference for the others."""

    name = "inline"
    #: The frames are read in this process, so a raw chunk is analysed where the message put it.
    needs_buffer = False

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
            self._record_passthrough = record.compression == "bslz4" and start.encoding == "bslz4"
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

    def _record(self, chunk: Chunk, frames: np.ndarray, payload) -> None:
        if self._recorder is not None:
            self._recorder.write(chunk.first, frames, timestamps=chunk.timestamps or None,
                                 positions=dict(chunk.positions) or None,
                                 compressed=split_payload(payload, chunk.sizes) if self._record_passthrough else None)

    def _analyze(self, runner: AnalyzerRunner, chunk, frame_work: bool = True) -> list[tuple[int, Partial]]:
        """``runner.process``; an analyzer's exception is logged and counted, and the chunk gives no partials."""
        try:
            return runner.process(chunk, frame_work)
        except Exception as exc:
            logger.exception("analyzer failed on chunk %d", chunk.seq)
            self._errors.append(f"chunk {chunk.seq}: {exc!r}")
            return []

    def submit(self, chunk: Chunk, frames: np.ndarray, payload=None) -> None:
        assert self._runner is not None, "start_run first"
        self._record(chunk, frames, payload)
        partials = self._analyze(self._runner, frame_chunk(chunk.seq, chunk.first, frames, chunk.timestamps,
                                                           chunk.positions))
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


class ThreadExecutor(InlineExecutor):
    """Frame-partitioned analyzers in a pool of threads of this process; the rest in the calling thread.

    Why: analyzers whose kernels release the GIL (numba ``nogil``: FEM, the virtual detectors) then use
    every core with neither a receive copy (a raw chunk is read where the ZeroMQ message put it) nor the IPC
    of their partials. An analyzer whose ``process`` holds the GIL gains nothing: ``processes`` stays the
    default. Each thread builds its own analyzers (as each worker process does), so an analyzer's caches
    are never shared between threads.
    Pixel-partitioned analyzers need their chunks in order: they run in :meth:`submit`, as inline.
    Completions come back in submission order, so results agree bit for bit with the other executors.
    Chunks in flight (:meth:`capacity`) are at most ``max_pending`` and, for the run's chunk size, at
    most ``max_buffer_bytes`` of frames (but always two): memory stays bounded under back-pressure.
    """

    name = "threads"

    def __init__(self, n_threads: int | None = None, factory: str = DEFAULT_FACTORY,
                 max_pending: int | None = None, max_buffer_bytes: int = 256 << 20) -> None:
        super().__init__(factory)
        self.n_threads = int(n_threads or os.cpu_count() or 1)
        if self.n_threads < 1:
            raise ValueError(f"n_threads must be >= 1, got {n_threads}")
        self.max_pending = int(max_pending or 4 * self.n_threads)
        self.max_buffer_bytes = int(max_buffer_bytes)
        self._limit = self.max_pending
        self._pool = ThreadPoolExecutor(self.n_threads, thread_name_prefix="emlive-analyzer")
        self._local = threading.local()
        # a finished chunk wakes the server's poll loop, as the worker processes' replies do
        self._ctx = zmq.Context()
        self._wake_address = f"inproc://emlive-threads-{id(self)}"
        self._results = self._ctx.socket(zmq.PULL)
        self._results.bind(self._wake_address)
        self._wakers: list[zmq.Socket] = []
        self._wakers_lock = threading.Lock()
        self._pending: deque = deque()            # (task, chunk, future of frame partials, pixel partials)
        self._run: tuple[int, RunInfo, list[tuple[str, dict]]] | None = None
        self._runs = 0

    def start_run(self, start: Start, analyzers: list[tuple[str, dict]], record: RecordSpec | None = None) -> None:
        self._drain()
        super().start_run(start, analyzers, record)
        self._runs += 1
        self._run = (self._runs, RunInfo.from_start(start), list(analyzers))
        chunk_bytes = start.chunk_frames * int(np.prod(start.frame_shape)) * np.dtype(start.dtype).itemsize
        self._limit = int(np.clip(self.max_buffer_bytes // max(chunk_bytes, 1), 2, self.max_pending))

    def capacity(self) -> int:
        return max(0, self._limit - len(self._pending))

    def _frame_runner(self) -> AnalyzerRunner:
        """This thread's analyzers for the current run (built on its first chunk of the run)."""
        token, run, analyzers = self._run
        if getattr(self._local, "token", None) != token:
            build = resolve_factory(self.factory)
            self._local.runner = AnalyzerRunner(run, [build(n, p) for n, p in analyzers], None)
            self._local.token = token
        return self._local.runner

    def _frame_work(self, chunk) -> list[tuple[int, Partial]]:
        return self._analyze(self._frame_runner(), chunk)

    def _wake(self, _future=None) -> None:
        """Tell the host a chunk is done: a done-callback, so the future is done when the host looks (one PUSH
        socket per calling thread: ZeroMQ sockets are not thread-safe)."""
        sock = getattr(self._local, "waker", None)
        if sock is None:
            sock = self._ctx.socket(zmq.PUSH)
            sock.linger = 0
            sock.connect(self._wake_address)
            self._local.waker = sock
            with self._wakers_lock:
                self._wakers.append(sock)
        try:
            sock.send(b"", zmq.NOBLOCK)
        except zmq.Again:   # the host has plenty of wake-ups queued already
            pass

    def submit(self, chunk: Chunk, frames: np.ndarray, payload=None) -> None:
        assert self._runner is not None, "start_run first"
        self._record(chunk, frames, payload)
        fc = frame_chunk(chunk.seq, chunk.first, frames, chunk.timestamps, chunk.positions)
        future = None
        if self._runner.frame:
            future = self._pool.submit(self._frame_work, fc)
            future.add_done_callback(self._wake)
        pixel = self._analyze(self._runner, fc, frame_work=False) if self._runner.pixel else []
        self._pending.append((self._task, chunk, future, pixel))
        self._task += 1

    def poll(self, timeout_ms: int = 0) -> list[Completion]:
        while True:  # the wake-ups only wake the server's loop: the futures say what is done
            try:
                self._results.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
        out: list[Completion] = []
        deadline = time.monotonic() + max(timeout_ms, 0) / 1000
        while self._pending:
            task, chunk, future, pixel = self._pending[0]
            if future is not None and not future.done():
                wait = deadline - time.monotonic()
                if out or wait <= 0:
                    break
                try:
                    future.result(timeout=wait)
                except TimeoutError:
                    break
            self._pending.popleft()
            out.append(Completion(task, chunk, (future.result() if future is not None else []) + pixel))
        return out

    def _drain(self) -> list[Completion]:
        done = []
        while self._pending:
            done.extend(self.poll(60_000))
        return done

    def finish_run(self, summary: dict | None = None) -> tuple[list[Completion], RunOutcome]:
        done = self._drain()
        later, outcome = super().finish_run(summary)
        return done + later, outcome

    def close(self) -> None:
        self._drain()
        self._pool.shutdown(wait=True)
        super().close()
        if self._ctx.closed:
            return
        for sock in self._wakers:   # the threads are done: their sockets can be closed from here
            sock.close(linger=0)
        self._results.close(linger=0)
        self._ctx.term()


class _Task:
    """A submitted chunk: who still owes a reply for it, and what came back."""

    __slots__ = ("chunk", "slot", "worker", "owed", "partials", "lost")

    def __init__(self, chunk: Chunk, slot: int, worker: int, owed: set[int]) -> None:
        self.chunk, self.slot, self.worker, self.owed = chunk, slot, worker, owed
        self.partials: list[tuple[int, Partial]] = []
        self.lost = False


class ProcessExecutor:
    """Worker processes (one per core by default) plus one recorder process, fed through shared slots.

    Frame-partitioned work goes to the least-busy worker; when the run has
    pixel-partitioned analyzers every worker also gets every chunk for its tile of
    pixels, in order. Memory is bounded by ``max_buffer_bytes`` of slots. A worker
    that dies is replaced; the chunks it held are reported lost and the run fails
    with the reason, instead of hanging.
    """

    name = "processes"
    #: The workers read the frames from shared slots: the receiver decodes straight into one.
    needs_buffer = True

    def __init__(self, n_workers: int | None = None, factory: str = DEFAULT_FACTORY,
                 max_buffer_bytes: int = 256 << 20, context: zmq.Context | None = None) -> None:
        self.n_workers = n_workers or max(1, os.cpu_count() or 1)
        self.factory = factory
        self.max_buffer_bytes = max_buffer_bytes
        self._ctx = context or zmq.Context.instance()
        self._dir = tempfile.mkdtemp(prefix="emlive-ipc-")
        self._results_address = f"ipc://{self._dir}/results"
        self._results = self._ctx.socket(zmq.PULL)
        self._results.bind(self._results_address)
        self._recorder_id = self.n_workers
        self._tasks: list = [None] * (self.n_workers + 1)
        self._retired: list = []
        self._procs: list = [None] * (self.n_workers + 1)
        self._spawns = 0
        for w in range(self.n_workers + 1):  # the last one is the recorder
            self._spawn(w)
        # one pool for the life of the executor, faulted in now rather than while the first frames arrive
        self._pool: SlotPool | None = SlotPool(1, max_buffer_bytes)
        self._start: Start | None = None
        self._start_tasks: dict[int, StartTask] = {}
        self._pixel = False
        self._recording = False
        self._passthrough = False
        self._allocated: dict[int, int] = {}
        self._pending: dict[int, _Task] = {}
        self._load = [0] * self.n_workers
        self._next_task = 0
        self._next_release = 0
        self._ready: list[Completion] = []
        self._finish_replies: dict[int, list] = {}
        self._errors: list[str] = []
        self._frames_recorded = 0
        self._last_check = time.monotonic()
        self._finishing = False
        self._dead_since: dict[int, float] = {}
        logger.info("started %d analyzer workers and a recorder", self.n_workers)

    def _spawn(self, w: int) -> None:
        """Start worker ``w`` on a fresh task socket (nothing queued for a dead one is inherited)."""
        from .workers import worker_main

        if self._tasks[w] is not None:
            # closing it now races libzmq's teardown of the dead peer's pipe (assertion in own.cpp):
            # keep it until the executor closes
            self._retired.append(self._tasks[w])
        self._spawns += 1
        addr = f"ipc://{self._dir}/tasks-{w}-{self._spawns}"
        sock = self._ctx.socket(zmq.PUSH)
        sock.linger = 0
        sock.bind(addr)
        proc = multiprocessing.get_context("spawn").Process(
            target=worker_main, args=(w, addr, self._results_address), name=f"emlive-worker-{w}", daemon=True)
        proc.start()
        self._tasks[w], self._procs[w] = sock, proc

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
        self._allocated, self._pending, self._ready, self._finish_replies = {}, {}, [], {}
        self._load = [0] * self.n_workers
        self._next_task = self._next_release = 0
        self._errors, self._frames_recorded = [], 0
        header = encode_header(start)
        tiles = split_tiles(tuple(start.frame_shape), self.n_workers)
        self._start_tasks = {}
        for w in range(self.n_workers):
            tile = tiles[w] if w < len(tiles) else None
            t = (tile.y0, tile.y1, tile.x0, tile.x1) if tile else None
            self._start_tasks[w] = StartTask(header, [tuple(a) for a in analyzers], self.factory, t,
                                             self._pool.path, slot_bytes)
        self._recording = record is not None
        self._passthrough = bool(record and record.compression == "bslz4" and start.encoding == "bslz4")
        if record is not None:
            self._start_tasks[self._recorder_id] = StartTask(
                header, [], self.factory, None, self._pool.path, slot_bytes,
                record={"path": record.path, "compression": record.compression})
        for w, task in self._start_tasks.items():
            self._send(w, task)

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
        owed = set(analyzers) | ({self._recorder_id} if self._recording else set())
        self._pool.retain(slot, len(owed) - 1)
        self._pending[task] = _Task(chunk, slot, worker, owed)
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
        if time.monotonic() - self._last_check > 0.25:
            self._check_workers()
        ready, self._ready = self._ready, []
        return ready

    def finish_run(self, summary: dict | None = None, timeout: float = 600.0) -> tuple[list[Completion], RunOutcome]:
        """Wait for every submitted chunk, collect the end-of-run partials and close the recording."""
        self._release_orphans()
        self._finishing = True
        completions: list[Completion] = []
        for w in range(self.n_workers):
            self._send(w, FinishTask())
        if self._recording:
            self._send(self._recorder_id, FinishTask(summary=summary or {}))
        expected = set(range(self.n_workers)) | ({self._recorder_id} if self._recording else set())
        deadline = time.monotonic() + timeout
        while not expected <= set(self._finish_replies):
            completions += self.poll(200)
            self._check_workers()
            if time.monotonic() > deadline:
                self._errors.append(f"no end-of-run answer from workers {sorted(expected - set(self._finish_replies))}"
                                    f" within {timeout:g} s")
                break
        completions += self.poll(0)
        outcome = RunOutcome(errors=list(self._errors), frames_recorded=self._frames_recorded)
        for w in sorted(self._finish_replies):
            outcome.final_partials.extend(self._finish_replies[w])
        self._recording = False
        self._finishing = False
        return completions, outcome

    def close(self) -> None:
        for sock in self._tasks:
            try:
                sock.send(task_encoder.encode(StopTask()), flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        for sock in self._tasks + self._retired:
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

    def _check_workers(self) -> None:
        """Replace dead workers; what they owed is lost, and said so.

        A worker found dead is given a grace period first: replies it sent before dying
        may still be on their way through the results socket, and those chunks are not lost.
        """
        now = self._last_check = time.monotonic()
        for w, proc in enumerate(self._procs):
            if proc.is_alive():
                continue
            if now - self._dead_since.setdefault(w, now) < DEATH_GRACE_S:
                continue
            del self._dead_since[w]
            role = "recorder" if w == self._recorder_id else f"worker {w}"
            lost = [(k, t) for k, t in self._pending.items() if w in t.owed]
            what = "not recorded" if w == self._recorder_id else "not analyzed"
            msg = f"{role} died (exit code {proc.exitcode}); {len(lost)} chunks it held are {what}"
            logger.error(msg)
            self._errors.append(msg)
            for k, task in lost:
                self._settle(task, w, lost=w != self._recorder_id)
                if not task.owed and k < self._next_release:
                    del self._pending[k]
            self._spawn(w)
            if w == self._recorder_id:
                self._recording = False  # a new recorder would truncate the file: record no more this run
            elif w in self._start_tasks:
                self._send(w, self._start_tasks[w])
            if self._finishing and w not in self._finish_replies:
                self._finish_replies[w] = []  # its end-of-run answer died with it
        self._release_ready()

    def _settle(self, task: _Task, worker: int, lost: bool = False) -> None:
        task.owed.discard(worker)
        task.lost |= lost
        self._pool.release(task.slot)
        if worker == task.worker:
            self._load[worker] -= 1

    def _release_ready(self) -> None:
        """Hand on finished chunks strictly in submission order (the recorder does not hold them up)."""
        while self._next_release in self._pending:
            t = self._pending[self._next_release]
            if t.owed - {self._recorder_id}:
                break
            if not t.owed:
                del self._pending[self._next_release]
            # a fixed order (analyzer, tile) so merges are reproducible whoever answered first
            t.partials.sort(key=lambda ip: (ip[0], ip[1].tile.y0 if ip[1].tile else -1))
            self._ready.append(Completion(self._next_release, t.chunk, [] if t.lost else t.partials, t.lost))
            self._next_release += 1

    def _on_reply(self, parts) -> None:
        done, partials = decode_done(parts)
        if done.error:
            self._errors.append(f"worker {done.worker}: {done.error.strip().splitlines()[-1]}")
            logger.error("worker %d reported: %s", done.worker, done.error)
        if done.worker == self._recorder_id:
            self._frames_recorded = max(self._frames_recorded, done.frames_written)
        if done.task < 0:
            self._finish_replies[done.worker] = partials
            return
        task = self._pending.get(done.task)
        if task is None or done.worker not in task.owed:
            return
        if done.worker != self._recorder_id:
            task.partials.extend(partials)
        self._settle(task, done.worker)
        if task.owed == set() and done.task < self._next_release:
            del self._pending[done.task]  # released before; the recorder was the last to answer
        self._release_ready()
