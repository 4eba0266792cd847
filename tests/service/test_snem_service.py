"""SNEM through the service: worker processes, the Pearson query, and re-analysis of a recording with a TOML section."""

from __future__ import annotations

import math
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from emlive.analyzers.similarity import pearson_map
from emlive.service.app import make_server, shutdown
from emlive.service.cli import main
from emlive.service.config import AnalyzerConfig, ServiceConfig
from emlive.service.reanalysis import reanalyze
from emlive.simulators import SnemLaminate
from emlive.stream.client import PipelineClient
from emlive.stream.protocol import PROTOCOL_VERSION, Calibration, Start
from emlive.stream.recorder import Recorder
from emlive.stream.replay import replay

sys.path.insert(0, str(Path(__file__).parents[1] / "analyzers"))
from test_snem import analyse  # noqa: E402  (the in-process reference run)

SCAN = (6, 16)
PARAMS = {"mask": {"saturation": 4095}, "nmf": {"update_every": 32}}


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    sim = SnemLaminate(scan_shape=SCAN, seed=4, dose=2e5)
    c = sim.calibration
    cal = Calibration(beam_energy_kev=c["beam_energy_kev"], reciprocal_pixel_size=c["reciprocal_pixel_size"],
                      center=tuple(c["center"]), gain=c["gain"],
                      ellipse=(c["ellipse"]["ratio"], math.degrees(c["ellipse"]["angle"])))
    start = Start(version=PROTOCOL_VERSION, run_uid="snem-rec", frame_shape=sim.frame_shape, dtype="uint16",
                  scan_shape=SCAN, chunk_frames=24, calibration=cal)
    path = tmp_path_factory.mktemp("rec") / "raw.h5"
    with Recorder(path, start) as rec:
        for first in range(0, sim.n_frames, 24):
            rec.write(first, sim.frames(first, 24))
    return sim, path


def _results(path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f["results/snem"][k][()] for k in f["results/snem"]}


def test_reanalysis_in_worker_processes_equals_the_in_process_run(recording, tmp_path):
    sim, path = recording
    cfg = ServiceConfig(executor="processes", workers=2, analyzers=[AnalyzerConfig("snem", PARAMS)])
    summary = reanalyze(path, cfg, tmp_path / "out")
    assert summary["status"] == "complete" and summary["frames_analyzed"] == sim.n_frames
    got = _results(summary["results"])
    _, store = analyse(sim, PARAMS, chunk=24)
    for name in ("r_max", "fit2_center1", "vdf_max", "gr", "iq", "bond_zrzr", "sro_alpha"):
        np.testing.assert_array_equal(got[name], store.view(name), err_msg=name)


def test_replay_with_a_changed_toml_section_changes_the_analysis(recording, tmp_path, capsys):
    _, path = recording
    toml = tmp_path / "analysis.toml"
    toml.write_text('executor = "inline"\n[[analyzers]]\nname = "snem"\n[analyzers.params.mask]\nsaturation = 4095\n'
                    '[analyzers.params.pdf]\nqmax = 7.0\n[analyzers.params.nmf]\nenabled = false\n')
    assert main(["replay", str(path), "--config", str(toml), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    first = capsys.readouterr().out
    toml.write_text(toml.read_text().replace("qmax = 7.0", "qmax = 8.1"))
    assert main(["replay", str(path), "--config", str(toml), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    second = capsys.readouterr().out
    import json

    a = _results(json.loads(first.strip().splitlines()[-1])["results"])
    b = _results(json.loads(second.strip().splitlines()[-1])["results"])
    np.testing.assert_array_equal(a["iq"], b["iq"])  # same integration ...
    assert not np.allclose(a["gr"], b["gr"])          # ... another Fourier range
    assert "bond_xx" not in a


def test_a_typo_in_the_section_is_refused_with_its_name(recording, tmp_path):
    _, path = recording
    cfg = ServiceConfig(executor="inline", analyzers=[AnalyzerConfig("snem", {"pdf": {"qmaxx": 7}})])
    with pytest.raises(ValueError, match="qmaxx"):
        reanalyze(path, cfg, tmp_path / "out")


def test_pearson_query_through_the_server(recording, tmp_path):
    sim, path = recording
    cfg = ServiceConfig(data_address="tcp://127.0.0.1:0", query_address="tcp://127.0.0.1:0",
                        snapshot_address="tcp://127.0.0.1:0", data_dir=str(tmp_path), executor="inline",
                        analyzers=[AnalyzerConfig("snem", PARAMS)], record=False)
    server = make_server(cfg)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        end = replay(path, server.data_address)
        with PipelineClient(server.query_address, timeout=30) as client:
            import time

            t_end = time.monotonic() + 60
            while not any(r["run_uid"] == end.run_uid and r["closed"] for r in client.runs()):
                assert time.monotonic() < t_end
                time.sleep(0.05)
            rho = client.query("snem", "pearson", run=end.run_uid, position=[2, 8])["pearson"]
            gr = client.result("snem", "gr", run=end.run_uid).reshape(sim.n_frames, -1)
            r = client.result("snem", "r", run=end.run_uid)
            with pytest.raises(Exception, match="pearson"):
                client.query("snem", "nonsense", run=end.run_uid)
    finally:
        server.stop()
        thread.join(30)
        shutdown(server)
    window = (r >= 1.5) & (r <= 10.0)
    expected = pearson_map(gr, 2 * SCAN[1] + 8, window).reshape(SCAN)
    np.testing.assert_allclose(rho, expected, rtol=1e-5, atol=1e-6)
    assert rho[2, 8] == pytest.approx(1.0, abs=1e-5)


def test_a_run_the_analyzer_cannot_use_is_recorded_and_fails_with_the_reason(recording, tmp_path):
    """No reciprocal pixel size in the header: the server keeps serving, the frames are recorded."""
    sim, _ = recording
    cfg = ServiceConfig(data_address="tcp://127.0.0.1:0", query_address="tcp://127.0.0.1:0",
                        snapshot_address="tcp://127.0.0.1:0", data_dir=str(tmp_path), executor="inline",
                        analyzers=[AnalyzerConfig("virtual"), AnalyzerConfig("snem", PARAMS)])
    start = Start(version=PROTOCOL_VERSION, run_uid="no-calibration", frame_shape=sim.frame_shape, dtype="uint16",
                  scan_shape=SCAN, chunk_frames=48)
    path = tmp_path / "raw-nocal.h5"
    with Recorder(path, start) as rec:
        rec.write(0, sim.frames(0, 48))
        rec.write(48, sim.frames(48, 48))
    server = make_server(cfg)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        end = replay(path, server.data_address)
        import time

        t_end = time.monotonic() + 60
        while not (end.run_uid in server.pipeline.runs and server.pipeline.runs[end.run_uid].closed):
            assert time.monotonic() < t_end
            time.sleep(0.05)
        run = server.pipeline.runs[end.run_uid]
        with PipelineClient(server.query_address, timeout=10) as client:
            assert client.status()["current"] is None  # still answering
    finally:
        server.stop()
        thread.join(30)
        shutdown(server)
    assert run.status == "failed" and "reciprocal_pixel_size" in run.reason
    assert run.frames_recorded == sim.n_frames and "virtual" in run.stores  # nothing lost, the rest analysed


def test_snapshots_announce_large_stacks_and_the_pixel_query_reads_one_position(recording, tmp_path):
    from emlive.stream.client import SnapshotSubscriber

    sim, path = recording
    cfg = ServiceConfig(data_address="tcp://127.0.0.1:0", query_address="tcp://127.0.0.1:0",
                        snapshot_address="tcp://127.0.0.1:0", data_dir=str(tmp_path), executor="inline",
                        analyzers=[AnalyzerConfig("snem", PARAMS)], record=False)
    server = make_server(cfg)
    server.snapshot_max_bytes = 10_000  # the I(Q) and G(r) stacks of this small scan are larger
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        with PipelineClient(server.query_address, timeout=10) as client:
            sub = SnapshotSubscriber(client.status()["snapshot_address"])
            import time

            time.sleep(0.3)  # the subscription reaches the publisher
            end = replay(path, server.data_address)
            final = None
            t_end = time.monotonic() + 60
            while final is None and time.monotonic() < t_end:
                got = sub.recv(1.0)
                if got and got[0]["final"] and got[0]["run_uid"] == end.run_uid:
                    final = got
            sub.close()
            header, arrays = final
            described = {r["name"]: r for r in header["results"]}
            assert described["gr"].get("deferred") and ("snem", "gr") not in arrays
            assert ("snem", "r_max") in arrays and arrays[("snem", "r_max")].shape == SCAN
            one = client.pixel("snem", "gr", position=[3, 5], run=end.run_uid)
            whole = client.result("snem", "gr", run=end.run_uid)
            np.testing.assert_array_equal(one, whole[3, 5])
            with pytest.raises(Exception, match="outside"):
                client.pixel("snem", "gr", index=10_000, run=end.run_uid)
    finally:
        server.stop()
        thread.join(30)
        shutdown(server)
