"""Composition root: builds the executor, pipeline and server from a :class:`ServiceConfig`."""

from __future__ import annotations

import logging

from emlive.analyzers import build_analyzer
from emlive.stream.executor import InlineExecutor, ProcessExecutor, ThreadExecutor
from emlive.stream.pipeline import Pipeline
from emlive.stream.server import PipelineServer

from .config import ServiceConfig, limits_of

logger = logging.getLogger(__name__)


def make_executor(cfg: ServiceConfig):
    if cfg.executor == "inline":
        return InlineExecutor()
    if cfg.executor == "threads":
        return ThreadExecutor(n_threads=cfg.workers or None, max_buffer_bytes=cfg.max_buffer_mb << 20)
    return ProcessExecutor(n_workers=cfg.workers or None, max_buffer_bytes=cfg.max_buffer_mb << 20)


def make_server(cfg: ServiceConfig) -> PipelineServer:
    """A ready-to-serve pipeline host; the caller calls ``serve()`` and finally ``shutdown(server)``."""
    for a in cfg.analyzers:  # a bad recipe fails here, with its field's name, not at the first run
        build_analyzer(a.name, dict(a.params))
    executor = make_executor(cfg)
    pipeline = Pipeline(executor, [(a.name, dict(a.params)) for a in cfg.analyzers], cfg.data_dir,
                        record=cfg.record, record_compression=cfg.record_compression)
    server = PipelineServer(pipeline, data_address=cfg.data_address, query_address=cfg.query_address,
                            snapshot_address=cfg.snapshot_address, timeout=cfg.timeout_s, limits=limits_of(cfg),
                            snapshot_hz=cfg.snapshot_hz)
    logger.info("serving: data %s, queries %s, snapshots %s, executor %s, data in %s", server.data_address,
                server.query_address, server.snapshot_address, executor.name, cfg.data_dir)
    return server


def shutdown(server: PipelineServer) -> None:
    server.close()
    server.pipeline.executor.close()
