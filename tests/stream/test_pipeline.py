"""The pipeline host end to end: executors agree, back-pressure loses nothing, runs follow runs."""

import numpy as np
import pytest
from serving import running_server, wait_closed

from emlive.stream.client import PipelineClient, SnapshotSubscriber
from emlive.stream.publisher import FramePublisher

ANALYZERS = [("total", {}), ("lag", {}), ("segments", {})]


def frames(n, shape=(24, 20), seed=1):
    return np.random.default_rng(seed).poisson(5.0, (n, *shape)).astype(np.uint16)


def acquire(server, data, scan_shape, chunk_frames=16, end_status="success", **start_kw):
    pub = FramePublisher(server.data_address)
    start = pub.start(data.shape[1:], str(data.dtype), scan_shape, chunk_frames=chunk_frames, **start_kw)
    pub.send(data)
    pub.end(status=end_status)
    pub.close()
    return start


def results_of(rec):
    return {a: {n: v.copy() for n, v in s.arrays.items()} for a, s in rec.stores.items()}


def test_inline_threads_and_processes_agree_bit_for_bit():
    data = frames(300)
    out = {}
    for kind in ("inline", "threads", "processes"):
        with running_server(kind, ANALYZERS) as server:
            acquire(server, data, (300,), boundary_frames=64)
            rec = wait_closed(server)
            assert rec.status == "complete", rec.summary()
            out[kind] = results_of(rec)
    for kind in ("threads", "processes"):
        for a in out["inline"]:
            for name in out["inline"][a]:
                assert np.array_equal(out["inline"][a][name], out[kind][a][name], equal_nan=True), (kind, a, name)


def test_analyzers_match_numpy_references(executor_kind):
    data = frames(200)
    f = data.astype(np.float64)
    with running_server(executor_kind, ANALYZERS) as server:
        acquire(server, data, (200,), boundary_frames=64)
        rec = wait_closed(server)
    res = results_of(rec)
    assert np.array_equal(res["total"]["total"], f.sum(axis=(1, 2)))
    np.testing.assert_allclose(res["total"]["mean_frame"], (f / 7).sum(axis=0), rtol=1e-12)
    # pixel-partitioned: needs every frame of its tile, in time order, across chunk borders
    np.testing.assert_allclose(res["lag"]["lag1"], (f[1:] * f[:-1]).sum(axis=0), rtol=1e-12)
    assert np.all(res["lag"]["frames_seen"] == 200)
    # boundaries: each segment summed once, when complete, in order; the short last one too
    totals = f.sum(axis=(1, 2))
    expected = [totals[i:i + 64].sum() for i in range(0, 200, 64)]
    np.testing.assert_allclose(res["segments"]["segment_sum"], expected, rtol=1e-12)
    assert list(res["segments"]["segment_complete"]) == [1, 1, 1, 1]
    assert list(res["segments"]["order"]) == [1, 2, 3, 4]


@pytest.mark.parametrize("encoding", ["raw", "bslz4"])
def test_raw_chunks_are_analysed_where_the_message_put_them(executor_kind, encoding):
    """No receive copy where the analyzers share the host's memory (inline, threads): a raw chunk's frames are the
    ZeroMQ message's own bytes. A compressed chunk is decoded into a new array; worker processes read shared slots."""
    data = frames(96)
    with running_server(executor_kind, [("origin", {}), ("total", {})]) as server:
        acquire(server, data, (96,), encoding=encoding)
        rec = wait_closed(server)
    assert rec.status == "complete", rec.summary()
    res = results_of(rec)
    assert np.all(res["origin"]["in_message"] == float(encoding == "raw" and executor_kind != "processes"))
    assert np.array_equal(res["total"]["total"], data.astype(np.float64).sum(axis=(1, 2)))


def test_boundaries_left_incomplete_by_missing_frames_fire_at_the_end():
    data = frames(128)
    with running_server("inline", ANALYZERS) as server:
        pub = FramePublisher(server.data_address)
        pub.start(data.shape[1:], "uint16", (128,), chunk_frames=16, boundary_frames=64)
        pub.send(data[:48])
        pub._seq += 1                    # frames 48..63 lost
        pub.send(data[64:], first=64)
        pub.end()
        pub.close()
        rec = wait_closed(server)
    seg = rec.stores["segments"]
    assert list(seg["segment_complete"]) == [0, 1]
    assert list(seg["order"]) == [2, 1]   # the complete segment fired live, the broken one at the end
    assert rec.status == "incomplete" and rec.summary()["frames_missing"] == 16


def test_backpressure_with_a_slow_analyzer_loses_nothing_and_bounds_memory():
    data = frames(400, (32, 32))
    slow = [("total", {"delay_s": 0.01})]
    # 4 slots of 8 frames: the pipeline can hold only a few chunks, the source must wait
    with running_server("processes", slow, max_buffer_bytes=4 * 8 * 32 * 32 * 2) as server:
        acquire(server, data, (400,), chunk_frames=8)
        rec = wait_closed(server)
        pool = server.pipeline.executor._pool
        assert pool.n_slots == 4
    assert server.stalls > 0, "the pool never filled: back-pressure was not exercised"
    s = rec.summary()
    assert s["frames_sent"] == s["frames_received"] == s["frames_analyzed"] == 400, s
    assert rec.status == "complete"
    assert np.array_equal(rec.stores["total"]["total"], data.astype(np.float64).sum(axis=(1, 2)))


def test_aborted_run_keeps_partial_results_and_the_next_run_is_unaffected(executor_kind, tmp_path):
    a, b = frames(96, seed=2), frames(96, seed=3)
    with running_server(executor_kind, [("total", {})], tmp_path) as server:
        pub = FramePublisher(server.data_address)
        pub.start(a.shape[1:], "uint16", (96,), chunk_frames=16)
        pub.send(a[:32])
        pub.end(status="abort", reason="operator stop")
        pub.start(b.shape[1:], "uint16", (96,), chunk_frames=16)  # same connection: messages stay in order
        pub.send(b)
        pub.end()
        first, second = wait_closed(server, 1), wait_closed(server, 2)
        pub.close()
    assert first.status == "aborted" and first.reason == "operator stop"
    tot = first.stores["total"]["total"]
    assert np.array_equal(tot[:32], a[:32].sum(axis=(1, 2))) and np.isnan(tot[32:]).all()
    assert second.status == "complete"
    assert np.array_equal(second.stores["total"]["total"], b.sum(axis=(1, 2)).astype(float))
    # the partial results were saved with the run
    assert (tmp_path / first.uid / "results.h5").exists()


def test_summary_reconciles_sent_received_recorded_analyzed(tmp_path):
    data = frames(100)
    with running_server("processes", [("total", {})], tmp_path) as server:
        acquire(server, data, (10, 10))
        rec = wait_closed(server)
    s = rec.summary()
    assert (s["frames_sent"], s["frames_received"], s["frames_recorded"], s["frames_analyzed"]) == (100,) * 4
    assert s["status"] == "complete" and s["frames_missing"] == 0


def test_queries_and_snapshots(tmp_path):
    data = frames(64)
    with running_server("processes", [("total", {})], tmp_path) as server:
        sub = SnapshotSubscriber(server.snapshot_address)
        client = PipelineClient(server.query_address)
        assert client.status()["current"] is None
        start = acquire(server, data, (8, 8))
        rec = wait_closed(server)
        snaps = []
        while (got := sub.recv(timeout=2.0)) is not None:
            snaps.append(got)
            if got[0]["final"]:
                break
        runs = client.runs()
        specs = client.results(run=start.run_uid)
        total = client.result("total", "total", run=start.run_uid)
        frame = client.frame(37, run=start.run_uid)
        with pytest.raises(Exception, match="unknown op"):
            client.request(op="nonsense")
        client.close()
        sub.close()
    assert [r["run_uid"] for r in runs] == [start.run_uid] and runs[0]["status"] == "complete"
    assert runs[0]["closed"] and rec.results_path.exists()  # closed means its files are written
    assert {(s["analyzer"], s["name"], s["kind"]) for s in specs} >= {("total", "total", "map")}
    assert total.shape == (8, 8) and np.array_equal(total, data.sum(axis=(1, 2)).reshape(8, 8))
    assert np.array_equal(frame, data[37])           # the raw frame, from the recording
    final = snaps[-1]
    assert final[0]["final"] and final[0]["status"] == "complete"
    assert np.array_equal(final[1][("total", "total")], total)
    assert rec.status == "complete"


def test_snapshots_are_throttled():
    data = frames(2000, (8, 8))
    with running_server("inline", [("total", {"delay_s": 0.002})], snapshot_hz=5) as server:
        acquire(server, data, (2000,), chunk_frames=8)
        rec = wait_closed(server)
        n = server.snapshots_sent
    duration = rec.t_end - rec.t_start
    assert n <= 5 * duration + 2, (n, duration)


@pytest.mark.parametrize("address", ["tcp://0.0.0.0:0", "tcp://*:0", "tcp://192.168.1.5:5555"])
def test_server_refuses_to_bind_beyond_loopback(address):
    from emlive.stream.errors import UsageError
    from emlive.stream.executor import InlineExecutor
    from emlive.stream.pipeline import Pipeline
    from emlive.stream.server import PipelineServer

    with pytest.raises(UsageError, match="loopback"):
        PipelineServer(Pipeline(InlineExecutor(), []), data_address=address)


def test_raw_frames_can_be_read_while_the_run_is_recorded(executor_kind, tmp_path):
    data = frames(64)
    with running_server(executor_kind, [("total", {})], tmp_path) as server:
        pub = FramePublisher(server.data_address)
        start = pub.start(data.shape[1:], "uint16", (8, 8), chunk_frames=8)
        pub.send(data[:32])
        client = PipelineClient(server.query_address)
        import time
        t_end = time.monotonic() + 30
        while client.status()["current"]["frames_recorded"] < 32:
            assert time.monotonic() < t_end, "frames were not recorded"
            time.sleep(0.01)
        live_frame = client.frame(20, run=start.run_uid)      # the writer is still open (SWMR)
        with pytest.raises(Exception, match="never written"):
            client.frame(40, run=start.run_uid)
        pub.send(data[32:], first=32)
        pub.end()
        pub.close()
        rec = wait_closed(server)
        client.close()
    assert np.array_equal(live_frame, data[20]) and rec.status == "complete"


def test_a_pipeline_stalled_longer_than_the_timeout_does_not_close_the_run():
    data = frames(48, (16, 16))
    slow = [("total", {"delay_s": 0.8})]
    # two slots: the pipeline stops reading for much longer than the 0.3 s timeout
    with running_server("processes", slow, max_buffer_bytes=2 * 8 * 16 * 16 * 2, timeout=0.3) as server:
        acquire(server, data, (48,), chunk_frames=8)
        rec = wait_closed(server)
    assert rec.status == "complete", rec.summary()
    assert rec.frames_analyzed == 48


def test_a_dying_worker_fails_the_run_with_its_reason_and_the_next_run_is_unaffected(tmp_path):
    data = frames(128)
    with running_server("processes", [("crash", {"at": 40}), ("total", {})], tmp_path) as server:
        pub = FramePublisher(server.data_address)
        for _ in range(2):
            pub.start(data.shape[1:], "uint16", (128,), chunk_frames=16)
            pub.send(data)
            pub.end()
            if _ == 0:
                first = wait_closed(server, 1)
                # the crash analyzer only crashes at index 40; run 2 sends frames 0..127 shifted past it
                server.pipeline.analyzer_specs[0] = ("crash", {"at": -1})
        second = wait_closed(server, 2)
        pub.close()
    assert first.status == "failed" and "died" in first.reason
    s = first.summary()
    seen = first.stores["crash"]["seen"]
    lost = np.isnan(seen)
    # the chunk holding frame 40 and any queued behind it on the dead worker are lost, whole chunks,
    # and accounted for; everything else was analyzed and every frame recorded
    assert lost[32:48].all() and lost.reshape(8, 16).all(axis=1).sum() * 16 == lost.sum()
    assert s["frames_received"] == s["frames_recorded"] == 128
    assert s["frames_analyzed"] == 128 - lost.sum() and (seen[~lost] == 1).all()
    assert second.status == "complete" and second.frames_analyzed == 128


def test_a_worker_dying_at_the_end_of_the_run_does_not_hang_it():
    data = frames(64)
    with running_server("processes", [("crash_at_finish", {}), ("total", {})]) as server:
        acquire(server, data, (64,))
        rec = wait_closed(server, timeout=60)
    assert rec.status == "failed" and "died" in rec.reason
    n = rec.stores["crash_at_finish"]["n"]
    top = n.shape[0] // 2
    assert (n[:top] == 0).all() and (n[top:] == 64).all()   # the dead tile is missing, the other merged
    # replies the worker queued just before dying may never have left it: each frame is either
    # analyzed correctly or counted as not analyzed, never silently wrong
    total = rec.stores["total"]["total"]
    done = ~np.isnan(total)
    assert rec.frames_analyzed == done.sum()
    assert np.array_equal(total[done], data.sum(axis=(1, 2))[done].astype(float))


def test_positions_declared_at_start_are_recorded_and_replayed(tmp_path):
    from emlive.stream.recorder import Recording
    from emlive.stream.replay import replay

    data = frames(40)
    tilt = np.repeat(np.arange(4.0) * 15 - 30, 10)
    with running_server("inline", [("total", {})], tmp_path) as server:
        pub = FramePublisher(server.data_address)
        pub.start(data.shape[1:], "uint16", (4, 10), chunk_frames=10, positions=["tilt"])
        pub.send(data, positions={"tilt": tilt})
        pub.end()
        pub.close()
        live = wait_closed(server, 1)
        replay(live.recording, server.data_address)
        again = wait_closed(server, 2)
    for rec in (live, again):
        with Recording(rec.recording) as r:
            assert np.array_equal(r.read_meta(0, 40)[1]["tilt"], tilt)
