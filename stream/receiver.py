"""FrameReceiver: the receiving end. A thin socket adapter around :class:`StreamState`.

It decodes and validates every message, counts and logs every rejection and keeps
going, decodes frames straight into a buffer the caller provides (shared memory of
the worker pool, say), and reports gaps, stale messages and silent streams.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import zmq

from .codecs import decode_frames
from .errors import ProtocolError
from .protocol import Chunk, HeaderDecoder
from .state import ChunkAccepted, Event, RunClosed, RunStarted, StreamState
from .validation import Limits, check_header_size

logger = logging.getLogger(__name__)

Allocator = Callable[[int, tuple[int, int], np.dtype], np.ndarray]
Discard = Callable[[np.ndarray], None]


@dataclass(frozen=True)
class ReceivedChunk:
    """An accepted chunk with its decoded frames (n, qy, qx) and the payload as it arrived."""

    chunk: Chunk
    frames: np.ndarray
    payload: memoryview


class FrameReceiver:
    """Receives runs of frames on a PULL socket.

    Parameters
    ----------
    address : str
        Endpoint to bind (default) or connect; ``tcp://127.0.0.1:0`` picks a free port.
    limits : Limits
        Size limits beyond which messages are rejected.
    timeout : float
        Seconds of silence after which an open run is closed as incomplete.
    rcvhwm : int
        Messages queued in the socket; with the sender's queue this bounds memory
        and makes a slow consumer block the sender instead of losing frames.
    """

    def __init__(self, address: str = "tcp://127.0.0.1:0", bind: bool = True, *,
                 limits: Limits | None = None, timeout: float = 10.0, rcvhwm: int = 8,
                 context: zmq.Context | None = None) -> None:
        self._ctx = context or zmq.Context.instance()
        self.socket = self._ctx.socket(zmq.PULL)
        self.socket.rcvhwm = rcvhwm
        self.socket.linger = 0
        if bind:
            self.socket.bind(address)
            self.address = self.socket.last_endpoint.decode()
        else:
            self.socket.connect(address)
            self.address = address
        self.state = StreamState(limits, timeout)
        self._decoder = HeaderDecoder()
        self._backlog: list[Event | ReceivedChunk] = []  # events after a run's close, kept for the next run

    @property
    def rejected(self):
        """Counter of rejected messages by reason (includes ``stale``)."""
        return self.state.rejected

    def poll(self, timeout_ms: int = 100, allocate: Allocator | None = None,
             max_messages: int = 64, discard: Discard | None = None) -> list[Event | ReceivedChunk]:
        """Receive what is waiting (up to ``max_messages``), waiting at most ``timeout_ms`` for the first.

        ``allocate(n, shape, dtype)`` gives the buffer a chunk is decoded into; ``discard``
        gets it back when the chunk turns out to be corrupt.
        """
        if self._backlog:
            events, self._backlog = self._backlog, []
            return events
        events: list[Event | ReceivedChunk] = []
        if not self.socket.poll(timeout_ms):
            return self.state.check_timeout(time.monotonic())
        for _ in range(max_messages):
            try:
                parts = self.socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            new = self.handle_parts(parts, allocate, discard)
            events.extend(new)
            if any(isinstance(e, (RunStarted, RunClosed)) for e in new):
                break  # the caller sets up (or tears down) the run before the next chunk is decoded
        return events

    def handle_parts(self, parts: list, allocate: Allocator | None = None,
                     discard: Discard | None = None) -> list[Event | ReceivedChunk]:
        """Validate one multipart message; rejected messages yield no events."""
        try:
            head = parts[0].buffer if hasattr(parts[0], "buffer") else memoryview(parts[0])
            check_header_size(len(head), self.state.limits)
            msg = self._decoder.decode(head)
            payload = b""
            if isinstance(msg, Chunk):
                if len(parts) != 2:
                    raise ProtocolError("part-count", f"chunk with {len(parts)} parts, expected 2")
                payload = parts[1].buffer if hasattr(parts[1], "buffer") else memoryview(parts[1])
            elif len(parts) != 1:
                raise ProtocolError("part-count", f"{type(msg).__name__.lower()} with {len(parts)} parts, expected 1")
            events = self.state.handle(msg, len(payload), time.monotonic())
            return [self._decode(e, payload, allocate, discard) if isinstance(e, ChunkAccepted) else e for e in events]
        except ProtocolError as exc:
            self.state.reject(exc.reason, exc.detail)
            return []

    def _decode(self, event: ChunkAccepted, payload: memoryview, allocate: Allocator | None,
                discard: Discard | None) -> ReceivedChunk:
        chunk = event.chunk
        start = self.state.start
        assert start is not None
        shape, dtype = tuple(start.frame_shape), np.dtype(start.dtype)
        if chunk.encoding == "raw" and allocate is None:
            frames = np.frombuffer(payload, dtype=dtype).reshape((chunk.count, *shape))  # zero-copy view
        else:
            frames = (allocate or _allocate)(chunk.count, shape, dtype)
            try:
                decode_frames(payload, chunk.encoding, list(chunk.sizes), frames)
            except ProtocolError:
                if discard is not None:
                    discard(frames)
                # the chunk was counted as received: undo, so the summary reports it missing
                counters = self.state.counters
                if counters is not None:
                    counters.frames -= chunk.count
                    counters.chunks -= 1
                    counters.missing.append((chunk.first, chunk.first + chunk.count))
                raise
        return ReceivedChunk(chunk, frames, payload)

    def events(self, timeout_ms: int = 100, allocate: Allocator | None = None) -> Iterator[Event | ReceivedChunk]:
        """Yield events forever (the caller breaks out)."""
        while True:
            yield from self.poll(timeout_ms, allocate)

    def run_events(self, allocate: Allocator | None = None, idle_timeout: float | None = None
                   ) -> Iterator[Event | ReceivedChunk]:
        """Yield the events of the next run, up to and including its :class:`RunClosed`.

        ``idle_timeout`` bounds the wait for the run to start (``TimeoutError``).
        """
        started = False
        t0 = time.monotonic()
        while True:
            events = self.poll(100, allocate)
            for k, event in enumerate(events):
                started = True
                yield event
                if isinstance(event, RunClosed):
                    self._backlog = events[k + 1:] + self._backlog
                    return
            if not started and idle_timeout is not None and time.monotonic() - t0 > idle_timeout:
                raise TimeoutError(f"no run started on {self.address} within {idle_timeout} s")

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> FrameReceiver:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _allocate(n: int, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    return np.empty((n, *shape), dtype=dtype)
