"""What every benchmark script does around its cases: where it talks, the load warning, the JSON.

The scripts run as ``python benchmarks/<name>.py``, so this module sits next to them on
``sys.path``. Human text goes to stdout, or to stderr with ``--json`` so that stdout holds
exactly one JSON object in DESIGN.md's format.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

Say = Callable[..., None]


def reporter(as_json: bool) -> Say:
    """``print`` for the human text: to stderr when stdout carries the JSON."""
    stream = sys.stderr if as_json else sys.stdout
    return lambda *a: print(*a, file=stream, flush=True)


def warn_if_loaded(say: Say, limit: float = 0.5, what: str = "the numbers") -> None:
    """Say so when other processes already load the cores: ``what`` will be low."""
    load = os.getloadavg()[0]
    if load > limit:
        say(f"warning: load average {load:.2f} before the start: other processes share the cores, "
            f"{what} will be low")


def run_cases(name: str, cases: dict, selected, sizes, default_sizes: dict, args, say: Say) -> list[dict]:
    """Run each selected case at its sizes (``cases[c](size, args, say) -> row``); print the JSON if asked."""
    rows = [cases[c](size, args, say) for c in selected for size in (sizes or default_sizes[c])]
    if args.json:
        print(json.dumps({"benchmark": name, "cases": rows}))
    return rows
