"""The EDS tomography analyzer on the Ag–Au core–shell phantom, tilt by tilt as the pipeline runs it."""

from __future__ import annotations

import numpy as np
import pytest

from emlive.analyzers.eds import EdsTomography
from emlive.devices import EDSSpectrumSource
from emlive.simulators import EDSParticle
from emlive.stream.types import FrameChunk, ResultBuffers, RunInfo

ANGLES = np.linspace(-75, 75, 31)


def run_eds(sim: EDSParticle, params: dict, chunk: int = 512):
    """prepare/results in the host, process per chunk, merge, on_boundary after each tilt, finalize."""
    src = EDSSpectrumSource(sim)
    n_t, (ny, nx) = ANGLES.size, sim.scan_shape
    per_tilt = ny * nx
    plan = {"tomo": {"angles": ANGLES.tolist()}, **src.metadata()}
    run = RunInfo("eds", src.frame_shape, "uint16", (n_t, ny, nx), boundary_frames=per_tilt, plan=plan)
    host, worker = EdsTomography(**params), EdsTomography(**params)
    store = ResultBuffers(run, host.results(run))
    host.initialize(store)
    worker.prepare(run)
    live = []
    for t in range(n_t):
        for first in range(t * per_tilt, (t + 1) * per_tilt, chunk):
            count = min(chunk, (t + 1) * per_tilt - first)
            c = FrameChunk(0, first, src.frames(first, count), positions=src.positions(first, count))
            host.merge(store, worker.process(c))
        host.on_boundary(store, t, True)
        live.append(int(store["tilts_reconstructed"][0]))
    host.finalize(store)
    return store, live


@pytest.fixture(scope="module")
def phantom_2d():
    """The seed's 2D phantom: 97 positions at 1.5 nm across, a few slices along the axis, 31 tilts."""
    return EDSParticle(shape=97, voxel_nm=1.5, scan_shape=(3, 97), tilt_angles_deg=ANGLES, n_channels=2048,
                       core_offset_nm=(0.0, 0.0, 0.0), seed=1)


def _core_shell_means(sim, frac):
    truth = sim.ground_truth()
    n = truth["n_Ag"] + truth["n_Au"]
    nz, ny, nx = n.shape
    c = (np.arange(nx) - (nx - 1) / 2) * sim.voxel_nm
    zz, xx = np.meshgrid(c, c, indexing="ij")
    r = np.hypot(zz, xx)
    core = r < truth["r_core_nm"] - 3
    shell = (r > truth["r_core_nm"] + 3) & (r < truth["r_outer_nm"] - 3)
    mid = frac[:, frac.shape[1] // 2, :]  # the central slice along the tilt axis
    return np.nanmean(mid[core]), np.nanmean(mid[shell])


@pytest.fixture(scope="module")
def reference(phantom_2d, tmp_path_factory):
    """The phantom's true weight fractions on the reconstruction's voxels, as the analyzer reads them."""
    path = tmp_path_factory.mktemp("eds") / "truth.npz"
    phantom_2d.save_reference(path)
    return path


@pytest.fixture(scope="module", params=["hebt", "sirt"])
def reconstructed(request, phantom_2d, reference):
    params = {"method": request.param, "physics": "seed-table-2", "live_iterations": 5, "final_iterations": 60,
              "align": False, "reference": str(reference)}
    return request.param, *run_eds(phantom_2d, params)


def test_core_and_shell_compositions(phantom_2d, reconstructed):
    method, store, live = reconstructed
    assert live[0] == 0 and live[1] == 2 and live[-1] == ANGLES.size  # updated after each tilt
    ag_core, ag_shell = _core_shell_means(phantom_2d, store["wt_Ag"])
    assert ag_core == pytest.approx(0.2, abs=0.05)  # core 80 wt% Au / 20 wt% Ag
    assert ag_shell == pytest.approx(0.8, abs=0.05)  # shell 80 wt% Ag
    au_core, _ = _core_shell_means(phantom_2d, store["wt_Au"])
    assert au_core == pytest.approx(0.8, abs=0.05)


def test_sinograms_and_response_ratios(phantom_2d, reconstructed):
    method, store, _ = reconstructed
    truth = phantom_2d.ground_truth()
    counts = truth["line_counts"]  # (n_tilts, 2, ny, nx) mean line counts
    total = {"Ag_La": counts[:, 0].sum(axis=(1, 2)), "Au_Ma": counts[:, 1].sum(axis=(1, 2))}
    for name, expected in total.items():
        got = store[f"sinogram_{name}"].sum(axis=(1, 2))
        # normalised to a constant total per tilt (shadowing): the mean total is kept
        assert np.abs(got.mean() - expected.mean()) / expected.mean() < 0.02
    if method == "hebt":
        assert np.all(store["response_ratios"] > 0)


def test_ssim_and_mse_against_the_simulators_truth(phantom_2d, reconstructed):
    from skimage.metrics import structural_similarity

    method, store, _ = reconstructed
    truth = phantom_2d.weight_fractions()
    for e, el in enumerate(("Ag", "Au")):
        got = np.nan_to_num(store[f"wt_{el}"], nan=0.0)
        ref = truth[el]
        expected = np.mean([structural_similarity(got[:, j], ref[:, j], data_range=1.0) for j in range(ref.shape[1])])
        assert store["ssim_wt"][-1, e] == pytest.approx(expected, rel=1e-6)  # the stored maps are float32
        assert store["mse_wt"][-1, e] == pytest.approx(np.mean((got - ref) ** 2), rel=1e-5)
        assert store["ssim_wt"][-1, e] > 0.9 and store["mse_wt"][-1, e] < 0.01
        # one row per number of tilts: more tilts, a better volume (two tilts are a poor start)
        assert store["ssim_wt"][-1, e] > store["ssim_wt"][1, e] + 0.2
    assert np.isnan(store["ssim_wt"][0]).all()  # no reconstruction from one tilt
    assert 0 < store["particle_threshold"][0] < np.inf


def test_a_bad_reference_is_refused(phantom_2d, tmp_path):
    src = EDSSpectrumSource(phantom_2d)
    plan = {"tomo": {"angles": ANGLES.tolist()}, **src.metadata()}
    run = RunInfo("eds", src.frame_shape, "uint16", (ANGLES.size, *phantom_2d.scan_shape), plan=plan)
    np.savez(tmp_path / "small.npz", wt_Ag=np.zeros((5, 5, 5)), wt_Au=np.zeros((5, 5, 5)))
    np.savez(tmp_path / "no_au.npz", wt_Ag=np.zeros((97, 3, 97)))
    for name, match in (("small.npz", "shape"), ("no_au.npz", "wt_Au"), ("missing.npz", "npz")):
        an = EdsTomography(reference=str(tmp_path / name))
        store = ResultBuffers(run, an.results(run))
        with pytest.raises(ValueError, match=match):
            an.initialize(store)


def test_bad_runs_are_refused():
    with pytest.raises(ValueError, match="energy axis"):
        EdsTomography().prepare(RunInfo("x", (1, 16), "uint16", (3, 2, 2), plan={"tomo": {"angles": [0, 1, 2]}}))
    with pytest.raises(ValueError, match="alpha"):
        EdsTomography(alpha=2)
