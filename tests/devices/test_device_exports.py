"""emlive.devices lists its public names, each exists, and it imports no forbidden layer at runtime."""

import subprocess
import sys

import emlive.devices


def test_all_names_exist():
    assert emlive.devices.__all__
    for name in emlive.devices.__all__:
        assert getattr(emlive.devices, name) is not None, name


def test_importing_devices_loads_no_analyzers_viewer_or_service():
    code = ("import sys, emlive.devices; "
            "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('emlive.') and m.count('.')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert set(eval(out)) <= {"devices", "stream", "simulators"}
