"""The thread executor on a real analyzer: FEM through two analyzer threads equals the inline run bit for bit."""

from __future__ import annotations

import math

import numpy as np

from emlive.simulators import DetectorModel
from emlive.simulators.fem_film import FEMFilm
from emlive.stream.executor import InlineExecutor, ThreadExecutor
from emlive.stream.protocol import PROTOCOL_VERSION, Calibration, Chunk, Start
from emlive.stream.types import ResultBuffers, RunInfo


def run_fem(executor, frames: np.ndarray, haadf: np.ndarray, sim: FEMFilm, chunk: int, params: dict):
    """Chunks through ``executor`` as the pipeline host feeds it; partials merged in completion order."""
    from emlive.analyzers.fem import FemAnalyzer

    n = frames.shape[0]
    start = Start(version=PROTOCOL_VERSION, run_uid="fem-threads", frame_shape=frames.shape[1:], dtype="uint16",
                  scan_shape=(n,), chunk_frames=chunk, positions=["haadf"],
                  calibration=Calibration(reciprocal_pixel_size=2 * math.pi * sim.dk))
    host = FemAnalyzer(**params)
    run = RunInfo.from_start(start)
    host.prepare(run)
    store = ResultBuffers(run, host.results(run))
    host.initialize(store)
    order = []

    def merge(completions):
        for c in completions:
            order.append(c.chunk.seq)
            for _, p in c.partials:
                host.merge(store, p)

    executor.start_run(start, [("fem", params)])
    for seq, first in enumerate(range(0, n, chunk)):
        count = min(chunk, n - first)
        while executor.capacity() == 0:
            merge(executor.poll(50))
        view = executor.allocate(count, frames.shape[1:], frames.dtype)
        view[...] = frames[first:first + count]
        executor.submit(Chunk(version=PROTOCOL_VERSION, run_uid=start.run_uid, seq=seq, first=first, count=count,
                              positions={"haadf": haadf[first:first + count].tolist()}), view)
        merge(executor.poll(0))
    done, outcome = executor.finish_run()
    merge(done)
    host.finalize(store)
    assert not outcome.errors
    return store, order


def test_fem_through_threads_equals_inline_bit_for_bit():
    sim = FEMFilm(scan_shape=(12, 12), detector=DetectorModel(shape=(64, 64)), dose=2e4, seed=3)
    frames, haadf = sim.frames(0, 144), sim.haadf(0, 144)
    truth = sim.ground_truth()
    params = {"thickness": {"bins": [20.0, 30.0, 40.01], "black": truth["haadf_black"],
                            "slope": truth["haadf_slope"]}}
    inline, _ = run_fem(InlineExecutor(), frames, haadf, sim, 16, params)
    threads = ThreadExecutor(2, max_pending=3)    # back-pressure engages: 9 chunks, at most 3 in flight
    try:
        got, order = run_fem(threads, frames, haadf, sim, 16, params)
    finally:
        threads.close()
    assert order == list(range(9))                # completions in submission order
    for name in inline.arrays:
        assert np.array_equal(np.asarray(got[name]), np.asarray(inline[name]), equal_nan=True), name
    assert np.isfinite(got["v_omega"]).any()
