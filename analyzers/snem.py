"""SNEM: the seed's electron-PDF pipeline as a live analyzer (seed 000, Results 2.1–2.5, Methods 3–4).

Per chunk of diffraction patterns, in a worker:

    frames ─► auto mask (masks) ─► I(Q), masked mean on rings (integration)
           ─► S(Q), F(Q), G(r) by PDFgetX3 (pdf) ─► r_max, G(r_max), Gaussian fits (peakfit)
           └► VBF, ring sum and max, fraction of ring intensity the mask removed (this module)

and in the host, as partials are merged: the mean I(Q) and G(r), and every
``nmf.update_every`` frames (at most every ``nmf.live_interval_s``) a preview NMF
of the glass positions' G(r) (bonds): components from a strided subset,
warm-started from the last ones, weights of every position by projection, giving
bond maps and the SRO map while the scan runs; the end of the run factorises all of them afresh (deterministic
initialisation), so the final maps do not depend on when the live updates ran. A Pearson map against any position is a
query (:meth:`SnemAnalyzer.query`).

Operators (pixel-splitting matrix, ring map, reduction matrices) are built
once per run in :meth:`prepare`; ``process`` is a fixed sequence of batched
kernels and matrix products, so its cost per pattern does not depend on the
chunk size beyond a few dozen frames.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, ClassVar

import numba
import numpy as np

from .base import Analyzer, FrameChunk, Partial, ResultBuffers, ResultSpec, RunInfo, scan_axes
from .bonds import NmfBonds, component_stability, fit_bonds, pair_fractions, project_bonds
from .calibration import corrected_radius
from .form_factors import electron_form_factor, normalized_composition
from .integration import RadialIntegrator, inscribed_radius
from .masks import auto_mask, ring_index, ring_order, static_mask
from .pdf import PdfParams, PdfReducer
from .peakfit import fit_gaussians, gaussian_qois, peak_position, seed_parameters, two_peak_start
from .similarity import pearson_map
from .snem_config import SnemConfig, parse_snem_config

__all__ = ["SnemAnalyzer", "region_stats"]

logger = logging.getLogger(__name__)

STAGES = ("mask", "integrate", "pdf", "peaks", "fit1", "fit2", "regions")
#: Restart correlation below which a bond map's component is called undetermined by the data.
STABLE_COMPONENT = 0.9


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _region_stats(frames, good, base, bf_idx, ann_idx, in_ring, saturation, out):  # pragma: no cover - numba
    """Branch-free sums (selects, so NaN and saturated pixels drop out); the ring part is a dense pass over the
    frame with the ring pixels as a 0/1 weight, which vectorises, instead of a gather through their indices."""
    n, npix = frames.shape
    for f in range(n):
        row = frames[f]
        vbf = 0.0
        for k in range(bf_idx.size):
            p = bf_idx[k]
            v = np.float64(row[p])
            vbf += v if (base[p] and v < saturation) else 0.0
        s = 0.0
        m = -np.inf
        for k in range(ann_idx.size):
            p = ann_idx[k]
            v = np.float64(row[p])
            ok = base[p] and v < saturation
            s += v if ok else 0.0
            if ok and v > m:
                m = v
        total = 0.0
        removed = 0.0
        g = good[f]
        for p in range(npix):
            v = np.float64(row[p])
            x = v if (in_ring[p] != 0) & (v < saturation) else 0.0
            total += x
            removed += x if g[p] == 0 else 0.0
        out[f, 0] = vbf
        out[f, 1] = s
        out[f, 2] = m if ann_idx.size else np.nan
        out[f, 3] = removed / total if total > 0 else np.nan


def region_stats(frames: np.ndarray, good: np.ndarray, base: np.ndarray, bf_idx: np.ndarray, ann_idx: np.ndarray,
                 ring_idx: np.ndarray, saturation: float = math.inf) -> np.ndarray:
    """(n, 4): VBF, annulus sum, annulus max, fraction of the ring intensity removed by the auto mask.

    Pixels bad in ``base`` (static mask) or at/above ``saturation`` are left out of all
    four; ``good`` (n, npix) is the per-frame mask after the automatic step. The
    index lists are sets of pixels (a repeated index of ``ring_idx`` counts once).
    """
    flat = frames.reshape(frames.shape[0], -1)
    out = np.empty((flat.shape[0], 4))
    base = np.asarray(base, dtype=bool).reshape(-1)
    ring_idx = np.asarray(ring_idx, np.int64)
    in_ring = np.zeros(flat.shape[1], dtype=np.uint8)
    in_ring[ring_idx] = base[ring_idx]
    # np.asarray: no copy per chunk for the int64 index lists prepare() keeps
    _region_stats(flat, np.asarray(good).reshape(flat.shape).view(np.uint8), base, np.asarray(bf_idx, np.int64),
                  np.asarray(ann_idx, np.int64), in_ring, float(saturation), out)
    return out


_MAPS = {  # name: (units, description)
    "vbf": ("counts", "virtual bright field: disc of qoi.vbf_radius, saturated pixels left out"),
    "vdf_sum": ("counts", "sum over the first diffuse ring (qoi.annulus)"),
    "vdf_max": ("counts", "brightest pixel on the first diffuse ring: nano-crystals (seed Fig. 5)"),
    "masked_fraction": ("", "fraction of the ring intensity the automatic mask removed (Bragg spots)"),
    "scale": ("", "PDFgetX3 intensity scale"),
    "r_max": ("Å", "first-peak position of G(r) in qoi.peak_window, parabolic refinement"),
    "g_max": ("Å⁻²", "G(r_max)"),
    "fit1_area": ("Å⁻¹", "one Gaussian: area"), "fit1_center": ("Å", "one Gaussian: centre"),
    "fit1_width": ("Å", "one Gaussian: σ"), "fit1_sharpness": ("Å⁻³", "one Gaussian: height / σ"),
    "fit1_cost": ("", "one Gaussian: robust cost"), "fit1_ok": ("", "one Gaussian: converged (1) or not (0)"),
    "fit2_area1": ("Å⁻¹", "two Gaussians: area of the first"), "fit2_center1": ("Å", "centre r1"),
    "fit2_width1": ("Å", "σ1"), "fit2_sharpness1": ("Å⁻³", "height1 / σ1"),
    "fit2_area2": ("Å⁻¹", "area of the second"), "fit2_center2": ("Å", "centre r2"),
    "fit2_width2": ("Å", "σ2"), "fit2_sharpness2": ("Å⁻³", "height2 / σ2"),
    "r1_plus_r2": ("Å", "r1 + r2: falls with clustering (seed Fig. 7)"),
    "fit2_cost": ("", "two Gaussians: robust cost"), "fit2_ok": ("", "two Gaussians: converged (1) or not (0)"),
}
_BOND_MAPS = {
    "bond_xx": "NMF bond map: fraction of X–X pairs", "bond_zrx": "NMF bond map: fraction of Zr–X pairs",
    "bond_zrzr": "NMF bond map: fraction of Zr–Zr pairs", "sro_alpha": "SRO parameter α (seed Eqs. 1–2)",
}


class SnemAnalyzer(Analyzer):
    """Electron PDF and its quantities of interest, per scan position, live.

    Parameters: the sections of :class:`~emlive.analyzers.snem_config.SnemConfig`
    (``calibration``, ``mask``, ``integration``, ``pdf``, ``qoi``, ``nmf``), as
    nested dicts (one TOML section). Needs ``reciprocal_pixel_size`` from the
    stream header or ``calibration``.
    """

    name: ClassVar[str] = "snem"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.config: SnemConfig = parse_snem_config(params)
        self.timings = dict.fromkeys(STAGES, 0.0)  # seconds per stage in this process (benchmarks)
        self._nmf: NmfBonds | None = None
        self._merged_since_nmf = 0
        self._last_nmf = -math.inf

    # ----------------------------------------------------------------- operators
    def prepare(self, run: RunInfo) -> None:
        cfg = self.config
        cal = cfg.calibration.apply(run.calibration)
        if cal.reciprocal_pixel_size is None:
            raise ValueError("snem needs reciprocal_pixel_size (Å⁻¹ per pixel) in the stream's calibration "
                             "or in the analyzer's [calibration] section")
        shape = tuple(run.frame_shape)
        ny, nx = shape
        center = cal.center if cal.center is not None else ((ny - 1) / 2, (nx - 1) / 2)
        self.calibration = cal
        self.npix = ny * nx
        m = cfg.mask
        dead = np.asarray(m.dead_pixels, dtype=np.int64).reshape(-1, 2) if m.dead_pixels else None
        stop_px = None if m.beam_stop is None else m.beam_stop / cal.reciprocal_pixel_size
        self.static = static_mask(shape, edge=m.edge, center=center, beam_stop_radius=stop_px,
                                  dead_pixels=dead).reshape(-1)
        self.saturation = float(m.saturation) if m.saturation is not None else math.inf
        ic = cfg.integration
        r_max = ic.r_max if ic.r_max is not None else inscribed_radius(shape, cal)
        self.integrator = RadialIntegrator(shape, cal, npt=ic.npt, r_range=(ic.r_min, r_max),
                                           method=(ic.split, "csr", "cython"),
                                           pixel_size_m=cfg.calibration.pixel_size_m)
        self.ring, self.n_rings = ring_index(shape, cal, ring_width=m.ring_width, r_min=ic.r_min, r_max=r_max)
        self.ring_order = ring_order(self.ring, self.n_rings)
        p = cfg.pdf
        qmax_data = float(np.nanmax(self.integrator.q))
        self.reducer = PdfReducer(self.integrator.q, PdfParams(
            composition=dict(p.composition), qmin=p.qmin, qmax=min(p.qmax, qmax_data),
            qmaxinst=min(p.qmaxinst, qmax_data), rpoly=p.rpoly, rmin=p.rmin, rmax=p.rmax, rstep=p.rstep))
        self.q = np.asarray(self.integrator.q, dtype=np.float64)
        self.r = np.asarray(self.reducer.r, dtype=np.float64)
        qr = corrected_radius(shape, cal).reshape(-1) * cal.reciprocal_pixel_size
        q = cfg.qoi
        self.bf_idx = np.flatnonzero(qr < q.vbf_radius)
        self.ann_idx = np.flatnonzero((qr >= q.annulus[0]) & (qr < q.annulus[1]))
        self.ring_idx = np.flatnonzero(self.ring >= 0)
        self.fit_sel = (self.r >= q.peak_window[0]) & (self.r <= q.peak_window[1])
        self.fits = {}
        for n_peaks, fc in ((1, q.one_gaussian), (2, q.two_gaussians)):
            if fc.enabled:
                p0, lo, hi = seed_parameters(n_peaks)
                self.fits[n_peaks] = (None if fc.p0 is None else np.asarray(fc.p0, float),
                                      lo if fc.lower is None else np.asarray(fc.lower, float),
                                      hi if fc.upper is None else np.asarray(fc.upper, float))
        nm = cfg.nmf
        self.nmf_sel = (self.r >= nm.window[0]) & (self.r <= nm.window[1])
        self._form_products = self._pair_form_products() if nm.enabled and nm.scattering_weights else None

    def _pair_form_products(self) -> tuple[float, float, float]:
        """(f_X², f_A f_X, f_A²) averaged over the Q range of the transform: the pairs' weights in G(r)."""
        comp = normalized_composition(self.config.pdf.composition)
        heavy = self.config.nmf.heavy
        if heavy not in comp or len(comp) < 2:
            raise ValueError(f"nmf.heavy {heavy!r} must be one of several elements of pdf.composition {comp}")
        qq = np.linspace(max(self.config.pdf.qmin, 0.5), self.config.pdf.qmax, 64)
        rest = {el: c for el, c in comp.items() if el != heavy}
        total = sum(rest.values())
        f_a = float(np.mean(electron_form_factor(heavy, qq)))
        f_x = float(np.mean(sum(c / total * electron_form_factor(el, qq) for el, c in rest.items())))
        return f_x * f_x, f_a * f_x, f_a * f_a

    # ----------------------------------------------------------------- results
    def results(self, run: RunInfo) -> dict[str, ResultSpec]:
        if not hasattr(self, "reducer"):
            self.prepare(run)
        n, axes = run.n_frames, scan_axes(run.scan_shape)
        specs = {name: ResultSpec("map", (n,), "float32", axes, units, description=what)
                 for name, (units, what) in _MAPS.items()}
        nq, nr = self.q.size, self.r.size
        specs["q"] = ResultSpec("curve", (nq,), "float64", ("q",), "Å⁻¹", "custom", "q of the I(Q) bins")
        specs["r"] = ResultSpec("curve", (nr,), "float64", ("r",), "Å", "custom", "r of the G(r) points")
        specs["iq_mean"] = ResultSpec("curve", (nq,), "float64", ("q",), "counts", "custom",
                                      "mean masked I(Q) over the positions analysed so far")
        specs["gr_mean"] = ResultSpec("curve", (nr,), "float64", ("r",), "Å⁻²", "custom", "mean G(r)")
        if self.config.qoi.keep_stacks:
            specs["iq"] = ResultSpec("stack", (n, nq), "float32", (*axes, "q"), "counts",
                                     description="masked mean I(Q) per position")
            specs["gr"] = ResultSpec("stack", (n, nr), "float32", (*axes, "r"), "Å⁻²",
                                     description="reduced PDF G(r) per position")
        if self.config.nmf.enabled:
            for name, what in _BOND_MAPS.items():
                # frame-indexed like the other maps, but written by the host's NMF, not by the partials
                specs[name] = ResultSpec("map", (n,), "float32", axes, "", "frames", what)
            k, nw = self.config.nmf.n_components, int(self.nmf_sel.sum())
            specs["nmf_components"] = ResultSpec("curve", (k, nw), "float64", ("component", "r"), "a.u.",
                                                 "custom", "NMF components, sorted by peak position")
            specs["nmf_r"] = ResultSpec("curve", (nw,), "float64", ("r",), "Å", "custom",
                                        "r of the NMF components")
            specs["nmf_stability"] = ResultSpec("curve", (k,), "float64", ("component",), "", "custom",
                                                "per component, the lowest correlation with which random NMF "
                                                "restarts of equal error reproduce it (1: the data determine it; "
                                                "set at the end of the scan)")
        return specs

    def initialize(self, store: ResultBuffers) -> None:
        store["q"][:] = self.q
        store["r"][:] = self.r
        if "nmf_r" in store:
            store["nmf_r"][:] = self.r[self.nmf_sel]
        self._sum_iq = np.zeros(self.q.size)
        self._n_iq = np.zeros(self.q.size)
        self._sum_gr = np.zeros(self.r.size)
        self._n_gr = 0

    # ----------------------------------------------------------------- per chunk (workers)
    def process(self, chunk: FrameChunk) -> Partial:
        cfg, t = self.config, self.timings
        frames = chunk.frames
        n = frames.shape[0]
        flat = frames.reshape(n, -1)
        t0 = time.perf_counter()
        m = cfg.mask
        sat = m.saturation
        if m.auto:
            good = auto_mask(flat, self.ring, self.n_rings, self.static, alpha=m.alpha, lower=m.lower,
                             upper=m.upper, saturation=sat, max_iter=m.max_iter, order=self.ring_order)
        else:
            good = self._threshold(flat)
        t1 = time.perf_counter()
        iq = self.integrator.integrate(flat, good)
        t2 = time.perf_counter()
        pdf = self.reducer.reduce(iq)
        gr = pdf.gr
        t3 = time.perf_counter()
        r_max, g_max = peak_position(self.r, gr, cfg.qoi.peak_window)
        t4 = time.perf_counter()
        values: dict[str, np.ndarray] = {"r_max": r_max, "g_max": g_max, "scale": pdf.scale}
        times = [t0, t1, t2, t3, t4]
        rw, gw = self.r[self.fit_sel], gr[:, self.fit_sel]
        one = None
        for n_peaks in (1, 2):
            if n_peaks in self.fits:
                p0, lo, hi = self.fits[n_peaks]
                prefit = None
                if n_peaks == 2 and p0 is None and one is not None:   # the two-peak fit starts from the one-peak
                    p0, prefit = two_peak_start(rw, gw, one, lower=lo, upper=hi, window=None), True
                fit = fit_gaussians(rw, gw, n_peaks, p0=p0, lower=lo, upper=hi, loss=cfg.qoi.loss,
                                    f_scale=cfg.qoi.f_scale, max_iter=cfg.qoi.max_iter, window=None, prefit=prefit)
                if n_peaks == 1:
                    one = fit.params
                values.update(self._fit_maps(fit, n_peaks))
            else:
                values.update({k: np.full(n, np.nan) for k in _MAPS if k.startswith(f"fit{n_peaks}")})
                if n_peaks == 2:
                    values["r1_plus_r2"] = np.full(n, np.nan)
            times.append(time.perf_counter())
        regions = region_stats(flat, good, self.static, self.bf_idx, self.ann_idx, self.ring_idx,
                               self.saturation)
        times.append(time.perf_counter())
        values.update(vbf=regions[:, 0], vdf_sum=regions[:, 1], vdf_max=regions[:, 2],
                      masked_fraction=regions[:, 3])
        for stage, a, b in zip(STAGES, times[:-1], times[1:]):
            t[stage] += b - a
        values = {k: np.asarray(v, dtype=np.float32) for k, v in values.items()}
        if cfg.qoi.keep_stacks:
            values["iq"] = iq.astype(np.float32)
            values["gr"] = gr.astype(np.float32)
        else:  # the host's running means still need the curves
            values["iq"] = iq
            values["gr"] = gr
        return Partial(chunk.first, n, values)

    def _threshold(self, flat: np.ndarray) -> np.ndarray:
        """The mask without the automatic step: static ∧ thresholds ∧ unsaturated."""
        m = self.config.mask
        good = np.broadcast_to(self.static, flat.shape).copy()
        if m.lower is not None:
            good &= flat >= m.lower
        if m.upper is not None:
            good &= flat <= m.upper
        if m.saturation is not None:
            good &= flat < m.saturation
        return good

    @staticmethod
    def _fit_maps(fit, n_peaks: int) -> dict[str, np.ndarray]:
        q = gaussian_qois(fit.params, n_peaks)
        ok = fit.success.astype(np.float32)
        if n_peaks == 1:
            return {"fit1_area": q["area1"], "fit1_center": q["center1"], "fit1_width": q["width1"],
                    "fit1_sharpness": q["sharpness1"], "fit1_cost": fit.cost, "fit1_ok": ok}
        return {"fit2_area1": q["area1"], "fit2_center1": q["center1"], "fit2_width1": q["width1"],
                "fit2_sharpness1": q["sharpness1"], "fit2_area2": q["area2"], "fit2_center2": q["center2"],
                "fit2_width2": q["width2"], "fit2_sharpness2": q["sharpness2"], "r1_plus_r2": q["r1_plus_r2"],
                "fit2_cost": fit.cost, "fit2_ok": ok}

    # ----------------------------------------------------------------- host
    def merge(self, store: ResultBuffers, partial: Partial) -> None:
        iq, gr = partial.values["iq"], partial.values["gr"]
        values = partial.values
        if not self.config.qoi.keep_stacks:
            values = {k: v for k, v in values.items() if k not in ("iq", "gr")}
        store.merge_default(Partial(partial.first, partial.count, values, partial.tile))
        ok = np.isfinite(iq)
        self._sum_iq += np.where(ok, iq, 0.0).sum(axis=0)
        self._n_iq += ok.sum(axis=0)
        rows = np.isfinite(gr).all(axis=1)
        self._sum_gr += gr[rows].sum(axis=0, dtype=np.float64)
        self._n_gr += int(rows.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            store["iq_mean"][:] = self._sum_iq / self._n_iq
        store["gr_mean"][:] = self._sum_gr / self._n_gr if self._n_gr else np.nan
        self._merged_since_nmf += partial.count
        nm = self.config.nmf
        if nm.enabled and self.config.qoi.keep_stacks and self._merged_since_nmf >= nm.update_every \
                and time.monotonic() - self._last_nmf >= nm.live_interval_s:
            self._update_bonds(store, final=False)

    def finalize(self, store: ResultBuffers) -> None:
        if self.config.nmf.enabled and self.config.qoi.keep_stacks:
            self._update_bonds(store, final=True)

    def glass_positions(self, store: ResultBuffers) -> np.ndarray:
        """Frame indices that take part in the NMF: analysed, finite G(r), not crystalline (seed: Ni masked)."""
        gr = store["gr"][:, self.nmf_sel]
        ok = np.isfinite(gr).all(axis=1)
        frac = store["masked_fraction"]
        ok &= np.isfinite(frac) & (frac <= self.config.nmf.exclude_crystalline)
        return np.flatnonzero(ok)

    def _update_bonds(self, store: ResultBuffers, final: bool) -> None:
        """Live: components from a strided subset, warm-started, weights of all by projection. Final: full NMF."""
        nm = self.config.nmf
        self._merged_since_nmf = 0
        self._last_nmf = time.monotonic()
        rows = self.glass_positions(store)
        if rows.size < 4 * nm.n_components:
            return
        t0 = time.perf_counter()
        curves = store["gr"][rows][:, self.nmf_sel]
        sample = curves[::max(1, rows.size // nm.live_positions)]  # live components; end-of-scan restarts
        try:
            if final:
                self._nmf = fit_bonds(curves, self.r[self.nmf_sel], n_components=nm.n_components,
                                      margin=nm.margin, max_iter=nm.final_max_iter, tol=nm.tol,
                                      random_state=nm.random_state)
            else:
                fit = fit_bonds(sample, self.r[self.nmf_sel], n_components=nm.n_components,
                                margin=nm.margin, max_iter=nm.live_max_iter, random_state=nm.random_state,
                                warm_start=self._nmf)
                self._nmf = project_bonds(fit, curves)
        except ValueError as exc:
            logger.warning("NMF skipped: %s", exc)
            return
        if final and nm.restarts:
            self._check_stability(store, sample)
        fr = pair_fractions(self._nmf, self.r[self.nmf_sel], self._form_products)
        for name, key in (("bond_xx", "xx"), ("bond_zrx", "zrx"), ("bond_zrzr", "zrzr"), ("sro_alpha", "alpha")):
            arr = store[name]
            arr[:] = np.nan
            arr[rows] = fr[key]
        store["nmf_components"][:] = self._nmf.components
        store.version += 1
        logger.info("NMF %s on %d positions: %d iterations, %.2f s", "final" if final else "live", rows.size,
                    self._nmf.n_iter, time.perf_counter() - t0)

    def _check_stability(self, store: ResultBuffers, curves: np.ndarray) -> None:
        """Restart the NMF on (a stride of) the glass curves and say whether the bond maps are determined."""
        nm = self.config.nmf
        stability, counted = component_stability(self._nmf, curves, restarts=nm.restarts,
                                                  random_state=nm.random_state)
        store["nmf_stability"][:] = stability
        pairs = stability[list(self._nmf.pair_components)]
        if counted and np.nanmin(pairs) < STABLE_COMPONENT:
            logger.warning("NMF bond maps are not determined by the data: %d restarts that fit as well reproduce the "
                           "X–X, Zr–X, Zr–Zr components only to correlation %s; read the bond maps and α as "
                           "semi-qualitative (seed 000, Results 2.5)", counted, np.round(pairs, 2).tolist())

    def query(self, store: ResultBuffers, request: dict) -> dict[str, np.ndarray]:
        """``{"query": "pearson", "index": i}`` (or ``"position": [y, x]``): Pearson map of G(r) against i."""
        kind = request.get("query")
        if kind != "pearson":
            raise ValueError(f"snem answers the query 'pearson', not {kind!r}")
        if "gr" not in store:
            raise ValueError("the Pearson query needs qoi.keep_stacks = true")
        scan = store.run.scan_shape
        if "position" in request:
            index = int(np.ravel_multi_index(tuple(int(v) for v in request["position"]), scan))
        else:
            index = int(request["index"])
        lo, hi = request.get("r_range", self.config.qoi.pearson_window)
        window = (self.r >= lo) & (self.r <= hi)
        gr = store["gr"]
        if not np.isfinite(gr[index, window]).all():
            raise ValueError(f"position {index} has no G(r) yet")
        with np.errstate(invalid="ignore"):
            rho = pearson_map(gr, index, window)
        return {"pearson": rho.reshape(scan).astype(np.float32)}
