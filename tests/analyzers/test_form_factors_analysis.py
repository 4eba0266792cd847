"""Electron form factors of the analysis (emlive.analyzers.form_factors) against independent truths.

Truths: hydrogen's analytic Mott–Bethe curve, the Rutherford limit, Mott–Bethe evaluated
here from xraylib directly, and the simulator's own (3-Gaussian regularised) implementation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import xraylib
from scipy import constants

from emlive.analyzers.form_factors import (MOTT_BETHE_C, electron_form_factor, mixture_factors,
                                           normalized_composition)
from emlive.simulators.form_factors import electron_form_factor as simulator_form_factor

A0 = constants.physical_constants["Bohr radius"][0] * 1e10  # Å
ELEMENTS = ["Al", "Ni", "Cu", "Zr"]


def hydrogen_fe(q):
    """Mott–Bethe of the hydrogen 1s X-ray form factor f_x = 1/(1 + (q a0/2)²)².

    With x = (q a0 / 2)², s = q/4π and C = 1/(8π² a0):
    f_e = C (1 − f_x)/s² = C (2x + x²)/((1 + x)² s²) = (a0/2) (2 + x)/(1 + x)².
    """
    x = (np.asarray(q) * A0 / 2) ** 2
    return A0 / 2 * (2 + x) / (1 + x) ** 2


def test_constant_is_one_over_8_pi2_bohr():
    assert MOTT_BETHE_C == pytest.approx(1 / (8 * math.pi ** 2 * A0), rel=1e-9)


def test_hydrogen_at_zero_is_bohr_radius():
    # limited by xraylib's 5-digit f_x, which the small-s fit extrapolates from
    assert electron_form_factor("H", 0.0) == pytest.approx(A0, rel=2e-3)
    assert electron_form_factor(1, 0.0) == electron_form_factor("H", 0.0)


def test_hydrogen_follows_analytic_mott_bethe():
    q = np.linspace(0.0, 40.0, 4001)
    np.testing.assert_allclose(electron_form_factor("H", q), hydrogen_fe(q), rtol=2e-3)
    hi = q > 1.6  # pure Mott–Bethe there, no small-s fit
    np.testing.assert_allclose(electron_form_factor("H", q[hi]), hydrogen_fe(q[hi]), rtol=5e-4)


@pytest.mark.parametrize("element", ELEMENTS)
def test_equals_mott_bethe_above_blend(element):
    z = xraylib.SymbolToAtomicNumber(element)
    s = np.linspace(0.13, 6.0, 200)
    fx = np.array([xraylib.FF_Rayl(z, float(v)) for v in s])
    expected = MOTT_BETHE_C * (z - fx) / s ** 2
    np.testing.assert_allclose(electron_form_factor(element, 4 * np.pi * s), expected, rtol=1e-12)


@pytest.mark.parametrize("element", ELEMENTS)
def test_rutherford_tail(element):
    z = xraylib.SymbolToAtomicNumber(element)
    s = np.geomspace(50.0, 200.0, 20)
    np.testing.assert_allclose(electron_form_factor(element, 4 * np.pi * s) * s ** 2 / (MOTT_BETHE_C * z), 1.0,
                               atol=1e-3)


@pytest.mark.parametrize("element", ELEMENTS)
def test_smooth_and_monotone(element):
    q = np.arange(0.0, 50.0, 0.005)
    f = electron_form_factor(element, q)
    assert np.all(np.diff(f) < 0)
    # no jump or kink (e.g. where the small-s expansion hands over to Mott–Bethe)
    assert np.max(np.abs(np.diff(f, 2))) < 1e-4 * f[0]


@pytest.mark.parametrize("element", ELEMENTS)
def test_agrees_with_simulator(element):
    s = np.linspace(0.05, 2.0, 400)
    q = 4 * np.pi * s
    np.testing.assert_allclose(electron_form_factor(element, q), simulator_form_factor(element, q), rtol=0.02)


def test_shapes_and_errors():
    assert isinstance(electron_form_factor("Ni", 1.0), float)
    assert electron_form_factor("Ni", np.zeros((2, 3))).shape == (2, 3)
    assert electron_form_factor(" ni", 2.0) == electron_form_factor("Ni", 2.0)
    for bad in ("Xx", "", 0, 500, 2.5, True):
        with pytest.raises(ValueError):
            electron_form_factor(bad, 1.0)
    for q in (-0.1, np.nan, np.inf):
        with pytest.raises(ValueError):
            electron_form_factor("Ni", q)


def test_mixture_factors_are_fraction_weighted_means():
    q = np.linspace(0.0, 12.0, 50)
    comp = {"Zr": 65, "Cu": 17.5, "Ni": 10, "Al": 7.5}
    f_mean, f2_mean = mixture_factors(comp, q)
    fs = {el: electron_form_factor(el, q) for el in comp}
    np.testing.assert_allclose(f_mean, sum(v / 100 * fs[el] for el, v in comp.items()), rtol=1e-12)
    np.testing.assert_allclose(f2_mean, sum(v / 100 * fs[el] ** 2 for el, v in comp.items()), rtol=1e-12)
    # fractions and at.% give the same; <f²> >= <f>² (Cauchy–Schwarz), equality for one element
    g_mean, g2_mean = mixture_factors({el: v / 100 for el, v in comp.items()}, q)
    np.testing.assert_allclose(g_mean, f_mean, rtol=1e-12)
    np.testing.assert_allclose(g2_mean, f2_mean, rtol=1e-12)
    assert np.all(f2_mean >= f_mean ** 2)
    p_mean, p2_mean = mixture_factors({"Ni": 3.0}, q)
    np.testing.assert_allclose(p2_mean, p_mean ** 2, rtol=1e-12)


def test_normalized_composition_errors():
    assert normalized_composition({"Zr": 1, "Cu": 3}) == {"Zr": 0.25, "Cu": 0.75}
    for bad in ({}, {"Zr": -1, "Cu": 2}, {"Zr": 0}, {"Qq": 1}, {"Zr": float("nan")}, [("Zr", 1)]):
        with pytest.raises(ValueError):
            normalized_composition(bad)
