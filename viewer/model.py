"""What the viewer knows about a pipeline, without Qt: results, progress, run, connection state.

The GUI thread only ever calls :meth:`PipelineModel.poll`, which never blocks: snapshots are
drained with a zero timeout, and everything that needs an answer from the pipeline (status,
a pixel's G(r), a raw frame, the Pearson query, a whole stack) runs on one fetch thread with
its own client, so a slow or absent pipeline cannot freeze the window. Snapshots the GUI is
too slow to take are dropped by the pipeline's publisher, never frames.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import zmq

from emlive.stream.client import PipelineClient, QueryError, SnapshotSubscriber

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (analyzer, result name)

#: kinds whose per-position slices the inspect panel shows (their leading axes are the scan)
POSITIONED = ("stack",)


def scan_indexed(descriptor: dict) -> bool:
    """Whether a result is indexed by scan position (its frames merge), so a click names a frame."""
    return descriptor.get("merge", "frames") == "frames"


@dataclass
class Inspection:
    """What one click (or ROI) asked for: raw pattern and per-position curves of every stack."""

    positions: list[tuple[int, ...]]
    indices: list[int]
    frame: np.ndarray | None = None                      # raw pattern (ROI: mean of the patterns)
    curves: dict[Key, np.ndarray] = field(default_factory=dict)  # stack slices at the position(s)
    x: dict[Key, np.ndarray] = field(default_factory=dict)       # x values of curves that brought their own
    answers: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # analyzer -> its inspect answer
    errors: list[str] = field(default_factory=list)
    t_request: float = 0.0                               # perf_counter of the click
    t_done: float = 0.0
    frames_averaged: int = 0

    @property
    def position(self) -> tuple[int, ...]:
        return self.positions[0]

    @property
    def latency(self) -> float:
        return self.t_done - self.t_request


@dataclass
class Changes:
    """What one :meth:`PipelineModel.poll` brought; the window redraws only that."""

    run: bool = False                      # a new run (everything was reset)
    descriptors: bool = False              # results appeared (the list must be rebuilt)
    arrays: set[Key] = field(default_factory=set)
    progress: bool = False
    message: bool = False
    inspections: list[Inspection] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.run or self.descriptors or self.arrays or self.progress or self.message
                    or self.inspections or self.errors)


def _frame(client: PipelineClient, index: int, run: str | None, wait: float = 1.0) -> np.ndarray:
    """A raw frame; one analysed a moment ago may not be in the recording yet: ask again for up to ``wait`` s."""
    t_end = time.monotonic() + wait
    while True:
        try:
            return client.frame(index, run=run)
        except QueryError as exc:
            if "never written" not in str(exc) or time.monotonic() > t_end:
                raise
            time.sleep(0.05)


def _finite_mean(values: np.ndarray) -> np.ndarray:
    """Mean over axis 0 of the finite values, NaN where there are none (np.nanmean warns there)."""
    ok = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, values, 0.0).sum(axis=0) / ok.sum(axis=0)


def snapshot_address_for(query_address: str, snapshot_address: str) -> str:
    """The snapshot endpoint as seen from here: the pipeline names its own (loopback) host.

    For a remote pipeline (reached through a tunnel or a routed port) the host of the query
    address is the one that works for the snapshots too; only the port is taken from status.
    """
    if not (query_address.startswith("tcp://") and snapshot_address.startswith("tcp://")):
        return snapshot_address
    host = query_address[len("tcp://"):].rsplit(":", 1)[0]
    port = snapshot_address.rsplit(":", 1)[1]
    return f"tcp://{host}:{port}"


class PipelineModel:
    """Latest results, descriptors, progress and run of a pipeline, kept current by :meth:`poll`.

    Parameters
    ----------
    query_address : str
        The pipeline's query endpoint (``emlive serve --query-address``).
    timeout : float
        Seconds a single fetch (pixel, frame, query) waits for the pipeline.
    retry : float
        Seconds between status requests while nothing answers, and the silence after which
        a connected pipeline is asked whether it is still there (restarts are found this way).
    """

    def __init__(self, query_address: str, timeout: float = 2.0, retry: float = 2.0,
                 context: zmq.Context | None = None) -> None:
        self.query_address = query_address
        self.timeout = timeout
        self.retry = retry
        self._ctx = context or zmq.Context.instance()
        self.connected = False
        self.ever_connected = False
        self.message = f"connecting to {query_address} ..."
        self.run_uid: str | None = None
        self.run_status = ""
        self.final = False
        self.progress: dict = {}
        self.descriptors: dict[Key, dict] = {}
        self.arrays: dict[Key, np.ndarray] = {}
        self.derived: dict[Key, dict] = {}  # results made here (Pearson maps): descriptor per key
        self.analyzers: list[str] = []
        self.snapshots = 0
        self.snapshot_address: str | None = None
        self._sub: SnapshotSubscriber | None = None
        self._last_heard = 0.0
        self._status_pending = False
        self._next_status = 0.0
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._jobs: queue.Queue = queue.Queue()
        self._inspect_gen = 0
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="emlive-viewer-fetch", daemon=True)
        self._thread.start()

    # -- the GUI thread's side -------------------------------------------------------------------
    def poll(self, max_snapshots: int = 64) -> Changes:
        """Take what arrived (snapshots, fetch answers) without waiting; ask for status when due."""
        ch = Changes()
        now = time.monotonic()
        while True:
            try:
                kind, payload = self._done.get_nowait()
            except queue.Empty:
                break
            self._apply_done(kind, payload, ch)
        if self._sub is not None:
            for _ in range(max_snapshots):
                try:
                    got = self._sub.recv(0)
                except (zmq.ZMQError, ValueError, KeyError) as exc:  # a bad message must not stop the viewer
                    logger.warning("bad snapshot: %s", exc)
                    continue
                if got is None:
                    break
                self._apply_snapshot(*got, ch)
                self._last_heard = now
        if not self._status_pending and now >= self._next_status and (
                not self.connected or now - self._last_heard > self.retry):
            self._status_pending = True
            self._submit("status", self._fetch_status)
        return ch

    def result_keys(self) -> list[Key]:
        return list(self.descriptors) + [k for k in self.derived if k not in self.descriptors]

    def descriptor(self, key: Key) -> dict:
        return self.descriptors.get(key) or self.derived[key]

    def kind(self, key: Key) -> str:
        return self.descriptor(key)["kind"]

    def scan_shape(self) -> tuple[int, ...] | None:
        """The run's scan shape, from the first map indexed by scan position."""
        for d in self.descriptors.values():
            if d["kind"] == "map" and scan_indexed(d):
                return tuple(d["shape"])
        return None

    def x_axis(self, key: Key) -> np.ndarray | None:
        """The x values of a curve (or of a stack's last axis): the same analyzer's curve named like the axis."""
        axes = self.descriptor(key).get("axes") or []
        if not axes:
            return None
        x = self.arrays.get((key[0], axes[-1]))
        return None if x is None or x.ndim != 1 else x

    def inspect(self, positions: list[tuple[int, ...]], max_frames: int = 64, *, by_position: bool = True,
                queries: list[tuple[str, str]] = ()) -> int:
        """Ask for the raw pattern and every stack's slice at these positions (their mean for an ROI).

        ``by_position=False`` (a map over detector pixels, e.g. an ECM τ map): no raw pattern and
        no per-position stacks. ``queries`` (analyzer, query) are asked with ``position`` too
        (e.g. ECM's g2 of that pixel); their answers land in ``answers`` and, as curves named
        after the query, in ``curves`` with ``x`` from the answer's ``lags``/``x``.
        Returns the request's number; an older request still queued is skipped (the newest click wins).
        """
        scan = self.scan_shape() if by_position else ()
        if scan is None or not positions:
            raise ValueError("nothing to inspect yet: no map result has arrived")
        positions = [tuple(int(v) for v in p) for p in positions]
        # a detector-pixel map has no scan index: its curves come from the queries alone
        indices = [int(np.ravel_multi_index(p, scan)) for p in positions] if by_position else [-1] * len(positions)
        self._inspect_gen += 1
        gen = self._inspect_gen
        run = self.run_uid
        stacks = [k for k, d in self.descriptors.items()
                  if by_position and d["kind"] in POSITIONED and scan_indexed(d)
                  and tuple(d["shape"][:len(scan)]) == scan]
        local = {k: self.arrays[k] for k in stacks if k in self.arrays}  # stacks small enough to be sent
        insp = Inspection(positions, indices, t_request=time.perf_counter())

        def job(client: PipelineClient):
            if gen != self._inspect_gen:
                return None  # superseded by a newer click
            step = max(1, math.ceil(len(indices) / max_frames))
            frames = []
            for i in (indices[::step] if by_position else []):
                try:
                    frames.append(_frame(client, i, run).astype(np.float64))
                except (QueryError, TimeoutError) as exc:
                    insp.errors.append(f"raw pattern {i}: {exc}")
                    break
            if frames:
                insp.frame = frames[0] if len(frames) == 1 else np.mean(frames, axis=0)
                insp.frames_averaged = len(frames)
            for key in stacks:
                try:
                    if key in local:
                        vals = [local[key][p] for p in positions]
                    elif len(positions) == 1:
                        vals = [client.pixel(*key, position=positions[0], run=run)]
                    else:
                        whole = client.result(*key, run=run)
                        vals = [whole[p] for p in positions]
                except (QueryError, TimeoutError) as exc:
                    insp.errors.append(f"{key[0]}/{key[1]}: {exc}")
                    continue
                insp.curves[key] = _finite_mean(np.asarray(vals, dtype=np.float64))
            for analyzer, query in queries:
                if len(positions) != 1:
                    break
                try:
                    answer = client.query(analyzer, query, run=run, position=list(positions[0]))
                except (QueryError, TimeoutError) as exc:
                    insp.errors.append(f"{analyzer} {query}: {exc}")
                    continue
                insp.answers[analyzer] = answer
                if query in answer:
                    insp.curves[(analyzer, query)] = np.asarray(answer[query], dtype=np.float64)
                    x = answer.get("lags", answer.get("x"))
                    if x is not None:
                        insp.x[(analyzer, query)] = np.asarray(x, dtype=np.float64)
            insp.t_done = time.perf_counter()
            return insp

        self._submit("inspect", job)
        return gen

    def reference(self, analyzer: str, query: str, position: tuple[int, ...], answer: str | None = None) -> Key:
        """Ask ``analyzer`` the ``query`` about ``position`` (e.g. snem pearson); the map arrives as a result.

        The result is named ``<answer>@(y,x)`` (``answer`` defaults to the query's name).
        """
        position = tuple(int(v) for v in position)
        name = f"{answer or query}@({','.join(map(str, position))})"
        key = (analyzer, name)
        run = self.run_uid

        def job(client: PipelineClient):
            values = client.query(analyzer, query, run=run, position=list(position))
            arr = values.get(answer or query, next(iter(values.values())))
            return key, run, np.array(arr)

        self._submit("derived", job)
        return key

    def fetch_whole(self, key: Key) -> None:
        """Fetch a result announced but not sent (a deferred stack), for the slice view."""
        run = self.run_uid
        self._submit("whole", lambda client: (key, run, client.result(*key, run=run)))

    def close(self) -> None:
        self._closed = True
        self._jobs.put(None)
        self._thread.join(timeout=self.timeout + 1)
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    # -- applying answers --------------------------------------------------------------------------
    def _apply_snapshot(self, header: dict, arrays: dict[Key, np.ndarray], ch: Changes) -> None:
        self.snapshots += 1
        uid = header.get("run_uid")
        if uid != self.run_uid:
            self._reset(uid, ch)
        for d in header.get("results", []):
            key = (d["analyzer"], d["name"])
            if key not in self.descriptors:
                ch.descriptors = True
            self.descriptors[key] = d
        for key, arr in arrays.items():
            self.arrays[key] = arr
            ch.arrays.add(key)
        self.progress = dict(header.get("progress") or {})
        self.final = bool(header.get("final"))
        self._set_run_status(header.get("status", ""), ch)
        ch.progress = True
        if not self.connected:
            self.connected = self.ever_connected = True

    def _reset(self, uid: str | None, ch: Changes) -> None:
        self.run_uid = uid
        self.descriptors.clear()
        self.arrays.clear()
        self.derived.clear()
        self.progress = {}
        self.final = False
        self.run_status = ""
        ch.run = ch.descriptors = True

    def _set_run_status(self, status: str, ch: Changes, uid: str | None = None) -> None:
        self.run_status = status
        short = (uid or self.run_uid or "")[:12]
        text = {"running": f"run {short} running", "complete": f"run {short} complete"}.get(
            status, f"run {short} {status}")
        self._set_message(text, ch)

    def _set_message(self, text: str, ch: Changes) -> None:
        if text != self.message:
            self.message = text
            ch.message = True

    def _apply_done(self, kind: str, payload: Any, ch: Changes) -> None:
        if isinstance(payload, Exception):
            if kind == "status":
                self._status_pending = False
                self._next_status = time.monotonic() + self.retry
                if self.connected or not self.ever_connected or self.message.startswith("connecting"):
                    self.connected = False
                    self._set_message(f"no pipeline at {self.query_address}, retrying every "
                                      f"{self.retry:g} s", ch)
            else:
                ch.errors.append(f"{kind}: {payload}")
            return
        if kind == "status":
            self._on_status(payload, ch)
        elif kind == "inspect":
            if payload is not None:
                ch.inspections.append(payload)
        elif kind in ("derived", "whole"):
            key, run, arr = payload
            if run != self.run_uid:
                return  # answers about a run that is gone
            if kind == "derived":
                self.derived[key] = {"analyzer": key[0], "name": key[1], "kind": "map", "units": "",
                                     "axes": [], "dtype": arr.dtype.str, "shape": list(arr.shape)}
                ch.descriptors = True
            self.arrays[key] = arr
            ch.arrays.add(key)
        elif kind == "sync":
            uid, descriptors, arrays, seen = payload
            if uid != self.run_uid:
                self._reset(uid, ch)
            newer = self.snapshots == seen  # else a snapshot since the request may be newer than the answer
            for d in descriptors:
                self.descriptors.setdefault((d["analyzer"], d["name"]), d)
            for key, arr in arrays.items():
                if newer or key not in self.arrays:
                    self.arrays[key] = arr
                ch.arrays.add(key)
            ch.descriptors = True

    def _on_status(self, payload: tuple[dict, dict | None], ch: Changes) -> None:
        status, run = payload
        self._status_pending = False
        self._next_status = time.monotonic() + self.retry
        self._last_heard = time.monotonic()
        self.analyzers = list(status.get("analyzers", []))
        address = snapshot_address_for(self.query_address, status["snapshot_address"])
        was_connected = self.connected
        self.connected = self.ever_connected = True
        if address != self.snapshot_address:  # first contact, or the pipeline restarted on another port
            if self._sub is not None:
                self._sub.close()
            self._sub = SnapshotSubscriber(address, context=self._ctx)
            self.snapshot_address = address
        if run is None:
            if self.run_uid is None:
                self._set_message(f"connected to {self.query_address}; waiting for a run", ch)
            return
        uid = run["run_uid"]
        if uid != self.run_uid or not was_connected:
            self._submit("sync", self._sync_job(uid))
        progress = status.get("progress") or {k: run.get(k) for k in (
            "frames_analyzed", "frames_received", "n_frames", "frames_missing", "frames_per_s", "status")}
        if uid == self.run_uid or self.run_uid is None or not self.progress:
            self.progress = {k: (v if v is not None else 0) for k, v in progress.items()}
            ch.progress = True
        if uid == self.run_uid or self.run_uid is None:
            self._set_run_status(run.get("status", ""), ch, uid)

    # -- the fetch thread ------------------------------------------------------------------------------
    def _submit(self, kind: str, job: Callable[[PipelineClient], Any]) -> None:
        self._jobs.put((kind, job))

    def _fetch_status(self, client: PipelineClient) -> tuple[dict, dict | None]:
        saved = client.timeout_ms
        client.timeout_ms = int(min(self.timeout, 1.0) * 1000)  # an absent pipeline must not hold up clicks
        try:
            status = client.status()
            run = status.get("current")
            if run is None:
                runs = client.runs()
                run = runs[-1] if runs else None
        finally:
            client.timeout_ms = saved
        return status, run

    def _sync_job(self, uid: str) -> Callable[[PipelineClient], Any]:
        """Everything of a run the snapshots will not resend: joining late, or after the run closed."""
        seen = self.snapshots

        def job(client: PipelineClient):
            descriptors = client.results(run=uid)
            arrays = {}
            for d in descriptors:
                nbytes = math.prod(d["shape"]) * np.dtype(d["dtype"]).itemsize
                if d["kind"] in ("map", "curve", "scalar", "frame") or nbytes <= 1 << 20:
                    arrays[(d["analyzer"], d["name"])] = client.result(d["analyzer"], d["name"], run=uid)
            return uid, descriptors, arrays, seen
        return job

    def _work(self) -> None:
        client = PipelineClient(self.query_address, timeout=self.timeout, context=self._ctx)
        try:
            while True:
                item = self._jobs.get()
                if item is None or self._closed:
                    return
                kind, job = item
                try:
                    out = job(client)
                except Exception as exc:  # reported to the GUI as a message, never raised there
                    out = exc
                self._done.put((kind, out))
        finally:
            client.close()


__all__ = ["PipelineModel", "Changes", "Inspection", "Key", "scan_indexed", "snapshot_address_for"]
