"""The Analyzer contract: a map-reduce over chunks of frames, modelled on LiberTEM's UDFs.

The same analyzer runs inline in a test, in worker processes during a live run, and
over a recording on replay. Analyzers hold no sockets and do no I/O.

Two partitionings, declared by the class:

* ``partitioning = "frame"``: chunks are processed in any order by any worker;
  ``merge`` must not depend on the order (results are merged in submission order
  anyway, so float sums are reproducible bit for bit).
* ``partitioning = "pixel"``: state per detector pixel, frames in time order. The
  executor splits the frame into tiles; each worker keeps the state of one tile
  (:meth:`PixelAnalyzer.init_tile`) and sees every chunk, in order, cut to its tile.

Boundary hook: an analyzer that also implements :class:`BoundaryHook` is told when
a segment declared by the stream (``Start.boundary_frames``: a tilt, a repeat) is
complete, so heavy work runs once per segment in the host, not once per chunk.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

from emlive.stream.types import FrameChunk, Partial, ResultBuffers, ResultSpec, RunInfo, Tile

__all__ = ["Analyzer", "PixelAnalyzer", "BoundaryHook", "FrameChunk", "Partial",
           "ResultBuffers", "ResultSpec", "RunInfo", "Tile", "scan_axes"]


def scan_axes(scan_shape: tuple[int, ...]) -> tuple[str, ...]:
    """Names of the scan axes of a map result: ``frame``, ``scan_y, scan_x`` or ``tilt, scan_y, scan_x``."""
    names = {1: ("frame",), 2: ("scan_y", "scan_x"), 3: ("tilt", "scan_y", "scan_x")}
    return names.get(len(scan_shape), tuple(f"scan_{k}" for k in range(len(scan_shape))))


class Analyzer(ABC):
    """A frame-partitioned analysis. Subclasses declare results and process chunks.

    Parameters are small and serialisable (a recipe, not arrays): the executor
    rebuilds the analyzer in each worker from ``name`` and ``params``.
    """

    name: ClassVar[str]
    partitioning: ClassVar[Literal["frame", "pixel"]] = "frame"

    def __init__(self, **params: Any) -> None:
        self.params = params

    @abstractmethod
    def results(self, run: RunInfo) -> dict[str, ResultSpec]:
        """Declare every output (kind, shape, dtype, axes, units, merge mode)."""

    def prepare(self, run: RunInfo) -> None:
        """Build per-run operators (masks, matrices) once; called in every worker before the first chunk."""

    @abstractmethod
    def process(self, chunk: FrameChunk) -> Partial:
        """Pure: frames (n, qy, qx) of scan indices ``chunk.indices`` -> partial results."""

    def merge(self, store: ResultBuffers, partial: Partial) -> None:
        """Merge a partial into the live buffers; the default follows each spec's ``merge`` mode."""
        store.merge_default(partial)

    def initialize(self, store: ResultBuffers) -> None:
        """Optional: fill results known before any frame (axis coordinates such as q or r), in the host."""

    def finalize(self, store: ResultBuffers) -> None:
        """Optional end-of-run step in the host (e.g. NMF over all curves)."""

    def query(self, store: ResultBuffers, request: dict) -> dict[str, np.ndarray]:
        """Optional: answer a question about the live results (e.g. a similarity map to a chosen pixel).

        Runs in the host between merges; ``request`` is the client's message. Returns
        named arrays. Raises ``ValueError`` for a request the analyzer does not know.
        """
        raise ValueError(f"analyzer {self.name!r} answers no queries")


class PixelAnalyzer(Analyzer):
    """A pixel-partitioned analysis: per-pixel state that needs frames in time order."""

    partitioning: ClassVar[Literal["frame", "pixel"]] = "pixel"
    #: True: ``process_tile`` gets whole frames (``chunk.tile`` still names its tile), for work that
    #: needs the full field of view first, such as registering each frame before correlating pixels.
    full_frames: ClassVar[bool] = False

    @abstractmethod
    def init_tile(self, run: RunInfo, tile: Tile) -> Any:
        """Create the state of one tile (it lives in one worker for the whole run)."""

    @abstractmethod
    def process_tile(self, state: Any, chunk: FrameChunk) -> Partial | None:
        """Update the tile state with the next frames (cut to the tile); optionally emit a live partial."""

    @abstractmethod
    def finish_tile(self, state: Any) -> Partial | None:
        """The tile's final partial at the end of the run."""

    def process(self, chunk: FrameChunk) -> Partial:
        raise TypeError(f"{type(self).__name__} is pixel-partitioned: the executor calls process_tile")


@runtime_checkable
class BoundaryHook(Protocol):
    """Optional: react when a declared segment of the run is complete.

    ``on_boundary`` runs in the host after every frame of segment ``index``
    (frames ``index*B .. (index+1)*B - 1``) has been merged into ``store``; it may
    read and write ``store`` only. At the end of a run, segments left incomplete by
    missing frames are reported with ``complete=False``.
    """

    def on_boundary(self, store: ResultBuffers, index: int, complete: bool) -> None: ...
