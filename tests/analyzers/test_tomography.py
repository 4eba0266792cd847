"""Tomography: the projector against skimage's radon and the phantom's exact chords, SIRT against a plain
scipy reference, HEBT against SIRT on the explicitly stacked matrix, and the seed's 2D core–shell trends."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import ndimage

from emlive.analyzers.tomography import (ParallelProjector, gaussian_filter_sinogram, hebt, mse, quantify,
                                         response_ratios, sirt, ssim, ssim_structure)
from emlive.simulators.eds_particle import EDSParticle

SEED_ANGLES = np.arange(-75.0, 75.1, 5.0)  # the seed's 31 tilts
SEED_N, SEED_PIXEL = 97, 1.5                # 97 probe positions at 1.5 nm


def blobs(n: int, slices: int = 1, seed: int = 0) -> np.ndarray:
    """Smooth non-negative test images inside the inscribed circle, (n, n) or (n, slices, n)."""
    rng = np.random.default_rng(seed)
    c = np.arange(n) - (n - 1) / 2
    z, x = np.meshgrid(c, c, indexing="ij")
    out = []
    for _ in range(slices):
        img = np.zeros((n, n))
        for _ in range(4):
            z0, x0 = rng.uniform(-n / 5, n / 5, 2)
            img += rng.uniform(0.5, 2) * np.exp(-((z - z0) ** 2 + (x - x0) ** 2) / (2 * rng.uniform(2, n / 8) ** 2))
        img[z ** 2 + x ** 2 > (n / 2 - 3) ** 2] = 0
        out.append(img)
    return out[0] if slices == 1 else np.stack(out, axis=1)


def disc_phantom(n: int) -> np.ndarray:
    c = np.arange(n) - (n - 1) / 2
    z, x = np.meshgrid(c, c, indexing="ij")
    img = np.where(z ** 2 + x ** 2 < (0.35 * n) ** 2, 1.0, 0.0)
    img[(z - 0.1 * n) ** 2 + (x + 0.08 * n) ** 2 < (0.12 * n) ** 2] = 2.0
    return img


def reference_sirt(a: sp.csr_matrix, b: np.ndarray, n_iter: int, x0=None, lam: float = 1.0) -> np.ndarray:
    """Textbook SIRT (ASTRA's rule) with scipy: x <- max(x + lam C A^T R (b - A x), 0)."""
    rs, cs = np.asarray(a.sum(1)).ravel(), np.asarray(a.sum(0)).ravel()
    r = np.divide(1.0, rs, out=np.zeros_like(rs), where=rs > 0)
    c = np.divide(1.0, cs, out=np.zeros_like(cs), where=cs > 0)
    x = np.zeros((a.shape[1],) + b.shape[1:]) if x0 is None else x0.copy()
    for _ in range(n_iter):
        res = b - a @ x
        x = np.maximum(x + lam * (c * (a.T @ (r * res.T).T).T).T, 0)
    return x


# ----------------------------------------------------------------------------------------- projector
def test_projector_matches_skimage_radon_with_negated_angles():
    from skimage.transform import radon

    n = 65  # odd: skimage's centre n // 2 is then our (n - 1) / 2
    img = blobs(n)
    proj = ParallelProjector(n, SEED_ANGLES)
    ours = proj.forward(img)
    ref = radon(img, theta=-SEED_ANGLES, circle=True).T  # documented mapping: theta_skimage = -theta
    assert ours.shape == ref.shape == (31, n)
    assert np.abs(ours - ref).max() < 0.01 * ref.max()  # interpolation error only
    wrong = radon(img, theta=SEED_ANGLES, circle=True).T
    assert np.abs(ours - wrong).max() > 10 * np.abs(ours - ref).max()
    # mass conservation: every projection integrates to the image sum, as the Radon transform does
    np.testing.assert_allclose(ours.sum(axis=1), img.sum(), rtol=1e-12)
    np.testing.assert_allclose(ref.sum(axis=1), img.sum(), rtol=2e-3)


def test_projector_matches_the_phantoms_exact_chords():
    """Independent truth: EDSParticle's analytic chord projections (its rotation about y, probe x convention)."""
    sim = EDSParticle(shape=SEED_N, voxel_nm=SEED_PIXEL, scan_shape=(1, SEED_N), tilt_angles_deg=SEED_ANGLES)
    truth = core_shell_slice(sim)
    exact = sim.sinograms()["Ag"][:, 0, :]
    ours = ParallelProjector(SEED_N, SEED_ANGLES, pixel_size=SEED_PIXEL).forward(truth[0])
    mirrored = ParallelProjector(SEED_N, -SEED_ANGLES, pixel_size=SEED_PIXEL).forward(truth[0])
    err = np.abs(ours - exact).sum() / exact.sum()
    assert err < 0.02  # the truth is pixelised (4×4 subsamples), the sinogram exact
    assert np.abs(mirrored - exact).sum() / exact.sum() > 3 * err


def test_back_projection_is_the_adjoint_and_batches_match():
    proj = ParallelProjector(33, [-60, -13, 0, 29, 70], n_det=41, pixel_size=0.7)
    x = blobs(33, slices=3)
    y = np.random.default_rng(1).random((5, 3, 41))
    np.testing.assert_allclose(np.vdot(proj.forward(x), y), np.vdot(x, proj.back(y)), rtol=1e-12)
    for s in range(3):  # the (z, y, x) volume layout: slice s is x[:, s], its sinogram [:, s]
        np.testing.assert_allclose(proj.forward(x)[:, s], (proj.matrix @ x[:, s].ravel()).reshape(5, 41), rtol=1e-13)
    np.testing.assert_allclose(proj.col_sums[proj.col_sums > 0].max(), 5 * 0.7)


def test_subset_is_the_projector_of_the_acquired_tilts():
    full = ParallelProjector(24, SEED_ANGLES)
    idx = [30, 0, 15, 7]
    sub = full.subset(idx)
    direct = ParallelProjector(24, SEED_ANGLES[idx])
    assert abs(sub.matrix - direct.matrix).max() == 0
    np.testing.assert_array_equal(sub.col_inv, direct.col_inv)
    with pytest.raises(ValueError, match="tilts"):
        full.subset([31])


# ----------------------------------------------------------------------------------------- SIRT
def test_sirt_equals_a_plain_scipy_reference_single_and_batched():
    proj = ParallelProjector(40, SEED_ANGLES)
    vol = blobs(40, slices=3, seed=2)
    sino = proj.forward(vol) + np.random.default_rng(0).normal(0, 0.3, (31, 3, 40))
    ours = sirt(proj, sino, n_iter=15, relaxation=1.3)
    b = sino.transpose(0, 2, 1).reshape(-1, 3)
    ref = reference_sirt(proj.matrix, b, 15, lam=1.3).reshape(40, 40, 3).transpose(0, 2, 1)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12 * ref.max())
    one = sirt(proj, sino[:, 1], n_iter=15, relaxation=1.3)  # the serial single-slice path
    np.testing.assert_allclose(one, ref[:, 1], rtol=1e-9, atol=1e-12 * ref.max())


def test_sirt_batched_equals_slice_by_slice():
    proj = ParallelProjector(32, np.linspace(-70, 70, 15))
    vol = blobs(32, slices=4, seed=3)
    sino = proj.forward(vol)
    batched = sirt(proj, sino, n_iter=25)
    for s in range(4):
        np.testing.assert_allclose(batched[:, s], sirt(proj, sino[:, s], n_iter=25), rtol=1e-10, atol=1e-13)


def test_warm_start_continues_the_same_iteration():
    proj = ParallelProjector(32, np.linspace(-70, 70, 15))
    sino = proj.forward(blobs(32, slices=2, seed=4))
    straight = sirt(proj, sino, n_iter=30)
    resumed = sirt(proj, sino, x0=sirt(proj, sino, n_iter=10), n_iter=20)
    np.testing.assert_allclose(resumed, straight, rtol=1e-12, atol=1e-14)
    seen = []
    sirt(proj, sino[:, 0], n_iter=3, callback=lambda k, x: seen.append((k, x.shape)))
    assert seen == [(1, (32, 32)), (2, (32, 32)), (3, (32, 32))]


def test_sirt_converges_on_noiseless_data():
    n = 64
    img = disc_phantom(n)
    proj = ParallelProjector(n, np.arange(0, 180, 2.0))
    sino = proj.forward(img)
    errs = []
    x = sirt(proj, sino, n_iter=300, callback=lambda k, x: errs.append(np.linalg.norm(x - img) / np.linalg.norm(img)))
    errs = np.array(errs)
    assert errs[9] > errs[49] > errs[149] > errs[-1]
    assert errs[-1] < 0.2
    assert (x >= 0).all()
    assert np.linalg.norm(proj.forward(x) - sino) < 0.05 * np.linalg.norm(sino)


# ----------------------------------------------------------------------------------------- seed's 2D phantom
def _area_fractions(sim: EDSParticle, sub: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Fractions of each pixel's area (sub × sub samples) in the core and in the shell of the y = 0 slice."""
    n, px = sim.scan_shape[1], sim.pixel_nm
    c = ((np.arange(n * sub) + 0.5) / sub - n / 2) * px
    z, x = np.meshgrid(c, c, indexing="ij")
    oz, oy, ox = sim.core_offset_nm
    outer = z ** 2 + x ** 2 <= sim.r_outer_nm ** 2
    core = (z - oz) ** 2 + oy ** 2 + (x - ox) ** 2 <= sim.r_core_nm ** 2
    return (core.reshape(n, sub, n, sub).mean(axis=(1, 3)),
            (outer & ~core).reshape(n, sub, n, sub).mean(axis=(1, 3)))


def core_shell_slice(sim: EDSParticle, sub: int = 4) -> np.ndarray:
    """True Ag, Au number densities (atoms/nm³) of the y = 0 slice, (2, z, x), from the phantom's geometry."""
    f_core, f_shell = _area_fractions(sim, sub)
    return np.stack([sim.core_density[a] * f_core + sim.shell_density[a] * f_shell for a in range(2)])


@pytest.fixture(scope="module")
def seed_2d():
    """The seed's 2D setup (§3.1.1: 97 positions at 1.5 nm, 31 tilts): Poisson EDS, Gaussian-filtered, and HAADF.

    EDS: the seed's 3.121e8 electrons per position (0.5 s at 100 pA). The seed does not give the
    detector's solid angle or efficiency, which set the counts with the dose; an effective Ω·ε of
    0.0224 sr (~16 counts per line at the thickest chord) is where EDS-only SIRT of Ag semi-converges
    near 50 iterations, the seed's Fig. 4 optimum (with a Super-X 0.7 sr it is ~490 counts, and SIRT
    still improves after 300 iterations). HAADF: 1e5 electrons (the seed's). Sinograms are divided by
    the known counts per atom/nm², so maps are atoms/nm³.
    """
    dose = 3.121e8
    sim = EDSParticle(shape=SEED_N, voxel_nm=SEED_PIXEL, scan_shape=(1, SEED_N), tilt_angles_deg=SEED_ANGLES,
                      dose=dose, solid_angle_sr=0.0224, seed=3)
    rng = np.random.default_rng(0)
    counts = np.stack([sim.expected_line_counts(t)[:, 0, :] for t in range(SEED_ANGLES.size)], axis=1)
    per_atom = dose * sim.solid_angle_sr / (4 * np.pi) * sim.line_cross_sections_nm2
    noisy = rng.poisson(counts).astype(float)
    eds = np.stack([gaussian_filter_sinogram(noisy[a], 0.8) / per_atom[a] for a in range(2)])
    haadf_mean = np.stack([sim.expected_haadf(t)[0] for t in range(SEED_ANGLES.size)]) * (1e5 / dose)
    haadf = rng.poisson(haadf_mean).astype(float)
    true_ratios = 1e5 * sim.haadf_collection * sim.haadf_weights_nm2  # HAADF counts per atom/nm² of each element
    proj = ParallelProjector(SEED_N, SEED_ANGLES, pixel_size=SEED_PIXEL)
    return {"sim": sim, "eds": eds, "haadf": haadf, "haadf_mean": haadf_mean, "true_ratios": true_ratios,
            "truth": core_shell_slice(sim), "proj": proj, "exact": np.stack([sim.sinograms()[e][:, 0] for e in
                                                                            ("Ag", "Au")])}


def test_response_ratios_recover_the_simulated_ones(seed_2d):
    exact = seed_2d["exact"]  # atoms/nm² per element
    np.testing.assert_allclose(response_ratios(seed_2d["haadf_mean"], exact), seed_2d["true_ratios"], rtol=1e-9)
    np.testing.assert_allclose(response_ratios(seed_2d["haadf"], seed_2d["eds"]), seed_2d["true_ratios"], rtol=0.03)
    # nnls keeps r >= 0 where lstsq would not: HAADF independent of the second map
    h = exact[0] * 2.0
    r = response_ratios(h, np.stack([exact[0], -exact[1]]))
    assert (r >= 0).all() and r[0] == pytest.approx(2.0)


def test_sirt_semi_converges_on_noisy_eds(seed_2d):
    truth = seed_2d["truth"][0]
    errs = []
    sirt(seed_2d["proj"], seed_2d["eds"][0], n_iter=400, callback=lambda k, x: errs.append(mse(x, truth)))
    k_best = int(np.argmin(errs))
    assert 20 < k_best < 350
    assert errs[-1] > 1.05 * errs[k_best] and errs[4] > 1.05 * errs[k_best]


def test_hebt_alpha_zero_is_eds_only_sirt(seed_2d):
    proj, eds = seed_2d["proj"], seed_2d["eds"]
    x = hebt(proj, eds, seed_2d["haadf"], [2.0, 4.0], alpha=0.0, n_iter=20)
    for a in range(2):
        np.testing.assert_allclose(x[a], sirt(proj, eds[a], n_iter=20), rtol=1e-10, atol=1e-12)


def test_hebt_equals_sirt_on_the_seeds_stacked_system():
    """Seed eq. 17 built explicitly: [(1−α) blockdiag(W); α (W … W)], data [(1−α) rₑ pₑ; α p_H], X_b = r x."""
    proj = ParallelProjector(24, np.linspace(-60, 60, 9), pixel_size=1.5)
    maps = np.stack([blobs(24, 2, seed=5), 0.5 * blobs(24, 2, seed=6)])  # (E, z, y, x)
    r, alpha = np.array([3.0, 7.0]), 0.7
    eds = np.stack([proj.forward(m) for m in maps]) + np.random.default_rng(2).normal(0, 0.5, (2, 9, 2, 24))
    haadf = proj.forward(r[0] * maps[0] + r[1] * maps[1]) * 1.02
    ours = hebt(proj, eds, haadf, r, alpha, n_iter=12)

    w = proj.matrix
    stacked = sp.vstack([sp.block_diag([(1 - alpha) * w, (1 - alpha) * w]),
                         sp.hstack([alpha * w, alpha * w])]).tocsr()

    def col(sino):  # (T, S, D) -> (T*D, S)
        return sino.transpose(0, 2, 1).reshape(-1, 2)

    b = np.concatenate([(1 - alpha) * r[0] * col(eds[0]), (1 - alpha) * r[1] * col(eds[1]), alpha * col(haadf)])
    ref = reference_sirt(stacked, b, 12)
    n2 = 24 * 24
    for e in range(2):
        xb = ref[e * n2:(e + 1) * n2].reshape(24, 24, 2).transpose(0, 2, 1)
        np.testing.assert_allclose(ours[e], xb / r[e], rtol=1e-9, atol=1e-12 * ref.max())
    warm = hebt(proj, eds, haadf, r, alpha, n_iter=7, x0=hebt(proj, eds, haadf, r, alpha, n_iter=5))
    np.testing.assert_allclose(warm, ours, rtol=1e-10, atol=1e-13)
    # a HAADF gain scales r and X_b alike: the element maps do not change
    np.testing.assert_allclose(hebt(proj, eds, 40 * haadf, 40 * r, alpha, n_iter=12), ours, rtol=1e-9,
                               atol=1e-12 * ours.max())
    # an element the HAADF does not see (r = 0) gets plain SIRT on its own rows
    blind = hebt(proj, eds, haadf, [r[0], 0.0], alpha, n_iter=12)
    np.testing.assert_allclose(blind[1], sirt(proj, eds[1], n_iter=12), rtol=1e-9, atol=1e-12 * ours.max())


def test_hebt_ag_map_beats_eds_only_for_alpha_above_0_6(seed_2d):
    """The seed's trend (Fig. 8): with α >= 0.6 HEBT's Ag map is closer to the truth than the best EDS-only SIRT.

    Scored as the seed does (eq. 19): SSIM's structure term, since the maps are not on the truth's scale.
    """
    proj, eds, truth = seed_2d["proj"], seed_2d["eds"], seed_2d["truth"]
    scores = []  # EDS-only at every iteration count up to 300: the seed's "best EDS-only" line
    sirt(proj, eds[0], n_iter=300, callback=lambda k, x: scores.append(ssim_structure(x, truth[0])))
    best_eds = max(scores)
    assert 20 < int(np.argmax(scores)) + 1 < 150  # semi-convergence, Fig. 4: the best n is 50 for Ag
    r = response_ratios(seed_2d["haadf"], eds)
    for alpha in (0.6, 0.8, 0.9):
        x = hebt(proj, eds, seed_2d["haadf"], r, alpha, n_iter=200)
        assert ssim_structure(x[0], truth[0]) > best_eds + 0.01, alpha


def _quantified(x, factors):
    """Weight fractions inside the ESF particle threshold of Σ X/f, the seed's quantification."""
    from emlive.analyzers.xray_physics import esf_threshold

    total = (np.clip(x, 0, None) / factors.reshape(-1, 1, 1)).sum(axis=0)
    thr = esf_threshold(total)[0]
    return quantify(x, factors=factors, threshold=thr), total > thr


@pytest.mark.parametrize("method", ["sirt-50", "sirt-200", "hebt-0.8"])
def test_esf_threshold_finds_the_particle_of_a_noisy_reconstruction(seed_2d, method):
    proj, eds, sim = seed_2d["proj"], seed_2d["eds"], seed_2d["sim"]
    if method.startswith("sirt"):
        x = np.stack([sirt(proj, e, n_iter=int(method.split("-")[1])) for e in eds])
    else:
        x = hebt(proj, eds, seed_2d["haadf"], response_ratios(seed_2d["haadf"], eds), 0.8, n_iter=200)
    _, inside = _quantified(x, 1 / sim.atomic_weight)
    particle = seed_2d["truth"].sum(axis=0) > 0
    wrong = (inside != particle).sum()
    assert wrong < 0.08 * particle.sum()  # the pixelised outline: partial boundary pixels


# The seed's experiment itself (issue 7). §3.1.1 and Fig. 1: the phantom is a 2D X–Z slice of an Ag–Au
# particle whose pixels hold one of two compositions (core 80 wt% Au / 20 wt% Ag, shell 20/80), and §3.1.2
# (eqs. 19-22, "two signals with the same size") scores every reconstruction against that image, so it is a
# 97 × 97 image on the reconstruction's 1.5 nm grid. The seed gives no radii (only the figure); we keep the
# simulator's (25 nm, core 12 nm off-centre). §2.3/§3.1.1: its sinograms came from MC X-ray run on that
# phantom; Poisson noise went on the EDS ones, then a Gaussian filter (σ 0.8); HAADF was simulated with 1e5
# electrons and used unfiltered. We have no Monte Carlo code, so the phantom is projected with the seed's
# thin-film ray sums (§2.1 eqs. 9-10, w_ij = area where beam and pixel meet; §2.2 eq. 14) through our
# projector, which is that strip integral of the pixel image (checked below against a 4× finer projection).
# These sinograms lie exactly in W's range (no model error, unlike MC X-ray's); see the test below.
def pixel_phantom(sim: EDSParticle) -> np.ndarray:
    """Ag, Au number densities (atoms/nm³) of the seed's pixel phantom, (2, z, x), on the y = 0 scan row.

    A pixel is core, shell or vacuum by where its centre lies: Fig. 1 has only those three compositions,
    so mixed boundary pixels are not part of the seed's phantom. For this particle the rule picks the
    same pixels as "at least 50 % of the area" (checked below).
    """
    c = (np.arange(sim.scan_shape[1]) - (sim.scan_shape[1] - 1) / 2) * sim.pixel_nm
    z, x = np.meshgrid(c, c, indexing="ij")
    oz, oy, ox = sim.core_offset_nm
    core = (z - oz) ** 2 + oy ** 2 + (x - ox) ** 2 <= sim.r_core_nm ** 2
    shell = (z ** 2 + x ** 2 <= sim.r_outer_nm ** 2) & ~core
    return np.stack([sim.core_density[a] * core + sim.shell_density[a] * shell for a in range(2)])


@pytest.fixture(scope="module")
def seed_pixel_2d():
    """The seed's 2D experiment on its pixel phantom: noiseless sinograms and the signal scales of ``seed_2d``."""
    dose, omega = 3.121e8, 0.0224  # as seed_2d (dose §3.1.1; Ω·ε chosen there for Fig. 4's n ≈ 50)
    sim = EDSParticle(shape=SEED_N, voxel_nm=SEED_PIXEL, scan_shape=(1, SEED_N), tilt_angles_deg=SEED_ANGLES,
                      dose=dose, solid_angle_sr=omega)
    truth = pixel_phantom(sim)
    proj = ParallelProjector(SEED_N, SEED_ANGLES, pixel_size=SEED_PIXEL)
    exact = np.stack([proj.forward(m) for m in truth])  # atoms/nm², (2, tilts, positions)
    per_atom = dose * omega / (4 * np.pi) * sim.line_cross_sections_nm2  # EDS counts per atom/nm²
    haadf_per_atom = 1e5 * sim.haadf_collection * sim.haadf_weights_nm2  # HAADF counts per atom/nm²
    return {"sim": sim, "truth": truth, "proj": proj, "exact": exact, "per_atom": per_atom,
            "haadf_per_atom": haadf_per_atom}


def _pixel_data(fx, noise_seed: int):
    """One noisy acquisition: Poisson EDS counts, filtered with σ 0.8, in atoms/nm²; Poisson HAADF counts."""
    rng = np.random.default_rng(noise_seed)
    per_atom = fx["per_atom"].reshape(-1, 1, 1)
    noisy = rng.poisson(fx["exact"] * per_atom).astype(float)
    eds = np.stack([gaussian_filter_sinogram(s, 0.8) for s in noisy]) / per_atom
    haadf = rng.poisson(np.tensordot(fx["haadf_per_atom"], fx["exact"], axes=1)).astype(float)
    return eds, haadf


def test_pixel_phantom_is_the_seeds_two_composition_image(seed_pixel_2d):
    sim, truth = seed_pixel_2d["sim"], seed_pixel_2d["truth"]
    wt = quantify(truth, factors=1 / sim.atomic_weight)
    inside = truth.sum(axis=0) > 0
    found = {tuple(np.round(v, 12)) for v in wt[:, inside].T}
    assert found == {tuple(sim.core_wt), tuple(sim.shell_wt)}  # only Fig. 1's two compositions
    # the centre rule equals "≥ 50 % of the pixel's area" for the particle and for its core (8 × 8 samples)
    f_core, f_shell = _area_fractions(sim, sub=8)
    np.testing.assert_array_equal(inside, f_core + f_shell >= 0.5)
    np.testing.assert_array_equal(inside & np.isclose(wt[1], sim.core_wt[1]), f_core >= 0.5)
    assert inside.sum() == pytest.approx(np.pi * sim.r_outer_nm ** 2 / sim.pixel_nm ** 2, abs=15)
    # the sinograms are the image's strip integrals: a 4× finer projection of the same pixels agrees
    fine_proj = ParallelProjector(4 * SEED_N, SEED_ANGLES, pixel_size=SEED_PIXEL / 4)
    up = np.repeat(np.repeat(truth[0], 4, axis=0), 4, axis=1)
    binned = fine_proj.forward(up).reshape(SEED_ANGLES.size, SEED_N, 4).sum(axis=2) / 4
    np.testing.assert_allclose(binned, seed_pixel_2d["exact"][0], rtol=1e-12, atol=1e-12 * binned.max())


@pytest.mark.parametrize("noise_seed", range(3))
def test_hebt_quantified_ag_map_beats_eds_only(seed_pixel_2d, noise_seed):
    """The seed's Fig. 13 on its pixel phantom: HEBT's quantified Ag map beats the best EDS-only one for α >= 0.6.

    Scored by eq. 19 (C = 0) against the phantom's own weight fractions. EDS-only: best of n = 20, 50, 100,
    200 (Fig. 13's yellow line, from Fig. 6); HEBT: n = 200 (Figs. 11, 13). Over noise seeds 0-9 the
    smallest gain at α 0.6-0.8 was 0.009 (seed 3), the median 0.016; the margin 0.005 is about half the
    smallest. The reference decides, not the exact-range data: the analytic particle's chord sinograms
    (model error included) scored against this phantom gain 0.007-0.021 (seeds 0-4), but against
    ``seed_2d``'s touched-pixel outline the two tie (0.954-0.956 vs 0.959).
    """
    proj, sim = seed_pixel_2d["proj"], seed_pixel_2d["sim"]
    factors = 1 / sim.atomic_weight
    wt_true = quantify(seed_pixel_2d["truth"], factors=factors)
    eds, haadf = _pixel_data(seed_pixel_2d, noise_seed)
    x, done, best_eds = None, 0, -1.0
    for n in (20, 50, 100, 200):  # both elements as two slices of one SIRT, continued from the last n
        x = sirt(proj, eds.transpose(1, 0, 2), x0=x, n_iter=n - done)
        done = n
        best_eds = max(best_eds, ssim_structure(_quantified(x.transpose(1, 0, 2), factors)[0][0], wt_true[0]))
    r = response_ratios(haadf, eds)
    for alpha in (0.6, 0.7, 0.8):
        wt = _quantified(hebt(proj, eds, haadf, r, alpha, n_iter=200), factors)[0]
        assert ssim_structure(wt[0], wt_true[0]) > best_eds + 0.005, alpha


def test_quantify_recovers_the_phantoms_weight_fractions(seed_2d):
    sim, truth = seed_2d["sim"], seed_2d["truth"]
    wt = quantify(truth, factors=1 / sim.atomic_weight)
    core = ndimage.binary_erosion(truth[1] > 0.99 * truth[1].max(), iterations=1)
    shell = ndimage.binary_erosion((truth[0] > 0.99 * truth[0].max()), iterations=1)
    np.testing.assert_allclose(wt[:, core].mean(axis=1), sim.core_wt, rtol=1e-9)
    np.testing.assert_allclose(wt[:, shell].mean(axis=1), sim.shell_wt, rtol=1e-9)
    assert (quantify(truth, threshold=1e9) == 0).all()


# ----------------------------------------------------------------------------------------- metrics and checks
def test_ssim_and_mse_match_skimage_and_numpy():
    from skimage.metrics import structural_similarity

    ref = blobs(48, seed=7)
    img = ref + np.random.default_rng(3).normal(0, 0.1, ref.shape)
    rng = float(np.ptp(ref))
    assert ssim(img, ref) == pytest.approx(structural_similarity(img, ref, data_range=rng), rel=1e-10)
    assert mse(img, ref) == pytest.approx(np.mean((img - ref) ** 2))
    assert mse(3 * ref, ref, scale=True) == pytest.approx(0, abs=1e-20)


def test_ssim_structure_is_the_pearson_correlation():
    """Seed eq. 19-22 with C = 0 is Pearson's r (numpy's corrcoef); scale and offset do not change it."""
    ref = blobs(48, seed=8)
    img = ref + np.random.default_rng(5).normal(0, 0.2, ref.shape)
    assert ssim_structure(img, ref) == pytest.approx(np.corrcoef(img.ravel(), ref.ravel())[0, 1], rel=1e-12)
    assert ssim_structure(3 * img + 7, ref) == pytest.approx(ssim_structure(img, ref), rel=1e-12)
    assert ssim_structure(ref, ref) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="constant"):
        ssim_structure(np.ones((8, 8)), ref[:8, :8])


def test_gaussian_filter_is_scipys():
    s = np.random.default_rng(4).random((31, 5, 20))
    np.testing.assert_allclose(gaussian_filter_sinogram(s), ndimage.gaussian_filter(s, 0.8))
    np.testing.assert_allclose(gaussian_filter_sinogram(s, axes=(1, 2))[3], ndimage.gaussian_filter(s[3], 0.8))


def test_bad_input_raises_clear_errors():
    proj = ParallelProjector(16, [0, 45])
    with pytest.raises(ValueError, match="sinograms must be"):
        sirt(proj, np.zeros((3, 16)))
    with pytest.raises(ValueError, match="x0 must be"):
        sirt(proj, np.zeros((2, 4, 16)), x0=np.zeros((16, 16)))
    with pytest.raises(ValueError, match="relaxation"):
        sirt(proj, np.zeros((2, 16)), relaxation=2.5)
    with pytest.raises(ValueError, match="alpha"):
        hebt(proj, np.zeros((2, 2, 16)), np.zeros((2, 16)), [1, 1], alpha=1.5)
    with pytest.raises(ValueError, match="E = len"):
        hebt(proj, np.zeros((2, 2, 16)), np.zeros((2, 16)), [1, 1, 1], alpha=0.5)
    with pytest.raises(ValueError, match="angles_deg"):
        ParallelProjector(16, [])
    with pytest.raises(ValueError, match="eds_sinos must be"):
        response_ratios(np.zeros((2, 16)), np.zeros((2, 3, 16)))
