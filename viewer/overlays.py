"""Per-analyzer additions to the generic viewer, keyed by analyzer name.

The panels come from each result's declared kind, so a new analyzer shows up without viewer
changes; what only makes sense for one analyzer (the fitted Gaussians on a SNEM G(r), the KWW
fit on an ECM g2(τ), which reference query a modifier-click asks) is an :class:`Overlay`
registered here under the analyzer's name. Overlays return plain arrays: the inspect panel
draws them, and they can be tested without Qt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .model import Inspection, Key


@dataclass(frozen=True)
class OverlayCurve:
    """One curve to draw on the inspect plot of ``target`` (a stack result of the same analyzer)."""

    target: str
    label: str
    x: np.ndarray
    y: np.ndarray
    color: str = "#ff7f0e"
    dashed: bool = False


class Overlay:
    """Base overlay: nothing drawn, no reference query."""

    #: the analyzer query a modifier-click asks with ``position=[y, x]`` (None: not offered)
    reference_query: str | None = None
    #: the array of the answer shown as a map
    reference_answer: str | None = None
    #: the analyzer query a plain click also asks with ``position=[y, x]`` (None: none)
    inspect_query: str | None = None

    def curves(self, analyzer: str, inspection: Inspection, arrays: dict[Key, np.ndarray]) -> list[OverlayCurve]:
        return []


def gaussian(r: np.ndarray, area: float, center: float, width: float) -> np.ndarray:
    """A/(σ√(2π)) exp(−(r−c)²/(2σ²)): the SNEM fit model's peaks (areas in Å⁻¹, r, c, σ in Å)."""
    return area / (width * math.sqrt(2 * math.pi)) * np.exp(-0.5 * ((r - center) / width) ** 2)


class SnemOverlay(Overlay):
    """The two fitted Gaussians of the first G(r) peak (one if the two-peak fit failed), and their sum.

    The baseline a·r + b of the fit is not mapped, so it is refitted here as a line through
    G − Gaussians on ``baseline_window`` Å (the analyzer's fit window) and drawn there, added to the
    Gaussians: close to the analyzer's model, enough to judge the fit by eye.
    """

    reference_query = "pearson"
    reference_answer = "pearson"
    baseline_window = (2.1, 4.0)

    def curves(self, analyzer: str, inspection: Inspection, arrays: dict[Key, np.ndarray]) -> list[OverlayCurve]:
        r = arrays.get((analyzer, "r"))
        if r is None or len(inspection.positions) != 1:
            return []  # an ROI mean has no single fit
        p = inspection.position

        def at(name: str) -> float:
            m = arrays.get((analyzer, name))
            return float(m[p]) if m is not None and m.ndim == len(p) else math.nan

        peaks = [(at(f"fit2_area{k}"), at(f"fit2_center{k}"), at(f"fit2_width{k}")) for k in (1, 2)]
        if not all(np.isfinite(v).all() and v[2] > 0 for v in map(np.asarray, peaks)):
            one = (at("fit1_area"), at("fit1_center"), at("fit1_width"))
            if not (np.isfinite(one).all() and one[2] > 0):
                return []
            peaks = [one]
        colors = ("#d62728", "#2ca02c")
        out = []
        total = np.zeros_like(r, dtype=np.float64)
        for k, (a, c, w) in enumerate(peaks):
            g = gaussian(r, a, c, w)
            total += g
            out.append(OverlayCurve("gr", f"Gaussian {k + 1}: r={c:.3f} Å σ={w:.3f} Å", r, g, colors[k % 2]))
        out.append(OverlayCurve("gr", "sum of Gaussians", r, total, "#ff7f0e", dashed=True))
        gr = inspection.curves.get((analyzer, "gr"))
        if gr is not None and gr.shape == r.shape:
            sel = (r >= self.baseline_window[0]) & (r <= self.baseline_window[1]) & np.isfinite(gr)
            if sel.sum() >= 3:
                slope, icpt = np.polyfit(r[sel], gr[sel] - total[sel], 1)
                out.append(OverlayCurve("gr", "Gaussians + fitted line", r[sel],
                                        total[sel] + slope * r[sel] + icpt, "#9467bd"))
        return out


class EcmOverlay(Overlay):
    """A click on an ECM map (detector pixels) shows that pixel's g2(τ) and its KWW fit (the ``g2`` query)."""

    inspect_query = "g2"

    def curves(self, analyzer: str, inspection: Inspection, arrays: dict[Key, np.ndarray]) -> list[OverlayCurve]:
        answer = inspection.answers.get(analyzer)
        if not answer or "fit" not in answer or not np.isfinite(answer["fit"]).any():
            return []
        a, tau, beta = (float(v) for v in answer["params"])
        return [OverlayCurve("g2", f"KWW: A={a:.3f} τ={tau:.3g} s β={beta:.2f}", np.asarray(answer["lags"]),
                             np.asarray(answer["fit"]), "#d62728")]


_REGISTRY: dict[str, Overlay] = {"snem": SnemOverlay(), "ecm": EcmOverlay()}


def register_overlay(analyzer: str, overlay: Overlay) -> None:
    """Add (or replace) the overlay of an analyzer: its issue adds one line here, nothing else."""
    if not isinstance(overlay, Overlay):
        raise TypeError(f"overlay for {analyzer!r} must be an Overlay, got {type(overlay).__name__}")
    _REGISTRY[analyzer] = overlay


def overlay_for(analyzer: str) -> Overlay:
    return _REGISTRY.get(analyzer, _NONE)


_NONE = Overlay()

__all__ = ["Overlay", "OverlayCurve", "SnemOverlay", "EcmOverlay", "gaussian", "overlay_for", "register_overlay"]
