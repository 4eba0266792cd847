"""The ``emlive`` command as a user runs it: serve in a subprocess, publish, status, replay, demo."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from emlive.service.cli import build_parser
from emlive.service.config import ServiceConfig, load_config
from emlive.simulators import SyntheticScan
from emlive.stream.publisher import FramePublisher

EMLIVE = [sys.executable, "-m", "emlive.service.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_config_file_and_flags(tmp_path):
    toml = tmp_path / "emlive.toml"
    toml.write_text('data_dir = "runs"\nexecutor = "inline"\n[[analyzers]]\nname = "virtual"\n'
                    'params = {bf_radius = 3.0}\n')
    cfg = load_config(toml, executor="processes")
    assert cfg.data_dir == "runs" and cfg.executor == "processes"
    assert cfg.analyzers[0].params == {"bf_radius": 3.0}
    assert ServiceConfig().data_address.startswith("tcp://127.0.0.1:")  # loopback by default
    assert load_config(None, executor="threads").executor == "threads"
    with pytest.raises(Exception, match="executor"):
        load_config(None, executor="fibres")


def test_size_limits_come_from_the_configuration():
    from emlive.service.app import make_server, shutdown
    from emlive.stream.protocol import PROTOCOL_VERSION, Start, encode_header

    loop = "tcp://127.0.0.1:0"
    cfg = load_config(None, executor="inline", max_frame_pixels=64 * 64, data_address=loop, query_address=loop,
                      snapshot_address=loop, record=False)
    server = make_server(cfg)
    try:
        big = Start(version=PROTOCOL_VERSION, run_uid="big", frame_shape=(128, 128), dtype="uint16",
                    scan_shape=(4,))
        assert server.receiver.handle_parts([encode_header(big)]) == []
        assert server.receiver.rejected["frame-too-large"] == 1
    finally:
        shutdown(server)


def test_serve_status_and_replay_from_the_command_line(tmp_path):
    args = ["serve", "--data-dir", str(tmp_path), "--executor", "inline", "--runs", "2", "--timeout", "30",
            "--data-address", "tcp://127.0.0.1:0", "--query-address", "tcp://127.0.0.1:0",
            "--snapshot-address", "tcp://127.0.0.1:0", "--analyzer", 'virtual:{"bf_radius": 4, "com_radius": 8}']
    proc = subprocess.Popen(EMLIVE + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        line = proc.stdout.readline()
        data, query = re.search(r"data (\S+)\s+queries (\S+)", line).groups()
        status = subprocess.run(EMLIVE + ["status", "--connect", query], capture_output=True, text=True,
                                env=ENV, timeout=60)
        assert status.returncode == 0 and json.loads(status.stdout)["analyzers"] == ["virtual"]
        sim = SyntheticScan(scan_shape=(6, 7), frame_shape=(48, 48), seed=3)
        with FramePublisher(data) as pub:
            pub.start((48, 48), "uint16", (6, 7), chunk_frames=5)
            for first, frames in sim.iter_chunks(5):
                pub.send(frames, first)
            pub.end()
        raw = _wait_for(tmp_path, "results.h5", 1).parent / "raw.h5"
        rep = subprocess.run(EMLIVE + ["replay", str(raw), "--connect", data, "--quiet"], capture_output=True,
                             text=True, env=ENV, timeout=60)
        assert rep.returncode == 0, rep.stderr
        assert json.loads(rep.stdout.strip().splitlines()[-1])["frames_sent"] == 42
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    results = sorted(tmp_path.glob("*/results.h5"))
    assert len(results) == 2
    with h5py.File(results[0]) as a, h5py.File(results[1]) as b:
        assert a["results"].attrs["status"] == b["results"].attrs["status"] == "complete"
        for name in a["results/virtual"]:
            assert np.array_equal(a["results/virtual"][name][()], b["results/virtual"][name][()], equal_nan=True)
        assert a["results/virtual/vbf"].shape == (6, 7)


def test_status_says_clearly_when_nothing_is_there():
    out = subprocess.run(EMLIVE + ["status", "--connect", "tcp://127.0.0.1:1", "--timeout", "0.3"],
                         capture_output=True, text=True, env=ENV, timeout=60)
    assert out.returncode == 1 and "no pipeline answers" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("executor", ["inline", "threads", "processes"])
def test_demo_runs_and_writes_its_results(tmp_path, executor):
    out = subprocess.run(EMLIVE + ["demo", "--out", str(tmp_path), "--scan", "8", "24", "--executor", executor],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert summary["ok"] and summary["replay_equals_live"] and summary["frame_from_tiled_equals_simulator"]
    assert summary["live"]["frames_analyzed"] == summary["live"]["frames_recorded"] == 8 * 24
    # the annular dark field follows the simulated glass layer of the laminate
    assert summary["adf_vs_glass_fraction_pearson_r"] > 0.8
    assert len(list(tmp_path.glob("data/*/raw.h5"))) == 2 and (tmp_path / "catalog").is_dir()
    # the maps as pictures: one PNG per 2-D map, its grey levels ordered as the map's values
    from PIL import Image

    pngs = {p.stem: p for p in (tmp_path / "maps").glob("*.png")}
    assert {"virtual_vbf", "virtual_adf_sum", "virtual_com_x"} <= set(pngs)
    with h5py.File(next(tmp_path.glob(f"data/{summary['live']['run_uid']}/results.h5"))) as f:
        adf = f["results/virtual/adf_sum"][()]
    img = np.asarray(Image.open(pngs["virtual_adf_sum"]))[::4, ::4].astype(float)
    assert img.shape == adf.shape and np.corrcoef(img.ravel(), adf.ravel())[0, 1] > 0.9
    assert str(tmp_path) in out.stdout  # the folder is named at the end


def test_every_subcommand_has_help():
    parser = build_parser()
    for cmd in ("serve", "replay", "status", "demo"):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([cmd, "--help"])
        assert exit_info.value.code == 0


def _wait_for(folder: Path, name: str, n: int, timeout: float = 60.0) -> Path:
    import time

    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        found = sorted(folder.glob(f"*/{name}"))
        if len(found) >= n:
            return found[n - 1]
        time.sleep(0.05)
    raise TimeoutError(f"{name} did not appear in {folder}")
