"""Tests of emlive.analyzers.virtual: kernel against its numpy twin and the simulator's ground truth."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from emlive.analyzers import VirtualDetectors
from emlive.analyzers import registry, virtual
from emlive.analyzers.virtual import ADF, BF, COM, build_operators, virtual_numba, virtual_numpy
from emlive.simulators import SyntheticScan
from emlive.stream.protocol import Calibration
from emlive.stream.types import FrameChunk, ResultBuffers, RunInfo

MAPS = ("vbf", "adf_sum", "adf_max", "com_x", "com_y")
ALL = (*MAPS, "sum_frame")


def make_run(frame_shape=(32, 32), scan_shape=(4, 5), calibration=None, dtype="uint16") -> RunInfo:
    return RunInfo(run_uid="test", frame_shape=frame_shape, dtype=dtype, scan_shape=scan_shape,
                   calibration=calibration or Calibration())


def run_analyzer(analyzer, run, frames, chunk, order=None) -> ResultBuffers:
    """Process ``frames`` in chunks of ``chunk`` frames (in ``order`` of chunks) and merge."""
    store = ResultBuffers(run, analyzer.results(run))
    analyzer.prepare(run)
    firsts = list(range(0, frames.shape[0], chunk))
    for seq, first in enumerate(order(firsts) if order else firsts):
        part = analyzer.process(FrameChunk(seq=seq, first=first, frames=frames[first:first + chunk]))
        analyzer.merge(store, part)
    return store


def random_frames(dtype, n=23, shape=(32, 30), seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return (rng.random((n, *shape)) * 1000).astype(dtype)
    high = min(np.iinfo(dtype).max, 65535)
    return rng.integers(0, high, (n, *shape), endpoint=True).astype(dtype)


# --- kernel against its numpy twin ---------------------------------------------------------

GEOMETRIES = [  # (center, bf, inner, outer, com)
    ((15.5, 14.5), 4.0, 7.0, 14.0, None),
    ((15.5, 14.5), 4.0, 7.0, 14.0, 6.5),
    ((12.0, 17.3), 2.5, 0.0, 40.0, 30.0),  # off-centre, annulus clipped by the frame edge, CoM over BF
]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int16, np.int32])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_kernel_matches_numpy_twin_bit_for_bit_on_integer_frames(dtype, geometry):
    frames = random_frames(dtype)
    ops = build_operators((32, 30), *geometry)
    got, want = virtual_numba(frames, ops), virtual_numpy(frames, ops)
    assert set(got) == set(want) == set(ALL)
    for name in ALL:
        assert got[name].dtype == np.float64
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_kernel_matches_numpy_twin_on_float_frames(dtype, geometry):
    frames = random_frames(dtype)
    ops = build_operators((32, 30), *geometry)
    got, want = virtual_numba(frames, ops), virtual_numpy(frames, ops)
    for name in ALL:
        # float64 accumulation in a different order: agreement to rounding of ~1e-16 per term
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-9, err_msg=name)


def test_kernel_matches_naive_definitions():
    """An oracle independent of both twins: masks written out from the definitions."""
    frames = random_frames(np.uint16, n=5)
    cy, cx = 15.5, 14.5
    ops = build_operators((32, 30), (cy, cx), 4.0, 7.0, 14.0, 6.5)
    yy, xx = np.mgrid[:32, :30]
    r = np.hypot(yy - cy, xx - cx)
    f = frames.astype(np.float64)
    bf, adf, com = r <= 4.0, (r >= 7.0) & (r < 14.0), r <= 6.5
    np.testing.assert_array_equal(ops.labels, bf * BF + adf * ADF + com * COM)
    got = virtual_numba(frames, ops)
    np.testing.assert_array_equal(got["vbf"], (f * bf).sum(axis=(1, 2)))
    np.testing.assert_array_equal(got["adf_sum"], (f * adf).sum(axis=(1, 2)))
    np.testing.assert_array_equal(got["adf_max"], np.where(adf, f, -1).max(axis=(1, 2)))
    total = (f * com).sum(axis=(1, 2))
    np.testing.assert_allclose(got["com_x"], (f * com * xx).sum(axis=(1, 2)) / total - cx, rtol=1e-12)
    np.testing.assert_allclose(got["com_y"], (f * com * yy).sum(axis=(1, 2)) / total - cy, rtol=1e-12)
    np.testing.assert_array_equal(got["sum_frame"], f.sum(axis=0))


@pytest.mark.parametrize("compute", [virtual_numba, virtual_numpy])
def test_frame_without_counts_gives_nan_centre_of_mass(compute):
    frames = random_frames(np.uint16, n=3)
    frames[1] = 0
    got = compute(frames, build_operators((32, 30), (15.5, 14.5), 4.0, 7.0, 14.0, None))
    assert np.isnan(got["com_x"][1]) and np.isnan(got["com_y"][1])
    assert np.isfinite(got["com_x"][[0, 2]]).all()
    assert got["vbf"][1] == got["adf_sum"][1] == got["adf_max"][1] == 0


@pytest.mark.parametrize("compute", [virtual_numba, virtual_numpy])
def test_rejects_frames_of_wrong_shape_or_dtype(compute):
    ops = build_operators((32, 30), (15.5, 14.5), 4.0, 7.0, 14.0)
    with pytest.raises(ValueError, match=r"frames must be \(n, 32, 30\)"):
        compute(np.zeros((2, 30, 32), np.uint16), ops)
    with pytest.raises(ValueError, match="frames must be"):
        compute(np.zeros((32, 30), np.uint16), ops)
    with pytest.raises(ValueError, match="integer type of up to 32 bits"):
        compute(np.zeros((2, 32, 30), np.uint64), ops)


# --- the analyzer ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def synthetic():
    sim = SyntheticScan(scan_shape=(16, 16), frame_shape=(64, 64), dose=2000, seed=11)
    return sim, sim.frames(0, sim.n_frames)


@pytest.mark.parametrize("use_numba", [True, False])
@pytest.mark.parametrize("com_radius", [None, 9.0])
def test_results_do_not_depend_on_chunking_or_order(synthetic, use_numba, com_radius):
    sim, frames = synthetic
    run = make_run(frame_shape=sim.frame_shape, scan_shape=sim.scan_shape)
    params = {"com_radius": com_radius, "use_numba": use_numba}
    stores = [run_analyzer(VirtualDetectors(**params), run, frames, chunk) for chunk in (1, 7, 64)]
    stores.append(run_analyzer(VirtualDetectors(**params), run, frames, 7, order=lambda f: f[::-1]))
    for store in stores[1:]:
        for name in ALL:
            np.testing.assert_array_equal(store[name], stores[0][name], err_msg=name)
    assert not np.isnan(stores[0]["com_x"]).any()


def test_numba_and_numpy_analyzers_agree(synthetic):
    sim, frames = synthetic
    run = make_run(frame_shape=sim.frame_shape, scan_shape=sim.scan_shape)
    a = run_analyzer(VirtualDetectors(use_numba=True), run, frames, 64)
    b = run_analyzer(VirtualDetectors(use_numba=False), run, frames, 64)
    for name in ALL:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_sum_frame_is_the_sum_of_all_frames(synthetic):
    sim, frames = synthetic
    run = make_run(frame_shape=sim.frame_shape, scan_shape=sim.scan_shape)
    store = run_analyzer(VirtualDetectors(), run, frames, 50)
    np.testing.assert_array_equal(store["sum_frame"], frames.sum(axis=0, dtype=np.int64))


def test_centre_of_mass_recovers_the_simulated_deflection(synthetic):
    """CoM within a disk around the BF disk recovers the ground-truth shift.

    Tolerance: the CoM of N electrons spread uniformly over a disk of radius R
    scatters by sigma = R / (2 sqrt(N)) per axis (0.054 px here for R = 4 and
    N >= 1400 disk electrons); the simulator's pixel binning biases it by
    < 0.01 px (measured at 60x the dose). Every one of the 2 x 256 values must
    be within 6 sigma + 0.02 px (a false alarm has p ~ 1e-6), and the RMS error
    within 1.3 sigma.
    """
    sim, frames = synthetic
    truth = sim.ground_truth()
    run = make_run(frame_shape=sim.frame_shape, scan_shape=sim.scan_shape)
    com_radius = sim.disk_radius + math.hypot(sim.max_shift, sim.max_shift) + 2
    store = run_analyzer(VirtualDetectors(com_radius=com_radius), run, frames, 64)
    sigma = sim.disk_radius / (2 * np.sqrt(truth["disk_dose"].min()))
    for axis in ("x", "y"):
        err = store.view(f"com_{axis}") - truth[f"shift_{axis}"]
        assert np.abs(err).max() < 6 * sigma + 0.02, axis
        assert np.sqrt(np.mean(err ** 2)) < 1.3 * sigma, axis
        slope = np.polyfit(truth[f"shift_{axis}"].ravel(), store.view(f"com_{axis}").ravel(), 1)[0]
        assert slope == pytest.approx(1.0, abs=0.02), axis


def test_whole_frame_centre_of_mass_follows_the_whole_pattern(synthetic):
    """Over the whole frame the ring (radius rho, width w) adds scatter.

    Per axis, an electron of the ring contributes a variance (rho^2 + w^2) / 2,
    one of the disk R^2 / 4; the CoM of N electrons scatters by the square root
    of the summed variances over N. Every value within 6 sigma + 0.05 px (the
    ring's tail reaches the frame edge, where a few electrons are lost).
    """
    sim, frames = synthetic
    truth = sim.ground_truth()
    run = make_run(frame_shape=sim.frame_shape, scan_shape=sim.scan_shape)
    store = run_analyzer(VirtualDetectors(), run, frames, 64)
    var = (truth["disk_dose"] * sim.disk_radius ** 2 / 4
           + truth["ring_dose"] * (sim.ring_radius ** 2 + sim.ring_width ** 2) / 2)
    sigma = np.sqrt(var) / sim.dose
    for axis in ("x", "y"):
        err = store.view(f"com_{axis}") - truth[f"shift_{axis}"]
        assert (np.abs(err) < 6 * sigma + 0.05).all(), axis


def test_dark_field_tracks_the_ring_and_bright_field_the_disk(synthetic):
    sim, frames = synthetic
    truth = sim.ground_truth()
    run = make_run(frame_shape=sim.frame_shape, scan_shape=sim.scan_shape)
    # The default annulus (8..25.6 px) holds the ring; the BF disk holds the deflected disk.
    bf_radius = sim.disk_radius + math.hypot(sim.max_shift, sim.max_shift) + 0.5
    store = run_analyzer(VirtualDetectors(bf_radius=bf_radius), run, frames, 64)
    amplitude = truth["ring_amplitude"].ravel()
    assert np.corrcoef(store.view("adf_sum").ravel(), amplitude)[0, 1] > 0.95
    # the electrons scattered into the ring are missing from the disk
    assert np.corrcoef(store.view("vbf").ravel(), amplitude)[0, 1] < -0.9
    assert (store["adf_max"] <= store["adf_sum"]).all()
    assert store.view("adf_sum").mean() == pytest.approx(truth["ring_dose"].mean(), rel=0.05)


def test_radii_in_inverse_angstrom_are_converted_with_the_calibration():
    frames = random_frames(np.uint16, n=20, shape=(32, 32))
    pixel = 0.05  # Å⁻¹ per pixel
    run_a = make_run(calibration=Calibration(reciprocal_pixel_size=pixel))
    run_px = make_run()
    in_q = VirtualDetectors(units="inv_angstrom", bf_radius=0.2, adf_inner=0.35, adf_outer=0.7, com_radius=0.3)
    in_px = VirtualDetectors(bf_radius=4, adf_inner=7, adf_outer=14, com_radius=6)
    a, b = run_analyzer(in_q, run_a, frames, 8), run_analyzer(in_px, run_px, frames, 8)
    for name in ALL:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert a.specs["com_x"].units == "px"


def test_inverse_angstrom_without_calibration_fails_clearly():
    analyzer = VirtualDetectors(units="inv_angstrom", bf_radius=0.2)
    with pytest.raises(ValueError, match="reciprocal_pixel_size"):
        analyzer.results(make_run())
    with pytest.raises(ValueError, match="reciprocal_pixel_size"):
        analyzer.prepare(make_run())


def test_centre_defaults_to_the_calibration_then_the_frame_centre():
    frames = np.zeros((1, 32, 32), np.uint16)
    frames[0, 10, 20] = 7
    for calibration, params, expected in [
        (None, {}, (10 - 15.5, 20 - 15.5)),
        (Calibration(center=(12.0, 18.0)), {}, (-2.0, 2.0)),
        (Calibration(center=(12.0, 18.0)), {"center": [10, 20]}, (0.0, 0.0)),
    ]:
        run = make_run(scan_shape=(1,), calibration=calibration)
        store = run_analyzer(VirtualDetectors(**params), run, frames, 1)
        assert (store["com_y"][0], store["com_x"][0]) == expected


@pytest.mark.parametrize("scan_shape, axes", [
    ((20,), ("frame",)),
    ((4, 5), ("scan_y", "scan_x")),
    ((2, 2, 5), ("tilt", "scan_y", "scan_x")),
    ((1, 2, 2, 5), ("scan_0", "scan_1", "scan_2", "scan_3")),
])
def test_results_declare_maps_over_the_scan_and_a_sum_frame(scan_shape, axes):
    run = make_run(scan_shape=scan_shape)
    specs = VirtualDetectors().results(run)
    assert set(specs) == set(ALL)
    for name in MAPS:
        spec = specs[name]
        assert (spec.kind, spec.shape, spec.merge, spec.dtype) == ("map", (20,), "frames", "float64")
        assert spec.axes == axes
        assert spec.units == ("px" if name.startswith("com") else "counts")
    frame = specs["sum_frame"]
    assert (frame.kind, frame.shape, frame.merge, frame.dtype, frame.axes, frame.units) == (
        "frame", (32, 32), "sum", "float64", ("qy", "qx"), "counts")


def test_default_radii_scale_with_the_frame():
    ops_geometry = VirtualDetectors().config.geometry(make_run(frame_shape=(256, 256)))
    assert ops_geometry == ((127.5, 127.5), 16.0, 32.0, 102.4, None)


@pytest.mark.parametrize("params, error, match", [
    ({"bf_radius": -1}, ValueError, "bf_radius must be finite and > 0"),
    ({"bf_radius": 0}, ValueError, "bf_radius"),
    ({"com_radius": float("nan")}, ValueError, "com_radius"),
    ({"adf_inner": 10, "adf_outer": 5}, ValueError, "adf_inner .* smaller than adf_outer"),
    ({"units": "mrad"}, ValueError, "units must be 'px' or 'inv_angstrom'"),
    ({"center": (1.0,)}, ValueError, "center must be two finite numbers"),
    ({"center": (1.0, float("inf"))}, ValueError, "center"),
    ({"bf_radius": "4"}, TypeError, "bf_radius must be a number"),
    ({"radius": 4}, TypeError, "takes: bf_radius, adf_inner"),
])
def test_bad_parameters_fail_on_construction(params, error, match):
    with pytest.raises(error, match=match):
        VirtualDetectors(**params)


def test_geometry_that_selects_no_pixel_fails_at_prepare():
    run = make_run()
    with pytest.raises(ValueError, match="adf_inner .* must be smaller than adf_outer"):
        VirtualDetectors(adf_inner=20).results(run)  # above the default outer radius, 12.8 px
    with pytest.raises(ValueError, match="bright-field disk .* holds no pixel"):
        VirtualDetectors(bf_radius=0.1).prepare(run)  # the frame centre falls between pixels
    with pytest.raises(ValueError, match="annulus .* holds no pixel"):
        VirtualDetectors(adf_inner=50, adf_outer=60).prepare(run)


def test_process_before_prepare_is_an_error():
    with pytest.raises(RuntimeError, match="before prepare"):
        VirtualDetectors().process(FrameChunk(seq=0, first=0, frames=np.zeros((1, 32, 32), np.uint16)))


def test_params_are_kept_for_the_workers():
    params = {"bf_radius": 3, "center": [15, 16], "units": "px"}
    analyzer = VirtualDetectors(**params)
    assert analyzer.params == params
    assert analyzer.config.center == (15.0, 16.0)


def test_docstring_examples_run():
    for module in (virtual, registry):
        assert doctest.testmod(module).failed == 0
