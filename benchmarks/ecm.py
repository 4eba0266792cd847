"""ECM benchmark: emlive's streaming per-pixel multi-tau correlator against the per-pixel reference.

Input: the ECM phantom (``ECMNanowire``, drift (0, 0), shot noise on, float32 frames) at 128² and
256² pixels, generated once before any timing.

correlator-N
    emlive  ``MultiTauCorrelator(N², n_levels=9, per_level=8)`` (lags 1 .. 1792 frames), ``update``
            per chunk of ``--chunk`` frames, in this process (numba, one core: the kernel is serial).
            Timed: every frame of the series through ``update``, numba compiled before.
    peer    what a scientist would run per pixel: scikit-beam's
            ``skbeam.core.correlation.multi_tau_auto_corr(9, 8, labels, frames)`` with every pixel its
            own label (its g2 per label is the per-pixel symmetric g2; the same lags). It is slow,
            so it runs on the first ``--peer-frames`` frames and is reported per second (in its favour:
            its highest levels are not all filled yet). If scikit-beam does not import, the peer is
            a numpy loop over the multi-tau lags (batch, vectorised over pixels) and is named so.
    Outside the timing, emlive's g2 on the peer's frames is compared with the peer's.

kww-N
    emlive  ``fit_kww`` on every pixel's g2 (multi-tau lags, weights = pairs per lag) of a 4096-frame
            series: the whole N² τ map in one call. Timed: the call.
    peer    ``scipy.optimize.curve_fit`` per pixel (same model, bounds, start and weights) on 64 pixels
            spread over the map, reported per second.

More cases are added to ``CASES`` as functions ``(size, args, say) -> row``.

Usage::

    .venv/bin/python benchmarks/ecm.py            # table
    .venv/bin/python benchmarks/ecm.py --json     # one JSON object (DESIGN.md benchmark format)
    .venv/bin/python benchmarks/ecm.py --quick    # smoke run (seconds)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import logging
import math
import sys
import time
import warnings

import numpy as np

from harness import reporter, run_cases, warn_if_loaded

NAME = "ecm"
N_LEVELS, PER_LEVEL = 9, 8
DEFAULT_FRAMES = {128: 2048, 256: 1024}
DEFAULT_PEER_FRAMES = {128: 256, 256: 128}
_PHANTOMS: dict = {}


# -- input ------------------------------------------------------------------------------------
def phantom_frames(size: int, n_frames: int) -> np.ndarray:
    """(T, N²) float32 frames of the ECM phantom (cached per size and length)."""
    key = (size, n_frames)
    if key not in _PHANTOMS:
        from emlive.simulators import ECMNanowire

        sim = ECMNanowire(shape=(size, size), n_frames=n_frames, drift=(0, 0), drift_wobble=0.0, shot_noise=True,
                          seed=0)
        _PHANTOMS[key] = np.ascontiguousarray(sim.frames(0, n_frames).reshape(n_frames, -1))
    return _PHANTOMS[key]


# -- peers ------------------------------------------------------------------------------------
def skbeam_peer():
    """scikit-beam's multi_tau_auto_corr with one label per pixel, or None if it does not import."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from skbeam.core.correlation import multi_tau_auto_corr
    except Exception:  # noqa: BLE001 - any import failure means: use the numpy peer
        return None

    def run(frames: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(1, size * size + 1).reshape(size, size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g2, lags = multi_tau_auto_corr(N_LEVELS, PER_LEVEL, labels, frames.reshape(-1, size, size))
        return np.asarray(lags), np.asarray(g2).T  # (npix, nlags), lag 0 included

    return "scikit-beam multi_tau_auto_corr, 1 label per pixel", run


def numpy_peer():
    """The fallback: for every multi-tau lag, the symmetric g2 of the 2^level-binned series, numpy over pixels."""
    from emlive.analyzers.correlator import multi_tau_lags

    def run(frames: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        lags, levels = multi_tau_lags(N_LEVELS, PER_LEVEL)
        x = frames.astype(np.float64)
        out = np.full((x.shape[1], lags.size), np.nan)
        for k, (lag, level) in enumerate(zip(lags, levels)):
            b = 1 << int(level)
            n = x.shape[0] // b
            if n == 0:
                break  # the series is shorter than one bin of this level
            xb = x[:n * b].reshape(n, b, -1).mean(axis=1)
            j = int(lag) // b
            if j < n:
                past, future = xb[:n - j], xb[j:]
                out[:, k] = np.mean(past * future, 0) / (np.mean(past, 0) * np.mean(future, 0))
        return lags, out

    return "numpy loop over multi-tau lags (batch)", run


# -- cases ------------------------------------------------------------------------------------
def correlator_case(size: int, args, say) -> dict:
    from emlive.analyzers.correlator import MultiTauCorrelator

    n = args.frames or (256 if args.quick else DEFAULT_FRAMES.get(size, 1024))
    n_peer = min(n, args.peer_frames or (32 if args.quick else DEFAULT_PEER_FRAMES.get(size, 128)))
    tg = time.perf_counter()
    frames = phantom_frames(size, n)
    say(f"\ncorrelator {size}x{size}: {n} float32 frames of the ECM phantom (generated in "
        f"{time.perf_counter() - tg:.1f} s), chunks of {args.chunk}, {N_LEVELS} levels x {PER_LEVEL}")
    npix = size * size
    MultiTauCorrelator(npix, N_LEVELS, PER_LEVEL).update(frames[:args.chunk])  # numba warm-up

    best = math.inf
    for _ in range(args.repeat):
        c = MultiTauCorrelator(npix, N_LEVELS, PER_LEVEL)
        t0 = time.perf_counter()
        for first in range(0, n, args.chunk):
            c.update(frames[first:first + args.chunk])
        best = min(best, time.perf_counter() - t0)
    mem = c.nbytes

    peer_name, peer = skbeam_peer() or numpy_peer()
    peer_frames = np.ascontiguousarray(frames[:n_peer])
    peer_best = math.inf
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        lags_p, g_p = peer(peer_frames, size)
        peer_best = min(peer_best, time.perf_counter() - t0)

    c = MultiTauCorrelator(npix, N_LEVELS, PER_LEVEL)  # agreement on the peer's frames, not timed
    c.update(peer_frames)
    lags_e, g_e = c.g2(include_zero=True)
    if not np.array_equal(lags_e[:lags_p.size], lags_p):  # scikit-beam returns only the levels it reached
        raise RuntimeError(f"peer lags {lags_p[:12]} differ from emlive's {lags_e[:12]}")
    g_e = g_e[:, :lags_p.size]
    ok = np.isfinite(g_e) & np.isfinite(g_p)
    diff = float(np.max(np.abs(g_e[ok] - g_p[ok]) / np.abs(g_p[ok]))) if ok.any() else math.nan

    emlive_per_s, peer_per_s = n / best, n_peer / peer_best
    say(f"  {'frames/s':10s} {'emlive':>10s} {'peer':>10s} {'ratio':>8s}   peer: {peer_name}")
    say(f"  {'':10s} {emlive_per_s:10.0f} {peer_per_s:10.1f} {emlive_per_s / peer_per_s:8.0f}")
    say(f"  emlive {n} frames in {best:.3f} s, state {mem / 2 ** 20:.0f} MiB; peer {n_peer} frames in "
        f"{peer_best:.2f} s; g2 agreement on the peer's frames: max rel. diff {diff:.1e}")
    return {"case": f"correlator-{size}", "unit": "frames", "emlive_per_s": emlive_per_s, "peer": peer_name,
            "peer_per_s": peer_per_s, "ratio": emlive_per_s / peer_per_s}


def kww_case(size: int, args, say) -> dict:
    """A whole N² τ map: ``fit_kww`` on every pixel's multi-tau g2 against ``curve_fit`` per pixel."""
    from scipy.optimize import curve_fit

    from emlive.analyzers.correlator import MultiTauCorrelator
    from emlive.analyzers.kww import fit_kww, initial_guess, kww_model

    n = args.frames or (512 if args.quick else 4096)
    frames = phantom_frames(size, n)
    c = MultiTauCorrelator(size * size, N_LEVELS, PER_LEVEL)
    c.update(frames)
    lags, g2 = c.g2()
    w = c.counts[c.lags > 0].astype(np.float64)
    use = w > 0
    t, g2, w = lags[use] * 0.25, g2[:, use], w[use]  # 0.25 s per frame, as the phantom
    say(f"\nkww {size}x{size}: g2 of {n} frames at {t.size} lags, weights = pairs per lag")
    fit_kww(t, g2[:64], weights=w)  # numba warm-up
    best = math.inf
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        res = fit_kww(t, g2, weights=w)
        best = min(best, time.perf_counter() - t0)
    rows = np.flatnonzero(np.isfinite(g2).all(axis=1) & (np.ptp(g2, axis=1) > 0))
    rows = rows[np.linspace(0, rows.size - 1, 16 if args.quick else 64).astype(int)]
    p0 = initial_guess(t, g2[rows], weights=w)
    sigma = 1 / np.sqrt(w)
    t0 = time.perf_counter()
    done = 0
    for k, i in enumerate(rows):
        try:
            curve_fit(lambda x, a, tau, b: kww_model(x, a, tau, b), t, g2[i], p0=p0[k], sigma=sigma,
                      bounds=((0, 0, 0.1), (np.inf, np.inf, 2.0)), maxfev=2000)
        except RuntimeError:
            pass
        done += 1
    peer_s = (time.perf_counter() - t0) / done
    emlive_per_s, peer_per_s = size * size / best, 1 / peer_s
    say(f"  whole {size}² map in {best:.3f} s ({emlive_per_s:.0f} fits/s, {np.mean(res.success):.1%} converged); "
        f"curve_fit {peer_per_s:.0f} fits/s -> a map in {size * size * peer_s:.0f} s; ratio {emlive_per_s / peer_per_s:.0f}")
    return {"case": f"kww-{size}", "unit": "pixels", "emlive_per_s": emlive_per_s, "peer": "scipy curve_fit per pixel",
            "peer_per_s": peer_per_s, "ratio": emlive_per_s / peer_per_s}


CASES = {"correlator": correlator_case, "kww": kww_case}  # name -> (size, args, say) -> case dict (f"{name}-{size}")
DEFAULT_SIZES = {"correlator": (128, 256), "kww": (128,)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES), help="which cases to run")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="image sizes (square, pixels)")
    p.add_argument("--frames", type=int, default=None, help="frames emlive runs (default 2048 / 1024)")
    p.add_argument("--peer-frames", type=int, default=None, help="frames the peer runs (default 256 / 128)")
    p.add_argument("--chunk", type=int, default=128, help="frames per update() call")
    p.add_argument("--repeat", type=int, default=3, help="rounds; the best is reported")
    p.add_argument("--quick", action="store_true", help="small run (smoke test): 256 frames, 32 for the peer, 1 round")
    p.add_argument("--json", action="store_true", help="print one JSON object (DESIGN.md benchmark format)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR)
    if args.quick:
        args.repeat = 1
    say = reporter(args.json)
    say(f"{NAME}: {os.cpu_count()} cores, one used; best of {args.repeat}")
    warn_if_loaded(say)
    run_cases(NAME, CASES, args.cases, args.sizes, DEFAULT_SIZES, args, say)
    return 0


if __name__ == "__main__":
    sys.exit(main())
