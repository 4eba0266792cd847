"""Replay: a recording sent again as a frame stream, so analyzers cannot tell it from live.

The replay resends the recorded chunks as they arrived (same ``first``/``count``,
timestamps and positions, same encoding), so any analyzer fed the replay gets the same
chunks, in the same order, as it got live, and its results agree bit for bit. Stored
``bslz4`` frames are sent as they are stored: they are byte for byte the wire format.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Literal

import msgspec
import numpy as np
from tqdm import tqdm

from .errors import UsageError
from .protocol import End
from .publisher import FramePublisher
from .recorder import Recording

logger = logging.getLogger(__name__)

# module-level so tests can pace a replay on a fake clock instead of sleeping
_clock = time.monotonic
_sleep = time.sleep


def replay(path: str | os.PathLike, address: str | None = None, rate: Literal["max", "original"] = "max",
           publisher: FramePublisher | None = None, progress: bool = False) -> End:
    """Publish a recorded run again, chunk for chunk, as a new run.

    The new run gets a fresh ``run_uid`` (two runs must never share one: receivers
    drop messages of a run they are not in) and keeps everything else of the original
    ``start``; ``plan["replay_of"]`` names the original run. Only frames the file marks
    written are sent, so the recording of a killed writer replays what it holds.

    Parameters
    ----------
    path : str or os.PathLike
        The recording (see :class:`~emlive.stream.recorder.Recorder`).
    address : str, optional
        Endpoint to connect a new :class:`FramePublisher` to; not needed with ``publisher``.
    rate : {"max", "original"}
        ``max`` sends as fast as the receiver takes them (back-pressure still applies);
        ``original`` waits so chunks leave with the spacing of their recorded timestamps.
    publisher : FramePublisher, optional
        Use this publisher (left open) instead of making one.
    progress : bool
        Show a tqdm progress bar of frames sent.

    Returns
    -------
    End
        The ``end`` header sent (status ``success``).
    """
    if rate not in ("max", "original"):
        raise UsageError(f"rate {rate!r}; expected 'max' or 'original'")
    if publisher is None and address is None:
        raise UsageError("replay needs an address or a publisher")
    own = publisher is None
    pub = FramePublisher(address) if own else publisher
    try:
        with Recording(path) as rec:
            return _send(rec, pub, rate, progress)
    finally:
        if own:
            pub.close()


def _send(rec: Recording, pub: FramePublisher, rate: str, progress: bool) -> End:
    start = rec.start
    # the recorded header as it was, under a new uid: no field can be forgotten on the way
    new = pub.open(msgspec.structs.replace(start, run_uid=uuid.uuid4().hex, time=time.time(),
                                           plan={**start.plan, "replay_of": start.run_uid}))
    logger.info("replaying %s (run %s, %d of %d frames written) as run %s at rate %s", rec.path,
                start.run_uid, rec.n_written, rec.n_frames, new.run_uid, rate)
    # stored bslz4 chunks are the wire's bslz4 frames: send them without a decode/encode round trip
    passthrough = start.encoding == "bslz4" and rec.compression == "bslz4"
    clock0 = stamp0 = None
    with tqdm(total=rec.n_written, unit="frame", desc=f"replay {start.run_uid[:8]}",
              disable=not progress) as bar:
        for first, count in rec.chunk_ranges():
            payloads = rec.read_compressed(first, count) if passthrough else None
            if payloads is None:
                frames, ts, positions = rec.read(first, count)
            else:
                frames, ts, positions = None, *rec.read_meta(first, count)
            if rate == "original" and not np.isnan(ts[0]):
                if clock0 is None:
                    clock0, stamp0 = _clock(), ts[0]
                # pace against the first chunk, so sleep errors do not accumulate
                delay = clock0 + float(ts[0] - stamp0) - _clock()
                if delay > 0:
                    _sleep(delay)
            # a chunk recorded without timestamps or without a position has NaN there: send none
            timestamps = None if np.isnan(ts).all() else ts
            positions = {k: v for k, v in positions.items() if not np.isnan(v).all()}
            if payloads is None:
                pub.send_chunk(frames, first, timestamps=timestamps, positions=positions)
            else:
                # frames are not needed when ``encoded`` is given: send_chunk counts the sizes
                pub.send_chunk(frames, first, timestamps=timestamps, positions=positions,
                               encoded=([len(p) for p in payloads], b"".join(payloads)))
            bar.update(count)
    end = pub.end("success")
    logger.info("replay of run %s as %s done: %d frames in %d chunks", start.run_uid, new.run_uid,
                end.frames_sent, end.chunks_sent)
    return end


__all__ = ["replay"]
