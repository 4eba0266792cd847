"""Frame-stream throughput: emlive's publisher, receiver and pipeline against raw pyzmq.

Three paths carry the same pre-generated uint16 diffraction-like frames (fixed seed,
Poisson counts, made before any timing) in the same chunks over tcp://127.0.0.1:

(a) raw pyzmq, the peer: PUSH -> PULL, multipart [small struct header, frame stack],
    sent and received with ``copy=False``, the receiver in a thread;
(b) emlive ``FramePublisher`` -> ``FrameReceiver`` (receiver thread iterating
    ``run_events()``, raw frames viewed zero-copy in the received message, counted only);
(c) emlive end to end: ``FramePublisher`` -> ``PipelineServer`` built by
    ``service.app.make_server`` (process executor, the ``virtual`` analyzer, no recorder
    unless ``--record``), timed from the first send until the server loop has closed the
    run (``serve(runs=1)`` returns after the run's final snapshot); every run's summary
    must say ``complete`` with every frame analyzed.

The worker pool is spawned, and numba compiled, before anything is timed: one short
warm-up run per frame size goes through each path first. Each case reports the best
of ``--repeat`` rounds, the three paths interleaved within a round.

To stay within memory, the frames sent are a pool of distinct frames (about 128 MB,
more than any cache) sent round-robin: chunk ``i`` carries scan frames
``i*C .. i*C+C-1`` with the pixels of pool frames ``(i*C) mod P ...``.

Usage::

    python benchmarks/stream_throughput.py                 # human-readable table
    python benchmarks/stream_throughput.py --json          # the DESIGN.md benchmark object
    python benchmarks/stream_throughput.py --sizes 256 --frames 8000 --repeat 5 --record
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy: workers share two cores with the host

import argparse
import json
import logging
import math
import shutil
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from harness import reporter
import zmq

NAME = "stream_throughput"
DEFAULT_FRAMES = {96: 100_000, 256: 16_000, 512: 4_000}  # ~0.5 s for (a), 1-3 s for (c) on 2 cores
POOL_BYTES = 128 << 20
SNDHWM = RCVHWM = 8  # emlive's defaults on both ends, used for the pyzmq peer too
_HEAD = struct.Struct("<qqq")  # the peer's header: seq, first, count

logger = logging.getLogger(NAME)


# -- input ------------------------------------------------------------------------------------
def make_pool(size: int, n_frames: int, chunk: int, seed: int = 0) -> np.ndarray:
    """Distinct diffraction-like uint16 frames (Poisson counts of a disk, Bragg spots, a ring).

    About :data:`POOL_BYTES` of them, a whole number of chunks, at most ``n_frames``
    rounded up to a chunk.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    c = (size - 1) / 2
    r = np.hypot(y - c, x - c)
    disk_r = size / 10
    mean = 0.05 + 30.0 / (1 + np.exp((r - disk_r) / 0.7))           # bright central disk
    mean += 0.8 * np.exp(-((r - size * 0.3) ** 2) / (2 * (size / 60) ** 2))  # amorphous ring
    g = size / 5                                                    # Bragg spots on a lattice
    for i in range(-2, 3):
        for j in range(-2, 3):
            if (i, j) != (0, 0) and abs(i) + abs(j) <= 3:
                sy, sx = c + i * g + 0.3 * j * g, c + j * g
                mean += 8.0 * np.exp(-((y - sy) ** 2 + (x - sx) ** 2) / (2 * (size / 80 + 0.5) ** 2))
    frame_bytes = size * size * 2
    per_pool = max(1, POOL_BYTES // frame_bytes // chunk) * chunk
    n_pool = min(per_pool, -(-n_frames // chunk) * chunk)
    pool = np.empty((n_pool, size, size), dtype=np.uint16)
    step = max(1, (32 << 20) // (size * size * 8))  # bounded temporaries: poisson returns int64
    for a in range(0, n_pool, step):
        b = min(n_pool, a + step)
        pool[a:b] = np.minimum(rng.poisson(mean, size=(b - a, size, size)), 65535)
    return pool


def chunks(n_frames: int, chunk: int, n_pool: int):
    """(first, pool_start, count) of every chunk of a run of ``n_frames``."""
    for first in range(0, n_frames, chunk):
        yield first, first % n_pool, min(chunk, n_frames - first)


def scan_shape(n: int) -> tuple[int, int]:
    """The most nearly square (ny, nx) with ny * nx == n."""
    ny = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return ny, n // ny


# -- (a) raw pyzmq ----------------------------------------------------------------------------
class PyzmqPair:
    """The peer: the least a lossless chunked PUSH/PULL transfer can do with pyzmq."""

    def __init__(self, ctx: zmq.Context) -> None:
        self.pull = ctx.socket(zmq.PULL)
        self.pull.rcvhwm = RCVHWM
        self.pull.linger = 0
        self.pull.bind("tcp://127.0.0.1:0")
        self.push = ctx.socket(zmq.PUSH)
        self.push.sndhwm = SNDHWM
        self.push.linger = 30_000
        self.push.connect(self.pull.last_endpoint.decode())

    def run(self, pool: np.ndarray, n_frames: int, chunk: int) -> float:
        """Send one run; returns seconds from the first send to the receipt of the end marker."""
        result: dict = {}

        def receive() -> None:
            frames = 0
            while True:
                parts = self.pull.recv_multipart(copy=False)
                if len(parts) == 1:  # end marker
                    result["t_end"] = time.perf_counter()
                    break
                _seq, _first, count = _HEAD.unpack(parts[0].bytes)
                view = np.frombuffer(parts[1].buffer, dtype=pool.dtype)  # what a consumer would use
                frames += count if view.size else 0
            result["frames"] = frames

        thread = threading.Thread(target=receive, name="pyzmq-receiver")
        thread.start()
        t0 = time.perf_counter()
        for seq, (first, p, count) in enumerate(chunks(n_frames, chunk, len(pool))):
            self.push.send_multipart([_HEAD.pack(seq, first, count), pool[p:p + count]], copy=False)
        self.push.send(b"end")
        thread.join()
        if result.get("frames") != n_frames:
            raise RuntimeError(f"pyzmq peer received {result.get('frames')} of {n_frames} frames")
        return result["t_end"] - t0

    def close(self) -> None:
        self.push.close()
        self.pull.close()


# -- (b) publisher -> receiver ----------------------------------------------------------------
class EmlivePair:
    """FramePublisher -> FrameReceiver, the receiver counting frames in a thread."""

    def __init__(self, ctx: zmq.Context) -> None:
        from emlive.stream.publisher import FramePublisher
        from emlive.stream.receiver import FrameReceiver

        self.receiver = FrameReceiver("tcp://127.0.0.1:0", rcvhwm=RCVHWM, context=ctx)
        self.publisher = FramePublisher(self.receiver.address, sndhwm=SNDHWM, context=ctx)

    def run(self, pool: np.ndarray, n_frames: int, chunk: int, encoding: str) -> float:
        from emlive.stream.receiver import ReceivedChunk
        from emlive.stream.state import RunClosed

        result: dict = {}

        def receive() -> None:
            frames = 0
            try:
                for event in self.receiver.run_events(idle_timeout=60):
                    if isinstance(event, ReceivedChunk):
                        frames += event.frames.shape[0]
                    elif isinstance(event, RunClosed):
                        result["t_end"] = time.perf_counter()
                        result["counters"] = event.counters
            finally:
                result["frames"] = frames

        thread = threading.Thread(target=receive, name="emlive-receiver")
        thread.start()
        pub = self.publisher
        t0 = time.perf_counter()
        pub.start((pool.shape[1], pool.shape[2]), "uint16", scan_shape(n_frames), chunk_frames=chunk,
                  encoding=encoding)
        for first, p, count in chunks(n_frames, chunk, len(pool)):
            pub.send(pool[p:p + count], first)
        pub.end()
        thread.join()
        counters = result.get("counters")
        if result["frames"] != n_frames or counters is None or counters.status != "success" or counters.missing:
            raise RuntimeError(f"emlive receiver got {result['frames']} of {n_frames} frames ({counters})")
        return result["t_end"] - t0

    def close(self) -> None:
        self.publisher.close()
        self.receiver.close()


# -- (c) publisher -> pipeline server ---------------------------------------------------------
class EmlivePipeline:
    """FramePublisher -> PipelineServer (process executor, analyzers, optional recorder)."""

    def __init__(self, ctx: zmq.Context, data_dir: Path, analyzer: str, factory: str | None,
                 record: bool, workers: int = 0) -> None:
        from emlive.stream.publisher import FramePublisher

        self.data_dir = data_dir
        self.record = record
        self.server, self._shutdown = _make_server(analyzer, data_dir, record, workers)
        if factory is not None:  # analyzers from elsewhere (diagnostics): host and workers resolve it per run
            from emlive.stream.runner import resolve_factory
            self.server.pipeline.factory = resolve_factory(factory)
            self.server.pipeline.executor.factory = factory
        self.publisher = FramePublisher(self.server.data_address, sndhwm=SNDHWM, context=ctx)

    def run(self, pool: np.ndarray, n_frames: int, chunk: int, encoding: str) -> float:
        """One run; returns seconds from the first send until the server has closed the run."""
        result: dict = {}

        def serve() -> None:
            try:
                self.server.serve(runs=1, until=600)
            finally:
                result["t_end"] = time.perf_counter()

        thread = threading.Thread(target=serve, name="pipeline-server")
        thread.start()
        pub = self.publisher
        t0 = time.perf_counter()
        start = pub.start((pool.shape[1], pool.shape[2]), "uint16", scan_shape(n_frames),
                          chunk_frames=chunk, encoding=encoding)
        for first, p, count in chunks(n_frames, chunk, len(pool)):
            pub.send(pool[p:p + count], first)
        pub.end()
        thread.join()
        rec = self.server.pipeline.runs.get(start.run_uid)
        if rec is None:
            raise RuntimeError(f"run {start.run_uid} never reached the pipeline")
        s = rec.summary()
        lost = (s["status"] != "complete" or s["frames_analyzed"] != n_frames or s["frames_sent"] != n_frames
                or s["frames_received"] != n_frames or s["frames_missing"]
                or (self.record and s["frames_recorded"] != n_frames))
        if lost:
            raise RuntimeError(f"pipeline lost frames or failed: {json.dumps(s)}")
        shutil.rmtree(self.data_dir / start.run_uid, ignore_errors=True)  # recordings are large
        return result["t_end"] - t0

    def close(self) -> None:
        self.publisher.close()
        self._shutdown(self.server)


def _make_server(analyzer: str, data_dir: Path, record: bool, workers: int = 0):
    """The service's own composition (``service.app.make_server``), on free loopback ports."""
    from emlive.service.app import make_server, shutdown
    from emlive.service.config import AnalyzerConfig, ServiceConfig

    loopback = "tcp://127.0.0.1:0"
    cfg = ServiceConfig(data_address=loopback, query_address=loopback, snapshot_address=loopback,
                        data_dir=str(data_dir), executor="processes", analyzers=[AnalyzerConfig(analyzer)],
                        record=record, workers=workers)
    return make_server(cfg), shutdown


# -- a diagnostic analyzer: the pipeline's own cost, without any pixel work --------------------
def build_null(name: str, params: dict):
    """Factory for ``--analyzer null --factory stream_throughput:build_null``."""
    from emlive.analyzers.base import Analyzer, Partial, ResultSpec

    class Null(Analyzer):
        name = "null"

        def results(self, run):
            return {"seen": ResultSpec("map", (run.n_frames,), "uint8", ("scan_y", "scan_x"))}

        def process(self, chunk):
            return Partial(chunk.first, chunk.count, {"seen": np.ones(chunk.count, np.uint8)})

    if name != "null":
        raise KeyError(name)
    return Null(**params)


# -- driver -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[96, 256, 512], help="frame sizes (square, pixels)")
    p.add_argument("--frames", type=int, nargs="+", default=None,
                   help="frames per run, one value or one per size (default 100000 / 16000 / 4000)")
    p.add_argument("--repeat", type=int, default=3, help="rounds; the best is reported")
    p.add_argument("--chunk-frames", type=int, default=32, help="frames per message, all paths")
    p.add_argument("--encoding", choices=("raw", "lz4", "bslz4"), default="raw",
                   help="frame encoding of (b) and (c), done by the publisher inside the timed loop; "
                        "(a) always sends raw")
    p.add_argument("--workers", type=int, default=0, help="(c) analyzer processes (default: one per core)")
    p.add_argument("--record", action="store_true", help="(c) also records every frame to HDF5 in a temp folder")
    p.add_argument("--analyzer", default="virtual", help="analyzer of (c)")
    p.add_argument("--factory", default=None,
                   help="analyzer factory 'module:function' for (c), instead of emlive's registry "
                        "(e.g. stream_throughput:build_null to time the pipeline without pixel work)")
    p.add_argument("--cases", default="abc", help="which paths to run, e.g. 'ab'")
    p.add_argument("--json", action="store_true", help="print one JSON object (DESIGN.md benchmark format)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s")
    if args.frames is None:
        frames = [DEFAULT_FRAMES.get(s, max(1000, int(2e9 / (s * s * 2)) // 1000 * 1000))  # else ~2 GB
                  for s in args.sizes]
    elif len(args.frames) == 1:
        frames = args.frames * len(args.sizes)
    elif len(args.frames) == len(args.sizes):
        frames = args.frames
    else:
        p.error("--frames takes one value or one per size")
    chunk = args.chunk_frames
    say = reporter(args.json)

    ctx = zmq.Context.instance()
    tmp = Path(tempfile.mkdtemp(prefix="emlive-bench-"))
    paths: dict = {}
    results: list[dict] = []
    try:
        if "a" in args.cases:
            paths["a"] = PyzmqPair(ctx)
        if "b" in args.cases:
            paths["b"] = EmlivePair(ctx)
        if "c" in args.cases:
            paths["c"] = EmlivePipeline(ctx, tmp / "data", args.analyzer, args.factory, args.record,
                                           args.workers)
        say(f"{NAME}: {os.cpu_count()} cores, chunks of {chunk} frames, encoding {args.encoding} "
            f"(b, c; encoded by the publisher while timed; (a) raw), "
            f"recorder {'on' if args.record else 'off'}, analyzer {args.analyzer!r}, best of {args.repeat}")
        for size, n in zip(args.sizes, frames):
            pool = make_pool(size, n, chunk)
            extra = {k: () if k == "a" else (args.encoding,) for k in paths}
            for k, path in paths.items():  # connections, slot pool, worker imports, numba: not timed
                path.run(pool, min(n, 4 * chunk), chunk, *extra[k])
            best = {k: math.inf for k in paths}
            for _ in range(args.repeat):  # interleaved, so drifts of the machine hit every path alike
                for k, path in paths.items():
                    best[k] = min(best[k], path.run(pool, n, chunk, *extra[k]))
            row = {"size": size, "frames": n, "frame_bytes": size * size * 2, "pool_frames": len(pool),
                   "rate": {k: n / t for k, t in best.items()}}
            results.append(row)
            del pool
            _print_size(say, row)
    finally:
        for path in paths.values():
            path.close()
        shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        cases = []
        suffix = ("" if args.encoding == "raw" else f"-{args.encoding}")
        for row in results:
            peer = row["rate"].get("a")
            for k, label in (("b", "publisher"), ("c", "pipeline")):
                if k not in row["rate"]:
                    continue
                x = row["rate"][k]
                tag = suffix + ("-record" if k == "c" and args.record else "")
                cases.append({"case": f"{label}-{row['size']}{tag}", "unit": "frames", "emlive_per_s": x,
                              "peer": "pyzmq" if peer else None, "peer_per_s": peer,
                              "ratio": x / peer if peer else None})
        print(json.dumps({"benchmark": NAME, "cases": cases}))
    elif "a" in args.cases and len(paths) > 1:
        say("\nratios to raw pyzmq:  " + "   ".join(
            f"{r['size']}²: " + ", ".join(f"{k}/a {r['rate'][k] / r['rate']['a']:.2f}" for k in "bc" if k in r["rate"])
            for r in results))
    return 0


def _print_size(say, row: dict) -> None:
    labels = {"a": "(a) pyzmq PUSH/PULL", "b": "(b) publisher -> receiver", "c": "(c) publisher -> pipeline"}
    peer = row["rate"].get("a")
    say(f"\n{row['size']}x{row['size']} uint16, {row['frames']} frames "
        f"({row['frames'] * row['frame_bytes'] / 1e9:.2f} GB; {row['pool_frames']} distinct)")
    say(f"  {'path':28s} {'frames/s':>10s} {'GB/s':>7s} {'vs (a)':>7s}")
    for k, x in row["rate"].items():
        ratio = f"{x / peer:7.2f}" if peer and k != "a" else " " * 7
        say(f"  {labels[k]:28s} {x:10.0f} {x * row['frame_bytes'] / 1e9:7.2f} {ratio}")


if __name__ == "__main__":
    sys.exit(main())
