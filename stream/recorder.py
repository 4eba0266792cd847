"""The recorder: one run of the frame stream into an HDF5/NeXus file, readable while it grows.

The file is the authoritative copy of a run, so it is written to survive its writer:
it is created with ``libver="latest"`` and switched to SWMR (single writer, multiple
readers) before the first frame. SWMR forbids creating objects or attributes once it is
on, so *every* dataset, including the ones filled only at the end (``end_time``,
``summary_json``), is created up front. After each chunk the file is flushed twice:
first the frames, timestamps and positions, then the ``written`` flags and the chunk
list, so a frame marked written is on disk even if the writer is killed a moment later.

Layout (N = ``start.n_frames``)::

    /entry                       NXentry   attrs run_uid, start_time, start_json
      start_time, end_time       ISO 8601 (end_time filled at close)
      summary_json               uint8 (growable): UTF-8 JSON of the run summary; ``null`` until close
      /data                      NXdata    attrs signal="data"
        data                     (N, qy, qx) one frame per chunk, fill 0, attr scan_shape
        data_4d | data_5d ...    virtual (*scan_shape, qy, qx) view of ``data`` (scans of 2+ axes)
        written                  uint8 (N,): 1 once the frame is flushed
        timestamps               float64 (N,), NaN until written
        chunk_first, chunk_count int64 (growable): the chunks in arrival order, for replay
        /positions/<name>        float64 (N,), NaN until written
      /instrument/detector       NXdetector: calibration (keV, 1/Å, pixels, degrees, Hz, m)
      /sample                    NXsample: attr sample_json plus its scalar entries

:class:`Recording` reads such a file, finished, still growing, or left by a killed writer.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence

import h5py
import hdf5plugin  # registers the bitshuffle filter with HDF5 for readers and writers
import msgspec
import numpy as np

from .codecs import compress_frame
from .errors import UsageError
from .protocol import Start

logger = logging.getLogger(__name__)

COMPRESSIONS = ("none", "bslz4")
_FLAG_CHUNK = 4096  # elements per chunk of the per-frame 1-D datasets: small, as each flush rewrites one
_LIST_CHUNK = 1024  # elements per chunk of the growable chunk lists


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat()


def _json_default(obj: object) -> object:
    """Let summaries carry numpy scalars and arrays."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise NotImplementedError(f"cannot store {type(obj).__name__} in the summary")


class Recorder:
    """Writes one run into an HDF5/NeXus file in SWMR mode; synchronous, no sockets.

    Parameters
    ----------
    path : str or os.PathLike
        File to create (overwritten if it exists).
    start : Start
        The run's ``start`` header; it fixes the frame count, shape, dtype and metadata.
    compression : {"none", "bslz4"}
        Storage of the frames. ``bslz4`` is HDF5's bitshuffle-LZ4 filter (hdf5plugin),
        whose chunks are byte for byte the wire's ``bslz4`` frames, so they can be stored
        without recompressing.
    positions : sequence of str, optional
        Names of the per-frame positions to store. SWMR cannot add datasets later, so
        they must be known now; default ``start.positions`` (or, from older sources,
        ``start.plan["positions"]``). Positions
        of other names are counted in :attr:`unknown_positions` and otherwise ignored.

    Examples
    --------
    >>> rec = Recorder(path, start, compression="bslz4")        # doctest: +SKIP
    >>> rec.write(0, frames, timestamps=ts, positions={"tilt": angles})  # doctest: +SKIP
    >>> rec.close({"status": "success"})                        # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, start: Start, compression: str = "none",
                 positions: Sequence[str] | None = None) -> None:
        if compression not in COMPRESSIONS:
            raise UsageError(f"compression {compression!r} not in {COMPRESSIONS}")
        self.path = os.fspath(path)
        self.start = start
        self.compression = compression
        self.n_frames = start.n_frames
        self.frame_shape = tuple(start.frame_shape)
        self.dtype = np.dtype(start.dtype)
        self.frames_written = 0
        self.chunks_written = 0
        self.unknown_positions: Counter = Counter()
        if positions is None:
            positions = start.positions or start.plan.get("positions", [])
        names = list(positions)
        self.position_names = [str(n) for n in names]
        for name in self.position_names:
            if not name or "/" in name or name == ".":
                raise UsageError(f"position name {name!r} cannot be an HDF5 dataset name")
        self._f = h5py.File(self.path, "w", libver="latest")
        try:
            self._create_layout()
            # from here on no object or attribute may be created (SWMR rule)
            self._f.swmr_mode = True
        except BaseException:
            self._f.close()
            raise
        logger.info("recording run %s (%d frames of %s %s, %s) to %s", start.run_uid, self.n_frames,
                    self.frame_shape, self.dtype, compression, self.path)

    # -- layout -------------------------------------------------------------------------------
    def _create_layout(self) -> None:
        f, start, n = self._f, self.start, self.n_frames
        f.attrs.update(default="entry", creator="emlive", NX_class="NXroot")
        entry = f.create_group("entry")
        entry.attrs.update(NX_class="NXentry", default="data", run_uid=start.run_uid,
                           stream=start.stream, start_time=_iso(start.time),
                           start_json=msgspec.json.encode(start).decode())
        entry.create_dataset("start_time", data=_iso(start.time))
        # fixed-size strings and a growable byte array: written at close without creating anything
        entry.create_dataset("end_time", data=np.bytes_(""), dtype="S40")
        # starts as JSON ``null``, not empty: some readers (rosettasciio) fail on zero-size datasets
        summary = entry.create_dataset("summary_json", data=np.frombuffer(b"null", dtype="uint8"),
                                       maxshape=(None,), chunks=(4096,))
        summary.attrs["content_type"] = "application/json; charset=utf-8"

        data = entry.create_group("data")
        data.attrs.update(NX_class="NXdata", signal="data", axes=[".", ".", "."])
        filters = dict(hdf5plugin.Bitshuffle(cname="lz4")) if self.compression == "bslz4" else {}
        self._data = data.create_dataset("data", shape=(n, *self.frame_shape), dtype=self.dtype,
                                         chunks=(1, *self.frame_shape), fillvalue=0, **filters)
        self._data.attrs.update(scan_shape=np.asarray(start.scan_shape, dtype="int64"),
                                compression=self.compression, units="counts")
        if len(start.scan_shape) >= 2:
            self._create_scan_view(data)
        flag_chunk = (min(n, _FLAG_CHUNK),)
        self._written = data.create_dataset("written", shape=(n,), dtype="uint8", chunks=flag_chunk,
                                            fillvalue=0)
        self._timestamps = data.create_dataset("timestamps", shape=(n,), dtype="float64",
                                               chunks=flag_chunk, fillvalue=np.nan)
        self._timestamps.attrs["units"] = "s"
        self._chunk_first = data.create_dataset("chunk_first", shape=(0,), maxshape=(None,), dtype="int64",
                                                chunks=(_LIST_CHUNK,))
        self._chunk_count = data.create_dataset("chunk_count", shape=(0,), maxshape=(None,), dtype="int64",
                                                chunks=(_LIST_CHUNK,))
        group = data.create_group("positions")
        group.attrs["NX_class"] = "NXcollection"
        self._positions = {name: group.create_dataset(name, shape=(n,), dtype="float64", chunks=flag_chunk,
                                                      fillvalue=np.nan)
                           for name in self.position_names}
        self._create_instrument(entry)
        self._create_sample(entry)

    def _create_scan_view(self, data: h5py.Group) -> None:
        """A virtual (*scan_shape, qy, qx) view of the frames, as 4D-STEM tools expect.

        One mapping suffices: HDF5 maps equal-sized selections element by element in
        C order, so the (N, qy, qx) source lays out as the reshaped array (checked in the
        tests by slicing it against ``numpy.reshape``).
        """
        shape = (*self.start.scan_shape, *self.frame_shape)
        layout = h5py.VirtualLayout(shape=shape, dtype=self.dtype)
        layout[...] = h5py.VirtualSource(".", self._data.name, shape=self._data.shape)
        vds = data.create_virtual_dataset(f"data_{len(shape)}d", layout, fillvalue=0)
        vds.attrs["units"] = "counts"

    def _create_instrument(self, entry: h5py.Group) -> None:
        cal = self.start.calibration
        instrument = entry.create_group("instrument")
        instrument.attrs["NX_class"] = "NXinstrument"
        det = instrument.create_group("detector")
        det.attrs.update(NX_class="NXdetector", calibration_json=msgspec.json.encode(cal).decode())
        fields = {"beam_energy": (cal.beam_energy_kev, "keV"),
                  "reciprocal_pixel_size": (cal.reciprocal_pixel_size, "1/angstrom"),
                  "gain": (cal.gain, ""),
                  "ellipse_ratio": (cal.ellipse[0], ""),
                  "ellipse_angle": (cal.ellipse[1], "degree"),
                  "precession_angle": (cal.precession_angle_deg, "degree"),
                  "precession_frequency": (cal.precession_frequency_hz, "Hz"),
                  "camera_length": (cal.camera_length_m, "m")}
        if cal.center is not None:
            fields["beam_center_y"] = (cal.center[0], "pixel")
            fields["beam_center_x"] = (cal.center[1], "pixel")
        for name, (value, units) in fields.items():
            if value is None:
                continue
            ds = det.create_dataset(name, data=float(value))
            if units:
                ds.attrs["units"] = units
        det.create_dataset("frame_shape", data=np.asarray(self.frame_shape, dtype="int64"))
        det.attrs["dtype"] = self.dtype.str

    def _create_sample(self, entry: h5py.Group) -> None:
        sample = entry.create_group("sample")
        sample.attrs.update(NX_class="NXsample", sample_json=msgspec.json.encode(self.start.sample).decode())
        for key, value in self.start.sample.items():
            if isinstance(value, (bool, int, float, str)) and key and "/" not in key and key != ".":
                sample.create_dataset(key, data=value)

    # -- writing ------------------------------------------------------------------------------
    def write(self, first: int, frames: np.ndarray, timestamps: Sequence[float] | np.ndarray | None = None,
              positions: dict[str, Sequence[float] | np.ndarray] | None = None,
              compressed: Sequence[bytes | memoryview] | None = None) -> None:
        """Store a chunk of frames (n, qy, qx) at scan indices ``first .. first+n-1`` and flush.

        Parameters
        ----------
        first : int
            Scan index of the first frame.
        frames : ndarray
            The decoded frames, dtype and frame shape of the run.
        timestamps : sequence of float, optional
            Per-frame times in s (left NaN when absent).
        positions : dict of str to sequence of float, optional
            Per-frame readbacks; names not declared at construction are counted and ignored.
        compressed : sequence of bytes, optional
            The same frames as ``bslz4`` payloads (the wire's format). With
            ``compression="bslz4"`` they are stored as they are, saving a recompression;
            otherwise they are ignored. Do not pass ``lz4`` payloads here.
        """
        if self._f is None:
            raise UsageError("the recorder is closed")
        frames = np.asarray(frames)
        if frames.ndim == 2:
            frames = frames[None]
        if frames.shape[1:] != self.frame_shape or frames.dtype != self.dtype:
            raise UsageError(f"frames {frames.shape[1:]} {frames.dtype} do not match the run's "
                             f"{self.frame_shape} {self.dtype}")
        n = frames.shape[0]
        first = int(first)
        if first < 0 or first + n > self.n_frames:
            raise UsageError(f"frames {first}..{first + n - 1} outside the run's {self.n_frames} frames")
        if compressed is not None and len(compressed) != n:
            raise UsageError(f"{len(compressed)} compressed payloads for {n} frames")
        self._write_frames(first, frames, compressed)
        stop = first + n
        if timestamps is not None:
            ts = np.asarray(timestamps, dtype="float64")
            if ts.shape != (n,):
                raise UsageError(f"{ts.shape} timestamps for {n} frames")
            self._timestamps[first:stop] = ts
        for name, values in (positions or {}).items():
            ds = self._positions.get(name)
            if ds is None:
                if not self.unknown_positions[name]:
                    logger.warning("run %s: position %r was not declared at start; ignored (declared: %s)",
                                   self.start.run_uid, name, self.position_names)
                self.unknown_positions[name] += 1
                continue
            values = np.asarray(values, dtype="float64")
            if values.shape != (n,):
                raise UsageError(f"{values.shape} values of position {name!r} for {n} frames")
            ds[first:stop] = values
        # first make the frames durable, then mark them: a flag never points at a missing frame
        self._f.flush()
        self._written[first:stop] = 1
        k = self.chunks_written
        for ds, value in ((self._chunk_first, first), (self._chunk_count, n)):
            ds.resize((k + 1,))
            ds[k] = value
        self._f.flush()
        self.chunks_written += 1
        self.frames_written += n

    def _write_frames(self, first: int, frames: np.ndarray,
                      compressed: Sequence[bytes | memoryview] | None) -> None:
        frame_bytes = frames[0].nbytes if len(frames) else 0
        write_chunk = self._data.id.write_direct_chunk
        for k, frame in enumerate(frames):
            if self.compression == "none":
                payload = np.ascontiguousarray(frame)
            elif compressed is not None:
                payload = compressed[k]
                head = bytes(payload[:8])
                if len(payload) < 12 or int.from_bytes(head, "big") != frame_bytes:
                    raise UsageError(f"compressed frame {first + k} is not a bslz4 frame of {frame_bytes} bytes")
            else:
                payload = compress_frame(frame, "bslz4")
            write_chunk((first + k, 0, 0), payload)

    def close(self, summary: dict | None = None) -> None:
        """Store the run summary and end time, then close the file (idempotent).

        The summary goes into the pre-created ``/entry/summary_json`` byte dataset, not an
        attribute: SWMR forbids creating attributes once it is on.
        """
        if self._f is None:
            return
        try:
            if summary is not None:
                raw = np.frombuffer(msgspec.json.encode(summary, enc_hook=_json_default), dtype="uint8")
                ds = self._f["entry/summary_json"]
                ds.resize(raw.shape)
                ds[:] = raw
            self._f["entry/end_time"][()] = np.bytes_(_iso(datetime.datetime.now(datetime.UTC).timestamp()))
            self._f.flush()
        finally:
            self._f.close()
            self._f = None
        logger.info("closed recording of run %s: %d frames in %d chunks%s", self.start.run_uid,
                    self.frames_written, self.chunks_written,
                    f"; ignored unknown positions {dict(self.unknown_positions)}" if self.unknown_positions else "")

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Recording:
    """Reads a recorded run: finished, still being written, or left by a killed writer.

    The file is always opened in SWMR read mode, which is what lets a reader open a file
    whose writer is alive or died without closing it (a plain read-only open refuses
    such a file). Call :meth:`refresh` to see what a live writer added since.

    Parameters
    ----------
    path : str or os.PathLike
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._f = h5py.File(self.path, "r", swmr=True)
        entry = self._f["entry"]
        self.start: Start = msgspec.json.decode(entry.attrs["start_json"], type=Start)
        self._data = entry["data/data"]
        self.compression = str(self._data.attrs.get("compression", "none"))
        self._series = [self._data, entry["data/written"], entry["data/timestamps"], entry["data/chunk_first"],
                        entry["data/chunk_count"], entry["summary_json"]]
        self._positions = dict(entry["data/positions"].items())
        self._series.extend(self._positions.values())

    @property
    def n_frames(self) -> int:
        return self.start.n_frames

    @property
    def position_names(self) -> list[str]:
        return list(self._positions)

    def refresh(self) -> None:
        """See what a live writer flushed since the file was opened or last refreshed."""
        for ds in self._series:
            ds.refresh()

    @property
    def written(self) -> np.ndarray:
        """Boolean (N,) mask of the frames flushed to the file."""
        return self._f["entry/data/written"][()].astype(bool)

    @property
    def n_written(self) -> int:
        return int(np.count_nonzero(self.written))

    @property
    def summary(self) -> dict | None:
        """The summary the writer stored at close; None if it did not (still running, or killed)."""
        raw = self._f["entry/summary_json"][()]
        return msgspec.json.decode(raw.tobytes()) if raw.size else None  # "null" until the writer closes

    def _check(self, first: int, count: int) -> None:
        if first < 0 or count < 0 or first + count > self.n_frames:
            raise IndexError(f"frames {first}..{first + count - 1} outside the recording's "
                             f"{self.n_frames} frames (0..{self.n_frames - 1})")
        flags = self._f["entry/data/written"][first:first + count]
        if not flags.all():
            missing = first + int(np.flatnonzero(flags == 0)[0])
            raise ValueError(f"frame {missing} was never written to {self.path} ({self.n_written} of "
                             f"{self.n_frames} frames are; see Recording.written)")

    def frame(self, i: int) -> np.ndarray:
        """Frame at scan index ``i``; IndexError outside the scan, ValueError if never written."""
        i = int(i)
        self._check(i, 1)
        return self._data[i]

    def read(self, first: int, count: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Frames, timestamps and positions of ``count`` written frames from ``first``."""
        self._check(first, count)
        return self._data[first:first + count], *self.read_meta(first, count)

    def read_meta(self, first: int, count: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Timestamps (s, NaN where none was recorded) and positions of frames ``first..first+count-1``."""
        stop = first + count
        ts = self._f["entry/data/timestamps"][first:stop]
        return ts, {k: ds[first:stop] for k, ds in self._positions.items()}

    def read_compressed(self, first: int, count: int) -> list[bytes] | None:
        """The stored bslz4 payloads of written frames, or None if they are not stored so.

        They are byte for byte the wire's ``bslz4`` frames, so a replay sends them as they are.
        """
        self._check(first, count)
        if self.compression != "bslz4":
            return None
        out = []
        for i in range(first, first + count):
            mask, payload = self._data.id.read_direct_chunk((i, 0, 0))
            if mask:  # HDF5 skipped the filter for this chunk: it is stored raw
                return None
            out.append(payload)
        return out

    def chunk_ranges(self) -> Iterator[tuple[int, int]]:
        """(first, count) of the written chunks, in the order they were recorded.

        A writer killed between flags and chunk list can leave written frames no recorded
        chunk covers; they follow, in index order, in runs of at most ``chunk_frames``.
        """
        written = self.written
        covered = np.zeros_like(written)
        firsts = self._f["entry/data/chunk_first"][()]
        counts = self._f["entry/data/chunk_count"][()]
        skipped = 0
        for first, count in zip(firsts[:len(counts)].tolist(), counts[:len(firsts)].tolist()):
            if count > 0 and 0 <= first and first + count <= self.n_frames and written[first:first + count].all():
                covered[first:first + count] = True
                yield first, count
            else:
                skipped += 1
        if skipped:
            logger.warning("%s: %d recorded chunks are not fully written; skipped", self.path, skipped)
        rest = written & ~covered
        if rest.any():
            logger.warning("%s: %d written frames in no recorded chunk; yielded in index order",
                           self.path, int(rest.sum()))
            yield from _runs(rest, self.start.chunk_frames)

    def chunks(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
        """Yield (first, frames, timestamps, positions) per written chunk, in recorded order."""
        for first, count in self.chunk_ranges():
            yield (first, *self.read(first, count))

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _runs(mask: np.ndarray, max_len: int) -> Iterator[tuple[int, int]]:
    """(first, count) of the runs of True in ``mask``, split to at most ``max_len``."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    for a, b in zip(edges[::2].tolist(), edges[1::2].tolist()):
        for s in range(a, b, max_len):
            yield s, min(b, s + max_len) - s


__all__ = ["COMPRESSIONS", "Recorder", "Recording"]
