"""Colormaps, automatic levels and the colour of unmeasured pixels, shared by the panels and exports."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg

#: colour of pixels not measured yet (NaN in a map): a dark violet no colormap here produces
UNFILLED = (58, 48, 70)
COLORMAPS = ("viridis", "inferno", "magma", "plasma", "cividis", "turbo", "gray")


def colormap(name: str) -> pg.ColorMap:
    if name == "gray":
        return pg.ColorMap([0.0, 1.0], [(0, 0, 0), (255, 255, 255)], name="gray")
    if name not in COLORMAPS:
        raise ValueError(f"unknown colormap {name!r}; expected one of {', '.join(COLORMAPS)}")
    return pg.colormap.get(name)


def auto_levels(arr: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0)) -> tuple[float, float]:
    """Levels from the finite values' percentiles: one hot pixel must not wash out the map."""
    finite = np.asarray(arr, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, percentiles)
    if not hi > lo:
        lo, hi = float(finite.min()), float(finite.max())
    if not hi > lo:
        hi = lo + (abs(lo) * 1e-6 or 1.0)
    return float(lo), float(hi)


def render_rgba(arr: np.ndarray, cmap: str, levels: tuple[float, float]) -> np.ndarray:
    """The map as the panel colours it, (ny, nx, 4) uint8, NaN in :data:`UNFILLED` (for PNG export)."""
    arr = np.asarray(arr, dtype=np.float64)
    lo, hi = levels
    with np.errstate(invalid="ignore"):
        norm = np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
    lut = colormap(cmap).getLookupTable(0.0, 1.0, 256, alpha=True)
    idx = np.nan_to_num(norm * 255, nan=0).round().astype(np.intp)
    rgba = lut[idx].astype(np.uint8)
    rgba[~np.isfinite(arr)] = (*UNFILLED, 255)
    return rgba


__all__ = ["UNFILLED", "COLORMAPS", "colormap", "auto_levels", "render_rgba"]
