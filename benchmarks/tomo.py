"""Tomography benchmark: emlive's sparse-matrix SIRT and live HEBT update against ASTRA's CPU SIRT.

Input: the Ag–Au core–shell phantom (``EDSParticle``, 128³ voxels of 1 nm, particle radius 50 nm,
31 tilts from -75° to 75°), its exact Ag/Au sinograms (projected atoms/nm², analytic chords, so
neither projector's own model), Poisson-noised as line counts, and the HAADF series, made once
before any timing. Both sides get the same float32 sinograms.

sirt-128
    emlive  ``sirt(ParallelProjector(128, angles, dtype=float32), sino, n_iter=200)`` on the central
            slice; the projector is built once per geometry, outside the timing (its build time is
            printed). Timed: the call.
    peer    ASTRA's CPU SIRT (``astra-toolbox``, ``SIRT`` with ``MinConstraint=0``, ``linear``
            projector, same geometry with its angles negated), 200 iterations:
            ``astra.algorithm.run(id, 200)``. If astra does not import: scikit-image ``iradon_sart``
            called once per iteration (SART, not SIRT), named so. Outside the timing both
            reconstructions are compared with each other and with the phantom slice.
            Unit: iterations (emlive_per_s = 200 / time).

hebt-live-128
    emlive  the live update after one new tilt: 30 tilts reconstructed before (HEBT, α = 0.8,
            not timed), then tilt 31 arrives. Timed: ``projector.subset(acquired)`` +
            ``hebt(sub, eds, haadf, r, 0.8, x0=previous, n_iter=20)`` for 128 slices of 128² and
            2 elements, in the reconstruction layout (conversions included). Unit: updates.
    peer    ASTRA has no HEBT; the same work done EDS-only with its CPU SIRT (20 iterations per
            slice and element, 256 runs), timed on ``--peer-slices`` runs and scaled.

Usage::

    .venv/bin/python benchmarks/tomo.py            # table (~1 min)
    .venv/bin/python benchmarks/tomo.py --json     # one JSON object (DESIGN.md benchmark format)
    .venv/bin/python benchmarks/tomo.py --quick    # smoke run (seconds)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import logging
import math
import sys
import time
import warnings

import numpy as np

from harness import reporter, run_cases, warn_if_loaded

NAME = "tomo"
ANGLES = np.arange(-75.0, 75.1, 5.0)
_DATA: dict = {}


# -- input ------------------------------------------------------------------------------------
def phantom(size: int, n_slices: int) -> dict:
    """Noisy float32 EDS sinograms in atoms/nm² ``(2, T, S, D)``, HAADF ``(T, S, D)``, truth slice (cached)."""
    key = (size, n_slices)
    if key not in _DATA:
        from emlive.simulators import EDSParticle

        dose = 1e8
        sim = EDSParticle(shape=size, voxel_nm=1.0, scan_shape=(n_slices, size), r_outer_nm=0.39 * size,
                          r_core_nm=0.19 * size, tilt_angles_deg=ANGLES, dose=dose, seed=0)
        rng = np.random.default_rng(0)
        per_atom = dose * sim.solid_angle_sr / (4 * math.pi) * sim.line_cross_sections_nm2
        sino = sim.sinograms()
        eds = np.stack([rng.poisson(sino[el] * per_atom[a]) / per_atom[a] for a, el in enumerate(("Ag", "Au"))])
        haadf = rng.poisson(np.stack([sim.expected_haadf(t) for t in range(ANGLES.size)])).astype(np.float32)
        c = np.arange(size) - (size - 1) / 2
        z, x = np.meshgrid(c, c, indexing="ij")
        oz, oy, ox = sim.core_offset_nm
        y0 = (n_slices // 2 - (n_slices - 1) / 2)
        core = (z - oz) ** 2 + (y0 - oy) ** 2 + (x - ox) ** 2 <= sim.r_core_nm ** 2
        outer = z ** 2 + y0 ** 2 + x ** 2 <= sim.r_outer_nm ** 2
        truth_ag = np.where(core, sim.core_density[0], np.where(outer, sim.shell_density[0], 0.0))
        _DATA[key] = {"eds": eds.astype(np.float32), "haadf": haadf, "truth_ag": truth_ag, "mid": n_slices // 2}
    return _DATA[key]


# -- peers ------------------------------------------------------------------------------------
def astra_peer():
    """ASTRA CPU SIRT on one slice: ``run(sino (T, D) float32, n_iter) -> (n, n)``, or None if astra does not import."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import astra
    except Exception:  # noqa: BLE001 - any import failure means: use the scikit-image peer
        return None

    def make(size: int, angles_deg: np.ndarray):
        vol = astra.create_vol_geom(size, size)
        # ASTRA's angle runs the other way round (as skimage's): its -θ projections equal ours to 0.2 %
        proj = astra.create_proj_geom("parallel", 1.0, size, np.deg2rad(-np.asarray(angles_deg)))
        pid = astra.create_projector("linear", proj, vol)

        def run(sino: np.ndarray, n_iter: int, timer: list | None = None) -> np.ndarray:
            sid = astra.data2d.create("-sino", proj, sino)
            rid = astra.data2d.create("-vol", vol, 0.0)
            cfg = astra.astra_dict("SIRT")
            cfg.update(ReconstructionDataId=rid, ProjectionDataId=sid, ProjectorId=pid, option={"MinConstraint": 0.0})
            aid = astra.algorithm.create(cfg)
            t0 = time.perf_counter()
            astra.algorithm.run(aid, n_iter)
            if timer is not None:
                timer.append(time.perf_counter() - t0)
            out = astra.data2d.get(rid)
            astra.algorithm.delete(aid)
            astra.data2d.delete([sid, rid])
            return out

        return run

    return f"ASTRA {astra.__version__} CPU SIRT (linear projector, MinConstraint 0)", make


def sart_peer():
    """scikit-image ``iradon_sart`` once per iteration (SART, relaxation 0.15): the fallback."""
    from skimage.transform import iradon_sart

    def make(size: int, angles_deg: np.ndarray):
        def run(sino: np.ndarray, n_iter: int, timer: list | None = None) -> np.ndarray:
            t0 = time.perf_counter()
            img = None
            for _ in range(n_iter):  # skimage's angle convention is the negated one (analyzers/tomography.py)
                img = iradon_sart(sino.T.astype(float), theta=-angles_deg, image=img, relaxation=0.15)
                np.maximum(img, 0, out=img)
            if timer is not None:
                timer.append(time.perf_counter() - t0)
            return img

        return run

    return "scikit-image iradon_sart per iteration (SART, not SIRT)", make


def pick_peer(args):
    return (None if args.peer == "sart" else astra_peer()) or sart_peer()


# -- cases ------------------------------------------------------------------------------------
def sirt_case(size: int, args, say) -> dict:
    from emlive.analyzers.tomography import ParallelProjector, sirt

    n_iter = args.iterations or (20 if args.quick else 200)
    data = phantom(size, 3)
    sino = np.ascontiguousarray(data["eds"][0][:, data["mid"]])  # Ag, central slice (T, D)
    t0 = time.perf_counter()
    proj = ParallelProjector(size, ANGLES, dtype=np.float32)
    build = time.perf_counter() - t0
    sirt(proj, sino, n_iter=2)  # numba warm-up
    best = math.inf
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        ours = sirt(proj, sino, n_iter=n_iter)
        best = min(best, time.perf_counter() - t0)

    peer_name, make = pick_peer(args)
    run = make(size, ANGLES)
    times: list = []
    for _ in range(args.repeat):
        theirs = run(sino, n_iter, times)
    peer_best = min(times)
    truth = data["truth_ag"]

    def rel(a, b):
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    say(f"\nsirt {size}x{size}: {ANGLES.size} tilts, {n_iter} iterations, float32 Ag sinogram of the core-shell "
        f"phantom (projector: {proj.matrix.nnz / 1e6:.2f} M non-zeros, built in {build:.2f} s)")
    say(f"  emlive {best:.3f} s   peer {peer_best:.3f} s   ratio {peer_best / best:.2f}   peer: {peer_name}")
    say(f"  rel. difference emlive vs peer {rel(ours, theirs):.3f}; vs truth: emlive {rel(ours, truth):.3f}, "
        f"peer {rel(theirs, truth):.3f}")
    e, p = n_iter / best, n_iter / peer_best
    return {"case": f"sirt-{size}", "unit": "iterations", "emlive_per_s": e, "peer": peer_name, "peer_per_s": p,
            "ratio": e / p}


def hebt_live_case(size: int, args, say) -> dict:
    from emlive.analyzers.tomography import ParallelProjector, hebt, response_ratios

    n_slices = args.slices or (16 if args.quick else size)
    n_iter = args.live_iterations or (5 if args.quick else 20)
    alpha = 0.8
    tg = time.perf_counter()
    data = phantom(size, n_slices)
    eds, haadf = data["eds"], data["haadf"]
    say(f"\nhebt-live {size}x{size}: {n_slices} slices, 2 elements, alpha {alpha}, {n_iter} warm-started "
        f"iterations after tilt {ANGLES.size} (phantom made in {time.perf_counter() - tg:.1f} s)")
    proj = ParallelProjector(size, ANGLES, dtype=np.float32)
    r = response_ratios(haadf, eds)
    before = list(range(ANGLES.size - 1))
    sub = proj.subset(before)
    previous = hebt(sub, eds[:, before], haadf[before], r, alpha, n_iter=5 if args.quick else 50)  # not timed
    acquired = list(range(ANGLES.size))
    best = math.inf
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        live = proj.subset(acquired)
        x = hebt(live, eds[:, acquired], haadf[acquired], r, alpha, x0=previous, n_iter=n_iter)
        best = min(best, time.perf_counter() - t0)
    assert np.isfinite(x).all()

    peer_name, make = pick_peer(args)
    run = make(size, ANGLES)
    k = min(args.peer_slices, n_slices)
    t0 = time.perf_counter()
    for s in range(k):
        run(np.ascontiguousarray(eds[0][:, s]), n_iter)
    peer_update = (time.perf_counter() - t0) / k * (2 * n_slices)
    goal = "met" if best < 5.0 else "missed"
    say(f"  emlive {best:.2f} s per update ({2 * n_slices * size * size / 1e6:.1f} M unknowns; goal < 5 s: {goal})")
    say(f"  peer, EDS-only equivalent: {peer_update:.1f} s (from {k} of {2 * n_slices} slice-elements)   "
        f"ratio {peer_update / best:.1f}   peer: {peer_name}")
    return {"case": f"hebt-live-{size}", "unit": "updates", "emlive_per_s": 1 / best,
            "peer": f"{peer_name}, EDS-only per slice and element (no HEBT), {n_iter} iterations",
            "peer_per_s": 1 / peer_update, "ratio": peer_update / best}


CASES = {"sirt": sirt_case, "hebt-live": hebt_live_case}
DEFAULT_SIZES = {"sirt": (128,), "hebt-live": (128,)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES), help="which cases to run")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="slice sizes (square, pixels)")
    p.add_argument("--iterations", type=int, default=None, help="SIRT iterations in sirt-N (default 200)")
    p.add_argument("--live-iterations", type=int, default=None, help="HEBT iterations per live update (default 20)")
    p.add_argument("--slices", type=int, default=None, help="slices in hebt-live-N (default N)")
    p.add_argument("--peer-slices", type=int, default=8, help="slice-elements the peer runs in hebt-live (scaled)")
    p.add_argument("--peer", choices=("auto", "sart"), default="auto", help="auto: ASTRA if it imports")
    p.add_argument("--threads", type=int, default=None, help="numba threads (default: all cores)")
    p.add_argument("--repeat", type=int, default=3, help="rounds; the best is reported")
    p.add_argument("--quick", action="store_true", help="small run (smoke test): 20 / 5 iterations, 16 slices")
    p.add_argument("--json", action="store_true", help="print one JSON object (DESIGN.md benchmark format)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR)
    if args.quick:
        args.repeat = 1
        args.peer_slices = min(args.peer_slices, 2)
    import numba

    if args.threads:
        numba.set_num_threads(args.threads)
    say = reporter(args.json)
    say(f"{NAME}: {os.cpu_count()} cores, numba threads {numba.get_num_threads()}; best of {args.repeat}")
    warn_if_loaded(say)
    run_cases(NAME, CASES, args.cases, args.sizes, DEFAULT_SIZES, args, say)
    return 0


if __name__ == "__main__":
    sys.exit(main())
