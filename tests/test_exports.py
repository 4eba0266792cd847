"""Every subpackage lists its public names, and each one exists (httpx-style export check)."""

import importlib

import pytest

PACKAGES = ["emlive.stream", "emlive.analyzers", "emlive.simulators", "emlive.service"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist(name):
    module = importlib.import_module(name)
    assert module.__all__, f"{name} exports nothing"
    for attr in module.__all__:
        assert getattr(module, attr) is not None, f"{name}.{attr}"


def test_stream_does_not_import_analyzers():
    import subprocess
    import sys

    code = "import sys, emlive.stream; print(any(m.startswith('emlive.analyzers') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
