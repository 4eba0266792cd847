"""The stream's state machine, free of I/O (as h11's ``_state.py``): messages in, events out.

All transition rules live here:

* ``start`` opens a run. A ``start`` while a run is open closes that run as
  aborted ("superseded") first.
* ``chunk`` of the open run is accepted when its header fits the run; ``seq`` must
  grow by one: a jump is reported as a :class:`Gap` with the missing frame indices,
  a repeat or step back is rejected.
* messages of any other run are stale: discarded and counted.
* ``end`` closes the run and reconciles: frames announced vs frames received.
* silence longer than the timeout while a run is open closes it as incomplete.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from .errors import ProtocolError
from .protocol import Chunk, End, Heartbeat, Message, Start
from .validation import Limits, check_chunk, check_start

logger = logging.getLogger(__name__)


@dataclass
class RunCounters:
    """What the receiver saw of one run."""

    run_uid: str
    chunks: int = 0
    frames: int = 0
    missing: list[tuple[int, int]] = field(default_factory=list)  # [start, stop) frame index ranges
    rejected: Counter = field(default_factory=Counter)
    frames_sent: int | None = None
    status: str = "running"  # running | success | abort | fail | incomplete
    reason: str = ""

    @property
    def n_missing(self) -> int:
        return sum(b - a for a, b in self.missing)


@dataclass(frozen=True)
class RunStarted:
    start: Start


@dataclass(frozen=True)
class ChunkAccepted:
    chunk: Chunk


@dataclass(frozen=True)
class Gap:
    run_uid: str
    missing: tuple[int, int]  # [start, stop) frame indices never received
    seq_expected: int
    seq_received: int


@dataclass(frozen=True)
class RunClosed:
    """A run ended: by its ``end`` (status from the source), superseded, or timed out (incomplete)."""

    counters: RunCounters
    end: End | None = None


Event = RunStarted | ChunkAccepted | Gap | RunClosed


class StreamState:
    """Tracks the open run and turns decoded messages into events."""

    def __init__(self, limits: Limits | None = None, timeout: float = 10.0) -> None:
        self.limits = limits or Limits()
        self.timeout = timeout
        self.start: Start | None = None
        self.counters: RunCounters | None = None
        self.rejected: Counter = Counter()  # across runs, by reason
        self.stale = 0
        self._next_seq = 0
        self._next_frame = 0
        self._last_activity = 0.0

    # -- rejections -------------------------------------------------------------------------
    def reject(self, reason: str, detail: str = "") -> None:
        """Count a rejected message (called by the socket adapter for decode failures too)."""
        self.rejected[reason] += 1
        if self.counters is not None:
            self.counters.rejected[reason] += 1
        logger.warning("rejected message: %s %s", reason, detail)

    # -- transitions ------------------------------------------------------------------------
    def handle(self, msg: Message, payload_bytes: int = 0, now: float = 0.0) -> list[Event]:
        """Apply one decoded message; raises ProtocolError for a message that does not fit the run."""
        if isinstance(msg, Start):
            return self._on_start(msg, now)
        if isinstance(msg, Heartbeat):
            if self.start is not None and msg.run_uid == self.start.run_uid:
                self._last_activity = now
            return []
        if self.start is None or msg.run_uid != self.start.run_uid:
            self.stale += 1
            self.rejected["stale"] += 1
            logger.debug("discarded stale %s of run %s", type(msg).__name__, msg.run_uid)
            return []
        self._last_activity = now
        if isinstance(msg, Chunk):
            return self._on_chunk(msg, payload_bytes)
        return self._on_end(msg)

    def keepalive(self, now: float) -> None:
        """We are the slow side (not reading while back-pressured): the source is not silent."""
        if self.start is not None:
            self._last_activity = now

    def check_timeout(self, now: float) -> list[Event]:
        """Close the open run as incomplete if it has been silent for longer than the timeout."""
        if self.start is None or now - self._last_activity < self.timeout:
            return []
        logger.warning("run %s silent for %.1f s: closed as incomplete", self.start.run_uid, now - self._last_activity)
        return [self._close("incomplete", f"no message for {self.timeout:g} s")]

    def _on_start(self, start: Start, now: float) -> list[Event]:
        check_start(start, self.limits)
        events: list[Event] = []
        if self.start is not None:
            events.append(self._close("abort", f"superseded by run {start.run_uid}"))
        self.start = start
        self.counters = RunCounters(start.run_uid)
        self._next_seq = 0
        self._next_frame = 0
        self._last_activity = now
        events.append(RunStarted(start))
        return events

    def _on_chunk(self, chunk: Chunk, payload_bytes: int) -> list[Event]:
        assert self.start is not None and self.counters is not None
        check_chunk(chunk, self.start, payload_bytes)
        if chunk.seq < self._next_seq:
            raise ProtocolError("duplicate-seq", f"seq {chunk.seq}, expected {self._next_seq}")
        events: list[Event] = []
        if chunk.seq > self._next_seq or chunk.first > self._next_frame:
            missing = (self._next_frame, max(chunk.first, self._next_frame))
            if missing[1] > missing[0]:
                self.counters.missing.append(missing)
            logger.warning("run %s: gap, seq %d expected, %d received; frames %d..%d missing",
                           chunk.run_uid, self._next_seq, chunk.seq, missing[0], missing[1] - 1)
            events.append(Gap(chunk.run_uid, missing, self._next_seq, chunk.seq))
        self._next_seq = chunk.seq + 1
        self._next_frame = max(self._next_frame, chunk.first + chunk.count)
        self.counters.chunks += 1
        self.counters.frames += chunk.count
        events.append(ChunkAccepted(chunk))
        return events

    def _on_end(self, end: End) -> list[Event]:
        assert self.counters is not None
        self.counters.frames_sent = end.frames_sent
        if end.frames_sent > self._next_frame:
            tail = (self._next_frame, end.frames_sent)
            self.counters.missing.append(tail)
            logger.warning("run %s: frames %d..%d announced but never received", end.run_uid, *tail)
        return [self._close(end.status, end.reason, end)]

    def _close(self, status: str, reason: str, end: End | None = None) -> RunClosed:
        assert self.counters is not None
        counters = self.counters
        counters.status = status
        counters.reason = reason
        self.start = None
        self.counters = None
        return RunClosed(counters, end)
