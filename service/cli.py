"""The ``emlive`` command: ``serve``, ``replay``, ``status``, ``view`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys

from .config import EXECUTORS, AnalyzerConfig, load_config

logger = logging.getLogger(__name__)


def _parse_analyzers(values: list[str] | None) -> list[AnalyzerConfig] | None:
    """``--analyzer virtual`` or ``--analyzer 'virtual:{"bf_radius": 5}'``."""
    if not values:
        return None
    out = []
    for v in values:
        name, _, params = v.partition(":")
        out.append(AnalyzerConfig(name, json.loads(params) if params else {}))
    return out


def cmd_serve(args: argparse.Namespace) -> int:
    from .app import make_server, shutdown

    cfg = load_config(args.config, data_address=args.data_address, query_address=args.query_address,
                      snapshot_address=args.snapshot_address, data_dir=args.data_dir, executor=args.executor,
                      workers=args.workers, analyzers=_parse_analyzers(args.analyzer),
                      record_compression=args.record_compression, timeout_s=args.timeout)
    server = make_server(cfg)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    print(f"emlive serving: data {server.data_address}  queries {server.query_address}  "
          f"snapshots {server.snapshot_address}  (Ctrl-C to stop)", flush=True)
    try:
        server.serve(runs=args.runs)
    except KeyboardInterrupt:
        pass
    finally:
        shutdown(server)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    if args.config is not None:
        # re-analysis: a private pipeline with the configuration's analyzers, results in --out
        from .reanalysis import reanalyze

        cfg = load_config(args.config, executor=args.executor,
                          analyzers=_parse_analyzers(args.analyzer))
        summary = reanalyze(args.file, cfg, args.out, progress=not args.quiet)
        print(json.dumps({k: summary[k] for k in ("run_uid", "status", "frames_analyzed", "results")}))
        return 0
    from emlive.stream.replay import replay

    end = replay(args.file, args.connect, rate=args.rate, progress=not args.quiet)
    print(json.dumps({"run_uid": end.run_uid, "frames_sent": end.frames_sent, "status": end.status}))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from emlive.stream.client import PipelineClient

    try:
        with PipelineClient(args.connect, timeout=args.timeout) as client:
            print(json.dumps(client.runs() if args.runs else client.status(), indent=2))
    except TimeoutError:
        print(f"no pipeline answers at {args.connect}", file=sys.stderr)
        return 1
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from emlive.viewer.app import run_viewer

    return run_viewer(args.connect, screenshot=args.screenshot, timeout=args.timeout, result=args.result)


def _viewer_hooks(enabled: bool):
    """``demo --view``: the viewer in its own process on the demo's pipeline, kept up until it is closed.

    A process, not a thread: the RunEngine and Qt each want the main thread, and a viewer that
    fails (no display) must not take the acquisition down.
    """
    if not enabled:
        return None, None
    state: dict = {}

    def on_serving(server) -> None:
        state["proc"] = subprocess.Popen([sys.executable, "-m", "emlive.service.cli", "view",
                                          "--connect", server.query_address, "--result", "snem/r_max"])

    def hold() -> None:
        proc = state.get("proc")
        if proc is not None and proc.poll() is None:
            print("demo finished: the pipeline stays up for the viewer; close its window to exit", flush=True)
            proc.wait()

    return on_serving, hold


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    on_serving, hold = _viewer_hooks(args.view)
    summary = run_demo(args.out, scan_shape=tuple(args.scan), executor=args.executor, encoding=args.encoding,
                       on_serving=on_serving, hold=hold)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("live", "replay")}, indent=2))
    print(f"live run {summary['live']['status']}: {summary['live']['frames_analyzed']} frames analyzed, "
          f"{summary['live']['frames_recorded']} recorded; results in {summary['output']}")
    return 0 if summary["ok"] else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="emlive", description="Streaming live acquisition and analysis for SEM/STEM.")
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the pipeline host: receive, record, analyze, publish")
    s.add_argument("--config", help="TOML file with ServiceConfig fields")
    s.add_argument("--data-address", help="frame stream endpoint to bind (default tcp://127.0.0.1:5555)")
    s.add_argument("--query-address", help="query endpoint to bind (default tcp://127.0.0.1:5556)")
    s.add_argument("--snapshot-address", help="snapshot endpoint to bind (default tcp://127.0.0.1:5557)")
    s.add_argument("--data-dir", help="folder for recordings and results (default ./data)")
    s.add_argument("--executor", choices=list(EXECUTORS))
    s.add_argument("--workers", type=int, help="analyzer processes or threads (default: one per core)")
    s.add_argument("--analyzer", action="append", help="name or name:{json params}; repeatable")
    s.add_argument("--record-compression", choices=["none", "bslz4"])
    s.add_argument("--timeout", type=float, help="seconds of silence before a run is closed as incomplete")
    s.add_argument("--runs", type=int, help="exit after this many runs (default: serve forever)")
    s.set_defaults(func=cmd_serve)

    r = sub.add_parser("replay", help="re-publish a recording as the same stream, or re-analyse it (--config)")
    r.add_argument("file")
    r.add_argument("--connect", default="tcp://127.0.0.1:5555", help="pipeline data endpoint")
    r.add_argument("--rate", choices=["original", "max"], default="max")
    r.add_argument("--quiet", action="store_true")
    r.add_argument("--config", help="TOML with [[analyzers]] sections: re-analyse the recording locally with "
                                    "these parameters instead of sending it to a running pipeline")
    r.add_argument("--out", default="reanalysis", help="with --config: folder for the results")
    r.add_argument("--executor", choices=list(EXECUTORS), help="with --config")
    r.add_argument("--analyzer", action="append", help="with --config: name or name:{json params}; repeatable")
    r.set_defaults(func=cmd_replay)

    st = sub.add_parser("status", help="ask a running pipeline for its status")
    st.add_argument("--connect", default="tcp://127.0.0.1:5556", help="pipeline query endpoint")
    st.add_argument("--runs", action="store_true", help="list runs instead")
    st.add_argument("--timeout", type=float, default=3.0)
    st.set_defaults(func=cmd_status)

    v = sub.add_parser("view", help="open the live viewer on a running pipeline (local or remote)")
    v.add_argument("--connect", default="tcp://127.0.0.1:5556", help="pipeline query endpoint")
    v.add_argument("--screenshot", metavar="FILE", help="render one frame of the connected viewer to FILE "
                                                         "(PNG) and exit; works without a display")
    v.add_argument("--result", metavar="ANALYZER/NAME", help="the result to show first, e.g. snem/r_max")
    v.add_argument("--timeout", type=float, default=30.0,
                   help="with --screenshot: seconds to wait for a map before giving up")
    v.set_defaults(func=cmd_view)

    d = sub.add_parser("demo", help="snem_map on the simulated laminate, analysed live, then replayed; "
                                     "results to a folder")
    d.add_argument("--out", default="demo-output")
    d.add_argument("--scan", type=int, nargs=2, default=[32, 48], metavar=("NY", "NX"))
    d.add_argument("--executor", choices=list(EXECUTORS), default="processes")
    d.add_argument("--encoding", choices=["raw", "lz4", "bslz4"], default="bslz4")
    d.add_argument("--view", action="store_true", help="open the live viewer on the demo's pipeline")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "alembic", "tiled", "bluesky"):  # their per-request INFO lines drown ours
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
