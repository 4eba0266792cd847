"""The frame stream: wire protocol, publisher/receiver, pipeline host, executors, recorder, replay.

Imports nothing else of emlive (analyzers are built in workers from a factory path).
"""

from .client import PipelineClient, QueryError, SnapshotSubscriber
from .errors import EmliveError, ProtocolError, UsageError
from .executor import InlineExecutor, ProcessExecutor, RecordSpec, ThreadExecutor
from .pipeline import Pipeline, RunRecord
from .protocol import PROTOCOL_VERSION, Calibration, Chunk, End, Heartbeat, Start
from .publisher import FramePublisher
from .receiver import FrameReceiver, ReceivedChunk
from .recorder import Recorder, Recording
from .replay import replay
from .server import PipelineServer
from .state import Gap, RunClosed, RunStarted, StreamState
from .types import FrameChunk, Partial, ResultBuffers, ResultSpec, RunInfo, Tile
from .validation import Limits

__all__ = [
    "PROTOCOL_VERSION", "Calibration", "Chunk", "End", "Heartbeat", "Start",
    "FramePublisher", "FrameReceiver", "ReceivedChunk", "StreamState", "Gap", "RunClosed", "RunStarted",
    "Limits", "EmliveError", "ProtocolError", "UsageError",
    "InlineExecutor", "ProcessExecutor", "RecordSpec", "ThreadExecutor", "Pipeline", "RunRecord", "PipelineServer",
    "PipelineClient", "SnapshotSubscriber", "QueryError", "Recorder", "Recording", "replay",
    "FrameChunk", "Partial", "ResultBuffers", "ResultSpec", "RunInfo", "Tile",
]
