"""Tests of emlive.stream.recorder: NeXus layout, compressions, crash safety, third-party readers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import h5py
import hdf5plugin
import msgspec
import numpy as np
import pytest

from emlive.stream.codecs import compress_frame
from emlive.stream.errors import UsageError
from emlive.stream.protocol import PROTOCOL_VERSION, Calibration, Start
from emlive.stream.recorder import Recorder, Recording


def make_start(scan_shape=(3, 4), frame_shape=(16, 12), dtype="uint16", chunk_frames=5, positions=("tilt",),
               encoding="raw") -> Start:
    return Start(version=PROTOCOL_VERSION, run_uid="run-0001", frame_shape=frame_shape, dtype=dtype,
                 scan_shape=scan_shape, chunk_frames=chunk_frames, encoding=encoding,
                 calibration=Calibration(beam_energy_kev=200.0, reciprocal_pixel_size=0.0125,
                                         center=(8.0, 6.0), gain=2.5, camera_length_m=0.2),
                 sample={"name": "Ni/MG/Ni laminate", "thickness_nm": 40.0, "composition": {"Ni": 0.8}},
                 plan={"plan_name": "raster", "positions": list(positions)}, time=1_700_000_000.0)


def make_frames(start: Start, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (start.n_frames, *start.frame_shape)
    if np.dtype(start.dtype).kind == "f":
        return rng.normal(100, 30, shape).astype(start.dtype)
    return rng.integers(0, min(np.iinfo(start.dtype).max, 4000), shape, endpoint=True).astype(start.dtype)


def chunking(n: int, sizes=(5, 3, 1, 4)) -> list[tuple[int, int]]:
    """Irregular chunks, as a source with variable batching sends them."""
    out, first, k = [], 0, 0
    while first < n:
        count = min(sizes[k % len(sizes)], n - first)
        out.append((first, count))
        first += count
        k += 1
    return out


def filter_ids(dset: h5py.Dataset) -> list[int]:
    dcpl = dset.id.get_create_plist()
    return [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]


def record(path, start, frames, compression="none", summary=None, wire=False):
    ts = 1000.0 + 0.01 * np.arange(len(frames))
    tilt = np.linspace(-60, 60, len(frames))
    with Recorder(path, start, compression) as rec:
        for first, count in chunking(len(frames)):
            sl = slice(first, first + count)
            compressed = [compress_frame(f, "bslz4") for f in frames[sl]] if wire else None
            rec.write(first, frames[sl], timestamps=ts[sl], positions={"tilt": tilt[sl]}, compressed=compressed)
        assert rec.frames_written == len(frames)
        rec.close(summary)
    return ts, tilt


@pytest.mark.parametrize("compression", ["none", "bslz4"])
def test_layout_is_nexus_with_metadata_and_scan_view(tmp_path, compression):
    start = make_start()
    frames = make_frames(start)
    path = tmp_path / "run.h5"
    ts, tilt = record(path, start, frames, compression, summary={"status": "success", "frames": np.int64(12)})

    with h5py.File(path, "r") as f:
        assert f.attrs["default"] == "entry"
        entry = f["entry"]
        assert entry.attrs["NX_class"] == "NXentry"
        assert entry.attrs["run_uid"] == "run-0001"
        assert msgspec.json.decode(entry.attrs["start_json"], type=Start) == start
        assert entry["start_time"][()].decode().startswith("2023-11-14T22:13:20")
        assert entry["end_time"][()]  # filled at close
        data = entry["data"]
        assert data.attrs["NX_class"] == "NXdata" and data.attrs["signal"] == "data"
        dset = data["data"]
        assert dset.shape == (12, 16, 12) and dset.dtype == np.uint16 and dset.chunks == (1, 16, 12)
        assert tuple(dset.attrs["scan_shape"]) == (3, 4)
        assert np.array_equal(dset[()], frames)
        vds = data["data_4d"]
        assert vds.is_virtual and vds.shape == (3, 4, 16, 12)
        assert np.array_equal(vds[()], frames.reshape(3, 4, 16, 12))
        assert np.array_equal(vds[2, 1], frames[9])
        assert np.array_equal(vds[1:, ::2, 3:9, 5], frames.reshape(3, 4, 16, 12)[1:, ::2, 3:9, 5])
        assert data["written"].dtype == np.uint8 and data["written"][()].all()
        assert np.array_equal(data["timestamps"][()], ts)
        assert np.array_equal(data["positions/tilt"][()], tilt)
        assert list(zip(data["chunk_first"][()], data["chunk_count"][()])) == chunking(12)
        det = entry["instrument/detector"]
        assert det.attrs["NX_class"] == "NXdetector"
        assert det["beam_energy"][()] == 200.0 and det["beam_energy"].attrs["units"] == "keV"
        assert det["reciprocal_pixel_size"][()] == 0.0125
        assert det["reciprocal_pixel_size"].attrs["units"] == "1/angstrom"
        assert det["gain"][()] == 2.5 and det["camera_length"][()] == 0.2
        assert (det["beam_center_y"][()], det["beam_center_x"][()]) == (8.0, 6.0)
        sample = entry["sample"]
        assert sample.attrs["NX_class"] == "NXsample"
        assert sample["thickness_nm"][()] == 40.0
        assert msgspec.json.decode(sample.attrs["sample_json"]) == start.sample
        assert filter_ids(dset) == ([hdf5plugin.Bitshuffle.filter_id] if compression == "bslz4" else [])

    with Recording(path) as rec:
        assert rec.start == start
        assert rec.n_written == 12 and rec.summary == {"status": "success", "frames": 12}
        assert rec.compression == compression
        got = list(rec.chunks())
        assert [(first, len(fr)) for first, fr, _, _ in got] == chunking(12)
        assert np.array_equal(np.concatenate([fr for _, fr, _, _ in got]), frames)
        assert np.array_equal(np.concatenate([t for _, _, t, _ in got]), ts)
        assert np.array_equal(np.concatenate([p["tilt"] for _, _, _, p in got]), tilt)


def test_tilt_series_gets_a_5d_view_and_time_series_none(tmp_path):
    start = make_start(scan_shape=(2, 3, 4), frame_shape=(6, 5))
    frames = make_frames(start)
    record(tmp_path / "tilt.h5", start, frames)
    with h5py.File(tmp_path / "tilt.h5", "r") as f:
        vds = f["entry/data/data_5d"]
        assert vds.shape == (2, 3, 4, 6, 5)
        assert np.array_equal(vds[()], frames.reshape(2, 3, 4, 6, 5))
        assert np.array_equal(vds[1, :, 2], frames.reshape(2, 3, 4, 6, 5)[1, :, 2])

    start = make_start(scan_shape=(7,), frame_shape=(6, 5))
    record(tmp_path / "series.h5", start, make_frames(start))
    with h5py.File(tmp_path / "series.h5", "r") as f:
        assert [k for k in f["entry/data"] if k.startswith("data_")] == []


@pytest.mark.parametrize("dtype", ["uint8", "uint32", "int16", "float32", "float64"])
@pytest.mark.parametrize("wire", [False, True], ids=["recompressed", "wire-payloads"])
def test_bslz4_chunks_decode_with_plain_h5py_and_hdf5plugin(tmp_path, dtype, wire):
    start = make_start(dtype=dtype, frame_shape=(33, 20))  # odd sizes: partial bitshuffle blocks
    frames = make_frames(start)
    path = tmp_path / "bs.h5"
    record(path, start, frames, "bslz4", wire=wire)
    # independent decode: HDF5's own bitshuffle filter (registered by hdf5plugin), not our codecs
    with h5py.File(path, "r") as f:
        dset = f["entry/data/data"]
        assert filter_ids(dset) == [hdf5plugin.Bitshuffle.filter_id]
        assert dset.dtype == np.dtype(dtype)
        assert np.array_equal(dset[()], frames)
        # the stored chunk is the wire frame, byte for byte
        assert dset.id.read_direct_chunk((5, 0, 0)) == (0, compress_frame(frames[5], "bslz4"))


def test_unknown_positions_are_counted_and_ignored(tmp_path, caplog):
    start = make_start(positions=())
    frames = make_frames(start)
    with Recorder(tmp_path / "p.h5", start, positions=["tilt"]) as rec:
        rec.write(0, frames[:2], positions={"tilt": [1.0, 2.0], "temperature": [300.0, 301.0]})
        rec.write(2, frames[2:4], positions={"temperature": [302.0, 303.0]})
        assert rec.unknown_positions == {"temperature": 2}
    assert sum("temperature" in r.getMessage() for r in caplog.records) == 1  # logged once
    with Recording(tmp_path / "p.h5") as rec:
        assert rec.position_names == ["tilt"]
        _, pos = rec.read_meta(0, 4)
        assert np.array_equal(pos["tilt"], [1.0, 2.0, np.nan, np.nan], equal_nan=True)


def test_reading_unwritten_or_outside_frames_says_why(tmp_path):
    start = make_start()
    frames = make_frames(start)
    with Recorder(tmp_path / "r.h5", start) as rec:
        rec.write(0, frames[:3])
        rec.write(6, frames[6:8])
    with Recording(tmp_path / "r.h5") as rec:
        assert rec.n_written == 5 and rec.summary is None
        assert np.array_equal(rec.written, np.isin(np.arange(12), [0, 1, 2, 6, 7]))
        assert np.array_equal(rec.frame(7), frames[7])
        with pytest.raises(ValueError, match="frame 4 was never written"):
            rec.frame(4)
        with pytest.raises(IndexError, match="outside the recording's 12 frames"):
            rec.frame(12)
        with pytest.raises(IndexError):
            rec.frame(-1)
        assert list(rec.chunk_ranges()) == [(0, 3), (6, 2)]


def test_written_frames_missing_from_chunk_list_are_still_found(tmp_path):
    """A writer killed between the flags and the chunk list must not hide its frames."""
    start = make_start()
    frames = make_frames(start)
    path = tmp_path / "r.h5"
    with Recorder(path, start) as rec:
        rec.write(0, frames[:3])
    with h5py.File(path, "r+") as f:  # flag frames that no chunk entry lists
        f["entry/data/data"][3:10] = frames[3:10]
        f["entry/data/written"][3:10] = 1
    with Recording(path) as rec:
        assert list(rec.chunk_ranges()) == [(0, 3), (3, 5), (8, 2)]  # runs of at most chunk_frames=5
        assert np.array_equal(np.concatenate([fr for _, fr, _, _ in rec.chunks()]), frames[:10])


def test_write_rejects_frames_that_do_not_fit(tmp_path):
    start = make_start()
    frames = make_frames(start)
    with Recorder(tmp_path / "w.h5", start, "bslz4") as rec:
        with pytest.raises(UsageError, match="do not match"):
            rec.write(0, frames[:2].astype("uint32"))
        with pytest.raises(UsageError, match="outside the run"):
            rec.write(10, frames[:3])
        with pytest.raises(UsageError, match="not a bslz4 frame"):
            rec.write(0, frames[:1], compressed=[b"\0" * 20])
        with pytest.raises(UsageError, match="timestamps"):
            rec.write(0, frames[:2], timestamps=[1.0])
    with pytest.raises(UsageError, match="compression"):
        Recorder(tmp_path / "x.h5", start, "gzip")
    with pytest.raises(UsageError):
        rec.write(0, frames[:1])  # closed


# The writer process: the same frames as make_frames, written chunk by chunk, one line per flush.
# After the last chunk it holds the file open, unclosed, until it is killed.
WRITER = """
import sys
import msgspec
import numpy as np
from emlive.stream.protocol import Start
from emlive.stream.recorder import Recorder
path, compression, start_json = sys.argv[1:4]
start = msgspec.json.decode(start_json, type=Start)
rng = np.random.default_rng(7)
frames = rng.integers(0, 4000, (start.n_frames, *start.frame_shape), endpoint=True).astype(start.dtype)
rec = Recorder(path, start, compression)
for first in range(0, start.n_frames, start.chunk_frames):
    count = min(start.chunk_frames, start.n_frames - first)
    rec.write(first, frames[first:first + count], timestamps=np.arange(first, first + count) * 0.5)
    print(first + count, flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("compression", ["none", "bslz4"])
def test_killed_writer_leaves_every_flushed_frame(tmp_path, compression):
    start = make_start(scan_shape=(40, 50), frame_shape=(16, 16), chunk_frames=5)
    frames = make_frames(start)
    path = tmp_path / "killed.h5"
    k = 4
    with subprocess.Popen([sys.executable, "-c", WRITER, str(path), compression,
                           msgspec.json.encode(start).decode()],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        try:
            flushed = [int(proc.stdout.readline()) for _ in range(k)]
            assert flushed == [5, 10, 15, 20]
            # a live reader, while the writer is still going
            with Recording(path) as live:
                assert live.n_written >= 20 and live.summary is None
                assert np.array_equal(live.frame(19), frames[19])
                before = live.n_written
                proc.stdout.readline()
                live.refresh()
                assert live.n_written >= max(before, 25)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()

    with Recording(path) as rec:
        written = rec.written
        assert written[:25].all()
        # the flags form a prefix: chunk by chunk, nothing marked that is not complete
        n = rec.n_written
        assert written[:n].all() and not written[n:].any() and n % 5 == 0
        got = np.concatenate([fr for _, fr, _, _ in rec.chunks()])
        assert np.array_equal(got, frames[:n])
        assert rec.summary is None
        assert np.array_equal(rec.read_meta(0, n)[0], np.arange(n) * 0.5)
    with h5py.File(path, "r", swmr=True) as f:
        n_flags = int(f["entry/data/written"][()].sum())
        assert n_flags == n
        assert np.array_equal(f["entry/data/data"][:n], frames[:n])
        assert np.array_equal(f["entry/data/data_4d"][0, :25], frames[:25])


@pytest.mark.parametrize("compression", ["none", "bslz4"])
def test_rosettasciio_nexus_reader_finds_the_frames(tmp_path, compression):
    nexus = pytest.importorskip("rsciio.nexus")
    start = make_start()
    frames = make_frames(start)
    record(tmp_path / "run.h5", start, frames, compression)
    # the NXentry/NXdata "default" chain leads it to the signal
    (signal_,) = nexus.file_reader(str(tmp_path / "run.h5"), use_default=True)
    assert np.array_equal(signal_["data"], frames)
    # without the default it lists the other datasets too, the scan view among them
    found = {s["data"].shape: s["data"] for s in nexus.file_reader(str(tmp_path / "run.h5"))}
    assert np.array_equal(found[(3, 4, 16, 12)], frames.reshape(3, 4, 16, 12))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("compression", ["none", "bslz4"])
def test_libertem_loads_the_scan_view(tmp_path, compression):
    api = pytest.importorskip("libertem.api")
    from libertem.udf.sumsigudf import SumSigUDF

    start = make_start()
    frames = make_frames(start)
    record(tmp_path / "run.h5", start, frames, compression)
    ctx = api.Context.make_with("inline")
    ds = ctx.load("hdf5", path=str(tmp_path / "run.h5"), ds_path="/entry/data/data_4d")
    assert tuple(ds.shape) == (3, 4, 16, 12)
    result = ctx.run_udf(dataset=ds, udf=SumSigUDF())
    assert np.array_equal(result["intensity"].data, frames.reshape(3, 4, -1).sum(axis=-1))
