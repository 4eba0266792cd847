"""Messages between the pipeline host and its worker processes (ZeroMQ over ipc://).

Headers are msgpack; arrays of partial results travel as raw buffers in the
following parts. Frames never travel here: they sit in the shared slots.
"""

from __future__ import annotations

import msgspec
import numpy as np

from .types import Partial, Tile


class StartTask(msgspec.Struct, tag="start"):
    start: bytes              # the run's Start header, msgpack
    analyzers: list[tuple[str, dict]]
    factory: str              # "module:function" building an analyzer from (name, params)
    tile: tuple[int, int, int, int] | None
    shm_path: str
    slot_bytes: int
    record: dict = {}         # recorder role: {"path": ..., "compression": ...}


class ChunkTask(msgspec.Struct, tag="chunk"):
    task: int
    slot: int
    seq: int
    first: int
    count: int
    frame_work: bool          # run the frame-partitioned analyzers on this chunk
    timestamps: list[float] = []
    positions: dict[str, list[float]] = {}
    compressed_sizes: list[int] = []   # recorder: per-frame bslz4 sizes of the payload in part 1


class FinishTask(msgspec.Struct, tag="finish"):
    summary: dict = {}


class StopTask(msgspec.Struct, tag="stop"):
    pass


Task = StartTask | ChunkTask | FinishTask | StopTask


class PartialHeader(msgspec.Struct, array_like=True):
    analyzer: int
    first: int
    count: int
    tile: tuple[int, int, int, int] | None
    names: list[str]
    dtypes: list[str]
    shapes: list[tuple[int, ...]]


class Done(msgspec.Struct, tag="done"):
    worker: int
    task: int                 # -1 for the end-of-run (finish) reply
    partials: list[PartialHeader] = []
    frames_written: int = 0
    error: str = ""


task_encoder = msgspec.msgpack.Encoder()
task_decoder = msgspec.msgpack.Decoder(Task)
done_decoder = msgspec.msgpack.Decoder(Done)


def encode_done(worker: int, task: int, partials: list[tuple[int, Partial]], *,
                frames_written: int = 0, error: str = "") -> list:
    """A worker's reply: header plus one buffer per partial array."""
    headers, buffers = [], []
    for index, p in partials:
        arrays = [np.ascontiguousarray(v) for v in p.values.values()]
        tile = (p.tile.y0, p.tile.y1, p.tile.x0, p.tile.x1) if p.tile else None
        headers.append(PartialHeader(index, p.first, p.count, tile, list(p.values),
                                     [a.dtype.str for a in arrays], [a.shape for a in arrays]))
        buffers.extend(arrays)
    done = Done(worker, task, headers, frames_written, error)
    return [task_encoder.encode(done), *buffers]


def decode_done(parts: list) -> tuple[Done, list[tuple[int, Partial]]]:
    done = done_decoder.decode(parts[0])
    out, k = [], 1
    for h in done.partials:
        values = {}
        for name, dtype, shape in zip(h.names, h.dtypes, h.shapes):
            values[name] = np.frombuffer(parts[k], dtype=np.dtype(dtype)).reshape(shape)
            k += 1
        tile = Tile(*h.tile) if h.tile else None
        out.append((h.analyzer, Partial(h.first, h.count, values, tile)))
    return done, out
