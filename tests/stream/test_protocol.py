"""Wire messages: round trips, and every kind of malformed header rejected with its reason."""

import math

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emlive.stream.errors import ProtocolError
from emlive.stream.protocol import (PROTOCOL_VERSION, Calibration, Chunk, End, HeaderDecoder, Heartbeat, Start,
                                    encode_header)
from emlive.stream.receiver import FrameReceiver
from emlive.stream.validation import Limits


def _start(**kw):
    base = dict(version=PROTOCOL_VERSION, run_uid="r1", frame_shape=(8, 8), dtype="uint16", scan_shape=(4, 4),
                chunk_frames=4)
    base.update(kw)
    return Start(**base)


MESSAGES = [
    _start(calibration=Calibration(beam_energy_kev=200.0, reciprocal_pixel_size=0.01, center=(3.5, 3.5)),
           sample={"composition": {"Zr": 0.65, "Cu": 0.175}}, plan={"plan_name": "raster"}, boundary_frames=4),
    Chunk(version=PROTOCOL_VERSION, run_uid="r1", seq=3, first=12, count=4, encoding="lz4", sizes=[1, 2, 3, 4],
          timestamps=[0.0, 0.1, 0.2, 0.3], positions={"tilt": [1.0, 1.0, 1.0, 1.0]}),
    End(version=PROTOCOL_VERSION, run_uid="r1", frames_sent=16, chunks_sent=4, status="abort", reason="user"),
    Heartbeat(version=PROTOCOL_VERSION, run_uid="r1", time=1.5),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip_of_every_message_type(msg):
    assert HeaderDecoder().decode(encode_header(msg)) == msg


def _reason(raw: bytes) -> str:
    with pytest.raises(ProtocolError) as info:
        HeaderDecoder().decode(raw)
    return info.value.reason


def _encoded(**fields) -> bytes:
    return msgspec.msgpack.encode(fields)


def test_unknown_version_is_named_before_anything_else():
    assert _reason(_encoded(type="start", version=99, whatever=1)) == "unknown-version"


def test_unknown_type():
    assert _reason(_encoded(type="frame", version=PROTOCOL_VERSION)) == "unknown-type"


def test_dtype_outside_whitelist():
    bad = msgspec.structs.asdict(_start()) | {"type": "start", "dtype": "object"}
    assert _reason(msgspec.msgpack.encode(bad)) == "bad-dtype"


def test_non_finite_calibration():
    cal = {"beam_energy_kev": math.nan}
    bad = msgspec.structs.asdict(_start()) | {"type": "start", "calibration": cal}
    assert _reason(msgspec.msgpack.encode(bad)) == "non-finite-calibration"
    bad["calibration"] = {"center": [1.0, math.inf]}
    assert _reason(msgspec.msgpack.encode(bad)) == "non-finite-calibration"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_decoder(data):
    try:
        HeaderDecoder().decode(data)
    except ProtocolError as exc:
        assert exc.reason in {"undecodable-header", "unknown-version", "unknown-type", "invalid-header",
                              "bad-dtype", "non-finite-calibration"}


# a valid header with one field replaced by a value of the wrong type or out of range
_MUTATIONS = st.sampled_from([
    ("frame_shape", [0, 8]), ("frame_shape", [8]), ("frame_shape", "8x8"), ("scan_shape", []),
    ("scan_shape", [1, 1, 1, 1, 1]), ("chunk_frames", 0), ("chunk_frames", -3), ("run_uid", ""),
    ("run_uid", "x" * 200), ("dtype", "complex128"), ("encoding", "zip"), ("boundary_frames", -1),
    ("calibration", {"gain": 0.0}), ("calibration", {"reciprocal_pixel_size": -1.0}), ("plan", [1, 2]),
])


@settings(max_examples=60, deadline=None)
@given(_MUTATIONS)
def test_malformed_start_headers_are_rejected_and_receiver_keeps_running(mutation):
    key, value = mutation
    bad = msgspec.structs.asdict(_start()) | {"type": "start", key: value}
    with FrameReceiver() as rx:
        assert rx.handle_parts([msgspec.msgpack.encode(bad)]) == []
        assert sum(rx.rejected.values()) == 1
        # the next good run is received as if nothing happened
        events = rx.handle_parts([encode_header(_start())])
        assert [type(e).__name__ for e in events] == ["RunStarted"]


def _chunk(**kw):
    base = dict(version=PROTOCOL_VERSION, run_uid="r1", seq=0, first=0, count=2)
    base.update(kw)
    return Chunk(**base)


FRAME_BYTES = 8 * 8 * 2


@pytest.mark.parametrize("chunk, payload, reason", [
    (_chunk(), b"\0" * (FRAME_BYTES * 2 - 1), "size-mismatch"),
    (_chunk(count=5), b"\0" * (FRAME_BYTES * 5), "chunk-too-large"),
    (_chunk(first=15), b"\0" * (FRAME_BYTES * 2), "index-out-of-scan"),
    (_chunk(timestamps=[1.0]), b"\0" * (FRAME_BYTES * 2), "count-mismatch"),
    (_chunk(positions={"tilt": [1.0, 2.0, 3.0]}), b"\0" * (FRAME_BYTES * 2), "count-mismatch"),
    (_chunk(encoding="lz4", sizes=[3]), b"\0" * 3, "count-mismatch"),
    (_chunk(encoding="lz4", sizes=[3, 3]), b"\0" * 5, "size-mismatch"),
    (_chunk(encoding="lz4", sizes=[3, 3]), b"\xff" * 6, "corrupt-payload"),
    (_chunk(encoding="bslz4", sizes=[12, 12]), b"\0" * 24, "corrupt-payload"),
])
def test_chunks_that_do_not_fit_their_run_are_rejected(chunk, payload, reason):
    with FrameReceiver() as rx:
        rx.handle_parts([encode_header(_start())])
        assert rx.handle_parts([encode_header(chunk), payload]) == []
        assert rx.rejected[reason] == 1
        good = rx.handle_parts([encode_header(_chunk(seq=1, first=2)), np.zeros((2, 8, 8), "u2").tobytes()])
        assert len(good) >= 1 and good[-1].chunk.first == 2


def test_size_limits_are_configurable():
    with FrameReceiver(limits=Limits(max_frame_pixels=32)) as rx:
        assert rx.handle_parts([encode_header(_start())]) == []
        assert rx.rejected["frame-too-large"] == 1
    with FrameReceiver(limits=Limits(max_header_bytes=10)) as rx:
        assert rx.handle_parts([encode_header(_start())]) == []
        assert rx.rejected["header-too-large"] == 1


def test_wrong_part_counts_are_rejected():
    with FrameReceiver() as rx:
        rx.handle_parts([encode_header(_start())])
        assert rx.handle_parts([encode_header(_chunk())]) == []
        assert rx.handle_parts([encode_header(MESSAGES[3]), b"extra"]) == []
        assert rx.rejected["part-count"] == 2


def test_nothing_is_unpickled():
    import pickle

    with FrameReceiver() as rx:
        assert rx.handle_parts([pickle.dumps({"type": "start", "version": 1})]) == []
        assert rx.rejected["undecodable-header"] == 1
