"""Overlays are looked up by analyzer name and computed from the maps at the inspected position (no Qt)."""

from __future__ import annotations

import numpy as np
import pytest

from emlive.viewer.model import Inspection
from emlive.viewer.overlays import Overlay, OverlayCurve, SnemOverlay, gaussian, overlay_for, register_overlay


def test_snem_overlay_draws_the_mapped_gaussians_at_the_position():
    r = np.linspace(0, 10, 501)
    maps = {"fit2_area1": 1.5, "fit2_center1": 2.7, "fit2_width1": 0.2,
            "fit2_area2": 0.8, "fit2_center2": 3.3, "fit2_width2": 0.25}
    arrays = {("snem", k): np.full((3, 4), np.nan) for k in maps}
    for k, v in maps.items():
        arrays[("snem", k)][1, 2] = v
    arrays[("snem", "r")] = r
    truth = gaussian(r, 1.5, 2.7, 0.2) + gaussian(r, 0.8, 3.3, 0.25)
    gr = truth + 0.1 * r - 0.5  # a baseline under the peaks
    insp = Inspection([(1, 2)], [6], curves={("snem", "gr"): gr})
    curves = {c.label.split(":")[0]: c for c in overlay_for("snem").curves("snem", insp, arrays)}
    assert {"Gaussian 1", "Gaussian 2", "sum of Gaussians", "Gaussians + fitted line"} <= set(curves)
    np.testing.assert_allclose(curves["sum of Gaussians"].y, truth)
    assert np.trapezoid(curves["Gaussian 1"].y, r) == pytest.approx(1.5, rel=1e-3)  # areas in Å⁻¹
    line = curves["Gaussians + fitted line"]
    np.testing.assert_allclose(line.y, np.interp(line.x, r, gr), atol=1e-9)
    assert all(c.target == "gr" for c in curves.values())
    # a position without a fit, or an ROI: nothing drawn
    assert SnemOverlay().curves("snem", Inspection([(0, 0)], [0]), arrays) == []
    assert SnemOverlay().curves("snem", Inspection([(1, 2), (1, 3)], [6, 7]), arrays) == []


def test_overlays_are_pluggable_by_analyzer_name():
    assert type(overlay_for("no-such-analyzer")) is Overlay and overlay_for("snem").reference_query == "pearson"

    class Kww(Overlay):
        def curves(self, analyzer, inspection, arrays):
            return [OverlayCurve("g2", "KWW", np.arange(3.0), np.ones(3))]

    register_overlay("ecm-test", Kww())
    try:
        assert overlay_for("ecm-test").curves("ecm-test", Inspection([(0,)], [0]), {})[0].label == "KWW"
        with pytest.raises(TypeError, match="Overlay"):
            register_overlay("ecm-test", object())
    finally:
        from emlive.viewer import overlays
        overlays._REGISTRY.pop("ecm-test", None)
