"""The pipeline host's run logic: stream events in, merged live results and run summaries out.

No sockets here (the server owns them): events from the receiver go to the executor,
finished chunks come back in submission order and are merged into each analyzer's
:class:`ResultBuffers`; boundaries fire when their segment is complete; at the end
the run is finalized, reconciled (sent / received / recorded / analyzed) and saved.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .executor import DEFAULT_FACTORY, Completion, RecordSpec
from .protocol import Start
from .receiver import ReceivedChunk
from .runner import resolve_factory
from .state import Gap, RunClosed, RunCounters, RunStarted
from .types import ResultBuffers, RunInfo

logger = logging.getLogger(__name__)


@dataclass
class RunRecord:
    """Everything the host keeps about one run, live and after its end."""

    start: Start
    info: RunInfo
    analyzers: list
    stores: dict[str, ResultBuffers]
    recording: Path | None = None
    results_path: Path | None = None
    status: str = "running"   # running | complete | incomplete | aborted | failed
    reason: str = ""
    frames_received: int = 0
    frames_analyzed: int = 0
    frames_recorded: int = 0
    frames_sent: int | None = None
    missing: list[tuple[int, int]] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    t_start: float = field(default_factory=time.time)
    t_end: float | None = None
    segment_frames: np.ndarray | None = None
    segments_fired: set = field(default_factory=set)
    closed: bool = False  # set last, once results and summary are on disk: what waiters should watch

    @property
    def uid(self) -> str:
        return self.start.run_uid

    def summary(self) -> dict:
        """The reconciliation of the run, as stored with the results."""
        duration = (self.t_end or time.time()) - self.t_start
        return {
            "run_uid": self.uid, "status": self.status, "reason": self.reason,
            "n_frames": self.info.n_frames, "frames_sent": self.frames_sent,
            "frames_received": self.frames_received, "frames_recorded": self.frames_recorded,
            "frames_analyzed": self.frames_analyzed,
            "frames_missing": int(sum(b - a for a, b in self.missing)),
            "missing_ranges": [list(m) for m in self.missing], "rejected": dict(self.rejected),
            "errors": list(self.errors), "duration_s": round(duration, 3),
            "frames_per_s": round(self.frames_analyzed / duration, 1) if duration > 0 else None,
            "recording": str(self.recording) if self.recording else None,
            "results": str(self.results_path) if self.results_path else None,
        }


class Pipeline:
    """Runs the configured analyzers on every run that arrives, one run after another.

    Parameters
    ----------
    executor
        :class:`~emlive.stream.executor.InlineExecutor` or ``ProcessExecutor``.
    analyzers : list of (name, params)
        Built by ``factory`` in the host (results, merge, finalize) and in every worker.
    data_dir : path, optional
        Where each run gets a folder with ``raw.h5`` (the recording), ``results.h5`` and
        ``summary.json``. Without it nothing is recorded (tests of analysis alone).
    """

    def __init__(self, executor, analyzers: list[tuple[str, dict]], data_dir: str | Path | None = None, *,
                 factory: str = DEFAULT_FACTORY, record: bool = True, record_compression: str = "none",
                 keep_runs: int = 16) -> None:
        self.executor = executor
        self.analyzer_specs = [(n, dict(p)) for n, p in analyzers]
        self.data_dir = Path(data_dir) if data_dir else None
        self.factory = resolve_factory(factory)
        self.record = record and self.data_dir is not None
        self.record_compression = record_compression
        self.keep_runs = keep_runs
        self.runs: dict[str, RunRecord] = {}
        self.current: RunRecord | None = None
        self.newly_closed: list[RunRecord] = []  # runs closed since the server last looked

    # -- events ------------------------------------------------------------------------------
    def on_event(self, event) -> None:
        if isinstance(event, ReceivedChunk):
            self._on_chunk(event)
        elif isinstance(event, RunStarted):
            self._on_start(event.start)
        elif isinstance(event, Gap):
            if self.current is not None and self.current.uid == event.run_uid:
                self.current.missing.append(event.missing)
        elif isinstance(event, RunClosed):
            self._on_close(event.counters)

    def allocate(self, n: int, shape: tuple[int, int], dtype) -> np.ndarray:
        return self.executor.allocate(n, shape, dtype)

    @property
    def allocator(self):
        """What the receiver should decode into: the executor's buffers, or None where a raw chunk may be
        analysed in the message's own memory (no copy: the inline and thread executors)."""
        return self.allocate if self.executor.needs_buffer else None

    def discard(self, frames: np.ndarray) -> None:
        self.executor.discard(frames)

    def pump(self, timeout_ms: int = 0) -> int:
        """Merge whatever the executor has finished; returns the number of chunks merged."""
        done = self.executor.poll(timeout_ms)
        for c in done:
            self._merge(c)
        if self.current is not None:
            self.current.frames_recorded = self.executor.frames_recorded
        return len(done)

    # -- transitions -------------------------------------------------------------------------
    def _on_start(self, start: Start) -> None:
        info = RunInfo.from_start(start)
        analyzers, specs, stores, errors = [], [], {}, []
        for name, params in self.analyzer_specs:
            # an analyzer that cannot work on this run (e.g. the header lacks its calibration) is left
            # out and named; the run is still received and recorded, and ends "failed" with the reason
            try:
                a = self.factory(name, params)
                a.prepare(info)
                store = ResultBuffers(info, a.results(info))
                a.initialize(store)
            except Exception as exc:
                logger.exception("analyzer %s cannot run on %s", name, start.run_uid)
                errors.append(f"{name}: {exc}")
                continue
            analyzers.append(a)
            specs.append((name, params))
            stores[a.name] = store
        rec = RunRecord(start, info, analyzers, stores, errors=errors)
        if info.boundary_frames:
            rec.segment_frames = np.zeros(info.n_segments, dtype=np.int64)
        record = None
        if self.record:
            folder = self.data_dir / start.run_uid
            folder.mkdir(parents=True, exist_ok=True)
            rec.recording = folder / "raw.h5"
            record = RecordSpec(str(rec.recording), self.record_compression)
        self.executor.start_run(start, specs, record)
        self.runs[start.run_uid] = rec
        self.current = rec
        self._forget_old_runs()
        logger.info("run %s started: %s frames of %s %s, scan %s", start.run_uid, info.n_frames,
                    start.frame_shape, start.dtype, start.scan_shape)

    def _on_chunk(self, event: ReceivedChunk) -> None:
        rec = self.current
        if rec is None or rec.uid != event.chunk.run_uid:
            return
        rec.frames_received += event.chunk.count
        self.executor.submit(event.chunk, event.frames, event.payload)

    def _on_close(self, counters: RunCounters) -> None:
        rec = self.runs.get(counters.run_uid)
        if rec is None or rec is not self.current:
            return
        rec.frames_sent = counters.frames_sent
        rec.missing = list(counters.missing)
        rec.rejected = dict(counters.rejected)
        pre = rec.summary()
        completions, outcome = self.executor.finish_run(pre)
        for c in completions:
            self._merge(c)
        for index, partial in outcome.final_partials:
            a = rec.analyzers[index]
            a.merge(rec.stores[a.name], partial)
        rec.frames_recorded = outcome.frames_recorded
        rec.errors.extend(outcome.errors)
        self._fire_remaining_boundaries(rec)
        for a in rec.analyzers:
            try:
                a.finalize(rec.stores[a.name])
            except Exception as exc:
                logger.exception("finalize of %s failed", a.name)
                rec.errors.append(f"{a.name}.finalize: {exc!r}")
        rec.status, rec.reason = self._status(counters, rec)
        rec.t_end = time.time()
        if self.data_dir is not None:
            self._save(rec)
        rec.closed = True
        self.current = None
        self.newly_closed.append(rec)
        s = rec.summary()
        logger.info("run %s %s: sent %s, received %d, recorded %d, analyzed %d, missing %d (%s)", rec.uid,
                    rec.status, s["frames_sent"], s["frames_received"], s["frames_recorded"],
                    s["frames_analyzed"], s["frames_missing"], rec.reason or "ok")

    @staticmethod
    def _status(counters: RunCounters, rec: RunRecord) -> tuple[str, str]:
        if counters.status == "abort":
            return "aborted", counters.reason or "aborted by the source"
        if counters.status == "fail" or rec.errors:
            return "failed", counters.reason or "; ".join(rec.errors)[:500]
        if counters.status == "incomplete":
            return "incomplete", counters.reason
        missing = sum(b - a for a, b in rec.missing)
        if missing or rec.frames_analyzed < rec.info.n_frames:
            return "incomplete", f"{missing} frames missing, {rec.frames_analyzed} of {rec.info.n_frames} analyzed"
        return "complete", ""

    # -- merging -----------------------------------------------------------------------------
    def _merge(self, c: Completion) -> None:
        rec = self.current
        if rec is None or rec.uid != c.chunk.run_uid:
            return
        for index, partial in c.partials:
            a = rec.analyzers[index]
            a.merge(rec.stores[a.name], partial)
        if c.lost:
            return  # a worker died with it; the executor's error says so and the run fails
        rec.frames_analyzed += c.chunk.count
        if rec.segment_frames is not None:
            self._count_segments(rec, c.chunk.first, c.chunk.count)

    def _count_segments(self, rec: RunRecord, first: int, count: int) -> None:
        b = rec.info.boundary_frames
        for s in range(first // b, (first + count - 1) // b + 1):
            lo, hi = max(first, s * b), min(first + count, (s + 1) * b)
            rec.segment_frames[s] += hi - lo
            size = min(b, rec.info.n_frames - s * b)
            if rec.segment_frames[s] == size and s not in rec.segments_fired:
                self._fire(rec, s, True)

    def _fire(self, rec: RunRecord, index: int, complete: bool) -> None:
        rec.segments_fired.add(index)
        for a in rec.analyzers:
            hook = getattr(a, "on_boundary", None)
            if hook is not None:
                try:
                    hook(rec.stores[a.name], index, complete)
                except Exception as exc:
                    logger.exception("boundary hook of %s failed", a.name)
                    rec.errors.append(f"{a.name}.on_boundary({index}): {exc!r}")

    def _fire_remaining_boundaries(self, rec: RunRecord) -> None:
        if rec.segment_frames is None:
            return
        for s in range(rec.info.n_segments):
            if s not in rec.segments_fired and rec.segment_frames[s] > 0:
                self._fire(rec, s, False)

    # -- storage -----------------------------------------------------------------------------
    def _save(self, rec: RunRecord) -> None:
        folder = self.data_dir / rec.uid
        folder.mkdir(parents=True, exist_ok=True)
        rec.results_path = folder / "results.h5"
        save_results(rec.results_path, rec)
        (folder / "summary.json").write_text(json.dumps(rec.summary(), indent=2))

    def _forget_old_runs(self) -> None:
        while len(self.runs) > self.keep_runs:
            oldest = next(iter(self.runs))
            if self.runs[oldest] is self.current:
                break
            del self.runs[oldest]


def save_results(path: Path, rec: RunRecord) -> None:
    """Write every result (as the user sees it: maps in scan shape) with its kind, axes and units."""
    with h5py.File(path, "w") as f:
        entry = f.create_group("results")
        entry.attrs["run_uid"] = rec.uid
        entry.attrs["status"] = rec.status
        entry.attrs["summary_json"] = json.dumps(rec.summary())
        for name, store in rec.stores.items():
            g = entry.create_group(name)
            for rname, spec in store.specs.items():
                d = g.create_dataset(rname, data=store.view(rname))
                d.attrs["kind"] = spec.kind
                d.attrs["units"] = spec.units
                d.attrs["axes"] = json.dumps(list(spec.axes))
                if spec.description:
                    d.attrs["description"] = spec.description
