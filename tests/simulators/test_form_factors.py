"""Electron form factors by Mott–Bethe: physics checks (no published table is on this machine)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import constants

from emlive.simulators import form_factors as ff
from emlive.simulators.form_factors import MOTT_BETHE_C, electron_form_factor, mott_bethe

ALL_Z = range(1, 99)


def test_mott_bethe_constant_is_the_textbook_value():
    # m0 e² / (8π ε0 h²) = 0.023934 Å (International Tables C 4.3.1; Kirkland).
    assert MOTT_BETHE_C == pytest.approx(0.023934, abs=2e-6)


def test_hydrogen_matches_the_analytic_1s_atom():
    # For the hydrogen 1s atom f_x = (1 + a0² q²/4)^-2 and Mott–Bethe gives
    # f_e(q) = 2 (1 − f_x) / (a0 q²), so f_e(0) = a0 exactly: an exact published result.
    a0 = constants.physical_constants["Bohr radius"][0] * 1e10
    q = np.linspace(0.0, 25.0, 201)
    qs = np.maximum(q, 1e-9)
    analytic = np.where(q > 0, 2 * (1 - (1 + a0 ** 2 * qs ** 2 / 4) ** -2) / (a0 * qs ** 2), a0)
    np.testing.assert_allclose(electron_form_factor("H", q), analytic, rtol=0.005)


@pytest.mark.parametrize("z", ALL_Z)
def test_finite_smooth_and_decreasing_on_s_0_to_2(z):
    s = np.linspace(0.0, 2.0, 801)
    f = electron_form_factor(z, 4 * np.pi * s)
    assert np.all(np.isfinite(f)) and f[0] > 0
    assert np.all(np.diff(f) < 0)
    # Smooth: no kink at the fit/Mott–Bethe blend (second differences stay small).
    assert np.max(np.abs(np.diff(f, 2))) < 0.01 * f[0]


def test_high_s_limit_is_rutherford():
    # f_x -> 0, so f_e s² / (C Z) -> 1 from below, monotonically.
    for z in (6, 28, 40, 79, 92):
        ratio = [float(electron_form_factor(z, 4 * math.pi * s)) * s ** 2 / (MOTT_BETHE_C * z) for s in (2, 4, 6, 10)]
        assert np.all(np.diff(ratio) > 0)
        assert 0.97 < ratio[-1] <= 1.0


@pytest.mark.parametrize("s", [0.5, 1.0, 2.0])
def test_ordered_by_z_at_fixed_s(s):
    f = np.array([float(electron_form_factor(z, 4 * math.pi * s)) for z in ALL_Z])
    assert np.all(np.diff(f) > 0)


def test_fit_reproduces_mott_bethe_within_one_percent_on_the_stable_window():
    lo, hi = ff._FIT_WINDOW
    s = np.linspace(lo, hi, 60)
    for z in ALL_Z:
        params, residual = ff._gauss_fit(z)
        assert residual < 0.01, z
        a, b = np.exp(params[:ff._N_GAUSS]), np.exp(params[ff._N_GAUSS:])
        fit = (a * np.exp(-b * s[:, None] ** 2)).sum(axis=1)
        np.testing.assert_allclose(fit, mott_bethe(z, s), rtol=0.01)


def test_table_equals_mott_bethe_above_the_blend():
    s = np.linspace(0.15, 8.0, 97)
    for z in (8, 28, 40, 82):
        np.testing.assert_allclose(electron_form_factor(z, 4 * np.pi * s), mott_bethe(z, s), rtol=2e-3)


def test_symbols_vectorised_and_errors():
    q = np.array([[0.0, 1.0], [2.0, 3.0]])
    np.testing.assert_array_equal(electron_form_factor("zr", q), electron_form_factor(40, q))
    assert electron_form_factor("Ni", q).shape == (2, 2)
    assert isinstance(electron_form_factor("Ni", 1.0), float)
    with pytest.raises(ValueError, match="symbol"):
        electron_form_factor("Xx", 1.0)
    with pytest.raises(ValueError, match="1..98"):
        electron_form_factor(99, 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        electron_form_factor("Ni", -1.0)
    with pytest.raises(TypeError):
        electron_form_factor(2.5, 1.0)
