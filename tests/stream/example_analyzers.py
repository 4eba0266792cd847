"""Small analyzers that exercise each part of the contract, with numpy references.

Built in worker processes through the factory ``example_analyzers:build``.
"""

from __future__ import annotations

import time

import numpy as np

from emlive.analyzers.base import Analyzer, FrameChunk, Partial, PixelAnalyzer, ResultBuffers, ResultSpec, RunInfo, Tile


class FrameTotal(Analyzer):
    """Frame-partitioned: the total of every frame, and a float sum frame (order-sensitive rounding)."""

    name = "total"

    def results(self, run: RunInfo) -> dict[str, ResultSpec]:
        return {"total": ResultSpec("map", (run.n_frames,), "float64", ("scan_y", "scan_x"), "counts"),
                "mean_frame": ResultSpec("frame", run.frame_shape, "float64", ("qy", "qx"), "counts", merge="sum")}

    def process(self, chunk: FrameChunk) -> Partial:
        f = chunk.frames.astype(np.float64)
        delay = self.params.get("delay_s", 0.0)
        if delay:
            time.sleep(delay)  # a deliberately slow analyzer, for back-pressure tests
        return Partial(chunk.first, chunk.count, {"total": f.sum(axis=(1, 2)),
                                                  "mean_frame": (f / 7.0).sum(axis=0)})


class LagProduct(PixelAnalyzer):
    """Pixel-partitioned: per pixel sum of I(t)·I(t-1); wrong unless frames arrive in order per tile."""

    name = "lag"

    def results(self, run: RunInfo) -> dict[str, ResultSpec]:
        return {"lag1": ResultSpec("frame", run.frame_shape, "float64", ("qy", "qx"), "counts²", merge="tile"),
                "frames_seen": ResultSpec("frame", run.frame_shape, "int64", ("qy", "qx"), "", merge="tile")}

    def init_tile(self, run: RunInfo, tile: Tile):
        return {"prev": None, "acc": np.zeros(tile.shape), "n": np.zeros(tile.shape, np.int64)}

    def process_tile(self, state, chunk: FrameChunk):
        f = chunk.frames.astype(np.float64)
        if state["prev"] is not None:
            state["acc"] += f[0] * state["prev"]
        state["acc"] += (f[1:] * f[:-1]).sum(axis=0)
        state["prev"] = f[-1].copy()
        state["n"] += len(f)
        return Partial(chunk.first, chunk.count, {"lag1": state["acc"].copy(), "frames_seen": state["n"].copy()})

    def finish_tile(self, state):
        return Partial(0, 0, {"lag1": state["acc"], "frames_seen": state["n"]})


class SegmentSum(Analyzer):
    """Boundary hook: at the end of each segment, sum the segment's frame totals once."""

    name = "segments"

    def results(self, run: RunInfo) -> dict[str, ResultSpec]:
        return {"total": ResultSpec("map", (run.n_frames,), "float64", ("frame",), "counts"),
                "segment_sum": ResultSpec("curve", (run.n_segments,), "float64", ("segment",), "counts",
                                          merge="custom"),
                "segment_complete": ResultSpec("curve", (run.n_segments,), "int8", ("segment",), "",
                                               merge="custom", fill=-1),
                "order": ResultSpec("curve", (run.n_segments,), "int64", ("segment",), "", merge="custom")}

    def process(self, chunk: FrameChunk) -> Partial:
        return Partial(chunk.first, chunk.count, {"total": chunk.frames.sum(axis=(1, 2), dtype=np.float64)})

    def merge(self, store: ResultBuffers, partial: Partial) -> None:
        store.merge_default(partial)

    def on_boundary(self, store: ResultBuffers, index: int, complete: bool) -> None:
        b = store.run.boundary_frames
        store["segment_sum"][index] = np.nansum(store["total"][index * b:(index + 1) * b])
        store["segment_complete"][index] = int(complete)
        store["order"][index] = int(np.count_nonzero(store["order"])) + 1


class BufferOrigin(Analyzer):
    """Where each chunk's frames live: 1 in the received ZeroMQ message itself, 0 in a buffer they were copied to."""

    name = "origin"

    def results(self, run: RunInfo) -> dict[str, ResultSpec]:
        return {"in_message": ResultSpec("map", (run.n_frames,), "float64", ("frame",), "")}

    def process(self, chunk: FrameChunk) -> Partial:
        import zmq

        root = chunk.frames
        while isinstance(root, np.ndarray) and root.base is not None:
            root = root.base
        in_message = isinstance(root, memoryview) and isinstance(root.obj, zmq.Frame)
        return Partial(chunk.first, chunk.count, {"in_message": np.full(chunk.count, float(in_message))})


ANALYZERS = {a.name: a for a in (FrameTotal, LagProduct, SegmentSum, BufferOrigin)}


def build(name: str, params: dict):
    if name in ANALYZERS:
        return ANALYZERS[name](**params)
    from emlive.analyzers.registry import build_analyzer
    return build_analyzer(name, params)


class Crash(Analyzer):
    """Kills its worker process at a given scan index (in worker processes only), to test recovery."""

    name = "crash"

    def results(self, run: RunInfo) -> dict[str, ResultSpec]:
        return {"seen": ResultSpec("map", (run.n_frames,), "float64", ("frame",), "")}

    def process(self, chunk: FrameChunk) -> Partial:
        import multiprocessing
        import os

        at = self.params.get("at", -1)
        if multiprocessing.parent_process() is not None and chunk.first <= at < chunk.first + chunk.count:
            os._exit(3)
        return Partial(chunk.first, chunk.count, {"seen": np.ones(chunk.count)})


ANALYZERS["crash"] = Crash


class CrashAtFinish(PixelAnalyzer):
    """Kills the worker holding the top tile at the end of the run (worker processes only)."""

    name = "crash_at_finish"

    def results(self, run: RunInfo) -> dict[str, ResultSpec]:
        return {"n": ResultSpec("frame", run.frame_shape, "int64", ("qy", "qx"), "", merge="tile")}

    def init_tile(self, run: RunInfo, tile: Tile):
        return {"tile": tile, "n": np.zeros(tile.shape, np.int64)}

    def process_tile(self, state, chunk: FrameChunk):
        state["n"] += chunk.count
        return None

    def finish_tile(self, state):
        import multiprocessing
        import os

        if multiprocessing.parent_process() is not None and state["tile"].y0 == 0:
            os._exit(4)
        return Partial(0, 0, {"n": state["n"]})


ANALYZERS["crash_at_finish"] = CrashAtFinish
