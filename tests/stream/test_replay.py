"""Tests of emlive.stream.replay: a recorded run replays chunk for chunk, bit for bit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest

import importlib
from emlive.stream.errors import UsageError
from emlive.stream.protocol import PROTOCOL_VERSION, Calibration, Start
from emlive.stream.publisher import FramePublisher
from emlive.stream.receiver import FrameReceiver, ReceivedChunk
from emlive.stream.recorder import Recorder
from emlive.stream.replay import replay
from emlive.stream.state import Gap, RunClosed, RunStarted

replay_mod = importlib.import_module("emlive.stream.replay")  # the package re-exports a function of this name

SCAN = (4, 5)
FRAME = (24, 20)
CHUNKS = [(0, 6), (6, 2), (8, 5), (13, 1), (14, 6)]  # irregular, as a batching source sends them


@dataclass
class Seen:
    """One chunk as a receiver got it."""

    first: int
    count: int
    frames: np.ndarray
    timestamps: list[float]
    positions: dict[str, list[float]]
    payload: bytes


def known_frames() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.poisson(2.0, (SCAN[0] * SCAN[1], *FRAME)).astype("uint16")


def publish(address: str, encoding: str, frames: np.ndarray) -> Start:
    with FramePublisher(address) as pub:
        start = pub.start(FRAME, "uint16", SCAN, chunk_frames=6, encoding=encoding,
                          calibration=Calibration(reciprocal_pixel_size=0.01), sample={"name": "glass"},
                          plan={"plan_name": "raster", "positions": ["tilt", "temperature"]})
        for k, (first, count) in enumerate(CHUNKS):
            idx = np.arange(first, first + count)
            # chunk 3 carries no temperature: a replay must not invent one
            positions = {"tilt": idx * 0.5} if k == 3 else {"tilt": idx * 0.5, "temperature": 300 + idx * 0.1}
            pub.send_chunk(frames[first:first + count], first, timestamps=100.0 + idx * 0.003, positions=positions)
        pub.end()
    return start


def receive(receiver: FrameReceiver, recorder_path=None, compression="none"):
    """Collect one run's chunks; record them on the way, as the pipeline host does."""
    seen: list[Seen] = []
    start = closed = None
    gaps = []
    rec = None
    for event in receiver.run_events(idle_timeout=10):
        if isinstance(event, RunStarted):
            start = event.start
            if recorder_path is not None:
                rec = Recorder(recorder_path, start, compression)
        elif isinstance(event, ReceivedChunk):
            c = event.chunk
            seen.append(Seen(c.first, c.count, event.frames.copy(), list(c.timestamps),
                             {k: list(v) for k, v in c.positions.items()}, bytes(event.payload)))
            if rec is not None:
                compressed = None
                if c.encoding == "bslz4":
                    edges = np.cumsum([0, *c.sizes]).tolist()
                    compressed = [event.payload[a:b] for a, b in zip(edges[:-1], edges[1:])]
                rec.write(c.first, event.frames, timestamps=c.timestamps or None, positions=c.positions,
                          compressed=compressed)
        elif isinstance(event, Gap):
            gaps.append(event.missing)
        elif isinstance(event, RunClosed):
            closed = event
    if rec is not None:
        rec.close({"status": closed.counters.status, "frames": closed.counters.frames})
    return start, seen, closed, gaps


@pytest.mark.parametrize(("encoding", "compression"),
                         [("raw", "none"), ("bslz4", "bslz4"), ("raw", "bslz4"), ("bslz4", "none")])
def test_replay_equals_live_chunk_for_chunk(tmp_path, encoding, compression):
    frames = known_frames()
    path = tmp_path / "run.h5"
    with FrameReceiver() as live_rx, FrameReceiver() as replay_rx, ThreadPoolExecutor(1) as pool:
        sent = pool.submit(publish, live_rx.address, encoding, frames)
        live_start, live, live_closed, _ = receive(live_rx, path, compression)
        assert sent.result() == live_start
        assert live_closed.counters.status == "success"

        done = pool.submit(replay, path, replay_rx.address)
        start, again, closed, gaps = receive(replay_rx)
        end = done.result()

    assert [(s.first, s.count) for s in live] == CHUNKS
    assert np.array_equal(np.concatenate([s.frames for s in live]), frames)
    assert end.status == "success" and end.frames_sent == 20 and end.chunks_sent == len(CHUNKS)
    assert closed.counters.status == "success" and closed.counters.n_missing == 0 and not gaps
    assert start.run_uid != live_start.run_uid
    assert start.plan == {**live_start.plan, "replay_of": live_start.run_uid}
    for field in ("frame_shape", "dtype", "scan_shape", "chunk_frames", "encoding", "calibration", "sample",
                  "boundary_frames", "stream"):
        assert getattr(start, field) == getattr(live_start, field)
    assert len(again) == len(live)
    for a, b in zip(again, live):
        assert (a.first, a.count) == (b.first, b.count)
        assert np.array_equal(a.frames, b.frames)
        assert a.timestamps == b.timestamps  # float64 round trip through the file: exact
        assert a.positions == b.positions
        assert a.payload == b.payload  # same encoding, byte for byte
    assert "temperature" not in again[3].positions


def test_replay_sends_only_written_frames_and_reports_the_hole(tmp_path):
    frames = known_frames()
    start = Start(version=PROTOCOL_VERSION, run_uid="partial", frame_shape=FRAME, dtype="uint16",
                  scan_shape=SCAN, chunk_frames=6, encoding="bslz4")
    path = tmp_path / "partial.h5"
    with Recorder(path, start, "bslz4") as rec:  # as a killed run: chunk 6..8 never arrived, no end
        rec.write(0, frames[:6])
        rec.write(8, frames[8:13])
    with FrameReceiver() as rx, ThreadPoolExecutor(1) as pool:
        done = pool.submit(replay, path, rx.address)
        _, again, closed, gaps = receive(rx)
        end = done.result()
    assert [(s.first, s.count) for s in again] == [(0, 6), (8, 5)]
    assert np.array_equal(again[1].frames, frames[8:13])
    assert again[0].timestamps == [] and again[0].positions == {}  # none recorded, none sent
    assert gaps == [(6, 8)]
    assert end.frames_sent == 11


def test_original_rate_reproduces_the_recorded_spacing(tmp_path, monkeypatch):
    """Paced on a fake clock: the delays asked for are the recorded ones, and nobody sleeps."""
    now = [0.0]
    delays = []

    def fake_sleep(dt):
        delays.append(dt)
        now[0] += dt

    monkeypatch.setattr(replay_mod, "_clock", lambda: now[0])
    monkeypatch.setattr(replay_mod, "_sleep", fake_sleep)
    frames = known_frames()
    start = Start(version=PROTOCOL_VERSION, run_uid="timed", frame_shape=FRAME, dtype="uint16",
                  scan_shape=SCAN, chunk_frames=6)
    path = tmp_path / "timed.h5"
    with Recorder(path, start) as rec:
        for first, count in CHUNKS:
            rec.write(first, frames[first:first + count], timestamps=50.0 + 0.25 * np.arange(first, first + count))
    with FrameReceiver() as rx, ThreadPoolExecutor(1) as pool:
        done = pool.submit(replay, path, rx.address, rate="original", progress=True)
        _, again, _, _ = receive(rx)
        done.result()
    assert [(s.first, s.count) for s in again] == CHUNKS
    firsts = [first for first, _ in CHUNKS]
    assert delays == pytest.approx(0.25 * np.diff(firsts))


def test_replay_through_a_given_publisher_and_bad_arguments(tmp_path):
    frames = known_frames()
    start = Start(version=PROTOCOL_VERSION, run_uid="given", frame_shape=FRAME, dtype="uint16", scan_shape=SCAN)
    path = tmp_path / "given.h5"
    with Recorder(path, start) as rec:
        rec.write(0, frames[:4])
    with pytest.raises(UsageError, match="rate"):
        replay(path, "tcp://127.0.0.1:1", rate="fast")
    with pytest.raises(UsageError, match="address or a publisher"):
        replay(path)
    with FrameReceiver() as rx, FramePublisher(rx.address) as pub, ThreadPoolExecutor(1) as pool:
        done = pool.submit(replay, path, None, publisher=pub)
        replayed_start, again, _, _ = receive(rx)
        assert done.result().frames_sent == 4
        assert not pub.socket.closed  # the caller's publisher stays open
    assert replayed_start.plan == {"replay_of": "given"}
    assert np.array_equal(again[0].frames, frames[:4])
