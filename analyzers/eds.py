"""EDS and HAADF tilt-series tomography, live: line maps, sinograms, SIRT or HEBT, quantification (seed 001).

Per chunk (workers): every probe position's spectrum becomes line intensities
(:mod:`.eds_lines`), next to the HAADF readback that came with the frame.

Per tilt (host, :class:`~emlive.analyzers.base.BoundaryHook`), once all its positions
are merged, over the tilts acquired so far:

    HAADF maps ─► alignment shifts (:mod:`.alignment`) ─► applied to every element map
    element maps ─► constant total per tilt (shadowing, seed 3.2.1) ─► optional Gaussian σ 0.8
    sinograms (tilt, slice along the axis, x) ─► HEBT (or SIRT) on the acquired tilts,
        warm-started from the previous tilt's volume (:mod:`.tomography`)
    volumes ─► weight fractions (EDS-only: X_A/f_A; HEBT: r_A X_A / z_A; :mod:`.xray_physics`),
        inside the particle threshold of the edge-spread fit (``threshold = "esf"``)
    weight fractions ─► SSIM and MSE per element against a reference (``reference``: an
        ``.npz`` of ``wt_<El>`` volumes, e.g. the simulator's truth), per number of tilts

The end of the run re-runs the reconstruction with ``final_iterations`` from the last
live volume. The scan is ``(n_tilt, ny, nx)`` with the tilt axis along y (the
``eds_tilt_series`` plan and the phantom's convention); angles come from the run's
``plan["tomo"]["angles"]``, the energy axis from ``plan["eds"]["energy_axis"]``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar, Literal

import msgspec
import numpy as np

from .alignment import apply_shifts, tilt_shifts
from .base import Analyzer, FrameChunk, Partial, ResultBuffers, ResultSpec, RunInfo
from .eds_lines import LineWindows, normalise_tilt_series
from .tomography import ParallelProjector, gaussian_filter_sinogram, hebt, response_ratios, sirt
from .tomography import mse, ssim
from .xray_physics import esf_threshold, haadf_z, sensitivity_f

__all__ = ["EdsTomography", "EdsConfig"]

logger = logging.getLogger(__name__)


class EdsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The EDS tomography recipe (one TOML section)."""

    lines: list[tuple[str, str]] = msgspec.field(default_factory=lambda: [("Ag", "La"), ("Au", "Ma")])
    background: Literal["side-windows", "linear", "power-law"] = "side-windows"
    haadf: str = "haadf"                  # name of the per-frame HAADF readback
    physics: str = "library"              # or "seed-table-2": where σ_ion, ω, p, σ_el come from
    beam_kev: float | None = None         # None: the run's plan["eds"]["beam_kev"]
    align: bool = True
    normalise: bool = True                # constant total per tilt (shadowing)
    gaussian_sigma: float | None = 0.8    # on the EDS sinograms; None: off
    method: Literal["hebt", "sirt"] = "hebt"
    alpha: float = 0.6                    # HEBT balance: 0 = EDS only, 1 = HAADF only
    live_iterations: int = 20
    final_iterations: int = 100
    threshold: Literal["esf", "none"] = "esf"   # particle voxels for the weight fractions (seed 2.1)
    reference: str | None = None          # .npz of wt_<El> volumes (z, y, x): SSIM and MSE against it

    def __post_init__(self) -> None:
        if not self.lines:
            raise ValueError("lines must name at least one (element, line family)")
        if not 0.0 <= self.alpha <= 1.0 or self.live_iterations < 1 or self.final_iterations < 1:
            raise ValueError("alpha in [0, 1] and iterations >= 1 expected")


class EdsTomography(Analyzer):
    """Element sinograms and their reconstruction, updated after each tilt of an EDS/HAADF tilt series."""

    name: ClassVar[str] = "eds"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        try:
            self.config = msgspec.convert(dict(params), EdsConfig)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid eds configuration: {exc}") from None
        self._volume: np.ndarray | None = None
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ per run
    def prepare(self, run: RunInfo) -> None:
        if len(run.scan_shape) != 3:
            raise ValueError(f"eds needs a (n_tilt, ny, nx) scan, got {run.scan_shape}")
        eds_md = run.plan.get("eds") or {}
        axis = eds_md.get("energy_axis")
        if not axis:
            raise ValueError("eds needs the energy axis in the run's plan metadata (plan['eds']['energy_axis'])")
        self.n_tilt, self.ny, self.nx = (int(v) for v in run.scan_shape)
        angles = (run.plan.get("tomo") or {}).get("angles")
        if angles is None or len(angles) != self.n_tilt:
            raise ValueError(f"eds needs {self.n_tilt} tilt angles in plan['tomo']['angles'], got {angles!r}")
        self.angles = np.asarray(angles, dtype=float)
        self.beam_kev = float(self.config.beam_kev or eds_md.get("beam_kev") or 200.0)
        self.windows = LineWindows((float(axis["offset_kev"]), float(axis["scale_kev"]), int(axis["n_channels"])),
                                   [tuple(x) for x in self.config.lines], background=self.config.background)
        self.elements = [el for el, _ in self.config.lines]
        self.names = list(self.windows.names)
        self.projector = ParallelProjector(self.nx, self.angles, dtype=np.float32)
        self._prepared_for = run.run_uid

    def results(self, run: RunInfo) -> dict[str, ResultSpec]:
        if getattr(self, "_prepared_for", None) != run.run_uid:  # the host prepares first; build once
            self.prepare(run)
        n, nt, ny, nx, ne = run.n_frames, self.n_tilt, self.ny, self.nx, len(self.names)
        scan = ("tilt", "scan_y", "scan_x")
        specs = {
            "lines": ResultSpec("stack", (n, ne), "float32", (*scan, "line"), "counts",
                                description="line intensities per probe position: " + ", ".join(self.names)),
            "haadf": ResultSpec("map", (n,), "float32", scan, "counts", description="HAADF per probe position"),
            "shifts": ResultSpec("curve", (nt, 2), "float64", ("tilt", "yx"), "px", "custom",
                                 "alignment shifts (dy, dx) of each tilt, from HAADF"),
            "sinogram_haadf": ResultSpec("stack", (nt, ny, nx), "float32", ("tilt", "slice", "x"), "counts",
                                         "custom", "aligned HAADF sinograms, one per slice along the tilt axis"),
            "response_ratios": ResultSpec("curve", (ne,), "float64", ("line",), "", "custom",
                                          "HAADF ≈ Σ r_A · EDS_A (non-negative regression)"),
            "tilts_reconstructed": ResultSpec("scalar", (1,), "float64", (), "", "custom",
                                              "tilts in the current reconstruction"),
            "particle_threshold": ResultSpec("scalar", (1,), "float64", (), "", "custom",
                                             "threshold on Σ_A X_A/f_A inside which weight fractions are given"),
        }
        if self.config.reference is not None:
            for metric, what in (("ssim", "SSIM"), ("mse", "MSE")):
                specs[f"{metric}_wt"] = ResultSpec(
                    "curve", (nt, ne), "float64", ("tilts", "line"), "", "custom",
                    f"{what} of each weight-fraction volume against the reference (SSIM: mean over the (z, x) "
                    f"slices), by number of tilts "
                    f"reconstructed (row k: k + 1 tilts; the last row: the final reconstruction)")
        for name, el in zip(self.names, self.elements):
            specs[f"sinogram_{name}"] = ResultSpec("stack", (nt, ny, nx), "float32", ("tilt", "slice", "x"),
                                                   "counts", "custom", f"aligned {name} sinograms")
            specs[f"volume_{name}"] = ResultSpec("volume", (nx, ny, nx), "float32", ("z", "y", "x"), "counts/px",
                                                 "custom", f"reconstructed {name} ({self.config.method.upper()})")
            specs[f"wt_{el}"] = ResultSpec("volume", (nx, ny, nx), "float32", ("z", "y", "x"), "wt fraction",
                                           "custom", f"{el} weight fraction per voxel")
        return specs

    def initialize(self, store: ResultBuffers) -> None:
        store["tilts_reconstructed"][0] = 0
        store["particle_threshold"][0] = np.nan
        self._reference = self._load_reference() if self.config.reference is not None else None

    def _load_reference(self) -> dict[str, np.ndarray]:
        """The reference weight-fraction volumes, checked against the reconstruction's shape (host only)."""
        path = self.config.reference
        try:
            with np.load(path) as f:
                ref = {el: np.asarray(f[f"wt_{el}"], dtype=float) for el in self.elements}
        except (OSError, KeyError) as exc:
            raise ValueError(f"eds reference {path!r} must be an .npz with "
                             f"{', '.join('wt_' + el for el in self.elements)}: {exc}") from None
        shape = (self.nx, self.ny, self.nx)
        for el, v in ref.items():
            if v.shape != shape:
                raise ValueError(f"eds reference wt_{el} has shape {v.shape}, the volume is {shape} (z, y, x)")
        return ref

    # ------------------------------------------------------------------ per chunk (workers)
    def process(self, chunk: FrameChunk) -> Partial:
        spectra = chunk.frames.reshape(chunk.count, -1)
        values = {"lines": self.windows.intensities(spectra).astype(np.float32)}
        haadf = chunk.positions.get(self.config.haadf)
        if haadf is not None:
            values["haadf"] = np.asarray(haadf, dtype=np.float32)
        return Partial(chunk.first, chunk.count, values)

    # ------------------------------------------------------------------ per tilt (host)
    def on_boundary(self, store: ResultBuffers, index: int, complete: bool) -> None:
        self._reconstruct(store, self.config.live_iterations)

    def finalize(self, store: ResultBuffers) -> None:
        self._reconstruct(store, self.config.final_iterations)

    def _acquired(self, store: ResultBuffers) -> np.ndarray:
        lines = store["lines"].reshape(self.n_tilt, self.ny * self.nx, -1)
        return np.flatnonzero(np.isfinite(lines).all(axis=(1, 2)))

    def _reconstruct(self, store: ResultBuffers, n_iter: int) -> None:
        cfg = self.config
        tilts = self._acquired(store)
        if tilts.size < 2:
            return
        t0 = time.perf_counter()
        ne = len(self.names)
        maps = store["lines"].reshape(self.n_tilt, self.ny, self.nx, ne)[tilts].transpose(3, 0, 1, 2)
        haadf = store["haadf"].reshape(self.n_tilt, self.ny, self.nx)[tilts].astype(np.float64)
        have_haadf = np.isfinite(haadf).all()
        if cfg.align and have_haadf:
            shifts = tilt_shifts(haadf)
            haadf = apply_shifts(haadf, -shifts)
            maps = np.stack([apply_shifts(m, -shifts) for m in maps])
            store["shifts"][:] = np.nan
            store["shifts"][tilts] = shifts
        if cfg.normalise:
            maps = np.stack([normalise_tilt_series(m) for m in maps])
        # sinogram layout (tilt, slice along the axis = y, detector = x): the maps as they are
        for name, m in zip(self.names, maps):
            store[f"sinogram_{name}"][:] = np.nan
            store[f"sinogram_{name}"][tilts] = m
        if have_haadf:
            store["sinogram_haadf"][:] = np.nan
            store["sinogram_haadf"][tilts] = haadf
        eds = np.stack([gaussian_filter_sinogram(m, cfg.gaussian_sigma, axes=(1, 2)) for m in maps]) \
            if cfg.gaussian_sigma else maps
        proj = self.projector.subset(tilts)
        if cfg.method == "hebt" and have_haadf:
            ratios = response_ratios(haadf, eds)
            store["response_ratios"][:] = ratios
            x0 = self._volume if self._volume is not None and self._volume.shape[0] == ne else None
            vol = hebt(proj, eds, haadf, ratios, cfg.alpha, x0=x0, n_iter=n_iter)
            weights = np.array([r / haadf_z(el, self.beam_kev, source=cfg.physics)
                                for r, el in zip(ratios, self.elements)])
        else:
            x0 = self._volume
            vol = np.stack([sirt(proj, e, x0=None if x0 is None else x0[k], n_iter=n_iter)
                            for k, e in enumerate(eds)])
            weights = np.array([1.0 / sensitivity_f(el, line, self.beam_kev, source=cfg.physics)
                                for el, line in self.config.lines])
        self._volume = vol
        for name, v in zip(self.names, vol):
            store[f"volume_{name}"][:] = v
        scaled = np.clip(vol, 0, None) * weights.reshape(-1, 1, 1, 1)
        total = scaled.sum(axis=0)
        threshold = 0.0
        if cfg.threshold == "esf" and total.max() > 0:
            threshold = esf_threshold(total)[0]
        store["particle_threshold"][0] = threshold
        with np.errstate(invalid="ignore", divide="ignore"):
            fractions = np.where(total > threshold, scaled / total, np.nan)
        # weight fractions need atomic weights only if the factors are per mole: sensitivity_f and haadf_z
        # already divide by M, so X/f is proportional to mass
        for el, frac in zip(self.elements, fractions):
            store[f"wt_{el}"][:] = frac
        if self._reference is not None:
            row = tilts.size - 1  # the final reconstruction overwrites the live one of all tilts
            for e, (el, frac) in enumerate(zip(self.elements, fractions)):
                got, ref = np.nan_to_num(frac, nan=0.0), self._reference[el]   # outside the particle: 0
                store["ssim_wt"][row, e] = np.mean([ssim(got[:, j], ref[:, j], data_range=1.0)  # per (z, x) slice
                                                      for j in range(self.ny)])
                store["mse_wt"][row, e] = mse(got, ref)                        # fractions: no scaling (seed)
        store["tilts_reconstructed"][0] = tilts.size
        store.version += 1
        self.timings[f"tilts={tilts.size}"] = time.perf_counter() - t0
        logger.info("eds: %s on %d tilts, %d iterations, %.2f s", cfg.method, tilts.size, n_iter,
                    time.perf_counter() - t0)
