"""Tests of emlive.simulators.synthetic."""

from __future__ import annotations

import doctest
import subprocess
import sys

import numpy as np
import pytest

import emlive.simulators
from emlive.simulators import SyntheticScan, synthetic


def test_same_frames_twice_are_equal():
    sim = SyntheticScan(scan_shape=(8, 8), frame_shape=(32, 32), dose=300, seed=4)
    np.testing.assert_array_equal(sim.frames(5, 9), sim.frames(5, 9))
    again = SyntheticScan(scan_shape=(8, 8), frame_shape=(32, 32), dose=300, seed=4)
    np.testing.assert_array_equal(sim.frames(5, 9), again.frames(5, 9))


def test_any_frame_can_be_regenerated_alone():
    sim = SyntheticScan(scan_shape=(8, 8), frame_shape=(32, 32), dose=300, seed=4)
    block = sim.frames(0, 64)
    for k in (0, 13, 63):
        np.testing.assert_array_equal(sim.frames(k, 1)[0], block[k])


@pytest.mark.parametrize("chunk", [1, 7, 64, 100])
def test_chunks_cover_the_scan_with_the_same_frames(chunk):
    sim = SyntheticScan(scan_shape=(8, 8), frame_shape=(32, 32), dose=300, seed=4)
    firsts, parts = zip(*sim.iter_chunks(chunk))
    assert firsts == tuple(range(0, 64, chunk))
    np.testing.assert_array_equal(np.concatenate(parts), sim.frames(0, 64))


def test_seeds_and_frames_differ():
    a = SyntheticScan(scan_shape=(4, 4), frame_shape=(32, 32), dose=300, seed=1).frames(0, 16)
    b = SyntheticScan(scan_shape=(4, 4), frame_shape=(32, 32), dose=300, seed=2).frames(0, 16)
    assert not np.array_equal(a, b)
    assert not np.array_equal(a[0], a[1])


def test_shapes_and_dtype():
    sim = SyntheticScan(scan_shape=(3, 5), frame_shape=(24, 40), dose=100)
    frames = sim.frames(2, 4)
    assert frames.shape == (4, 24, 40) and frames.dtype == np.uint16 and frames.flags.c_contiguous
    assert sim.frames(15, 0).shape == (0, 24, 40)
    assert sim.n_frames == 15 and sim.center == (11.5, 19.5)
    truth = sim.ground_truth()
    assert set(truth) == {"shift_x", "shift_y", "ring_amplitude", "disk_dose", "ring_dose"}
    assert all(arr.shape == (3, 5) for arr in truth.values())


def test_counts_are_poisson_with_the_requested_dose():
    """Mean and variance of the counts per frame both equal the dose (all electrons land on the detector).

    Over n frames the sample mean scatters by sqrt(dose / n) and the sample
    variance by dose sqrt(2 / (n - 1)); allow 5 of each.
    """
    dose, n = 200.0, 4096
    sim = SyntheticScan(scan_shape=(64, 64), frame_shape=(32, 32), dose=dose, seed=9)
    totals = sim.frames(0, n).sum(axis=(1, 2), dtype=np.int64)
    assert abs(totals.mean() - dose) < 5 * np.sqrt(dose / n)
    assert abs(totals.var(ddof=1) - dose) < 5 * dose * np.sqrt(2 / (n - 1))


def test_disk_and_ring_doses_follow_the_ground_truth():
    sim = SyntheticScan(scan_shape=(32, 32), frame_shape=(64, 64), dose=1000, seed=2)
    frames = sim.frames(0, sim.n_frames).astype(np.float64)
    truth = sim.ground_truth()
    cy, cx = sim.center
    yy, xx = np.mgrid[:64, :64]
    disk = np.hypot(yy - cy, xx - cx) <= sim.disk_radius + np.sqrt(2) * sim.max_shift + 1
    in_disk = (frames * disk).sum(axis=(1, 2))
    # sum over 1024 frames of Poisson counts: relative error ~ 1/sqrt(7e5)
    assert in_disk.sum() == pytest.approx(truth["disk_dose"].sum(), rel=0.01)
    assert (frames.sum() - in_disk.sum()) == pytest.approx(truth["ring_dose"].sum(), rel=0.01)
    assert truth["ring_amplitude"].min() >= 0.2 and truth["ring_amplitude"].max() <= 1.0


def test_ground_truth_shifts_are_linear_and_returned_as_copies():
    sim = SyntheticScan(scan_shape=(5, 9), frame_shape=(32, 32), max_shift=2.0)
    truth = sim.ground_truth()
    np.testing.assert_allclose(truth["shift_x"][0], np.linspace(-2, 2, 9))
    np.testing.assert_allclose(truth["shift_y"][:, 0], np.linspace(-2, 2, 5))
    truth["shift_x"][:] = 0
    assert sim.ground_truth()["shift_x"][0, 0] == -2


def test_bright_pixels_saturate_instead_of_wrapping():
    sim = SyntheticScan(scan_shape=(1, 2), frame_shape=(8, 8), dose=400_000, disk_radius=1.0,
                        ring_fraction=0.0, max_shift=0.0)
    frames = sim.frames(0, 2)
    assert frames.max() == np.iinfo(np.uint16).max
    assert frames.dtype == np.uint16


@pytest.mark.parametrize("kwargs, match", [
    ({"scan_shape": (4,)}, "scan_shape must be two positive integers"),
    ({"frame_shape": (0, 8)}, "frame_shape"),
    ({"dose": -1}, "dose must be finite"),
    ({"disk_radius": 0}, "disk_radius"),
    ({"ring_width": float("nan")}, "ring_width"),
    ({"ring_fraction": 1.5}, "ring_fraction"),
    ({"seed": -3}, "seed must be a non-negative integer"),
    ({"frame_shape": (100_000, 8)}, "too large"),
])
def test_bad_parameters_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticScan(**kwargs)


def test_frames_outside_the_scan_are_rejected():
    sim = SyntheticScan(scan_shape=(2, 2), frame_shape=(16, 16))
    for first, count in ((3, 2), (-1, 1), (0, -1)):
        with pytest.raises(ValueError, match="outside the scan"):
            sim.frames(first, count)
    with pytest.raises(ValueError, match="chunk_frames"):
        next(sim.iter_chunks(0))


def test_docstring_example_runs():
    assert doctest.testmod(synthetic).failed == 0


def test_package_exports_and_imports_nothing_else_of_emlive():
    assert "SyntheticScan" in emlive.simulators.__all__
    code = ("import sys, emlive.simulators; print(sorted(m for m in sys.modules "
            "if m.startswith('emlive.') and not m.startswith('emlive.simulators')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
