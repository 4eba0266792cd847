"""Clients of a running pipeline: queries (DEALER -> ROUTER) and live snapshots (SUB).

Used by the viewer, the CLI and the tests; they speak the msgpack-header-plus-buffers
messages of :mod:`emlive.stream.server`.
"""

from __future__ import annotations

import msgspec
import numpy as np
import zmq

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(dict)


class QueryError(RuntimeError):
    """The pipeline answered a query with an error."""


class PipelineClient:
    """Ask a pipeline for its status, runs, results and raw frames."""

    def __init__(self, address: str, timeout: float = 10.0, context: zmq.Context | None = None) -> None:
        self._ctx = context or zmq.Context.instance()
        self.address = address
        self.timeout_ms = int(timeout * 1000)
        self.socket = self._ctx.socket(zmq.DEALER)
        self.socket.linger = 0
        self.socket.connect(address)

    def request(self, **query) -> tuple[dict, list[bytes]]:
        self.socket.send(_enc.encode(query))
        if not self.socket.poll(self.timeout_ms):
            # a lost reply must not be mistaken for the next one: start over on a fresh socket
            self.socket.close(linger=0)
            self.socket = self._ctx.socket(zmq.DEALER)
            self.socket.linger = 0
            self.socket.connect(self.address)
            raise TimeoutError(f"no answer from {self.address} within {self.timeout_ms} ms")
        parts = self.socket.recv_multipart()
        header = _dec.decode(parts[0])
        if "error" in header:
            raise QueryError(header["error"])
        return header, parts[1:]

    def status(self) -> dict:
        return self.request(op="status")[0]

    def runs(self) -> list[dict]:
        return self.request(op="runs")[0]["runs"]

    def results(self, run: str | None = None) -> list[dict]:
        return self.request(op="results", run=run)[0]["results"]

    def result(self, analyzer: str, name: str, run: str | None = None) -> np.ndarray:
        header, bufs = self.request(op="result", analyzer=analyzer, name=name, run=run)
        return _array(header, bufs[0])

    def query(self, analyzer: str, query: str, run: str | None = None, **args) -> dict[str, np.ndarray]:
        """Ask an analyzer a question about the live results, e.g. ``query("snem", "pearson", index=12)``."""
        header, bufs = self.request(op="query", analyzer=analyzer, query=query, run=run, **args)
        return {d["name"]: _array(d, b) for d, b in zip(header["arrays"], bufs)}

    def pixel(self, analyzer: str, name: str, index: int | None = None, position=None,
              run: str | None = None) -> np.ndarray:
        """One scan position of a frame-indexed result (flat ``index`` or ``position`` in scan shape)."""
        args = {"index": index} if position is None else {"position": list(position)}
        header, bufs = self.request(op="pixel", analyzer=analyzer, name=name, run=run, **args)
        return _array(header, bufs[0])

    def frame(self, index: int, run: str | None = None) -> np.ndarray:
        header, bufs = self.request(op="frame", index=index, run=run)
        return _array(header, bufs[0])

    def close(self) -> None:
        self.socket.close(linger=0)

    def __enter__(self) -> PipelineClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SnapshotSubscriber:
    """Receives live result snapshots; ``recv`` returns (header, {(analyzer, name): array})."""

    def __init__(self, address: str, context: zmq.Context | None = None, rcvhwm: int = 2) -> None:
        self._ctx = context or zmq.Context.instance()
        self.socket = self._ctx.socket(zmq.SUB)
        self.socket.rcvhwm = rcvhwm
        self.socket.linger = 0
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.socket.connect(address)

    def recv(self, timeout: float = 1.0) -> tuple[dict, dict[tuple[str, str], np.ndarray]] | None:
        if not self.socket.poll(int(timeout * 1000)):
            return None
        parts = self.socket.recv_multipart()
        header = _dec.decode(parts[0])
        sent = [r for r in header["results"] if not r.get("deferred")]  # deferred ones carry no array
        arrays = {(r["analyzer"], r["name"]): _array(r, b) for r, b in zip(sent, parts[1:])}
        return header, arrays

    def close(self) -> None:
        self.socket.close(linger=0)


def _array(header: dict, buf: bytes) -> np.ndarray:
    return np.frombuffer(buf, dtype=np.dtype(header["dtype"])).reshape(header["shape"])
