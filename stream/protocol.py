"""Wire messages of the frame stream.

A stream is a sequence of ZeroMQ multipart messages for one run: ``start``,
``chunk``..., ``end``, and ``heartbeat`` while idle. Part 0 is a msgpack-encoded
header (one of the Structs below, tagged by ``type``); a ``chunk`` carries its
frames in part 1, raw or compressed, sent and received without copying.

Evolution rules: the version is checked before anything else, new fields get
defaults, field types never change. Nothing is ever unpickled from the wire.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

PROTOCOL_VERSION = 1

#: Pixel types a frame may have. Anything else is rejected at the door.
DTYPE_WHITELIST = ("uint8", "uint16", "uint32", "int16", "int32", "float32", "float64")

#: Frame encodings of chunk payloads: ``raw`` (C-ordered frames back to back),
#: ``lz4`` (one LZ4 block per frame) and ``bslz4`` (bitshuffle-LZ4 per frame, the
#: HDF5 filter/DECTRIS format with its 12-byte header).
ENCODINGS = ("raw", "lz4", "bslz4")

NonNegInt = Annotated[int, Meta(ge=0)]
PosInt = Annotated[int, Meta(ge=1)]
Uid = Annotated[str, Meta(min_length=1, max_length=128)]


class Calibration(msgspec.Struct, frozen=True, omit_defaults=True):
    """Microscope and detector calibration sent with ``start``.

    Units: keV, Å⁻¹ per pixel (q = 2π/d), pixels, degrees, Hz, metres.
    ``center`` is (cy, cx) in pixels; ``ellipse`` is (ratio, angle_deg) of the
    elliptical distortion of the diffraction plane (1, 0 for none).
    """

    beam_energy_kev: float = 300.0
    reciprocal_pixel_size: float | None = None
    center: tuple[float, float] | None = None
    ellipse: tuple[float, float] = (1.0, 0.0)
    gain: float = 1.0
    precession_angle_deg: float = 0.0
    precession_frequency_hz: float = 0.0
    camera_length_m: float | None = None

    def __post_init__(self) -> None:
        values = [self.beam_energy_kev, self.gain, self.precession_angle_deg,
                  self.precession_frequency_hz, *self.ellipse]
        for opt in (self.reciprocal_pixel_size, self.camera_length_m):
            if opt is not None:
                values.append(opt)
        if self.center is not None:
            values.extend(self.center)
        if not all(math.isfinite(v) for v in values):
            raise ValueError("calibration values must be finite")
        if self.beam_energy_kev <= 0 or self.gain <= 0:
            raise ValueError("beam_energy_kev and gain must be > 0")
        if self.reciprocal_pixel_size is not None and self.reciprocal_pixel_size <= 0:
            raise ValueError("reciprocal_pixel_size must be > 0")


class Start(msgspec.Struct, frozen=True, tag="start", omit_defaults=True):
    """Opens a run: what the frames look like and where they go in the scan.

    ``scan_shape`` is e.g. ``(ny, nx)``, ``(n_tilt, ny, nx)`` or ``(n_frames,)``;
    frame ``i`` sits at ``np.unravel_index(i, scan_shape)``. ``boundary_frames``
    declares structure inside the run: every that many frames a segment (a tilt,
    a repeat) is complete. ``chunk_frames`` is the largest chunk the source sends.
    ``positions`` names the per-frame readbacks the chunks will carry (the recorder
    creates their datasets up front).
    """

    version: int
    run_uid: Uid
    frame_shape: tuple[PosInt, PosInt]
    dtype: str
    scan_shape: tuple[PosInt, ...]
    chunk_frames: PosInt = 64
    stream: str = "primary"
    encoding: str = "raw"
    boundary_frames: NonNegInt = 0
    positions: list[str] = []
    calibration: Calibration = msgspec.field(default_factory=Calibration)
    sample: dict = {}
    plan: dict = {}
    time: float = 0.0

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_WHITELIST:
            raise ValueError(f"dtype {self.dtype!r} not in {DTYPE_WHITELIST}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding {self.encoding!r} not in {ENCODINGS}")
        if not 1 <= len(self.scan_shape) <= 4:
            raise ValueError(f"scan_shape must have 1 to 4 axes, got {self.scan_shape}")

    @property
    def n_frames(self) -> int:
        return math.prod(self.scan_shape)


class Chunk(msgspec.Struct, frozen=True, tag="chunk", omit_defaults=True):
    """A stack of ``count`` consecutive frames starting at scan index ``first``.

    ``seq`` counts chunks of the run from 0 without gaps. For compressed
    encodings ``sizes`` lists the byte size of each compressed frame in part 1.
    ``positions`` carries per-frame readbacks (tilt angle, temperature...).
    """

    version: int
    run_uid: Uid
    seq: NonNegInt
    first: NonNegInt
    count: PosInt
    encoding: str = "raw"
    sizes: list[NonNegInt] = []
    timestamps: list[float] = []
    positions: dict[str, list[float]] = {}


class End(msgspec.Struct, frozen=True, tag="end", omit_defaults=True):
    """Closes a run. ``frames_sent`` lets the receiver reconcile."""

    version: int
    run_uid: Uid
    frames_sent: NonNegInt
    chunks_sent: NonNegInt = 0
    status: Literal["success", "abort", "fail"] = "success"
    reason: str = ""


class Heartbeat(msgspec.Struct, frozen=True, tag="heartbeat", omit_defaults=True):
    """Sent while idle so a receiver can tell a quiet source from a dead one."""

    version: int
    run_uid: str = ""
    time: float = 0.0


Message = Start | Chunk | End | Heartbeat


class _Envelope(msgspec.Struct):
    """The two fields read before the full decode, so a future version is named as such."""

    type: str
    version: int


_encoder = msgspec.msgpack.Encoder()


def encode_header(msg: Message) -> bytes:
    """Encode a header struct (part 0 of a message)."""
    return _encoder.encode(msg)


class HeaderDecoder:
    """Decodes part 0 into a typed message; raises :class:`ProtocolError` with a reason code."""

    def __init__(self) -> None:
        self._envelope = msgspec.msgpack.Decoder(_Envelope)
        self._message = msgspec.msgpack.Decoder(Message)

    def decode(self, data: bytes | memoryview) -> Message:
        from .errors import ProtocolError

        try:
            env = self._envelope.decode(data)
        except msgspec.DecodeError as exc:
            raise ProtocolError("undecodable-header", str(exc)) from None
        except msgspec.ValidationError as exc:
            raise ProtocolError("undecodable-header", str(exc)) from None
        if env.version != PROTOCOL_VERSION:
            raise ProtocolError("unknown-version",
                                f"version {env.version}, expected {PROTOCOL_VERSION}")
        if env.type not in ("start", "chunk", "end", "heartbeat"):
            raise ProtocolError("unknown-type", f"type {env.type!r}")
        try:
            return self._message.decode(data)
        except msgspec.ValidationError as exc:
            text = str(exc)
            reason = "non-finite-calibration" if "finite" in text else "invalid-header"
            if "dtype" in text:
                reason = "bad-dtype"
            raise ProtocolError(reason, text) from None
        except msgspec.DecodeError as exc:
            raise ProtocolError("undecodable-header", str(exc)) from None
