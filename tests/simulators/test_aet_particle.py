"""Tests of emlive.simulators.aet_particle against naive lattice counts, the Z^1.7 law and recorded drift."""

from __future__ import annotations

import doctest
import itertools
import subprocess
import sys

import numpy as np
import pytest

from emlive.simulators import aet_particle
from emlive.simulators.aet_particle import AETParticle


@pytest.fixture(scope="module")
def sim():
    return AETParticle(radius_A=15.0, image_shape=(160, 160), order=0.6, seed=5)


def naive_fcc_count(radius, a):
    """Count fcc sites within ``radius`` of a site by brute force over a cube of cells."""
    n = int(radius // a) + 2
    count = 0
    for i, j, k in itertools.product(range(-n, n + 1), repeat=3):
        for b in ((0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)):
            x, y, z = (i + b[0]) * a, (j + b[1]) * a, (k + b[2]) * a
            count += x * x + y * y + z * z <= radius * radius
    return count


def measured_order(truth):
    """Warren's S from the ideal sites: α = Pt planes at z = 0 mod a, β = Fe planes at z = a/2."""
    z = truth["lattice_sites"][:, 2] / (truth["lattice_A"] / 2)
    alpha = np.round(z).astype(int) % 2 == 0
    species = truth["species"]
    return (species[alpha] == 78).mean() + (species[~alpha] == 26).mean() - 1


def test_atom_count_and_composition(sim):
    truth = sim.ground_truth()
    assert truth["n_atoms"] == naive_fcc_count(15.0, 3.85)
    assert abs((truth["species"] == 78).sum() - 0.5 * truth["n_atoms"]) <= 0.5
    assert set(np.unique(truth["species"])) == {26, 78}
    # Nearest neighbours at a / sqrt(2): an fcc lattice.
    d = np.linalg.norm(truth["lattice_sites"][1:] - truth["lattice_sites"][0], axis=1).min()
    assert d == pytest.approx(3.85 / np.sqrt(2))
    assert (truth["positions"] - truth["lattice_sites"]).std() == pytest.approx(0.05, rel=0.1)


@pytest.mark.parametrize("order", [0.0, 0.35, 0.8, 0.95])
@pytest.mark.parametrize("shape", ["sphere", "truncated_octahedron"])
def test_order_parameter_matches_request(order, shape):
    truth = AETParticle(radius_A=18.0, shape=shape, order=order, seed=2).ground_truth()
    s = measured_order(truth)
    assert s == pytest.approx(order, abs=2.0 / truth["n_atoms"] * 2)
    assert truth["order_parameter"] == pytest.approx(s)


def test_full_order_is_capped_by_the_site_counts():
    """A sphere has unequal α and β site counts, so S = 1 is only reached as far as 50/50 allows."""
    truth = AETParticle(radius_A=18.0, order=1.0, seed=2).ground_truth()
    alpha = truth["sublattice"] == 0
    pt_on_alpha, fe_on_beta = (truth["species"][alpha] == 78).all(), (truth["species"][~alpha] == 26).all()
    assert pt_on_alpha or fe_on_beta
    assert alpha.sum() != (~alpha).sum() and truth["order_parameter"] < 1.0


def test_default_particle_has_a_few_thousand_atoms():
    assert 2000 < AETParticle().n_atoms < 5000


def test_projection_integrates_to_sum_of_z_power(sim):
    truth = sim.ground_truth()
    expected = sim.dose_per_A2 * sim.adf_sigma0_A2 * (truth["species"].astype(float) ** 1.7).sum()
    clean = sim.projection(0.0, noise=False)
    assert clean.sum() == pytest.approx(expected, rel=1e-9)
    noisy = sim.projection(0.0)
    assert abs(noisy.sum() - expected) < 5 * np.sqrt(expected)
    # Pixel by pixel, Poisson: the variance equals the mean.
    bright = clean > 50
    z = (noisy[bright] - clean[bright]) / np.sqrt(clean[bright])
    assert abs(z.mean()) < 0.1 and 0.9 < z.std() < 1.1


def test_pt_column_is_brighter_by_the_z_law():
    one = AETParticle(radius_A=0.1, image_shape=(32, 32), shift_rms_A=0.0, displacement_rms_A=0.0,
                      pt_fraction=1.0, order=0.0)
    assert one.n_atoms == 1
    img = one.projection(0.0, noise=False)
    assert img.sum() == pytest.approx(one.dose_per_A2 * one.adf_sigma0_A2 * 78 ** 1.7)
    # Probe: a Gaussian of FWHM 0.8 Å, centred at the image centre.
    y = (np.arange(32) - 15.5) * 0.35
    profile = img.sum(1) / img.sum()
    assert (profile * y).sum() == pytest.approx(0.0, abs=1e-9)
    assert np.sqrt((profile * y ** 2).sum() - 0.35 ** 2 / 12) == pytest.approx(0.8 / 2.3548, rel=1e-3)


def test_shifts_are_applied_as_recorded(sim):
    angles = [-50.0, 0.0, 20.0]
    still = AETParticle(radius_A=15.0, image_shape=(160, 160), order=0.6, seed=5, shift_rms_A=0.0)
    y = (np.arange(160) - 79.5) * sim.pixel_A
    truth = sim.ground_truth(angles)
    assert np.abs(truth["shifts_A"]).max() > 0.1
    for angle, (dy, dx) in zip(angles, truth["shifts_A"]):
        moved, ref = sim.projection(angle, noise=False), still.projection(angle, noise=False)
        com = [(moved.sum(1) * y).sum() / moved.sum(), (moved.sum(0) * y).sum() / moved.sum()]
        com0 = [(ref.sum(1) * y).sum() / ref.sum(), (ref.sum(0) * y).sum() / ref.sum()]
        np.testing.assert_allclose(np.subtract(com, com0), [dy, dx], atol=1e-6)
    recorded = sim.ground_truth()
    assert set(angles) <= set(recorded["shift_angles_deg"].tolist())


def test_tilt_rotates_about_y(sim):
    """At 90° the beam runs along x: the image is the particle's projection along x."""
    truth = sim.ground_truth()
    still = AETParticle(radius_A=15.0, image_shape=(160, 160), order=0.6, seed=5, shift_rms_A=0.0)
    img = still.projection(90.0, noise=False)
    x = (np.arange(160) - 79.5) * sim.pixel_A
    w = truth["counts_per_atom"]
    com_x = (img.sum(0) * x).sum() / img.sum()
    assert com_x == pytest.approx((w * truth["positions"][:, 2]).sum() / w.sum(), abs=1e-6)


def test_projections_are_deterministic(sim):
    series = sim.tilt_series([-30.0, 10.0])
    np.testing.assert_array_equal(series, sim.tilt_series([-30.0, 10.0]))
    np.testing.assert_array_equal(series[1], sim.projection(10.0))
    again = AETParticle(radius_A=15.0, image_shape=(160, 160), order=0.6, seed=5)
    np.testing.assert_array_equal(series[::-1], again.tilt_series([10.0, -30.0]))
    np.testing.assert_array_equal(sim.ground_truth()["species"], again.ground_truth()["species"])
    other = AETParticle(radius_A=15.0, image_shape=(160, 160), order=0.6, seed=6)
    assert not np.array_equal(series, other.tilt_series([-30.0, 10.0]))


def test_bad_arguments_say_what_was_expected():
    with pytest.raises(ValueError, match="order"):
        AETParticle(order=1.5)
    with pytest.raises(ValueError, match="shape"):
        AETParticle(shape="cube")
    with pytest.raises(ValueError, match="angle_deg"):
        AETParticle(radius_A=5.0).projection(float("nan"))


def test_imports_nothing_else_of_emlive():
    code = ("import sys, emlive.simulators.aet_particle; print(sorted(m for m in sys.modules "
            "if m.startswith('emlive.') and not m.startswith('emlive.simulators')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_docstring_example_runs():
    assert doctest.testmod(aet_particle).failed == 0
