"""SNEM pipeline: emlive's ``snem`` analyzer against the per-pattern peer pipeline.

Both run on the same simulated frames: ``SnemLaminate`` (dose 2e5, gain 4, 12-bit
saturation, ellipse 1.02 at 0.4 rad) on 144² and 256² uint16 detectors, with the
reciprocal pixel size chosen so the inscribed circle reaches ~8.96 Å⁻¹
(0.14·64/(N/2) Å⁻¹ per pixel). The frames are generated once, before any timing.

(a) the peer: what a scientist would write with pyFAI, numpy and scipy, one pattern at a time,
    on the integrator's own ``ai`` (the same geometry, ellipse, bins and no solid-angle or
    polarization correction):

    mask       ``ai.sigma_clip_ng(img, npt, thres=3.5, max_iter=5, error_model="azimuthal",
               unit="r_mm", method=("no", "csr", "cython"), mask=~static, dummy=saturation)``,
               then the pixel mask: static ∧ 1 ≤ I < saturation ∧ |I − ⟨I⟩(r)| ≤ 3.5·σ(r), with the
               clipped ring mean and std of pyFAI interpolated at every pixel's radius;
    integrate  ``ai.integrate1d(img, npt, mask=~good, unit="r_mm", method=("bbox", "csr", "cython"))``;
    pdf        PDFgetX3 in plain numpy per pattern (the steps of ``analyzers/pdf.py``: scale,
               S − 1, F = Q(S − 1), Q·P_n(Q) fitted with ``np.polynomial.Legendre.fit`` for both
               neighbouring degrees and mixed, trapezoid sine transform); the form factors and the
               sin(Qr) kernel are computed once, outside the timing (in the peer's favour);
    fit        ``scipy.optimize.curve_fit`` per pattern, one and two Gaussians plus a line on
               2.1–4 Å (method "trf", loss "soft_l1", f_scale 0.005, the Table S1 bounds, a start
               read off the curve: the maximum, a 0.2 Å width, the second peak 0.5 Å further out).

    It is slow (curve_fit dominates), so it runs on ``--peer-frames`` patterns spread evenly over
    the map (Ni, glass and interfaces alike) and is reported per second. Outside the timing, each
    peer step is fed emlive's input of that step on 8 of them and the outputs compared.

(b) emlive: ``SnemAnalyzer`` with ``{"mask": {"saturation": 4095}, "nmf": {"enabled": False}}``
    (everything else default), driven as the pipeline does: ``prepare`` / ``results`` /
    ``initialize`` in the host, ``process`` per chunk of ``--chunk`` frames, ``merge`` of every
    partial into the result buffers (all maps and the per-position I(Q) and G(r) stacks).

    one core   ``process`` + ``merge`` in this process;
    two cores  a fork pool of 2 worker processes, each with its own copy of an analyzer prepared
               in the parent (inherited through fork, like the frames; preparing in a forked child
               hangs in pyFAI's OpenMP), the chunks handed out one at a time; the host merges the
               partials as they return. Timed: the wall time of the whole map, from the first
               chunk handed out to the last partial merged (pool start-up, imports and numba
               warm-up are done before).

Per-stage times are the analyzer's own ``timings`` (seconds per stage, one-core run) and the
host's merge; the peer's per stage are timed around each call. Every number is the best of
``--repeat`` rounds (per stage: the best round of that stage); the one- and two-core rounds
alternate. The machine's speed drifts, and other processes on its two cores lower the
two-process number most: the script warns when the load average is above 0.5 at its start.
NMF (a host-side end-of-scan step) is disabled, so neither timed nor compared here.

JSON cases: ``full-N`` is emlive on two processes (the goal's number), ``full-N-1core`` on one,
both against the peer in one process; ``mask``/``integrate``/``pdf``/``fit-N`` are per stage
(emlive one core, ``fit`` = fit1 + fit2); ``peaks``, ``regions`` and ``merge-N`` have no peer.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/snem_pipeline.py            # table
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/snem_pipeline.py --json     # DESIGN.md benchmark object
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/snem_pipeline.py --quick    # smoke test (seconds)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy / pyFAI: pyFAI's OpenMP stalls on this machine

import argparse
import json
import logging
import math
import multiprocessing as mp
import sys
import time
import warnings

import numpy as np

from harness import reporter, warn_if_loaded

NAME = "snem_pipeline"
STAGES = ("mask", "integrate", "pdf", "peaks", "fit1", "fit2", "regions")
PARAMS = {"mask": {"saturation": 4095}, "nmf": {"enabled": False}}
SATURATION = 4095.0
DEFAULT_FRAMES = {144: 2048, 256: 1024}     # the maps timed for emlive
DEFAULT_PEER_FRAMES = {144: 48, 256: 32}    # the patterns timed for the peer
PEERS = {"mask": "pyFAI sigma_clip_ng", "integrate": "pyFAI integrate1d", "pdf": "numpy per pattern",
         "fit": "scipy curve_fit", "full": "pyFAI+numpy+scipy per pattern, 1 process"}


# -- input ------------------------------------------------------------------------------------
def make_sim(size: int, n_frames: int):
    """The laminate phantom on an N² detector, a scan of ``n_frames`` positions (8 rows)."""
    from emlive.simulators import SnemLaminate
    from emlive.simulators.detector import DetectorModel

    ny = 8 if n_frames % 8 == 0 and n_frames >= 24 else 1
    det = DetectorModel(shape=(size, size), gain=4.0, saturation=SATURATION, ellipse_ratio=1.02, ellipse_angle=0.4)
    return SnemLaminate(scan_shape=(ny, n_frames // ny), detector=det, dose=2e5,
                        reciprocal_pixel_size=0.14 * 64 / (size / 2), seed=0)


def run_info(sim):
    from emlive.stream.protocol import Calibration
    from emlive.stream.types import RunInfo

    c = sim.calibration
    cal = Calibration(beam_energy_kev=c["beam_energy_kev"], reciprocal_pixel_size=c["reciprocal_pixel_size"],
                      center=tuple(c["center"]), gain=c["gain"],
                      ellipse=(c["ellipse"]["ratio"], math.degrees(c["ellipse"]["angle"])))
    return RunInfo("bench", sim.frame_shape, "uint16", sim.scan_shape, cal)


# -- (b) emlive -------------------------------------------------------------------------------
def host_store(run):
    from emlive.analyzers.snem import SnemAnalyzer
    from emlive.stream.types import ResultBuffers

    host = SnemAnalyzer(**PARAMS)
    host.prepare(run)
    store = ResultBuffers(run, host.results(run))
    host.initialize(store)
    return host, store


def prepared_worker(run, frames: np.ndarray, chunk: int):
    """A worker's analyzer, prepared and warmed up (numba, operators) on one chunk."""
    from emlive.analyzers.snem import SnemAnalyzer
    from emlive.stream.types import FrameChunk

    worker = SnemAnalyzer(**PARAMS)
    worker.prepare(run)
    worker.process(FrameChunk(0, 0, frames[:chunk]))
    worker.timings = dict.fromkeys(worker.timings, 0.0)
    return worker


def emlive_one_core(run, frames: np.ndarray, chunk: int, worker) -> tuple[float, dict, float]:
    """(wall s, analyzer timings, merge s) of the whole map in this process."""
    from emlive.stream.types import FrameChunk

    host, store = host_store(run)
    worker.timings = dict.fromkeys(worker.timings, 0.0)
    merge = 0.0
    n = frames.shape[0]
    t0 = time.perf_counter()
    for seq, first in enumerate(range(0, n, chunk)):
        partial = worker.process(FrameChunk(seq, first, frames[first:first + chunk]))
        tm = time.perf_counter()
        host.merge(store, partial)
        merge += time.perf_counter() - tm
    wall = time.perf_counter() - t0
    _check_store(store, n)
    return wall, dict(worker.timings), merge


_W: dict = {}  # per worker process: the analyzer and the frames (inherited through fork)


def _pool_init() -> None:
    """Nothing to build: the analyzer was prepared in the parent and is inherited (each process its own copy).

    Preparing in the child would call pyFAI (its geometry and CSR matrix) after a fork,
    and pyFAI's OpenMP runtime, already started in the parent, hangs there.
    """
    _W["worker"].timings = dict.fromkeys(_W["worker"].timings, 0.0)


def _pool_chunk(task):
    from emlive.stream.types import FrameChunk

    seq, first, count = task
    return _W["worker"].process(FrameChunk(seq, first, _W["frames"][first:first + count]))


def emlive_pool(pool, run, frames: np.ndarray, chunk: int) -> float:
    """Wall s of the whole map: the pool's workers process, this process merges."""
    host, store = host_store(run)
    n = frames.shape[0]
    tasks = [(seq, first, min(chunk, n - first)) for seq, first in enumerate(range(0, n, chunk))]
    t0 = time.perf_counter()
    for partial in pool.imap_unordered(_pool_chunk, tasks, chunksize=1):
        host.merge(store, partial)
    wall = time.perf_counter() - t0
    _check_store(store, n)
    return wall


def _check_store(store, n: int) -> None:
    r_max = np.asarray(store["r_max"])
    if np.count_nonzero(np.isfinite(r_max)) < 0.9 * n:
        raise RuntimeError(f"emlive mapped r_max at only {np.count_nonzero(np.isfinite(r_max))} of {n} positions")


# -- (a) the peer: per pattern, pyFAI + numpy + scipy -----------------------------------------
class PeerPipeline:
    """The per-pattern pipeline a scientist would write, on the integrator's ``ai`` and bins."""

    def __init__(self, analyzer) -> None:
        integ = analyzer.integrator
        self.ai = integ.ai
        self.npt = integ.npt
        self.shape = integ.shape
        self.radial_range = integ.radial_range_mm
        self.split_method = integ.method                    # ("bbox", "csr", "cython"): emlive's too
        self.static = analyzer.static.reshape(self.shape)   # True = good
        self.bad_static = (~self.static).astype(np.int8)     # pyFAI: 1 = masked
        self.r_pix_mm = self.ai.array_from_unit(self.shape, "center", "r_mm", scale=True)
        self.thres = analyzer.config.mask.alpha
        self.lower = analyzer.config.mask.lower
        self.q_data = integ.q
        red = analyzer.reducer                               # constants only: its grid, ⟨f⟩, ⟨f²⟩, r
        p = red.params
        self.q = red.q
        self.nq = red.q.size
        self.f_mean, self.f2_mean = red.f_mean, red.f2_mean
        self.qmin, self.qmax, self.qmaxinst = p.qmin, p.qmax, red.qmaxinst
        n_r = p.rpoly * self.qmaxinst / math.pi
        lo = math.floor(n_r)
        self.degrees = ((lo, lo + 1 - n_r), (lo + 1, n_r - lo)) if abs(n_r - round(n_r)) > 1e-9 \
            else ((round(n_r), 1.0),)
        self.r = red.r
        tr = (self.q >= p.qmin - 1e-9) & (self.q <= p.qmax + 1e-9)
        self.tr = tr
        self.kernel = np.sin(np.outer(self.r, self.q[tr]))   # once: sin(Qr) on the transform grid
        self.scale_sel = (self.q >= p.qmin - 1e-9) & (self.q <= self.qmaxinst + 1e-9)
        win = analyzer.config.qoi.peak_window
        self.fit_sel = (self.r >= win[0] - 1e-9) & (self.r <= win[1] + 1e-9)
        from emlive.analyzers.peakfit import seed_parameters
        self.bounds = {k: seed_parameters(k)[1:] for k in (1, 2)}  # Table S1 (iii)

    # stage 1: sigma_clip_ng, then the pixel mask from its clipped mean and std
    def mask(self, img: np.ndarray) -> np.ndarray:
        res = self.ai.sigma_clip_ng(img, self.npt, thres=self.thres, max_iter=5, error_model="azimuthal",
                                    unit="r_mm", radial_range=self.radial_range, method=("no", "csr", "cython"),
                                    correctSolidAngle=False, polarization_factor=None, mask=self.bad_static,
                                    dummy=SATURATION, delta_dummy=0.5)
        x = np.asarray(res.radial)
        mean = np.interp(self.r_pix_mm, x, np.nan_to_num(np.asarray(res.intensity)))
        std = np.interp(self.r_pix_mm, x, np.nan_to_num(np.asarray(res.std)))
        good = self.static & (img >= self.lower) & (img < SATURATION)
        return good & (np.abs(img - mean) <= self.thres * std)

    # stage 2: integrate1d with the frame's mask
    def integrate(self, img: np.ndarray, good: np.ndarray) -> np.ndarray:
        res = self.ai.integrate1d(img, self.npt, mask=(~good).astype(np.int8), unit="r_mm",
                                  radial_range=self.radial_range, method=self.split_method,
                                  correctSolidAngle=False, polarization_factor=None)
        iq = np.asarray(res.intensity, dtype=np.float64).copy()
        iq[~(np.asarray(res.sum_normalization) > 0)] = np.nan
        return iq

    # stage 3: PDFgetX3 steps in plain numpy
    def pdf(self, iq: np.ndarray) -> np.ndarray:
        q = self.q
        y = iq[:self.nq]
        valid = np.isfinite(y)
        s = valid & self.scale_sel
        w = q[s] ** 2 / self.f_mean[s] ** 4
        scale = np.sum(w * self.f2_mean[s] ** 2) / np.sum(w * y[s] * self.f2_mean[s])
        sm1 = (scale * y - self.f2_mean) / self.f_mean ** 2
        fm = q * sm1
        fit = valid & (q > 0)
        poly = np.zeros_like(q)
        for deg, weight in self.degrees:   # F ≈ Q·P_n(Q)  <=>  F/Q ≈ P_n(Q) with weights Q
            p = np.polynomial.Legendre.fit(q[fit], fm[fit] / q[fit], deg, w=q[fit], domain=[0, self.qmaxinst])
            poly += weight * p(q)
        fc = q * (sm1 - poly)
        f = np.where(valid, fc, 0.0)[self.tr]
        return 2 / np.pi * np.trapezoid(self.kernel * f, q[self.tr], axis=1)

    # stage 4: curve_fit, one and two Gaussians plus a line
    @staticmethod
    def model1(r, a1, r1, s1, a, b):
        return a1 / (s1 * np.sqrt(2 * np.pi)) * np.exp(-0.5 * ((r - r1) / s1) ** 2) + a * r + b

    @staticmethod
    def model2(r, a1, r1, s1, a2, r2, s2, a, b):
        return (a1 / (s1 * np.sqrt(2 * np.pi)) * np.exp(-0.5 * ((r - r1) / s1) ** 2)
                + a2 / (s2 * np.sqrt(2 * np.pi)) * np.exp(-0.5 * ((r - r2) / s2) ** 2) + a * r + b)

    def fit(self, gr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from scipy.optimize import curve_fit

        r, g = self.r[self.fit_sel], gr[self.fit_sel]
        k = int(np.argmax(g))
        base = min(g[0], g[-1])
        h = max(g[k] - base, 0.05)
        sig = 0.2
        area = h * sig * np.sqrt(2 * np.pi)
        out = []
        for n_peaks, model, p0 in (
                (1, self.model1, [area, r[k], sig, 0.0, base]),
                (2, self.model2, [0.7 * area, min(max(r[k], 2.45), 2.95), sig, 0.5 * area,
                                  min(max(r[k] + 0.5, 3.05), 3.95), 0.25, 0.0, base])):
            lo, hi = self.bounds[n_peaks]
            p0 = np.clip(np.asarray(p0, float), lo + 1e-6, np.where(np.isfinite(hi), hi - 1e-6, np.inf))
            try:
                popt, _ = curve_fit(model, r, g, p0=p0, bounds=(lo, hi), method="trf", loss="soft_l1",
                                    f_scale=0.005, max_nfev=200 * len(p0))
            except RuntimeError:  # not converged within max_nfev: count the time, keep NaN
                popt = np.full(len(p0), np.nan)
            out.append(popt)
        return out[0], out[1]

    def run(self, frames: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
        """Per-stage seconds over ``frames``, and the I(Q) and G(r) of every pattern."""
        t = dict.fromkeys(("mask", "integrate", "pdf", "fit"), 0.0)
        iqs, grs = [], []
        for img in frames:
            t0 = time.perf_counter()
            good = self.mask(img)
            t1 = time.perf_counter()
            iq = self.integrate(img, good)
            t2 = time.perf_counter()
            gr = self.pdf(iq)
            t3 = time.perf_counter()
            self.fit(gr)
            t4 = time.perf_counter()
            for k, a, b in (("mask", t0, t1), ("integrate", t1, t2), ("pdf", t2, t3), ("fit", t3, t4)):
                t[k] += b - a
            iqs.append(iq)
            grs.append(gr)
        return t, np.array(iqs), np.array(grs)


def agreement(worker, peer: PeerPipeline, frames: np.ndarray) -> dict:
    """Step by step, on a few patterns (not timed): do the two pipelines compute the same thing?

    Each peer step is fed emlive's input of that step, so a difference is the step's own:
    the fraction of pixels whose mask differs (pyFAI's clipping rule is not the seed's),
    I(Q) of ``integrate1d`` with emlive's mask, the numpy PDF of emlive's I(Q), and the
    one-Gaussian centre of ``curve_fit`` on emlive's G(r).
    """
    from emlive.analyzers.masks import auto_mask
    from emlive.stream.types import FrameChunk

    n = frames.shape[0]
    m = worker.config.mask
    flat = frames.reshape(n, -1)
    good = auto_mask(flat, worker.ring, worker.n_rings, worker.static, alpha=m.alpha, lower=m.lower,
                     upper=m.upper, saturation=m.saturation, max_iter=m.max_iter)
    part = worker.process(FrameChunk(0, 0, frames)).values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mask_diff = float(np.mean([np.mean(peer.mask(f).reshape(-1) != g) for f, g in zip(frames, good)]))
        iq = np.array([peer.integrate(f, g.reshape(f.shape)) for f, g in zip(frames, good)])
        gr = np.array([peer.pdf(x) for x in part["iq"]])
        r1 = np.array([peer.fit(g)[0][1] if np.isfinite(g).all() else np.nan for g in part["gr"]])
    with np.errstate(invalid="ignore", divide="ignore"):
        iq_dev = float(np.nanmax(np.abs(iq - part["iq"]) / np.abs(part["iq"])))
    gr_dev = float(np.nanmax(np.abs(gr - part["gr"])) / np.nanmax(np.abs(part["gr"])))
    r1_dev = float(np.nanmedian(np.abs(r1 - part["fit1_center"])))
    return {"mask_pixels_differ": mask_diff, "iq_max_rel": iq_dev, "gr_max_rel": gr_dev, "r1_median_abs_A": r1_dev,
            "patterns": n}


# -- driver -----------------------------------------------------------------------------------
def bench_size(size: int, n: int, n_peer: int, chunk: int, repeat: int, workers: int, say) -> dict:
    tg = time.perf_counter()
    sim = make_sim(size, n)
    frames = np.ascontiguousarray(sim.frames(0, sim.n_frames))
    t_gen = time.perf_counter() - tg
    run = run_info(sim)
    worker = prepared_worker(run, frames, chunk)
    say(f"\n{size}x{size} uint16: {n} frames (scan {sim.scan_shape}, {sim.dq:.4f} "
        f"Å⁻¹/px, npt {worker.integrator.npt}, generated in {t_gen:.1f} s), peer on {n_peer}")

    # (b) one core in this process and two cores in a fork pool (the workers' analyzers prepared and
    # warmed here, before the fork), rounds interleaved so drifts of the machine hit both alike
    best1, timings, merge, best2 = math.inf, dict.fromkeys(STAGES, math.inf), math.inf, math.inf
    _W["frames"], _W["worker"] = frames, prepared_worker(run, frames, chunk)
    with mp.get_context("fork").Pool(workers, initializer=_pool_init) as pool:
        pool.map(_pool_chunk, [(0, 0, chunk)] * workers, chunksize=1)  # every worker up before timing
        for _ in range(repeat):
            wall, tm, mg = emlive_one_core(run, frames, chunk, worker)
            best1 = min(best1, wall)
            timings = {k: min(timings[k], tm[k]) for k in STAGES}
            merge = min(merge, mg)
            best2 = min(best2, emlive_pool(pool, run, frames, chunk))
    _W.clear()

    # (a) the peer, per pattern (one round of the first patterns first: pyFAI builds its engines)
    peer = PeerPipeline(worker)
    sample = np.ascontiguousarray(frames[np.linspace(0, n - 1, n_peer).round().astype(int)])  # across the map
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer.run(sample[:2])
        peer_t = dict.fromkeys(("mask", "integrate", "pdf", "fit"), math.inf)
        peer_wall = math.inf
        for _ in range(repeat):
            tp, _, _ = peer.run(sample)
            peer_t = {k: min(peer_t[k], tp[k]) for k in peer_t}
            peer_wall = min(peer_wall, sum(tp.values()))

    checks = agreement(worker, peer, sample[np.linspace(0, n_peer - 1, min(8, n_peer)).round().astype(int)])
    return {"size": size, "frames": n, "peer_frames": n_peer, "chunk": chunk, "workers": workers,
            "emlive_1core_per_s": n / best1, "emlive_2core_per_s": n / best2, "peer_per_s": n_peer / peer_wall,
            "timings_s": timings, "merge_s": merge, "peer_s": peer_t, "checks": checks}


def cases_of(row: dict) -> list[dict]:
    size, n, m = row["size"], row["frames"], row["peer_frames"]
    t, pt = row["timings_s"], row["peer_s"]
    peer_full = row["peer_per_s"]

    def case(name, x, peer, y):
        return {"case": name, "unit": "patterns", "emlive_per_s": x, "peer": peer, "peer_per_s": y,
                "ratio": x / y if y else None}

    out = [case(f"full-{size}", row["emlive_2core_per_s"], PEERS["full"], peer_full),
           case(f"full-{size}-1core", row["emlive_1core_per_s"], PEERS["full"], peer_full)]
    for stage in ("mask", "integrate", "pdf"):
        out.append(case(f"{stage}-{size}", n / t[stage], PEERS[stage], m / pt[stage]))
    out.append(case(f"fit-{size}", n / (t["fit1"] + t["fit2"]), PEERS["fit"], m / pt["fit"]))
    for stage in ("peaks", "regions"):
        out.append(case(f"{stage}-{size}", n / t[stage], None, None))
    out.append(case(f"merge-{size}", n / row["merge_s"], None, None))
    return out


def print_row(say, row: dict) -> None:
    n, m = row["frames"], row["peer_frames"]
    t, pt = row["timings_s"], row["peer_s"]
    pf = row["peer_per_s"]
    say(f"  {'patterns/s':28s} {'emlive 1 core':>14s} {'emlive 2 cores':>15s} {'peer (1 core)':>14s} "
        f"{'ratio 1c':>9s} {'ratio 2c':>9s}")
    say(f"  {'full pipeline':28s} {row['emlive_1core_per_s']:14.0f} {row['emlive_2core_per_s']:15.0f} {pf:14.2f} "
        f"{row['emlive_1core_per_s'] / pf:9.0f} {row['emlive_2core_per_s'] / pf:9.0f}")
    for stage, em, peer in (("mask", t["mask"], pt["mask"]), ("integrate", t["integrate"], pt["integrate"]),
                            ("pdf", t["pdf"], pt["pdf"]), ("fit (1+2 Gaussians)", t["fit1"] + t["fit2"], pt["fit"])):
        say(f"  {stage:28s} {n / em:14.0f} {'':>15s} {m / peer:14.1f} {(n / em) / (m / peer):9.0f}")
    say("\n  per stage, ms per 1000 patterns (emlive one core: the analyzer's timings; peer: per pattern)")
    say(f"  {'stage':22s} {'emlive':>9s} {'share':>6s} {'peer':>11s} {'share':>6s}")
    em_total = sum(t.values()) + row["merge_s"]
    peer_total = sum(pt.values())
    rows = [(s, t[s], None) for s in STAGES] + [("merge (host)", row["merge_s"], None)]
    peer_of = {"mask": pt["mask"], "integrate": pt["integrate"], "pdf": pt["pdf"], "fit1": pt["fit"]}
    for name, sec, _ in rows:
        p = peer_of.get(name)
        label = "fit1 (peer: fit 1+2)" if name == "fit1" else name
        ps = f"{1e6 * p / m:11.0f} {100 * p / peer_total:5.1f}%" if p is not None else f"{'':>11s} {'':>6s}"
        say(f"  {label:22s} {1e6 * sec / n:9.1f} {100 * sec / em_total:5.1f}% {ps}")
    say(f"  {'total':22s} {1e6 * em_total / n:9.1f} {'':>6s} {1e6 * peer_total / m:11.0f}")
    c = row["checks"]
    say(f"  wall of the one-core map: {1e6 / row['emlive_1core_per_s']:.1f} ms per 1000 patterns "
        f"(stages + merge + loop)")
    say(f"  same input per step, {c['patterns']} patterns: masks differ on {100 * c['mask_pixels_differ']:.2f} % of "
        f"pixels; integrate1d I(Q) max rel. diff {c['iq_max_rel']:.1e}; numpy G(r) max diff {c['gr_max_rel']:.1e} "
        f"of max|G|; curve_fit r1 median |diff| {c['r1_median_abs_A']:.1e} Å")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[144, 256], help="detector sizes (square, pixels)")
    p.add_argument("--frames", type=int, default=None, help="patterns in the emlive map (default 2048 / 1024)")
    p.add_argument("--peer-frames", type=int, default=None, help="patterns the peer runs (default 48 / 32)")
    p.add_argument("--chunk", type=int, default=128, help="frames per chunk handed to process()")
    p.add_argument("--workers", type=int, default=2, help="processes of the multi-core run")
    p.add_argument("--repeat", type=int, default=3, help="rounds; the best is reported")
    p.add_argument("--quick", action="store_true", help="small run (smoke test): 256 frames, 8 peer patterns, 1 round")
    p.add_argument("--json", action="store_true", help="print one JSON object (DESIGN.md benchmark format)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR)
    logging.getLogger("pyFAI").setLevel(logging.INFO if args.verbose else logging.ERROR)
    if args.quick:
        args.repeat = 1
    say = reporter(args.json)
    say(f"{NAME}: {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, chunks of "
        f"{args.chunk}, {args.workers} worker processes for the multi-core run, best of {args.repeat}")
    warn_if_loaded(say, what="the numbers (above all the two-process one)")
    rows = []
    for size in args.sizes:
        n = args.frames or (256 if args.quick else DEFAULT_FRAMES.get(size, 1024))
        n = max(n, args.chunk)
        n_peer = args.peer_frames or (8 if args.quick else DEFAULT_PEER_FRAMES.get(size, 32))
        row = bench_size(size, n, min(n_peer, n), args.chunk, args.repeat, args.workers, say)
        rows.append(row)
        print_row(say, row)
    if args.json:
        print(json.dumps({"benchmark": NAME, "cases": [c for row in rows for c in cases_of(row)]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
