"""The FEM analyzer: shot-noise correction, a plain numpy reference, chunk-order independence, pyxem, the phantom."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from emlive.analyzers.fem import ESTIMATORS, FemAnalyzer, parse_fem_config
from emlive.analyzers.moments import chunk_moments, merge_moments
from emlive.analyzers.registry import build_analyzer
from emlive.simulators import DetectorModel
from emlive.simulators.fem_film import FEMFilm
from emlive.stream.protocol import Calibration
from emlive.stream.types import FrameChunk, ResultBuffers, RunInfo


def analyse(frames, params, *, calibration=None, scan=None, chunk=64, order=None, positions=None):
    """Run prepare / results / process / merge / finalize in this process; ``order`` permutes the chunks."""
    n, qy, qx = frames.shape
    scan = scan or (n,)
    cal = calibration or Calibration(reciprocal_pixel_size=0.05)
    run = RunInfo("test", (qy, qx), str(frames.dtype), scan, cal)
    host, worker = FemAnalyzer(**params), FemAnalyzer(**params)
    host.prepare(run)
    store = ResultBuffers(run, host.results(run))
    host.initialize(store)
    worker.prepare(run)
    firsts = list(range(0, n, chunk))
    if order is not None:
        firsts = [firsts[i] for i in order(len(firsts))]
    for first in firsts:
        count = min(chunk, n - first)
        pos = {k: v[first:first + count] for k, v in (positions or {}).items()}
        host.merge(store, worker.process(FrameChunk(0, first, frames[first:first + count], positions=pos)))
    host.finalize(store)
    return host, store


def radius(shape):
    ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx]
    return np.hypot(yy - (ny - 1) / 2, xx - (nx - 1) / 2)


def ring_profile(shape, flat: bool):
    r = radius(shape)
    return np.full(shape, 40.0) if flat else 25.0 + 60.0 * np.exp(-(r - 12.0) ** 2 / 30.0)


def within_ring_structure(mu, host):
    """Σ_j (μ_j − μ̄)² / (N − 1) / μ̄² per ring: what r and re must report for noiseless structure."""
    v = mu.reshape(-1)[host.pix]
    return np.array([np.var(v[host.ring_of_pix == k], ddof=1) / np.mean(v[host.ring_of_pix == k]) ** 2
                     for k in range(host.n_rings)])


# ------------------------------------------------------------------ shot noise
@pytest.mark.parametrize("flat, gain, dtype", [(True, 1.0, np.uint16), (False, 3.0, np.uint16),
                                               (False, 2.5, np.float32)])
def test_pure_poisson_frames_give_zero_variance_for_every_estimator(flat, gain, dtype):
    rng = np.random.default_rng(1)
    shape, n = (40, 40), 800
    mu = ring_profile(shape, flat)
    frames = (gain * rng.poisson(mu, size=(n, *shape))).astype(dtype)
    host, store = analyse(frames, {"rings": {"r_min": 4.0}},
                          calibration=Calibration(reciprocal_pixel_size=0.05, gain=gain))
    structure = within_ring_structure(mu, host)  # 0 for the flat profile; the ring's own spread otherwise
    for est in ESTIMATORS:
        v = store[f"v_{est}"]
        assert np.isfinite(v).all(), est
        expected = structure if est in ("r", "re") else 0.0
        assert np.max(np.abs(v - expected)) < 0.01, (est, np.max(np.abs(v - expected)))
    assert np.allclose(store["mean_intensity"], [gain * mu.reshape(-1)[host.pix[host.ring_of_pix == k]].mean()
                                                 for k in range(host.n_rings)], rtol=0.01)


def test_without_the_correction_vimage_is_the_shot_noise_term():
    """Pure Poisson, no correction: per-pixel V = G/μ_j, so VImage = ring mean of G/μ_j (the term removed)."""
    rng = np.random.default_rng(2)
    shape, gain = (32, 32), 2.0
    mu = ring_profile(shape, flat=False)
    frames = (gain * rng.poisson(mu, size=(800, *shape))).astype(np.uint16)
    host, store = analyse(frames, {"rings": {"r_min": 3.0}, "noise": {"correct": False}},
                          calibration=Calibration(reciprocal_pixel_size=0.05, gain=gain))
    shot = 1.0 / mu.reshape(-1)[host.pix]
    expected = np.array([shot[host.ring_of_pix == k].mean() for k in range(host.n_rings)])
    assert np.allclose(store["v_vimage"], expected, rtol=0.05)


# ------------------------------------------------------------------ numpy reference
def reference(frames, thickness, edges, window, gain, ddof, r_min, width, r_max):
    """Per-frame textbook estimators on plain numpy (rings from the pixel-centre radius, no ellipse)."""
    r = radius(frames.shape[1:]).reshape(-1)
    ring = np.floor((r - r_min) / width).astype(int)
    nk = int(math.ceil((r_max - r_min) / width))
    ring[(r < r_min) | (r >= r_max)] = -1
    flat = frames.reshape(frames.shape[0], -1).astype(np.float64)
    inside = (thickness >= window[0]) & (thickness <= window[1])
    groups = [inside & (thickness >= lo) & (thickness < hi) for lo, hi in zip(edges[:-1], edges[1:])]
    groups.append(np.any(groups, axis=0))
    out = {est: np.zeros((len(groups), nk)) for est in ESTIMATORS}
    for gi, sel in enumerate(groups):
        x = flat[sel]
        for k in range(nk):
            px = x[:, ring == k]
            n_pix = px.shape[1]
            a = px.mean(axis=1)
            m = a.mean()
            out["omega"][gi, k] = (np.var(a, ddof=ddof) - gain * m / n_pix) / m ** 2
            out["r"][gi, k] = np.mean((np.var(px, axis=1, ddof=ddof) - gain * a) / a ** 2)
            out["re"][gi, k] = (np.var(px, ddof=ddof) - gain * px.mean()) / px.mean() ** 2
            mp = px.mean(axis=0)
            out["vimage"][gi, k] = np.mean((np.var(px, axis=0, ddof=ddof) - gain * mp) / mp ** 2)
    return out


@pytest.fixture(scope="module")
def structured():
    """Frames with real fluctuations: dose varies by probe, a speckle-like pixel factor; a thickness map."""
    rng = np.random.default_rng(3)
    n, shape = 700, (36, 36)
    mu = ring_profile(shape, flat=False)
    dose = rng.uniform(0.7, 1.3, n)
    speckle = rng.gamma(8.0, 1 / 8.0, size=(n, *shape))
    frames = rng.poisson(dose[:, None, None] * mu * speckle).astype(np.uint16)
    thickness = rng.uniform(10.0, 50.0, n)
    return frames, thickness


@pytest.mark.parametrize("ddof", [0, 1])
def test_all_estimators_match_a_numpy_reference_per_bin_and_combined(structured, ddof):
    frames, thickness = structured
    edges, window, gain = [12.0, 25.0, 35.0, 48.0], (14.0, 46.0), 1.5
    params = {"rings": {"r_min": 3.0, "r_max": 17.0, "ring_width": 1.5}, "noise": {"gain": gain, "ddof": ddof},
              "thickness": {"bins": edges, "window": list(window), "map": thickness.tolist()}}
    host, store = analyse(frames, params, chunk=48)
    ref = reference(frames, thickness, edges, window, gain, ddof, 3.0, 1.5, 17.0)
    for est in ESTIMATORS:
        assert np.allclose(store[f"v_{est}_bins"], ref[est][:-1], rtol=1e-9, atol=1e-12), est
        assert np.allclose(store[f"v_{est}"], ref[est][-1], rtol=1e-9, atol=1e-12), est
    inside = (thickness >= window[0]) & (thickness <= window[1])
    expected_counts = [np.sum(inside & (thickness >= lo) & (thickness < hi)) for lo, hi in zip(edges[:-1], edges[1:])]
    assert store["probes_bins"].tolist() == expected_counts
    assert np.array_equal(np.isnan(store["thickness_bin"]), ~(inside & (thickness >= 12) & (thickness < 48)))


def test_any_chunk_order_gives_the_same_result(structured):
    frames, thickness = structured
    params = {"rings": {"r_min": 3.0}, "thickness": {"bins": [10.0, 30.0, 50.0], "map": thickness.tolist()}}
    _, a = analyse(frames, params, chunk=40)
    _, b = analyse(frames, params, chunk=40, order=lambda m: np.random.default_rng(5).permutation(m))
    _, c = analyse(frames, params, chunk=17, order=lambda m: range(m - 1, -1, -1))
    for est in ESTIMATORS:
        for other in (b, c):
            assert np.allclose(a[f"v_{est}_bins"], other[f"v_{est}_bins"], rtol=1e-12, atol=1e-15), est
    assert np.array_equal(a["annular_variance"], b["annular_variance"])


def test_chan_merge_equals_the_two_pass_moments_of_the_union():
    rng = np.random.default_rng(4)
    x = 1e6 + rng.normal(size=(300, 5))  # large mean, unit variance: raw power sums would lose digits
    n, mean, m2 = chunk_moments(x[:0])
    for part in np.array_split(x, 7):
        n, mean, m2 = merge_moments(n, mean, m2, *chunk_moments(part))
    assert np.allclose(m2 / (n - 1), np.var(x, axis=0, ddof=1), rtol=1e-9)
    assert np.allclose(mean, x.mean(axis=0), rtol=1e-15)


def test_thickness_from_the_haadf_readback_equals_the_map(structured):
    frames, thickness = structured
    black, slope = 26265.0, 440.46
    haadf = black + slope * thickness
    base = {"rings": {"r_min": 3.0}, "thickness": {"bins": [10.0, 30.0, 50.0]}}
    _, a = analyse(frames, {**base, "thickness": {**base["thickness"], "black": black, "slope": slope}},
                   positions={"haadf": haadf})
    _, b = analyse(frames, {**base, "thickness": {**base["thickness"], "map": thickness.tolist()}})
    assert np.allclose(a["v_omega_bins"], b["v_omega_bins"], rtol=1e-12)
    assert np.allclose(a["thickness"], thickness, rtol=1e-5)
    with pytest.raises(ValueError, match="haadf"):
        analyse(frames, {**base, "thickness": {**base["thickness"]}})


# ------------------------------------------------------------------ pyxem
def test_omega_agrees_with_pyxem_get_variance():
    """Without the gain correction (ddof 0), V_Ω equals pyxem's ``get_variance("Omega")`` on the same frames.

    pyxem splits pixels by their area overlap with each annulus, we assign whole pixels: the frames are
    zero on every pixel pyxem splits, so both ring sums see the same pixels (V_Ω does not depend on the
    per-ring normalisation).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pxm = pytest.importorskip("pyxem")
    rng = np.random.default_rng(6)
    n, size, npt, width = 96, 48, 10, 2.0
    mu = ring_profile((size, size), flat=False) * rng.uniform(0.5, 1.5, (n, 1, 1))
    frames = rng.poisson(mu).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = pxm.signals.Diffraction2D(np.zeros((1, size, size)))
        probe.calibration.center = None
        idx, facts, fslices, _ = probe.calibration.get_slices1d(npt, radial_range=(0.0, npt * width))
    whole = np.zeros((size, size), dtype=int)
    for i in range(npt):
        sl = slice(fslices[i], fslices[i + 1])
        for (y, x), f in zip(idx[sl], facts[sl]):
            whole[y, x] += 1 if f > 1 - 1e-9 else 100
    keep = whole == 1
    frames = frames * keep
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = pxm.signals.Diffraction2D(frames.reshape(8, 12, size, size))
        s.calibration.center = None
        expected = np.asarray(s.get_variance(npt, method="Omega", radial_range=(0.0, npt * width)).data)
    _, store = analyse(frames, {"rings": {"r_min": 0.0, "r_max": npt * width, "ring_width": width},
                                "noise": {"correct": False, "ddof": 0}}, scan=(8, 12))
    ok = np.isfinite(expected)
    assert ok.sum() >= npt - 1
    assert np.allclose(store["v_omega"][ok], expected[ok], rtol=1e-6, atol=0)


# ------------------------------------------------------------------ phantom
@pytest.fixture(scope="module")
def film():
    det = DetectorModel(shape=(64, 64), ellipse_ratio=1.04, ellipse_angle=0.5)
    sim = FEMFilm(scan_shape=(32, 48), detector=det, dk=0.0125, dose=4e4, seed=2)
    truth = sim.ground_truth()
    cal = Calibration(reciprocal_pixel_size=2 * math.pi * sim.dk, center=((64 - 1) / 2, (64 - 1) / 2),
                      ellipse=(1.04, math.degrees(0.5)))
    edges = [20.0, 26.0, 33.0, 40.01]
    params = {"rings": {"r_min": 12.0, "r_max": 31.0},
              "thickness": {"bins": edges, "black": truth["haadf_black"], "slope": truth["haadf_slope"]}}
    frames = sim.frames(0, sim.n_frames)
    host, store = analyse(frames, params, calibration=cal, scan=sim.scan_shape,
                          positions={"haadf": sim.haadf(0, sim.n_frames)})
    return sim, truth, host, store, edges


def test_phantom_variance_peaks_at_the_true_k(film):
    sim, truth, host, store, _ = film
    ring_of_peak = int(np.argmin(np.abs(host.k - truth["k_peak"])))
    for est in ESTIMATORS:
        assert abs(int(np.nanargmax(store[f"v_{est}"])) - ring_of_peak) <= 1, est


def test_phantom_thickness_bins_are_ordered_as_simulated(film):
    """Expected VImage per bin at k_peak from the truth: Σt²(1 + a²σ²) / n / (Σt / n)² − 1 over its probes."""
    sim, truth, host, store, edges = film
    t, dom = truth["thickness"].ravel(), truth["domain_mask"].ravel()
    kp = np.array([truth["k_peak"]])
    expected = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (t >= lo) & (t < hi)
        a2 = np.where(dom[sel], sim.speckle_amplitude(kp, True)[0], sim.speckle_amplitude(kp, False)[0]) ** 2
        tt = t[sel]
        expected.append(np.mean(tt ** 2 * (1 + a2 * truth["speckle_variance"])) / np.mean(tt) ** 2 - 1)
    ring = int(np.argmin(np.abs(host.k - truth["k_peak"])))
    measured = store["v_vimage_bins"][:, ring]
    assert np.argsort(measured).tolist() == np.argsort(expected).tolist(), (measured, expected)
    assert np.allclose(measured, expected, rtol=0.2)


# ------------------------------------------------------------------ configuration
def test_configuration_errors_name_the_field():
    with pytest.raises(ValueError, match="bins"):
        parse_fem_config({"thickness": {"bins": [3.0, 1.0]}})
    with pytest.raises(ValueError, match="ringz"):
        parse_fem_config({"ringz": {}})
    with pytest.raises(ValueError, match="ddof"):
        parse_fem_config({"noise": {"ddof": 2}})
    run = RunInfo("t", (16, 16), "uint16", (4,), Calibration())
    with pytest.raises(ValueError, match="reciprocal_pixel_size"):
        FemAnalyzer().prepare(run)


def test_registered_by_name():
    assert isinstance(build_analyzer("fem", {"map_k": 0.4}), FemAnalyzer)


# ------------------------------------------------------------------ kernels
@pytest.mark.parametrize("dtype", [np.uint16, np.uint8, np.float32, np.int16])
def test_fem_sums_match_numpy_ring_and_pixel_sums(dtype):
    """Ring sums per frame and per-slot pixel sums against np.bincount / plain sums (slot −1 and odd group sizes)."""
    from emlive.analyzers.fem import RingLayout, fem_sums
    rng = np.random.default_rng(7)
    shape, n, nk = (37, 29), 23, 6
    r = radius(shape).reshape(-1)
    ring = np.where(r < 13.5, np.floor(r / 2.25), -1).astype(np.int64)
    ring[[5, 300, 301]] = -1
    pix = np.flatnonzero(ring >= 0)[::-1].copy()       # any order of the returned pixels
    lo, hi = (-300, 300) if dtype == np.int16 else (0, 250 if dtype == np.uint8 else 60000)
    frames = rng.integers(lo, hi, size=(n, *shape)).astype(dtype)
    slot = rng.integers(-1, 3, n)
    flat = frames.reshape(n, -1).astype(np.float64)
    for rows in (None, 1, 5):
        rs1, rs2, counts, s1, s2, ref = fem_sums(frames, RingLayout(ring, shape, nk, rows), pix, slot, 3)
        sel = ring >= 0
        for f in range(n):
            assert np.allclose(rs1[f], np.bincount(ring[sel], flat[f, sel], nk), rtol=1e-12)
            assert np.allclose(rs2[f], np.bincount(ring[sel], flat[f, sel] ** 2, nk), rtol=1e-12)
        assert counts.tolist() == [int(np.sum(slot == b)) for b in range(3)]
        shift = np.zeros(pix.size) if ref is None else ref
        assert (ref is None) == (dtype in (np.uint16, np.uint8))
        for b in range(3):
            d = flat[slot == b][:, pix] - shift
            assert np.allclose(s1[b].astype(np.float64), d.sum(axis=0), rtol=1e-12, atol=1e-9)
            assert np.allclose(s2[b].astype(np.float64), (d * d).sum(axis=0), rtol=1e-12, atol=1e-9)
            if ref is None:
                assert np.array_equal(s1[b].astype(np.int64), d.sum(axis=0).astype(np.int64))


@pytest.mark.parametrize("kind", ["int", "float"])
def test_merging_power_sums_equals_the_two_pass_moments(kind):
    from emlive.analyzers.moments import merge_sums_into
    rng = np.random.default_rng(8)
    if kind == "int":
        x = rng.integers(60000, 60010, size=(400, 50)).astype(np.int64)   # large mean, tiny variance
    else:
        x = 1e6 + rng.normal(size=(400, 50))
    mean, m2, n = np.zeros(50), np.zeros(50), 0.0
    for part in np.array_split(x, 9):
        ref = None if kind == "int" else part[0].astype(np.float64)
        d = part if ref is None else part - ref
        n = merge_sums_into(n, mean, m2, part.shape[0], d.sum(axis=0), (d * d).sum(axis=0), ref)
    assert n == x.shape[0]
    assert np.allclose(mean, x.mean(axis=0), rtol=1e-15)
    assert np.allclose(m2 / (n - 1), np.var(x.astype(np.float64), axis=0, ddof=1), rtol=1e-9)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.int32])
@pytest.mark.parametrize("n", [1, 7, 29])
def test_fem_sums_equal_a_numpy_reference_for_odd_shapes_chunks_and_interleaved_slots(dtype, n):
    """37×53 frames, chunk sizes off the 4-frame blocks, three slots interleaved with −1: ring and pixel sums as numpy.

    uint8/uint16 take the packed path (two frames per 64-bit word) and must equal exact integer sums; large
    uint16 values exercise its overflow fallback (64-bit I² sums); float32/int32 take the float path.
    """
    from emlive.analyzers.fem import RingLayout, fem_sums
    rng = np.random.default_rng(9)
    shape, nk = (37, 53), 9
    r = radius(shape).reshape(-1)
    ring = np.where((r >= 1.0) & (r < 19.0), np.floor((r - 1.0) / 2.0), -1).astype(np.int64)
    ring[[100, 101, 777]] = -1
    pix = rng.permutation(np.flatnonzero(ring >= 0))
    hi = {np.uint8: 256, np.uint16: 65536, np.float32: 1000, np.int32: 2 ** 20}[dtype]
    lo = -hi if dtype == np.int32 else 0
    frames = rng.integers(lo, hi, size=(n, *shape)).astype(dtype)
    if dtype == np.float32:
        frames += rng.random(frames.shape, dtype=np.float32)
    slot = np.array([(-1, 0, 2, 1, 0, 0)[i % 6] for i in range(n)], dtype=np.int64)
    flat = frames.reshape(n, -1).astype(np.float64)
    sel = ring >= 0
    exact = dtype in (np.uint8, np.uint16)
    for rows in (None, 3):
        rs1, rs2, counts, s1, s2, ref = fem_sums(frames, RingLayout(ring, shape, nk, rows), pix, slot, 3)
        assert (ref is None) == exact
        e1 = np.array([np.bincount(ring[sel], flat[f, sel], nk) for f in range(n)]).reshape(n, nk)
        e2 = np.array([np.bincount(ring[sel], flat[f, sel] ** 2, nk) for f in range(n)]).reshape(n, nk)
        shift = np.zeros(pix.size) if ref is None else ref
        if exact:   # integers below 2**53: the float64 reference is exact
            assert np.array_equal(rs1, e1.astype(np.int64)) and np.array_equal(rs2, e2.astype(np.int64))
        else:
            assert np.allclose(rs1, e1, rtol=1e-12) and np.allclose(rs2, e2, rtol=1e-12)
        assert counts.tolist() == [int(np.sum(slot == b)) for b in range(3)]
        for b in range(3):
            d = flat[slot == b][:, pix] - shift
            if exact:
                assert np.array_equal(s1[b].astype(np.int64), d.sum(axis=0).astype(np.int64))
                assert np.array_equal(s2[b].astype(np.int64), (d * d).sum(axis=0).astype(np.int64))
            else:
                assert np.allclose(s1[b], d.sum(axis=0), rtol=1e-12, atol=1e-9)
                assert np.allclose(s2[b], (d * d).sum(axis=0), rtol=1e-12, atol=1e-9)


def test_packed_ring_sums_take_the_overflow_fallback_exactly():
    """A long segment of near-maximal uint16 values: 32-bit lane sums of I² would wrap, the result must not."""
    from emlive.analyzers.fem import RingLayout, fem_sums
    shape, n = (8, 300), 8
    ring = np.zeros(shape[0] * shape[1], dtype=np.int64)          # one ring: segments of whole bands
    frames = np.full((n, *shape), 65535, dtype=np.uint16)
    frames[:, 0, 0] = np.arange(n)
    rs1, rs2, _, s1, s2, ref = fem_sums(frames, RingLayout(ring, shape, 1), np.arange(ring.size), np.zeros(n, int), 1)
    flat = frames.reshape(n, -1).astype(object)                   # Python integers: an exact reference
    assert ref is None
    assert rs1[:, 0].tolist() == [int(sum(f)) for f in flat]
    assert rs2[:, 0].tolist() == [int(sum(v * v for v in f)) for f in flat]


def test_narrow_packing_switches_to_wide_within_a_chunk_exactly():
    """Low counts pack four frames' I per word; a band of high counts later in the chunk overflows those 16-bit
    lanes, so the chunk repacks that band and the rest wide: sums stay exact and pixel sums are not counted twice."""
    from emlive.analyzers.fem import NARROW_SUM, RingLayout, fem_sums
    rng = np.random.default_rng(12)
    shape, n, nk = (24, 40), 11, 5
    r = radius(shape).reshape(-1)
    ring = np.where(r < 20.0, np.floor(r / 4.0), -1).astype(np.int64)
    frames = rng.integers(0, 20, size=(n, *shape)).astype(np.uint16)
    frames[[6, 9], 17:20, :] = rng.integers(60000, 65536, size=(2, 3, shape[1]))  # a late band of slot 0's 2nd run
    layout = RingLayout(ring, shape, nk, band_rows=4)
    assert layout.seg_max * 20 < NARROW_SUM <= layout.seg_max * 60000      # both packings are taken
    pix = np.flatnonzero(ring >= 0)
    slot = np.array([0, 1, 0, 0, 1, 0, 0, 1, 1, 0, -1])
    rs1, rs2, counts, s1, s2, ref = fem_sums(frames, layout, pix, slot, 2)
    assert ref is None
    flat = frames.reshape(n, -1).astype(object)                          # Python integers: exact
    sel = np.flatnonzero(ring >= 0)
    for f in range(n):
        assert rs1[f].tolist() == [int(sum(flat[f, sel[ring[sel] == k]])) for k in range(nk)]
        assert rs2[f].tolist() == [int(sum(v * v for v in flat[f, sel[ring[sel] == k]])) for k in range(nk)]
    for b in range(2):
        block = flat[slot == b][:, pix]
        assert s1[b].astype(object).tolist() == [int(v) for v in block.sum(axis=0)]
        assert s2[b].astype(object).tolist() == [int(v) for v in (block * block).sum(axis=0)]
