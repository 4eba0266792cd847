"""How fast the phantoms make data: the simulator must never limit a benchmark or a demo.

Each case times one phantom's frame generation on one core, after a warm-up call, best
of ``--repeat``. There is no peer to compare with (``"peer": null`` in ``--json``).

Usage::

    python benchmarks/simulators.py
    python benchmarks/simulators.py --json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import time

from emlive.simulators import AETParticle, ECMNanowire, EDSParticle, FEMFilm, SnemLaminate, SyntheticScan


def _best(fn, repeat: int) -> float:
    fn()  # warm-up: caches, first-use tabulations
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cases(repeat: int) -> list[dict]:
    out = []

    def add(name: str, unit: str, n: int, fn) -> None:
        out.append({"case": name, "unit": unit, "emlive_per_s": n / _best(fn, repeat), "peer": None,
                    "peer_per_s": None, "ratio": None})

    lam = SnemLaminate(scan_shape=(32, 48), seed=0)
    add("laminate-128", "frames", 256, lambda: lam.frames(0, 256))
    fem = FEMFilm(seed=0)
    add("fem-128", "frames", 256, lambda: fem.frames(0, 256))
    syn = SyntheticScan(scan_shape=(32, 32), frame_shape=(256, 256), dose=5000, seed=0)
    add("synthetic-256", "frames", 256, lambda: syn.frames(0, 256))
    eds = EDSParticle(seed=0)
    add("eds-spectra-2048ch", "spectra", 1024, lambda: eds.spectra(0, 0, 1024))
    aet = AETParticle(seed=0)
    add("aet-projection-256", "projections", 4, lambda: aet.tilt_series([-30.0, -10.0, 10.0, 30.0]))
    add("ecm-series-64x2000", "series", 1, lambda: ECMNanowire(seed=0))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = cases(args.repeat)
    if args.json:
        print(json.dumps({"benchmark": "simulators", "cases": result}))
        return
    for c in result:
        print(f"{c['case']:24s} {c['emlive_per_s']:12.1f} {c['unit']}/s")


if __name__ == "__main__":
    main()
