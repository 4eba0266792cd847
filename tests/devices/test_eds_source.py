"""EDSSpectrumSource: EDS spectra per probe position as camera frames, through eds_tilt_series into the pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from ophyd_async.core import init_devices

from emlive.devices import (
    Camera,
    EDSSpectrumSource,
    FrameSource,
    ScanGenerator,
    SimCameraDriver,
    SimScanGeneratorDriver,
    SimStageDriver,
    Stage,
    eds_tilt_series,
)
from emlive.simulators import EDSParticle
from emlive.stream.recorder import Recording

ANGLES = [-60.0, 0.0, 60.0]
N_CHANNELS = 1024  # EDSParticle's smallest energy axis


@pytest.fixture(scope="module")
def particle():
    # 8 x 8 probes of 7 nm cover the 50 nm particle; 1e9 electrons per probe gives ~1e3 counts per line
    return EDSParticle(shape=8, voxel_nm=7.0, tilt_angles_deg=ANGLES, n_channels=N_CHANNELS, dose=1e9, seed=5)


@pytest.fixture
def source(particle):
    return EDSSpectrumSource(particle)


def test_source_maps_global_frames_to_tilt_and_position(source, particle):
    assert isinstance(source, FrameSource)
    assert source.frame_shape == (1, N_CHANNELS) and source.n_frames == 3 * 64
    np.testing.assert_array_equal(source.tilt_angles_deg, ANGLES)
    frames = source.frames(0, 192)
    assert frames.shape == (192, 1, N_CHANNELS) and frames.dtype == np.uint16
    for t in range(3):
        np.testing.assert_array_equal(frames[t * 64:(t + 1) * 64, 0], particle.spectra(t, 0, 64))
    # a request across two tilt boundaries (tilt 0 positions 60..63, all of tilt 1, tilt 2 positions 0..2)
    np.testing.assert_array_equal(source.frames(60, 71), frames[60:131])
    assert source.frames(5, 0).shape == (0, 1, N_CHANNELS)
    for first, count in [(-1, 2), (3, -1), (190, 3), (192, 1)]:
        with pytest.raises(ValueError, match="outside the series"):
            source.frames(first, count)


def test_source_gives_the_haadf_value_of_each_frame(source, particle):
    haadf = np.concatenate([particle.haadf(t).ravel() for t in range(3)])
    np.testing.assert_array_equal(source.positions(0, 192)["haadf"], haadf)
    got = source.positions(62, 5)
    assert list(got) == ["haadf"] and got["haadf"].dtype == np.float64
    np.testing.assert_array_equal(got["haadf"], haadf[62:67])  # spans the tilt 0 -> 1 boundary
    with pytest.raises(ValueError):
        source.positions(191, 2)


def test_energy_axis_metadata_describes_the_channels(source, particle):
    md = source.metadata()["eds"]
    ax = md["energy_axis"]
    assert ax["n_channels"] == N_CHANNELS and ax["units"] == "keV"
    np.testing.assert_allclose(ax["offset_kev"] + ax["scale_kev"] * np.arange(N_CHANNELS), particle.energy_axis)
    np.testing.assert_allclose([md["lines_kev"]["Ag_La"], md["lines_kev"]["Au_Ma"]], particle.line_energies_kev)
    assert md["frames_per_tilt"] == 64 and md["frame_shape"] == [1, N_CHANNELS]


def test_rejects_what_is_not_an_eds_particle():
    with pytest.raises(TypeError, match="EDSParticle"):
        EDSSpectrumSource(object())


@pytest.fixture
def eds_devices(plain_RE, pipeline, source, workdir):
    stage_driver = SimStageDriver()
    cam_driver = SimCameraDriver(source, pipeline.data_address, query_address=pipeline.query_address,
                                 chunk_frames=24, frame_time=0.0,  # 24 does not divide 64: chunks straddle tilts
                                 position_sources={"tilt": lambda: stage_driver.position("tilt")})
    with init_devices():
        camera = Camera(cam_driver, workdir / "data")
        scan = ScanGenerator(SimScanGeneratorDriver(cam_driver))
        stage = Stage(stage_driver)
    yield {"camera": camera, "scan": scan, "stage": stage}
    cam_driver.close()


def _window_sums(spectra: np.ndarray, particle: EDSParticle) -> np.ndarray:
    """Counts within one FWHM of Ag Lα and Au Mα, ``(2, n_spectra)``."""
    e = particle.energy_axis
    sums = []
    for line in particle.line_energies_kev:
        window = np.abs(e - line) <= particle.fwhm_kev(line)
        sums.append(spectra[:, window].sum(axis=1, dtype=np.int64))
    return np.array(sums)


def test_eds_tilt_series_streams_a_spectrum_per_probe_position(plain_RE, eds_devices, pipeline, source,
                                                               particle):
    d = eds_devices
    (uid,) = plain_RE(eds_tilt_series(d["camera"], d["scan"], d["stage"], angles=list(source.tilt_angles_deg),
                                shape=source.scan_shape, step=70.0, dwell=1e-3, md=source.metadata(),
                                positions=[source.HAADF]))
    (start,), (stop,) = plain_RE.docs["start"], plain_RE.docs["stop"]
    assert stop["exit_status"] == "success" and stop["run_start"] == uid
    assert start["eds"] == source.metadata()["eds"]  # the energy axis is in the run's metadata
    (resource,) = plain_RE.docs["stream_resource"]
    assert list(resource["parameters"]["chunk_shape"]) == [1, 1, N_CHANNELS]
    assert resource["data_key"] == "camera" and resource["uri"] == eds_devices["camera"].recording.resolve().as_uri()
    assert sum(s["indices"]["stop"] - s["indices"]["start"] for s in plain_RE.docs["stream_datum"]) == 3 * 64

    camera = d["camera"]
    run = pipeline.pipeline.runs[camera.run_uid]
    assert run.status == "complete" and run.frames_recorded == 3 * 64
    assert run.start.frame_shape == (1, N_CHANNELS) and run.start.scan_shape == (3, 8, 8)
    assert run.start.boundary_frames == 64
    assert list(run.start.positions) == ["tilt", "haadf"]
    assert run.start.plan["eds"] == source.metadata()["eds"]  # the energy axis reaches the pipeline too
    with Recording(camera.recording) as rec:
        assert rec.n_written == 192
        frames, _, positions = rec.read(0, 192)
    assert frames.dtype == np.uint16 and frames.shape == (192, 1, N_CHANNELS)
    spectra = frames[:, 0].reshape(3, 64, N_CHANNELS)
    for t in range(3):  # bit for bit the particle's spectra, tilt by tilt, position by position
        np.testing.assert_array_equal(spectra[t], particle.spectra(t, 0, 64))
    np.testing.assert_array_equal(positions["tilt"], np.repeat(ANGLES, 64))
    for t in range(3):  # the HAADF value of every probe position, recorded with its spectrum
        np.testing.assert_array_equal(positions["haadf"][t * 64:(t + 1) * 64], particle.haadf(t).ravel())

    sino = particle.sinograms()
    for t in range(3):  # the line windows map the elements' projections at each tilt
        ag, au = _window_sums(spectra[t], particle)
        for counts, el in [(ag, "Ag"), (au, "Au")]:
            r = np.corrcoef(counts, sino[el][t].ravel())[0, 1]
            assert r > 0.9, f"{el} at tilt {ANGLES[t]}: r = {r:.3f}"
