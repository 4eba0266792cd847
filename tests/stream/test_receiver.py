"""Receiver over real sockets: zero copy, gaps, timeouts, stale messages, superseded runs."""

import time

import numpy as np
import pytest

from emlive.stream.protocol import PROTOCOL_VERSION, Chunk, encode_header
from emlive.stream.publisher import FramePublisher
from emlive.stream.receiver import FrameReceiver, ReceivedChunk
from emlive.stream.state import Gap, RunClosed, RunStarted


@pytest.fixture
def link():
    rx = FrameReceiver(timeout=0.3)
    tx = FramePublisher(rx.address, linger_ms=0)
    yield tx, rx
    tx.close()
    rx.close()


def frames(n, shape=(16, 16), seed=0):
    return np.random.default_rng(seed).integers(0, 4000, (n, *shape), dtype=np.uint16)


def collect(rx):
    return list(rx.run_events(idle_timeout=10))


@pytest.mark.parametrize("encoding", ["raw", "lz4", "bslz4"])
def test_frames_arrive_intact_in_every_encoding(link, encoding):
    tx, rx = link
    data = frames(50)
    tx.start((16, 16), "uint16", (5, 10), chunk_frames=8, encoding=encoding)
    tx.send(data, positions={"tilt": np.arange(50.0)})
    tx.end()
    events = collect(rx)
    chunks = [e for e in events if isinstance(e, ReceivedChunk)]
    assert np.array_equal(np.concatenate([c.frames for c in chunks]), data)
    assert [c.chunk.seq for c in chunks] == list(range(7))
    assert chunks[1].chunk.positions["tilt"] == list(np.arange(8.0, 16.0))
    closed = events[-1]
    assert isinstance(closed, RunClosed) and closed.counters.status == "success"
    assert closed.counters.frames == closed.counters.frames_sent == 50 and closed.counters.missing == []


def test_raw_frames_are_received_without_copying(link):
    tx, rx = link
    tx.start((256, 256), "uint16", (4,), chunk_frames=4)
    tx.send(frames(4, (256, 256)))
    tx.end()
    chunk = next(e for e in collect(rx) if isinstance(e, ReceivedChunk))
    # the array is a view on the message buffer zmq received into, not a copy
    assert not chunk.frames.flags.owndata
    assert np.shares_memory(chunk.frames, np.frombuffer(chunk.payload, dtype=np.uint8))


def test_gap_reports_the_missing_frame_indices(link):
    tx, rx = link
    data = frames(40)
    tx.start((16, 16), "uint16", (40,), chunk_frames=8)
    tx.send_chunk(data[0:8], 0)
    tx._seq += 2  # chunks 1 and 2 are "lost" on the way
    tx.send_chunk(data[24:32], 24)
    tx.send_chunk(data[32:40], 32)
    tx.frames_sent = 40
    tx.end()
    events = collect(rx)
    gaps = [e for e in events if isinstance(e, Gap)]
    assert len(gaps) == 1 and gaps[0].missing == (8, 24)
    assert gaps[0].seq_expected == 1 and gaps[0].seq_received == 3
    counters = events[-1].counters
    assert counters.missing == [(8, 24)] and counters.n_missing == 16 and counters.frames == 24


def test_silent_stream_times_out_and_run_is_marked_incomplete(link):
    tx, rx = link
    tx.start((16, 16), "uint16", (40,), chunk_frames=8)
    tx.send(frames(8))
    t0 = time.monotonic()
    events = collect(rx)  # the source never sends `end`
    assert isinstance(events[-1], RunClosed)
    assert events[-1].counters.status == "incomplete"
    assert time.monotonic() - t0 >= 0.3


def test_heartbeats_keep_a_quiet_run_open(link):
    tx, rx = link
    rx.state.timeout = 0.6  # a margin over the 50 ms heartbeat period, for a loaded machine
    tx.start((16, 16), "uint16", (40,), chunk_frames=8)
    t_end = time.monotonic() + 1.5
    seen = []
    while time.monotonic() < t_end:
        tx.heartbeat()
        seen += rx.poll(50)
    assert not any(isinstance(e, RunClosed) for e in seen)


def test_new_start_before_end_aborts_the_run_and_discards_its_stale_frames(link):
    tx, rx = link
    data = frames(16)
    first = tx.start((16, 16), "uint16", (16,), chunk_frames=8)
    tx.send(data[:8])
    second = tx.start((16, 16), "uint16", (16,), chunk_frames=8)
    # a late chunk of the superseded run, on the same connection so the order is known
    stale = Chunk(version=PROTOCOL_VERSION, run_uid=first.run_uid, seq=1, first=8, count=8)
    tx.socket.send_multipart([encode_header(stale), data[8:16].tobytes()])
    tx.send(data)
    tx.end()
    events = collect(rx) + collect(rx)
    kinds = [type(e).__name__ for e in events]
    assert kinds[:3] == ["RunStarted", "ReceivedChunk", "RunClosed"]
    assert events[2].counters.status == "abort" and "superseded" in events[2].counters.reason
    rest = [e for e in events[3:] if isinstance(e, ReceivedChunk)]
    assert all(e.chunk.run_uid == second.run_uid for e in rest)
    assert np.array_equal(np.concatenate([e.frames for e in rest]), data)
    assert rx.rejected["stale"] == 1


def test_events_only_after_start(link):
    tx, rx = link
    start = tx.start((16, 16), "uint16", (8,), chunk_frames=8)
    events = rx.poll(1000)
    assert isinstance(events[0], RunStarted) and events[0].start == start


def test_a_receive_batch_ends_at_every_run_transition(link):
    """The host must set a run up before its first chunk is decoded into the run's buffers."""
    tx, rx = link
    tx.start((16, 16), "uint16", (8,), chunk_frames=8)
    tx.send(frames(8))
    tx.end()
    tx.start((16, 16), "uint16", (8,), chunk_frames=8)
    tx.send(frames(8))
    tx.end()
    rx.socket.poll(1000)
    batches = []
    while sum(len(b) for b in batches) < 6:
        batches.append([type(e).__name__ for e in rx.poll(1000, max_messages=64)])
    assert batches[0] == ["RunStarted"]
    assert [e for b in batches for e in b] == ["RunStarted", "ReceivedChunk", "RunClosed"] * 2
    for b in batches:
        assert "RunStarted" not in b[:-1] and "RunClosed" not in b[:-1]
