"""Tests of emlive.simulators.physics."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from emlive.simulators import physics


@pytest.mark.parametrize(("energy", "expected"), [(300.0, 0.019687), (200.0, 0.025079)])
def test_wavelength_matches_tabulated_values(energy, expected):
    """The quoted values carry 6 decimals (rounding alone is up to 2.5e-5 relative at 300 keV),
    so they are compared at that precision, and at 1e-5 relative against the independent
    engineering formula λ = 12.2643 / sqrt(V (1 + 0.978476e-6 V)) Å (V in volts)."""
    lam = physics.wavelength(energy)
    assert round(lam, 6) == expected
    volts = energy * 1e3
    assert lam == pytest.approx(12.2643 / math.sqrt(volts * (1 + 0.978476e-6 * volts)), rel=1e-5)


def test_wavelength_is_vectorised_and_tends_to_the_classical_limit():
    e = np.array([0.001, 80.0, 300.0])
    lam = physics.wavelength(e)
    assert lam.shape == (3,) and np.all(np.diff(lam) < 0)
    # At 1 eV the relativistic correction is negligible: λ = h / sqrt(2 m e E).
    classical = physics.H / math.sqrt(2 * physics.M0 * physics.E_CHARGE * 1.0) * 1e10
    assert lam[0] == pytest.approx(classical, rel=1e-6)


def test_interaction_parameter_agrees_with_kirklands_second_form():
    for e_kev in (60.0, 200.0, 300.0):
        v = e_kev * 1e3
        mc2 = physics.REST_ENERGY_KEV * 1e3  # in eV, so e V and m0 c² share units
        other = 2 * math.pi / (physics.wavelength(e_kev) * v) * (mc2 + v) / (2 * mc2 + v)
        assert physics.interaction_parameter(e_kev) == pytest.approx(other, rel=1e-10)


def test_reciprocal_conventions_round_trip():
    dk = 0.0125
    r = np.array([0.0, 10.0, 32.0])
    k = physics.pixel_radius_to_k(r, dk)
    np.testing.assert_allclose(k, r * dk)
    np.testing.assert_allclose(physics.pixel_radius_to_q(r, dk), 2 * np.pi * k)
    np.testing.assert_allclose(physics.q_to_pixel_radius(physics.pixel_radius_to_q(r, dk), dk), r)
    np.testing.assert_allclose(physics.k_to_pixel_radius(k, dk), r)
    np.testing.assert_allclose(physics.q_to_k(physics.k_to_q(k)), k)
    theta = physics.k_to_angle(0.4, 200.0)
    assert theta == pytest.approx(1e3 * 0.4 * physics.wavelength(200.0), rel=1e-4)  # small angle
    assert physics.angle_to_k(theta, 200.0) == pytest.approx(0.4, rel=1e-12)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="energy_kev"):
        physics.wavelength(0.0)
    with pytest.raises(ValueError, match="dk"):
        physics.pixel_radius_to_k(1.0, 0.0)


def test_docstring_examples_run():
    assert doctest.testmod(physics).failed == 0
