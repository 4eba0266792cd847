"""FEM benchmark: emlive's FEM analyzer against pyxem's ``get_variance`` and a per-frame numpy reference.

Input: the FEM phantom (``FEMFilm``, 256² uint16 counting detector, HAADF readback), generated once
before any timing; the same frames for every contender.

fem-256
    emlive  ``FemAnalyzer`` (all four estimators, three thickness bins, live curves), in this process:
            ``process`` per chunk of ``--chunk`` frames, ``merge`` into the host's buffers, ``finalize``.
            Timed: every frame through process + merge + finalize, numba compiled before.
    peer    pyxem ``Diffraction2D.get_variance(npt, method="Omega")`` on the same frames (one estimator
            only, in its favour), if pyxem imports; it is slow, so it runs on ``--peer-frames`` frames.
fem-256-numpy
    peer    a per-frame numpy implementation of the four estimators (``np.bincount`` ring sums and
            per-pixel power sums), what a scientist would write without a framework.
fem-256-executor
    emlive  the live path: emlive's ``ProcessExecutor`` with two workers (shared-memory slots, ZeroMQ), each
            chunk copied into a slot as the receiver decodes it, partials merged here as they finish.
fem-256-2proc
    emlive  two worker processes (fork) take groups of ``--group`` chunks in turn (``imap``, in order) and
            return each group's partials as soon as it is done, so this process merges while the workers
            run, as the live pipeline does; no peer (``peer`` null).
fem-256-threads
    emlive  the live path with emlive's ``ThreadExecutor`` (two analyzer threads in this process: the numba
            kernels release the GIL): a raw chunk is analysed where the ZeroMQ message put it, so the frames
            are submitted where they lie in memory (as LiberTEM's in-memory benchmark reads them); partials
            merged here in submission order; no copy, no shared-memory slot, no IPC of partials.
fem-256-threads-copy
    emlive  the same with each chunk first copied into a new array, as a compressed stream is decoded.

Usage::

    .venv/bin/python benchmarks/fem.py            # table
    .venv/bin/python benchmarks/fem.py --json     # one JSON object (DESIGN.md benchmark format)
    .venv/bin/python benchmarks/fem.py --quick    # smoke run
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import math
import multiprocessing
import sys
import time
import warnings

import numpy as np

from harness import reporter

NAME = "fem"
_STATE: dict = {}


def make_input(size: int, n_frames: int):
    from emlive.simulators import DetectorModel
    from emlive.simulators.fem_film import FEMFilm

    side = int(math.ceil(math.sqrt(n_frames)))
    sim = FEMFilm(scan_shape=(side, side), detector=DetectorModel(shape=(size, size)), dk=0.4 * 64 / size / 16,
                  dose=2e5, seed=0)
    frames = sim.frames(0, n_frames)
    return sim, frames, sim.haadf(0, n_frames)


def params_for(sim) -> dict:
    truth = sim.ground_truth()
    return {"thickness": {"bins": [20.0, 26.7, 33.3, 40.01], "black": truth["haadf_black"],
                          "slope": truth["haadf_slope"]}}


def run_emlive(frames, haadf, sim, chunk: int):
    from emlive.analyzers.fem import FemAnalyzer
    from emlive.stream.protocol import Calibration
    from emlive.stream.types import FrameChunk, ResultBuffers, RunInfo

    n = frames.shape[0]
    run = RunInfo("bench", frames.shape[1:], "uint16", (n,), Calibration(reciprocal_pixel_size=2 * math.pi * sim.dk))
    host, worker = FemAnalyzer(**params_for(sim)), FemAnalyzer(**params_for(sim))
    host.prepare(run)
    store = ResultBuffers(run, host.results(run))
    host.initialize(store)
    worker.prepare(run)
    for first in range(0, n, chunk):
        c = FrameChunk(0, first, frames[first:first + chunk], positions={"haadf": haadf[first:first + chunk]})
        host.merge(store, worker.process(c))
    host.finalize(store)
    return store


def _worker(args):
    """Process one group of chunks in a worker; the analyzer is prepared once per process and run."""
    from emlive.analyzers.fem import FemAnalyzer
    from emlive.stream.types import FrameChunk

    token, run, firsts, chunk = args
    frames, haadf, sim = _STATE["frames"], _STATE["haadf"], _STATE["sim"]
    an = _STATE.get("worker")
    if an is None or _STATE.get("worker_token") != token:
        an = FemAnalyzer(**params_for(sim))
        an.prepare(run)
        _STATE.update(worker=an, worker_token=token)
    return [an.process(FrameChunk(0, f, frames[f:f + chunk], positions={"haadf": haadf[f:f + chunk]}))
            for f in firsts]


def run_emlive_2proc(pool, frames, haadf, sim, chunk: int, group: int = 4):
    """Groups of ``group`` chunks stream through the pool; partials merge in order while the workers run."""
    from emlive.analyzers.fem import FemAnalyzer
    from emlive.stream.protocol import Calibration
    from emlive.stream.types import ResultBuffers, RunInfo

    n = frames.shape[0]
    run = RunInfo("bench", frames.shape[1:], "uint16", (n,), Calibration(reciprocal_pixel_size=2 * math.pi * sim.dk))
    host = FemAnalyzer(**params_for(sim))
    host.prepare(run)
    store = ResultBuffers(run, host.results(run))
    host.initialize(store)
    firsts = list(range(0, n, chunk))
    token = _STATE["runs"] = _STATE.get("runs", 0) + 1       # a new run: workers prepare a new analyzer
    tasks = [(token, run, firsts[i:i + group], chunk) for i in range(0, len(firsts), group)]
    for parts in pool.imap(_worker, tasks):
        for p in parts:
            host.merge(store, p)
    host.finalize(store)
    return store


def run_emlive_executor(executor, frames, haadf, sim, chunk: int, copy: bool | None = None) -> None:
    """The live path through an executor (``ProcessExecutor``: shared-memory slots, ZeroMQ; or ``ThreadExecutor``),
    partials merged as they finish. ``copy``: each chunk is copied where the executor wants the receiver to
    decode it; else the frames are submitted as they lie in memory. Default: as the live path does for a raw
    stream (a copy only where the executor needs its own buffer)."""
    from emlive.analyzers.fem import FemAnalyzer
    from emlive.stream.protocol import PROTOCOL_VERSION, Calibration, Chunk, Start
    from emlive.stream.types import ResultBuffers, RunInfo

    n = frames.shape[0]
    params = params_for(sim)
    start = Start(version=PROTOCOL_VERSION, run_uid=f"fem{time.monotonic_ns()}", frame_shape=frames.shape[1:],
                  dtype="uint16", scan_shape=(n,), chunk_frames=chunk, positions=["haadf"],
                  calibration=Calibration(reciprocal_pixel_size=2 * math.pi * sim.dk))
    host = FemAnalyzer(**params)
    run = RunInfo.from_start(start)
    host.prepare(run)
    store = ResultBuffers(run, host.results(run))
    host.initialize(store)

    def merge(completions):
        for c in completions:
            for _, p in c.partials:
                host.merge(store, p)

    if copy is None:
        copy = executor.needs_buffer
    executor.start_run(start, [("fem", params)])
    for seq, first in enumerate(range(0, n, chunk)):
        count = min(chunk, n - first)
        while executor.capacity() == 0:
            merge(executor.poll(5))
        if copy:
            view = executor.allocate(count, frames.shape[1:], frames.dtype)
            view[...] = frames[first:first + count]   # the receiver decodes into the buffer: one copy
        else:
            view = frames[first:first + count]
        executor.submit(Chunk(version=PROTOCOL_VERSION, run_uid=start.run_uid, seq=seq, first=first, count=count,
                              positions={"haadf": haadf[first:first + count].tolist()}), view)
        merge(executor.poll(0))
    done, outcome = executor.finish_run()
    merge(done)
    for _, p in outcome.final_partials:
        host.merge(store, p)
    host.finalize(store)
    if outcome.errors:
        raise RuntimeError(f"executor errors: {outcome.errors}")
    if not np.isfinite(store["v_omega"]).any():
        raise RuntimeError("the executor run produced no V(k)")


def pyxem_peer():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pyxem as pxm
    except Exception:  # noqa: BLE001 - any import failure: no pyxem peer
        return None

    def run(frames, npt, r_max):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = pxm.signals.Diffraction2D(frames)
            s.calibration.center = None
            return np.asarray(s.get_variance(npt, method="Omega", radial_range=(0.0, r_max)).data)
    return run


def numpy_reference(frames, ring, n_rings, gain=1.0):
    """Per-frame numpy: ring sums by bincount, per-pixel power sums; the four estimators at the end (one bin)."""
    sel = ring >= 0
    rk = ring[sel]
    n_pix = np.bincount(rk, minlength=n_rings).astype(float)
    a_list, w_list, vr_list = [], [], []
    s1 = np.zeros(rk.size)
    s2 = np.zeros(rk.size)
    for fr in frames:
        v = fr.reshape(-1)[sel].astype(np.float64)
        rs1 = np.bincount(rk, weights=v, minlength=n_rings)
        rs2 = np.bincount(rk, weights=v * v, minlength=n_rings)
        a = rs1 / n_pix
        w = rs2 - rs1 * a
        a_list.append(a)
        w_list.append(w)
        vr_list.append((w / (n_pix - 1) - gain * a) / a ** 2)
        s1 += v
        s2 += v * v
    n = frames.shape[0]
    a = np.array(a_list)
    m = a.mean(0)
    omega = (a.var(0, ddof=1) - gain * m / n_pix) / m ** 2
    r = np.nanmean(vr_list, axis=0)
    pooled = (np.sum(w_list, axis=0) + n_pix * a.var(0) * n) / (n * n_pix - 1)
    re = (pooled - gain * m) / m ** 2
    mp = s1 / n
    vp = ((s2 - s1 * mp) / (n - 1) - gain * mp) / mp ** 2
    vimage = np.bincount(rk, weights=np.nan_to_num(vp), minlength=n_rings) / n_pix
    return omega, r, re, vimage


def best_rate(fn, n_items: int, repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_items / best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=2048)
    p.add_argument("--peer-frames", type=int, default=128)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--group", type=int, default=4, help="chunks per worker task in the 2-process case")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object (DESIGN.md benchmark format)")
    args = p.parse_args(argv)
    if args.quick:
        args.frames, args.peer_frames, args.repeat = 256, 32, 1
    say = reporter(args.json)
    size = args.size
    say(f"generating {args.frames} frames of {size}² ...")
    sim, frames, haadf = make_input(size, args.frames)
    _STATE.update(frames=frames, haadf=haadf, sim=sim)
    run_emlive(frames[:args.chunk], haadf[:args.chunk], sim, args.chunk)  # numba compile
    cases = []
    rate = best_rate(lambda: run_emlive(frames, haadf, sim, args.chunk), args.frames, args.repeat)
    say(f"emlive fem, 1 process: {rate:,.0f} frames/s")

    from emlive.analyzers.masks import ring_index
    from emlive.stream.protocol import Calibration
    from emlive.analyzers.integration import inscribed_radius
    cal = Calibration(reciprocal_pixel_size=2 * math.pi * sim.dk)
    r_max = inscribed_radius((size, size), cal)
    ring, n_rings = ring_index((size, size), cal, r_min=2.0, r_max=r_max)
    peer_frames = frames[:args.peer_frames]
    peer = pyxem_peer()
    if peer is not None:
        npt = int(r_max // 2)
        peer(peer_frames[:4], npt, 2.0 * npt)
        prate = best_rate(lambda: peer(peer_frames, npt, 2.0 * npt), peer_frames.shape[0], 1)
        say(f"pyxem get_variance(Omega), {npt} rings: {prate:,.1f} frames/s")
        cases.append({"case": f"fem-{size}", "unit": "frames", "emlive_per_s": rate,
                      "peer": "pyxem get_variance(method='Omega')", "peer_per_s": prate, "ratio": rate / prate})
    nrate = best_rate(lambda: numpy_reference(peer_frames, ring, n_rings), peer_frames.shape[0], args.repeat)
    say(f"numpy per-frame reference: {nrate:,.0f} frames/s")
    cases.append({"case": f"fem-{size}-numpy" if peer is not None else f"fem-{size}", "unit": "frames",
                  "emlive_per_s": rate, "peer": "numpy per-frame reference", "peer_per_s": nrate,
                  "ratio": rate / nrate})
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        run_emlive_2proc(pool, frames[:4 * args.chunk], haadf, sim, args.chunk, args.group)  # warm the workers
        rate2 = best_rate(lambda: run_emlive_2proc(pool, frames, haadf, sim, args.chunk, args.group), args.frames,
                          args.repeat)
    say(f"emlive fem, 2 worker processes (multiprocessing pool): {rate2:,.0f} frames/s")
    cases.append({"case": f"fem-{size}-2proc", "unit": "frames", "emlive_per_s": rate2, "peer": None,
                  "peer_per_s": None, "ratio": None})
    from emlive.stream.executor import ProcessExecutor

    executor = ProcessExecutor(2, max_buffer_bytes=64 << 20)
    try:
        run_emlive_executor(executor, frames[:4 * args.chunk], haadf, sim, args.chunk)  # warm the workers
        rate3 = best_rate(lambda: run_emlive_executor(executor, frames, haadf, sim, args.chunk), args.frames,
                          args.repeat)
    finally:
        executor.close()
    say(f"emlive fem, 2 workers of the live executor: {rate3:,.0f} frames/s")
    cases.append({"case": f"fem-{size}-executor", "unit": "frames", "emlive_per_s": rate3, "peer": None,
                  "peer_per_s": None, "ratio": None})
    from emlive.stream.executor import ThreadExecutor

    threads = ThreadExecutor(2)
    try:
        run_emlive_executor(threads, frames[:4 * args.chunk], haadf, sim, args.chunk)  # warm the threads
        rate4 = best_rate(lambda: run_emlive_executor(threads, frames, haadf, sim, args.chunk), args.frames,
                          args.repeat)
        rate5 = best_rate(lambda: run_emlive_executor(threads, frames, haadf, sim, args.chunk, copy=True),
                          args.frames, args.repeat)
    finally:
        threads.close()
    say(f"emlive fem, 2 threads of the live thread executor (raw chunks where they arrived): {rate4:,.0f} frames/s")
    say(f"emlive fem, 2 threads, each chunk copied first (as a compressed stream is decoded): {rate5:,.0f} frames/s")
    cases.append({"case": f"fem-{size}-threads", "unit": "frames", "emlive_per_s": rate4, "peer": None,
                  "peer_per_s": None, "ratio": None})
    cases.append({"case": f"fem-{size}-threads-copy", "unit": "frames", "emlive_per_s": rate5, "peer": None,
                  "peer_per_s": None, "ratio": None})
    if args.json:
        print(json.dumps({"benchmark": NAME, "cases": cases}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
