"""``emlive serve``: the pipeline host's sockets and event loop.

* data (PULL, bound): frames from sources; read only while the executor has a free
  slot, so a slow pipeline blocks the source instead of losing frames;
* snapshots (PUB, bound): the live results at most ``snapshot_hz`` times a second;
  slow subscribers drop snapshots (small high-water mark), never frames; stacks and
  volumes above ``snapshot_max_bytes`` (a G(r) per scan position) are only announced
  (``"deferred": true``) and read a position at a time with the ``pixel`` query;
* queries (ROUTER, bound): status (with the snapshot address), runs, result specs, a
  result, one position of a result (``pixel``), a raw frame, an analyzer's own ``query``.

Query and snapshot messages: part 0 is a msgpack header, arrays follow as raw parts.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import msgspec
import numpy as np
import zmq

from .errors import UsageError
from .pipeline import Pipeline, RunRecord
from .receiver import FrameReceiver
from .validation import Limits

logger = logging.getLogger(__name__)

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(dict)


class PipelineServer:
    """Binds the three sockets around a :class:`Pipeline` and serves run after run.

    Addresses default to 127.0.0.1 with free ports; read the bound ones from
    ``data_address``, ``query_address`` and ``snapshot_address``.
    """

    def __init__(self, pipeline: Pipeline, *, data_address: str = "tcp://127.0.0.1:0",
                 query_address: str = "tcp://127.0.0.1:0", snapshot_address: str = "tcp://127.0.0.1:0",
                 limits: Limits | None = None, timeout: float = 10.0, snapshot_hz: float = 20.0,
                 snapshot_max_bytes: int = 1 << 20, context: zmq.Context | None = None) -> None:
        for address in (data_address, query_address, snapshot_address):
            require_loopback(address)
        self.pipeline = pipeline
        self.snapshot_max_bytes = snapshot_max_bytes  # larger stacks/volumes are announced, not sent
        self._ctx = context or zmq.Context.instance()
        self.receiver = FrameReceiver(data_address, bind=True, limits=limits, timeout=timeout,
                                      context=self._ctx)
        self.router = self._ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        self.router.bind(query_address)
        self.pub = self._ctx.socket(zmq.PUB)
        self.pub.sndhwm = 4
        self.pub.linger = 0
        self.pub.bind(snapshot_address)
        self.data_address = self.receiver.address
        self.query_address = self.router.last_endpoint.decode()
        self.snapshot_address = self.pub.last_endpoint.decode()
        self.snapshot_period = 1.0 / snapshot_hz
        self._last_snapshot = 0.0
        self._sent_versions: dict[tuple[str, str], int] = {}  # per result of the run last published
        self._sent_uid = ""
        self._stop = threading.Event()
        self.snapshots_sent = 0
        self.stalls = 0  # loop turns with no free slot: back-pressure engaged

    # -- loop --------------------------------------------------------------------------------
    def serve(self, runs: int | None = None, until: float | None = None) -> None:
        """Serve until :meth:`stop`, or until ``runs`` runs have closed, or for ``until`` seconds."""
        closed = 0
        t_end = None if until is None else time.monotonic() + until
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        results_sock = getattr(self.pipeline.executor, "_results", None)
        if results_sock is not None:
            poller.register(results_sock, zmq.POLLIN)
        data_registered = False
        while not self._stop.is_set():
            free = self.pipeline.executor.capacity()
            want_data = free > 0
            if not want_data:
                self.stalls += 1
                self.receiver.state.keepalive(time.monotonic())
            if want_data != data_registered:
                if want_data:
                    poller.register(self.receiver.socket, zmq.POLLIN)
                else:
                    poller.unregister(self.receiver.socket)
                data_registered = want_data
            ready = dict(poller.poll(50))
            if self.pipeline.current is not None or (results_sock is not None and results_sock in ready):
                self.pipeline.pump(0)
            if self.receiver.socket in ready:
                for event in self.receiver.poll(0, allocate=self.pipeline.allocator, max_messages=free,
                                                 discard=self.pipeline.discard):
                    self.pipeline.on_event(event)
            elif data_registered:
                for event in self.receiver.state.check_timeout(time.monotonic()):
                    self.pipeline.on_event(event)
            if self.router in ready:
                self._answer_queries()
            if self.pipeline.newly_closed:
                for rec in self.pipeline.newly_closed:
                    self._publish(rec, final=True)
                closed += len(self.pipeline.newly_closed)
                self.pipeline.newly_closed.clear()
            elif self.pipeline.current is not None and time.monotonic() - self._last_snapshot >= self.snapshot_period:
                self._publish(self.pipeline.current)
            if runs is not None and closed >= runs:
                break
            if t_end is not None and time.monotonic() > t_end:
                break

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.receiver.close()
        self.router.close()
        self.pub.close()

    # -- snapshots ---------------------------------------------------------------------------
    def _publish(self, rec: RunRecord, final: bool = False) -> None:
        """Send what changed since the last snapshot; the final one sends everything."""
        self._last_snapshot = time.monotonic()
        if self._sent_uid != rec.uid:
            self._sent_uid, self._sent_versions = rec.uid, {}
        header, buffers = {"run_uid": rec.uid, "status": rec.status, "final": final,
                           "progress": _progress(rec), "results": []}, []
        for aname, store in rec.stores.items():
            for rname, spec in store.specs.items():
                key = (aname, rname)
                if not final and self._sent_versions.get(key) == store.version:
                    continue
                self._sent_versions[key] = store.version
                view = store.view(rname)
                if spec.kind in ("stack", "volume") and view.nbytes > self.snapshot_max_bytes:
                    # per-position curves of a whole scan: named, fetched on demand ("pixel" query)
                    header["results"].append(_describe(aname, rname, spec, view) | {"deferred": True})
                    continue
                arr = np.ascontiguousarray(view)
                header["results"].append(_describe(aname, rname, spec, arr))
                buffers.append(arr)
        try:
            # copied on send: the live buffers change under a zero-copy message before it leaves
            self.pub.send_multipart([_enc.encode(header), *buffers], flags=zmq.NOBLOCK)
            self.snapshots_sent += 1
        except zmq.Again:
            pass  # slow subscribers drop snapshots by design

    # -- queries -----------------------------------------------------------------------------
    def _answer_queries(self) -> None:
        while True:
            try:
                parts = self.router.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            envelope, body = parts[:-1], parts[-1]
            try:
                request = _dec.decode(body)
                header, buffers = self._answer(request)
            except Exception as exc:  # a bad query never takes the service down
                header, buffers = {"error": f"{type(exc).__name__}: {exc}"}, []
            self.router.send_multipart([*envelope, _enc.encode(header), *buffers])

    def _answer(self, q: dict) -> tuple[dict, list]:
        op = q.get("op")
        if op == "status":
            rec = self.pipeline.current
            return {"current": rec.summary() if rec else None, "progress": _progress(rec) if rec else None,
                    "snapshot_address": self.snapshot_address, "snapshot_hz": 1.0 / self.snapshot_period,
                    "rejected": dict(self.receiver.rejected), "executor": self.pipeline.executor.name,
                    "analyzers": [n for n, _ in self.pipeline.analyzer_specs]}, []
        if op == "runs":
            # "closed": results and summary are written (a status alone is set a moment before)
            return {"runs": [r.summary() | {"closed": r.closed} for r in self.pipeline.runs.values()]}, []
        rec = self._run(q.get("run"))
        if op == "results":
            return {"run_uid": rec.uid, "results": [_describe(a, n, s, store.view(n))
                                                   for a, store in rec.stores.items()
                                                   for n, s in store.specs.items()]}, []
        if op == "result":
            store = rec.stores[q["analyzer"]]
            arr = np.ascontiguousarray(store.view(q["name"]))
            return _describe(q["analyzer"], q["name"], store.specs[q["name"]], arr), [arr]
        if op == "pixel":
            # one position of a frame-indexed result (e.g. that position's G(r) from a stack)
            store = rec.stores[q["analyzer"]]
            spec = store.specs[q["name"]]
            if spec.merge != "frames":
                raise ValueError(f"{q['analyzer']}/{q['name']} is not indexed by scan position")
            if "position" in q:
                index = int(np.ravel_multi_index(tuple(int(v) for v in q["position"]), rec.info.scan_shape))
            else:
                index = int(q["index"])
            if not 0 <= index < rec.info.n_frames:
                raise IndexError(f"index {index} outside 0..{rec.info.n_frames - 1}")
            arr = np.ascontiguousarray(store[q["name"]][index])
            return _describe(q["analyzer"], q["name"], spec, arr) | {"index": index}, [arr]
        if op == "frame":
            frame = read_frame(rec, int(q["index"]))
            return {"run_uid": rec.uid, "index": int(q["index"]), "dtype": frame.dtype.str,
                    "shape": list(frame.shape)}, [np.ascontiguousarray(frame)]
        if op == "query":
            analyzer = next((a for a in rec.analyzers if a.name == q.get("analyzer")), None)
            if analyzer is None:
                raise LookupError(f"run {rec.uid} has no analyzer {q.get('analyzer')!r}")
            values = analyzer.query(rec.stores[analyzer.name], q)
            arrays = [np.ascontiguousarray(v) for v in values.values()]
            return {"run_uid": rec.uid, "analyzer": analyzer.name,
                    "arrays": [{"name": k, "dtype": a.dtype.str, "shape": list(a.shape)}
                               for k, a in zip(values, arrays)]}, arrays
        raise ValueError(f"unknown op {op!r}; expected status, runs, results, result, pixel, frame or query")

    def _run(self, uid: str | None) -> RunRecord:
        if uid is None:
            rec = self.pipeline.current or (list(self.pipeline.runs.values())[-1] if self.pipeline.runs else None)
            if rec is None:
                raise LookupError("no run yet")
            return rec
        if uid not in self.pipeline.runs:
            raise LookupError(f"no run {uid!r}")
        return self.pipeline.runs[uid]


def require_loopback(address: str) -> None:
    """Refuse to bind beyond this machine: DESIGN.md asks for CurveZMQ keys there, not configured yet."""
    if address.startswith(("ipc://", "inproc://")):
        return
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("127."):
        raise UsageError(f"refusing to bind {address}: only loopback addresses are served until CurveZMQ "
                         f"keys can be configured; use tcp://127.0.0.1:PORT (and an SSH tunnel for remote use)")


def read_frame(rec: RunRecord, index: int) -> np.ndarray:
    """The raw frame at scan index ``index`` from the run's recording (also while it is written)."""
    if rec.recording is None or not Path(rec.recording).exists():
        raise LookupError(f"run {rec.uid} was not recorded")
    from .recorder import Recording
    with Recording(rec.recording) as r:
        return r.frame(index)


def _progress(rec: RunRecord) -> dict:
    elapsed = time.time() - rec.t_start
    return {"frames_analyzed": rec.frames_analyzed, "frames_received": rec.frames_received,
            "n_frames": rec.info.n_frames, "frames_missing": int(sum(b - a for a, b in rec.missing)),
            "frames_per_s": rec.frames_analyzed / elapsed if elapsed > 0 else 0.0, "status": rec.status}


def _describe(analyzer: str, name: str, spec, arr: np.ndarray) -> dict:
    # merge "frames" = indexed by scan position: what a client needs to map a click to a frame
    return {"analyzer": analyzer, "name": name, "kind": spec.kind, "units": spec.units, "merge": spec.merge,
            "axes": list(spec.axes), "dtype": arr.dtype.str, "shape": list(arr.shape)}
