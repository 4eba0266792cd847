"""Data types shared by the pipeline and the analyzers: runs, chunks, result specs and buffers.

They live in ``stream`` because the executors allocate and fill them; the analyzer
contract (``emlive.analyzers.base``) re-exports them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .protocol import Calibration, Start

ResultKind = Literal["map", "curve", "stack", "volume", "scalar", "frame"]
MergeMode = Literal["frames", "sum", "max", "tile", "custom"]


@dataclass(frozen=True)
class RunInfo:
    """What an analyzer may know about a run: frames, scan geometry, calibration, metadata."""

    run_uid: str
    frame_shape: tuple[int, int]
    dtype: str
    scan_shape: tuple[int, ...]
    calibration: Calibration = field(default_factory=Calibration)
    boundary_frames: int = 0
    chunk_frames: int = 64
    sample: dict = field(default_factory=dict)
    plan: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return math.prod(self.scan_shape)

    @property
    def n_segments(self) -> int:
        """Number of boundary segments (tilts, repeats); 0 when the run declares none."""
        return -(-self.n_frames // self.boundary_frames) if self.boundary_frames else 0

    @classmethod
    def from_start(cls, start: Start) -> RunInfo:
        return cls(run_uid=start.run_uid, frame_shape=tuple(start.frame_shape), dtype=start.dtype,
                   scan_shape=tuple(start.scan_shape), calibration=start.calibration,
                   boundary_frames=start.boundary_frames, chunk_frames=start.chunk_frames,
                   sample=dict(start.sample), plan=dict(start.plan))


@dataclass(frozen=True)
class Tile:
    """A rectangle of detector pixels, the unit of work of pixel-partitioned analyzers."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0


def split_tiles(frame_shape: tuple[int, int], n: int) -> list[Tile]:
    """Split a frame into ``n`` bands of rows (contiguous in memory), as even as possible."""
    ny, nx = frame_shape
    n = max(1, min(n, ny))
    edges = np.linspace(0, ny, n + 1).round().astype(int)
    return [Tile(int(a), int(b), 0, nx) for a, b in zip(edges[:-1], edges[1:])]


@dataclass
class FrameChunk:
    """A stack of consecutive frames of one run, as an analyzer sees it.

    ``frames`` is (n, qy, qx), or (n, th, tw) restricted to ``tile`` for a
    pixel-partitioned analyzer. Frame ``k`` has scan index ``first + k``.
    """

    seq: int
    first: int
    frames: np.ndarray
    timestamps: np.ndarray | None = None
    positions: dict[str, np.ndarray] = field(default_factory=dict)
    tile: Tile | None = None

    @property
    def count(self) -> int:
        return int(self.frames.shape[0])

    @property
    def indices(self) -> np.ndarray:
        return np.arange(self.first, self.first + self.count)


@dataclass(frozen=True)
class ResultSpec:
    """Declares one output before it is computed, so buffers, viewer and files need no special cases.

    ``shape`` is the full buffer shape. For ``merge="frames"`` its first axis is the
    frame index (n_frames, ...), viewed as ``scan_shape + shape[1:]``. ``axes`` names
    every axis of the *viewed* array; ``units`` is the unit of the values.
    """

    kind: ResultKind
    shape: tuple[int, ...]
    dtype: str = "float64"
    axes: tuple[str, ...] = ()
    units: str = ""
    merge: MergeMode = "frames"
    description: str = ""
    fill: float = math.nan


@dataclass
class Partial:
    """What ``process`` returns: result values for frames ``first .. first+count-1`` (or a tile)."""

    first: int
    count: int
    values: dict[str, np.ndarray]
    tile: Tile | None = None


class ResultBuffers:
    """The live result arrays of one analyzer, allocated from its declared specs."""

    def __init__(self, run: RunInfo, specs: dict[str, ResultSpec]) -> None:
        self.run = run
        self.specs = dict(specs)
        self.arrays: dict[str, np.ndarray] = {}
        self.version = 0  # bumped at every merge, so snapshots send only what changed
        for name, spec in self.specs.items():
            floating = np.issubdtype(np.dtype(spec.dtype), np.floating)
            if spec.merge == "sum":
                fill = 0
            elif spec.merge == "max":
                fill = -np.inf if floating else np.iinfo(spec.dtype).min
            else:
                fill = spec.fill if floating else 0
            self.arrays[name] = np.full(spec.shape, fill, dtype=spec.dtype)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    def view(self, name: str) -> np.ndarray:
        """The array as the user sees it: frame-indexed results reshaped to the scan."""
        arr, spec = self.arrays[name], self.specs[name]
        if spec.merge == "frames":
            return arr.reshape(self.run.scan_shape + arr.shape[1:])
        return arr

    def merge_default(self, partial: Partial) -> None:
        """Merge by each result's declared mode; ``custom`` results need the analyzer's own merge."""
        for name, value in partial.values.items():
            spec = self.specs[name]
            dest = self.arrays[name]
            if spec.merge == "frames":
                dest[partial.first:partial.first + partial.count] = value
            elif spec.merge == "sum":
                dest += value
            elif spec.merge == "max":
                np.maximum(dest, value, out=dest)
            elif spec.merge == "tile":
                if partial.tile is None:
                    raise ValueError(f"result {name!r} merges by tile but the partial has no tile")
                dest[(..., *partial.tile.slices)] = value
            else:
                raise NotImplementedError(
                    f"result {name!r} declares merge='custom': please implement a suitable merge method")
        self.version += 1
