"""FramePublisher: the sending end of the frame stream (camera drivers, simulators, replay).

A PUSH socket: lossless, and blocking when the receiver's queues are full, which is
how back-pressure from slow analyzers reaches the source.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping

import numpy as np
import zmq

from .codecs import encode_frames
from .errors import UsageError
from .protocol import PROTOCOL_VERSION, Calibration, Chunk, End, Heartbeat, Start, encode_header

logger = logging.getLogger(__name__)


class FramePublisher:
    """Publishes runs of frames.

    Parameters
    ----------
    address : str
        ZeroMQ endpoint, e.g. ``tcp://127.0.0.1:5555``.
    bind : bool
        Bind instead of connect (the pipeline host binds by default, sources connect).
    sndhwm : int
        Messages queued before ``send`` blocks (each message is a whole chunk).
    context : zmq.Context, optional

    Frames handed to :meth:`send` are sent without copying: do not modify them afterwards.
    """

    def __init__(self, address: str, bind: bool = False, sndhwm: int = 8,
                 context: zmq.Context | None = None, linger_ms: int = 30_000) -> None:
        self._ctx = context or zmq.Context.instance()
        self.socket = self._ctx.socket(zmq.PUSH)
        self.socket.sndhwm = sndhwm
        self.socket.linger = linger_ms
        if bind:
            self.socket.bind(address)
        else:
            self.socket.connect(address)
        self.address = self.socket.last_endpoint.decode() if bind else address
        self.start_msg: Start | None = None
        self._seq = 0
        self._next_frame = 0
        self.frames_sent = 0

    def start(self, frame_shape: tuple[int, int], dtype: str, scan_shape: tuple[int, ...], *,
              run_uid: str | None = None, chunk_frames: int = 64, encoding: str = "raw",
              calibration: Calibration | None = None, boundary_frames: int = 0,
              sample: Mapping | None = None, plan: Mapping | None = None, stream: str = "primary",
              positions: list[str] | tuple[str, ...] = ()) -> Start:
        """Open a run; returns the ``start`` header sent.

        ``positions`` names the per-frame readbacks (tilt, temperature...) the chunks will carry.
        """
        msg = Start(version=PROTOCOL_VERSION, run_uid=run_uid or uuid.uuid4().hex,
                    frame_shape=tuple(int(v) for v in frame_shape), dtype=str(np.dtype(dtype)),
                    scan_shape=tuple(int(v) for v in scan_shape), chunk_frames=chunk_frames,
                    encoding=encoding, boundary_frames=boundary_frames,
                    calibration=calibration or Calibration(), sample=dict(sample or {}),
                    plan=dict(plan or {}), stream=stream, positions=list(positions), time=time.time())
        return self.open(msg)

    def open(self, msg: Start) -> Start:
        """Open a run with a ready-made ``start`` header (a replay sends the recorded one)."""
        self.socket.send(encode_header(msg))
        self.start_msg = msg
        self._seq = 0
        self._next_frame = 0
        self.frames_sent = 0
        return msg

    def send(self, frames: np.ndarray, first: int | None = None, *, timestamps=None,
             positions: Mapping[str, np.ndarray] | None = None) -> None:
        """Send a stack of frames (n, qy, qx) starting at scan index ``first`` (default: next)."""
        start = self._require_run()
        frames = np.asarray(frames)
        if frames.ndim == 2:
            frames = frames[None]
        if frames.shape[1:] != start.frame_shape or frames.dtype != np.dtype(start.dtype):
            raise UsageError(f"frames {frames.shape[1:]} {frames.dtype} do not match the run's "
                             f"{start.frame_shape} {start.dtype}")
        first = self._next_frame if first is None else int(first)
        n = frames.shape[0]
        ts = np.full(n, time.time()) if timestamps is None else np.asarray(timestamps, dtype=float)
        for a in range(0, n, start.chunk_frames):
            b = min(n, a + start.chunk_frames)
            self.send_chunk(frames[a:b], first + a, timestamps=ts[a:b],
                            positions={k: np.asarray(v)[a:b] for k, v in (positions or {}).items()})

    def send_chunk(self, frames: np.ndarray, first: int, *, timestamps=None, positions=None,
                   encoded: tuple[list[int], bytes] | None = None) -> None:
        """Send one chunk as is; ``encoded`` passes already-compressed frames (replay of a bslz4 file)."""
        start = self._require_run()
        sizes, payload = encoded if encoded is not None else encode_frames(frames, start.encoding)
        count = len(frames) if encoded is None else len(sizes)
        header = Chunk(version=PROTOCOL_VERSION, run_uid=start.run_uid, seq=self._seq, first=first,
                       count=count, encoding=start.encoding, sizes=sizes,
                       timestamps=[] if timestamps is None else [float(t) for t in timestamps],
                       positions={k: [float(x) for x in v] for k, v in (positions or {}).items()})
        self.socket.send_multipart([encode_header(header), payload], copy=False)
        self._seq += 1
        self._next_frame = max(self._next_frame, first + count)
        self.frames_sent += count

    def end(self, status: str = "success", reason: str = "") -> End:
        """Close the run, announcing how many frames were sent."""
        start = self._require_run()
        msg = End(version=PROTOCOL_VERSION, run_uid=start.run_uid, frames_sent=self.frames_sent,
                  chunks_sent=self._seq, status=status, reason=reason)
        self.socket.send(encode_header(msg))
        self.start_msg = None
        return msg

    def heartbeat(self) -> None:
        uid = self.start_msg.run_uid if self.start_msg else ""
        self.socket.send(encode_header(Heartbeat(version=PROTOCOL_VERSION, run_uid=uid, time=time.time())))

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> FramePublisher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _require_run(self) -> Start:
        if self.start_msg is None:
            raise UsageError("no open run: call start() first")
        return self.start_msg
