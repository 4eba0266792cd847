"""Checks every header against configurable limits and against its run, before any buffer is touched.

All checks are pure functions raising :class:`ProtocolError` with a stable reason code;
the receiver logs and counts the code and keeps running.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import ProtocolError
from .protocol import ENCODINGS, Chunk, Start


@dataclass(frozen=True)
class Limits:
    """Sizes beyond which a message is rejected (defaults suit 4D-STEM up to 4k² frames)."""

    max_header_bytes: int = 1 << 20
    max_frame_pixels: int = 4096 * 4096
    max_chunk_frames: int = 4096
    max_chunk_bytes: int = 1 << 30
    max_scan_frames: int = 1 << 28


def check_header_size(nbytes: int, limits: Limits) -> None:
    if nbytes > limits.max_header_bytes:
        raise ProtocolError("header-too-large", f"{nbytes} bytes > {limits.max_header_bytes}")


def check_start(start: Start, limits: Limits) -> None:
    """Reject a start whose frames or scan are beyond the limits."""
    pixels = math.prod(start.frame_shape)
    if pixels > limits.max_frame_pixels:
        raise ProtocolError("frame-too-large", f"{start.frame_shape} > {limits.max_frame_pixels} pixels")
    if start.chunk_frames > limits.max_chunk_frames:
        raise ProtocolError("chunk-too-large", f"chunk_frames {start.chunk_frames} > {limits.max_chunk_frames}")
    chunk_bytes = start.chunk_frames * pixels * np.dtype(start.dtype).itemsize
    if chunk_bytes > limits.max_chunk_bytes:
        raise ProtocolError("chunk-too-large", f"{chunk_bytes} bytes per chunk > {limits.max_chunk_bytes}")
    if start.n_frames > limits.max_scan_frames:
        raise ProtocolError("scan-too-large", f"{start.n_frames} frames > {limits.max_scan_frames}")


def check_chunk(chunk: Chunk, start: Start, payload_bytes: int) -> None:
    """Reject a chunk that does not fit its run: counts, indices, encodings and byte sizes."""
    if chunk.count > start.chunk_frames:
        raise ProtocolError("chunk-too-large", f"{chunk.count} frames > chunk_frames {start.chunk_frames}")
    if chunk.first + chunk.count > start.n_frames:
        raise ProtocolError("index-out-of-scan",
                            f"frames {chunk.first}..{chunk.first + chunk.count - 1} outside scan of {start.n_frames}")
    if chunk.encoding not in ENCODINGS:
        raise ProtocolError("bad-encoding", f"{chunk.encoding!r} not in {ENCODINGS}")
    if chunk.timestamps and len(chunk.timestamps) != chunk.count:
        raise ProtocolError("count-mismatch", f"{len(chunk.timestamps)} timestamps for {chunk.count} frames")
    for key, values in chunk.positions.items():
        if len(values) != chunk.count:
            raise ProtocolError("count-mismatch", f"{len(values)} positions {key!r} for {chunk.count} frames")
    frame_bytes = math.prod(start.frame_shape) * np.dtype(start.dtype).itemsize
    if chunk.encoding == "raw":
        if chunk.sizes:
            raise ProtocolError("size-mismatch", "raw chunks carry no per-frame sizes")
        if payload_bytes != chunk.count * frame_bytes:
            raise ProtocolError("size-mismatch",
                                f"{payload_bytes} bytes for {chunk.count} frames of {frame_bytes} bytes")
    else:
        if len(chunk.sizes) != chunk.count:
            raise ProtocolError("count-mismatch", f"{len(chunk.sizes)} frame sizes for {chunk.count} frames")
        if sum(chunk.sizes) != payload_bytes:
            raise ProtocolError("size-mismatch", f"sizes add to {sum(chunk.sizes)}, payload has {payload_bytes}")
