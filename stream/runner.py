"""Runs one run's analyzers on chunks: the code path shared by the inline executor and the workers.

Sharing it is what makes the executors agree bit for bit: the same calls on the same
frames, merged by the host in the same (submission) order.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .types import FrameChunk, Partial, RunInfo, Tile

AnalyzerFactory = Callable[[str, dict], Any]


def frame_chunk(seq: int, first: int, frames, timestamps, positions) -> FrameChunk:
    """The analyzer's view of a chunk, from the header fields as they came off the wire."""
    return FrameChunk(seq, first, frames, np.asarray(timestamps) if timestamps else None,
                      {k: np.asarray(v) for k, v in positions.items()})


def resolve_factory(path: str) -> AnalyzerFactory:
    """Import ``"module:function"``: workers build analyzers by name without ``stream`` importing them."""
    module, _, attr = path.partition(":")
    if not attr:
        raise ValueError(f"factory must look like 'package.module:function', got {path!r}")
    return getattr(importlib.import_module(module), attr)


class AnalyzerRunner:
    """Holds the analyzers of one run in one process (and the state of one tile of pixel analyzers)."""

    def __init__(self, run: RunInfo, analyzers: Sequence[Any], tile: Tile | None) -> None:
        self.run = run
        self.tile = tile
        self.frame = []
        self.pixel = []
        for i, a in enumerate(analyzers):
            a.prepare(run)
            if a.partitioning == "pixel":
                if tile is not None:
                    self.pixel.append((i, a, a.init_tile(run, tile)))
            else:
                self.frame.append((i, a))

    def process(self, chunk: FrameChunk, frame_work: bool = True) -> list[tuple[int, Partial]]:
        out: list[tuple[int, Partial]] = []
        if frame_work:
            for i, a in self.frame:
                out.append((i, a.process(chunk)))
        if self.pixel:
            assert self.tile is not None
            cut = FrameChunk(chunk.seq, chunk.first, chunk.frames[(slice(None), *self.tile.slices)],
                             chunk.timestamps, chunk.positions, self.tile)
            whole = FrameChunk(chunk.seq, chunk.first, chunk.frames, chunk.timestamps, chunk.positions, self.tile)
            for i, a, state in self.pixel:
                p = a.process_tile(state, whole if getattr(a, "full_frames", False) else cut)
                if p is not None:
                    p.tile = self.tile
                    out.append((i, p))
        return out

    def finish(self) -> list[tuple[int, Partial]]:
        out = []
        for i, a, state in self.pixel:
            p = a.finish_tile(state)
            if p is not None:
                p.tile = self.tile
                out.append((i, p))
        return out
