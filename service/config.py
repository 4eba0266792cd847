"""Service configuration: one TOML file, every field overridable on the command line."""

from __future__ import annotations

from pathlib import Path

import msgspec


class AnalyzerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    params: dict = {}


#: Where analyzers run (:mod:`emlive.stream.executor`): ``threads`` suits analyzers whose kernels release the GIL.
EXECUTORS = ("inline", "threads", "processes")


class ServiceConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the service listens, what it runs, where it writes. Addresses default to loopback."""

    data_address: str = "tcp://127.0.0.1:5555"
    query_address: str = "tcp://127.0.0.1:5556"
    snapshot_address: str = "tcp://127.0.0.1:5557"
    data_dir: str = "data"
    executor: str = "processes"
    workers: int = 0                  # analyzer processes or threads; 0: one per core
    analyzers: list[AnalyzerConfig] = msgspec.field(default_factory=lambda: [AnalyzerConfig("virtual")])
    record: bool = True
    record_compression: str = "none"  # none | bslz4
    timeout_s: float = 10.0
    snapshot_hz: float = 20.0
    max_buffer_mb: int = 256          # frames in flight (shared memory or thread buffers): bounded under back-pressure
    # messages beyond these are rejected (and counted) rather than allocated
    max_frame_pixels: int = 4096 * 4096
    max_chunk_frames: int = 4096
    max_chunk_mb: int = 1024
    max_scan_frames: int = 1 << 28

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.record_compression not in ("none", "bslz4"):
            raise ValueError(f"record_compression must be 'none' or 'bslz4', got {self.record_compression!r}")
        if not 0 < self.snapshot_hz <= 20:
            raise ValueError(f"snapshot_hz must be in (0, 20], got {self.snapshot_hz}")


def limits_of(cfg: ServiceConfig):
    """The receiver's size limits from the configuration."""
    from emlive.stream.validation import Limits

    return Limits(max_frame_pixels=cfg.max_frame_pixels, max_chunk_frames=cfg.max_chunk_frames,
                  max_chunk_bytes=cfg.max_chunk_mb << 20, max_scan_frames=cfg.max_scan_frames)


def load_config(path: str | Path | None, **overrides) -> ServiceConfig:
    """Read a TOML file (optional) and apply the non-None overrides."""
    data: dict = {}
    if path is not None:
        data = msgspec.toml.decode(Path(path).read_bytes(), type=dict)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return msgspec.convert(data, ServiceConfig)
