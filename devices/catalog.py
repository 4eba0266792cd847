"""Where the documents go: an embedded Tiled catalog (or a running one), fed by ``TiledWriter``.

The catalog stores the documents (metadata, event streams such as the tilt readbacks)
and registers the recordings the camera's ``stream_resource`` documents point at, so
``client[uid]["primary"]["camera"][i]`` serves raw frame ``i`` straight from
``data_dir/<run_uid>/raw.h5`` through Tiled's HDF5 adapter, without copying it.

The embedded server is tiled's ``SimpleTiledServer``: a SQLite catalog plus DuckDB
tables in ``directory``, served by uvicorn on 127.0.0.1 on a free port, in a thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

__all__ = ["connect_catalog", "start_catalog", "subscribe_catalog"]

logger = logging.getLogger(__name__)


def start_catalog(directory: str | PathLike, readable_storage: Sequence[str | PathLike] = ()):
    """Start an embedded Tiled server that keeps its catalog in ``directory``.

    Parameters
    ----------
    directory : path
        Catalog database, table storage and server logs; reused if it exists.
    readable_storage : sequence of paths
        Directories whose files the catalog may serve: the pipeline's ``data_dir``.

    Returns
    -------
    (client, server)
        A Tiled client of the catalog root, and the ``SimpleTiledServer``; call
        ``server.close()`` when done.
    """
    from tiled.client import from_uri
    from tiled.server import SimpleTiledServer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    storage = [Path(p).resolve() for p in readable_storage]
    server = SimpleTiledServer(directory=directory, readable_storage=storage or None)
    try:
        client = from_uri(server.uri)
    except BaseException:
        server.close()
        raise
    logger.info("Tiled catalog in %s served at %s (readable: %s)", directory, server.uri.split("?")[0],
                [str(p) for p in storage])
    return client, server


def connect_catalog(uri: str, api_key: str | None = None):
    """A client of a running Tiled server (e.g. the instrument's ``tiled serve`` catalog)."""
    from tiled.client import from_uri

    return from_uri(uri, api_key=api_key)


def subscribe_catalog(run_engine, client, batch_size: int = 1) -> int:
    """Subscribe a ``TiledWriter`` to ``run_engine``; returns the subscription token.

    ``batch_size=1`` writes each event and stream_datum as it comes, so a run can be
    browsed while it is acquired (the writer's default batches 10 000 for migrations).
    """
    from bluesky.callbacks.tiled_writer import TiledWriter

    return run_engine.subscribe(TiledWriter(client, batch_size=batch_size))
