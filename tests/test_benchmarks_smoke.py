"""The SNEM benchmark runs (its --quick mode) and prints cases in DESIGN.md's format; no time is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_snem_pipeline_benchmark_quick_json():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "snem_pipeline.py"), "--quick", "--json",
                          "--sizes", "144"], capture_output=True, text=True, env=env, timeout=240, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "snem_pipeline"
    cases = {c["case"]: c for c in result["cases"]}
    assert {"full-144", "mask-144", "integrate-144", "pdf-144", "fit-144"} <= set(cases)
    for c in result["cases"]:
        assert c["unit"] == "patterns" and c["emlive_per_s"] > 0
        if c["peer"] is not None:
            assert c["ratio"] == pytest.approx(c["emlive_per_s"] / c["peer_per_s"])


@pytest.mark.slow
def test_ecm_benchmark_quick_json():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ecm.py"), "--quick", "--json", "--sizes", "64"],
                         capture_output=True, text=True, env=env, timeout=240, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "ecm"
    assert {c["case"] for c in result["cases"]} == {"correlator-64", "kww-64"}
    for c in result["cases"]:
        assert c["emlive_per_s"] > 0 and c["ratio"] == pytest.approx(c["emlive_per_s"] / c["peer_per_s"])


@pytest.mark.slow
@pytest.mark.parametrize("script, case", [("tomo.py", "sirt-"), ("fem.py", "fem-")])
def test_other_benchmarks_quick_json(script, case):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--json"],
                         capture_output=True, text=True, env=env, timeout=240, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    cases = result["cases"]
    assert any(c["case"].startswith(case) for c in cases)
    for c in cases:
        assert c["emlive_per_s"] > 0
