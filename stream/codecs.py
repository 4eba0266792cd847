"""Frame payload codecs: raw, LZ4 and bitshuffle-LZ4, per frame.

The compressed formats are the ones detectors emit (DECTRIS ``lz4<`` and
``bs16-lz4<``); the work is done by maintained libraries (``lz4``, ``bitshuffle``).
``bslz4`` frames are byte-for-byte the chunks of HDF5's bitshuffle filter, so the
recorder can store them without recompressing.
"""

from __future__ import annotations

import struct

import bitshuffle
import lz4.block
import numpy as np

from .errors import ProtocolError

_BSLZ4_BLOCK_BYTES = 8192  # bitshuffle's default block, as DECTRIS detectors use


def encode_frames(frames: np.ndarray, encoding: str) -> tuple[list[int], bytes | np.ndarray]:
    """Encode a (n, qy, qx) stack; returns (per-frame sizes, payload).

    For ``raw`` the sizes list is empty and the payload is the contiguous array itself
    (sent zero-copy).
    """
    if encoding == "raw":
        return [], np.ascontiguousarray(frames)
    parts = [compress_frame(f, encoding) for f in frames]
    return [len(p) for p in parts], b"".join(parts)


def compress_frame(frame: np.ndarray, encoding: str) -> bytes:
    """Compress one frame in ``lz4`` or ``bslz4``."""
    frame = np.ascontiguousarray(frame)
    if encoding == "lz4":
        return lz4.block.compress(frame, store_size=False)
    if encoding == "bslz4":
        # the HDF5-filter/DECTRIS framing: uint64 BE decoded size, uint32 BE block size in bytes
        block = _BSLZ4_BLOCK_BYTES // frame.itemsize
        body = bitshuffle.compress_lz4(frame, block)
        return struct.pack(">QI", frame.nbytes, block * frame.itemsize) + body.tobytes()
    raise ValueError(f"unknown encoding {encoding!r}; expected raw, lz4 or bslz4")


def decode_frames(payload: memoryview, encoding: str, sizes: list[int], out: np.ndarray) -> None:
    """Decode a payload into ``out`` (n, qy, qx), raising ProtocolError on corrupt data."""
    n = out.shape[0]
    if encoding == "raw":
        if len(payload) != out.nbytes:
            raise ProtocolError("size-mismatch", f"{len(payload)} bytes for {out.nbytes} expected")
        out.reshape(-1)[:] = np.frombuffer(payload, dtype=out.dtype)
        return
    if len(sizes) != n:
        raise ProtocolError("count-mismatch", f"{len(sizes)} frame sizes for {n} frames")
    if sum(sizes) != len(payload):
        raise ProtocolError("size-mismatch", f"sizes add to {sum(sizes)}, payload has {len(payload)} bytes")
    frame_bytes = out[0].nbytes
    offset = 0
    for i, size in enumerate(sizes):
        part = payload[offset:offset + size]
        offset += size
        try:
            if encoding == "lz4":
                raw = lz4.block.decompress(part, uncompressed_size=frame_bytes)
                out[i].reshape(-1)[:] = np.frombuffer(raw, dtype=out.dtype)
            else:
                # the 12-byte header states the decoded size; check it before trusting the block sizes
                if size < 12 or int.from_bytes(part[:8], "big") != frame_bytes:
                    raise ProtocolError("corrupt-payload", f"frame {i}: bslz4 header does not match frame size")
                block = int.from_bytes(part[8:12], "big") // out.itemsize
                buf = np.frombuffer(part[12:], dtype=np.uint8)
                out[i] = bitshuffle.decompress_lz4(buf, out.shape[1:], out.dtype, block)
        except (lz4.block.LZ4BlockError, ValueError, RuntimeError) as exc:
            raise ProtocolError("corrupt-payload", f"frame {i}: {exc}") from None


def split_payload(payload: memoryview, sizes: list[int]) -> list[memoryview]:
    """The per-frame pieces of a compressed payload (views, no copies)."""
    out, offset = [], 0
    for size in sizes:
        out.append(payload[offset:offset + size])
        offset += size
    return out
