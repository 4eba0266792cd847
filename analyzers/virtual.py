"""Virtual detectors: bright field, annular dark field, centre of mass, and the sum frame.

Every frame is reduced to five numbers in one pass: the sum over a bright-field
disk (``vbf``), the sum and the maximum over a dark-field annulus (``adf_sum``,
``adf_max``), and the centre of mass (``com_x``, ``com_y``, in pixels relative
to the pattern centre), while the frames of the chunk are also summed into the
``sum_frame`` live monitor.

The regions are built once per run (:func:`build_operators`) as a bitmask label
image and, for the general kernel, as runs of consecutive pixels along each
detector row. The numba kernels (:func:`virtual_numba`) and their numpy twin
(:func:`virtual_numpy`, the test oracle and fallback) accumulate integer frames
exactly, so their results are identical to each other and independent of how a
scan is chunked: in int64, or, for unsigned frames of up to 16 bits (the
detectors' uint8 / uint16), in uint32 where no sum can overflow it; float
frames accumulate in float64.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numba
import numpy as np

from .base import Analyzer, FrameChunk, Partial, ResultSpec, RunInfo, scan_axes

__all__ = ["VirtualDetectors", "VirtualParams", "VirtualOperators", "build_operators",
           "virtual_numba", "virtual_numpy", "BF", "ADF", "COM"]

logger = logging.getLogger(__name__)

#: Bits of the region label image (regions may overlap, e.g. BF and CoM).
BF, ADF, COM = 1, 2, 4
_KIND = {BF: 0, ADF: 1, COM: 2}  # region bit -> kind code of a run in the kernel
_MAP_NAMES = ("vbf", "adf_sum", "adf_max", "com_x", "com_y")
@dataclass(frozen=True)
class VirtualParams:
    """The recipe of :class:`VirtualDetectors`, checked on construction.

    Radii are in pixels, or in Å⁻¹ (q = 2π/d, as the calibration) when
    ``units="inv_angstrom"``; ``None`` picks a default relative to the frame
    (bright field 1/16 of the smaller side, dark field 1/8 to 1/2.5). ``center``
    is (cy, cx) in pixels; ``None`` takes the calibration's centre, else the
    frame centre ``((qy - 1) / 2, (qx - 1) / 2)``.
    """

    bf_radius: float | None = None
    adf_inner: float | None = None
    adf_outer: float | None = None
    com_radius: float | None = None
    center: tuple[float, float] | None = None
    units: Literal["px", "inv_angstrom"] = "px"
    use_numba: bool = True

    def __post_init__(self) -> None:
        for name in ("bf_radius", "adf_inner", "adf_outer", "com_radius"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name} must be a number or None, got {type(value).__name__}")
            if not math.isfinite(value) or value < 0 or (value == 0 and name != "adf_inner"):
                raise ValueError(f"{name} must be finite and > 0 (adf_inner >= 0), got {value}")
        if self.adf_inner is not None and self.adf_outer is not None and self.adf_inner >= self.adf_outer:
            raise ValueError(f"adf_inner ({self.adf_inner}) must be smaller than adf_outer ({self.adf_outer})")
        if self.center is not None:
            center = tuple(self.center)
            if len(center) != 2 or not all(isinstance(c, (int, float, np.integer, np.floating))
                                           and math.isfinite(c) for c in center):
                raise ValueError(f"center must be two finite numbers (cy, cx) in pixels, got {self.center!r}")
            object.__setattr__(self, "center", (float(center[0]), float(center[1])))
        if self.units not in ("px", "inv_angstrom"):
            raise ValueError(f"units must be 'px' or 'inv_angstrom', got {self.units!r}")

    def geometry(self, run: RunInfo) -> tuple[tuple[float, float], float, float, float, float | None]:
        """Centre (cy, cx) and radii (bf, adf_inner, adf_outer, com) in pixels for ``run``."""
        qy, qx = run.frame_shape
        center = self.center or run.calibration.center or ((qy - 1) / 2, (qx - 1) / 2)
        scale = 1.0
        if self.units == "inv_angstrom":
            pixel = run.calibration.reciprocal_pixel_size
            if pixel is None:
                raise ValueError("units='inv_angstrom' needs run.calibration.reciprocal_pixel_size "
                                 "(Å⁻¹ per pixel), but the run has none: give radii in px (units='px') "
                                 "or calibrate the run")
            scale = 1.0 / pixel
        size = min(qy, qx)
        bf = size / 16 if self.bf_radius is None else self.bf_radius * scale
        inner = size / 8 if self.adf_inner is None else self.adf_inner * scale
        outer = size / 2.5 if self.adf_outer is None else self.adf_outer * scale
        com = None if self.com_radius is None else self.com_radius * scale
        if inner >= outer:
            raise ValueError(f"adf_inner ({inner:.3g} px) must be smaller than adf_outer ({outer:.3g} px); "
                             "one of them is a default (1/8 and 1/2.5 of the frame): give both")
        return (float(center[0]), float(center[1])), bf, inner, outer, com


@dataclass(frozen=True)
class VirtualOperators:
    """Per-run regions of the virtual detectors.

    ``labels`` is the (qy, qx) bitmask of the regions (:data:`BF`, :data:`ADF`,
    :data:`COM`), which the kernel for unsigned frames of up to 16 bits reads
    pixel by pixel. The general kernel reads the regions as runs of pixels: run ``r``
    covers ``x0[r] <= x < x1[r]`` of row ``y``, for ``row_ptr[y] <= r <
    row_ptr[y + 1]``, and adds to region ``kind[r]`` (0 BF, 1 ADF, 2 CoM). The
    numpy twin uses the flat indices and the integer pixel coordinates.
    """

    labels: np.ndarray
    center: tuple[float, float]
    row_ptr: np.ndarray
    x0: np.ndarray
    x1: np.ndarray
    kind: np.ndarray
    com_full: bool  # the CoM region is the whole frame: fused into the dense pass
    index: dict[int, np.ndarray]  # region bit -> flat pixel indices
    com_y: np.ndarray  # integer row of each CoM pixel
    com_x: np.ndarray  # integer column of each CoM pixel


def build_operators(frame_shape: tuple[int, int], center: tuple[float, float], bf_radius: float,
                    adf_inner: float, adf_outer: float, com_radius: float | None = None) -> VirtualOperators:
    """Build the regions of one run, once: the label image, the runs for the kernel, the indices.

    BF is ``r <= bf_radius``, ADF ``adf_inner <= r < adf_outer``, CoM ``r <= com_radius``,
    where ``r`` is the distance of a pixel centre from ``center`` (cy, cx), all in pixels.
    ``com_radius=None`` takes the centre of mass over the whole frame.
    """
    qy, qx = frame_shape
    yy, xx = np.indices((qy, qx))
    r = np.hypot(yy - center[0], xx - center[1])
    com = np.ones((qy, qx), bool) if com_radius is None else r <= com_radius
    regions = {BF: r <= bf_radius, ADF: (r >= adf_inner) & (r < adf_outer), COM: com}
    for bit, what in ((BF, f"bright-field disk r <= {bf_radius:.3g} px"),
                      (ADF, f"annulus {adf_inner:.3g} <= r < {adf_outer:.3g} px"),
                      (COM, f"centre-of-mass disk r <= {com_radius} px")):
        if not regions[bit].any():
            raise ValueError(f"the {what} around centre {center} holds no pixel of the "
                             f"{qy}x{qx} frame: check the radii, the units and the centre")
    labels = np.zeros((qy, qx), np.uint8)
    runs = []
    for bit, mask in regions.items():
        labels |= (mask * bit).astype(np.uint8)
        edges = np.diff(np.pad(mask.astype(np.int8), ((0, 0), (1, 1))), axis=1)
        starts, stops = np.nonzero(edges == 1), np.nonzero(edges == -1)  # both in row-major order
        runs.append(np.stack([starts[0], np.full(starts[0].size, _KIND[bit]), starts[1], stops[1]], axis=1))
    runs = np.concatenate(runs)
    runs = runs[np.lexsort((runs[:, 1], runs[:, 0]))]  # by row, then kind
    index = {bit: np.flatnonzero(labels & bit) for bit in regions}
    return VirtualOperators(
        labels=labels, center=(float(center[0]), float(center[1])),
        row_ptr=np.searchsorted(runs[:, 0], np.arange(qy + 1)).astype(np.int64),
        x0=np.ascontiguousarray(runs[:, 2], dtype=np.int64), x1=np.ascontiguousarray(runs[:, 3], dtype=np.int64),
        kind=np.ascontiguousarray(runs[:, 1], dtype=np.int64), com_full=com_radius is None or bool(com.all()),
        index=index, com_y=index[COM] // qx, com_x=index[COM] % qx)


# ``reassoc`` only (no nnan/ninf): it lets float sums vectorise (2x on float32
# frames), changes nothing for integer frames, and the loop shapes depend on the
# frame geometry alone, so results still do not depend on the chunking.
@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _virtual_kernel(frames, row_ptr, x0, x1, kind, com_full, zero, sums, adf_max, sum_frame):
    """One pass over each frame: region sums into ``sums``, ADF maxima into ``adf_max``, frames into ``sum_frame``.

    The general kernel, for every supported dtype. ``sums`` (n, 5) columns: BF,
    ADF, CoM total, sum(x I), sum(y I) over the CoM region, with integer pixel
    coordinates. ``zero`` is 0 in the accumulator type (int64 or float64) of
    ``sums``, ``adf_max`` and ``sum_frame``; ``adf_max`` comes in holding any ADF
    pixel of each frame; ``sum_frame`` comes in zeroed.
    """
    n, qy, qx = frames.shape
    for i in range(n):
        bf = zero
        adf = zero
        m0 = zero
        mx = zero
        my = zero
        amax = adf_max[i]
        for y in range(qy):
            row = frames[i, y]
            acc = sum_frame[y]
            if com_full:  # whole-frame CoM: fused into the dense pass of the sum frame
                s = zero
                sx = zero
                for x in range(qx):
                    v = row[x]
                    acc[x] += v
                    s += v
                    sx += x * v
                m0 += s
                mx += sx
                my += y * s
            else:
                for x in range(qx):
                    acc[x] += row[x]
            for r in range(row_ptr[y], row_ptr[y + 1]):
                # A slice, so the loop index runs from 0 and numba drops its
                # negative-index wraparound check, which kept the loop from vectorising.
                seg = row[x0[r]:x1[r]]
                k = kind[r]
                if k == 0:
                    s = zero
                    for x in range(seg.size):
                        s += seg[x]
                    bf += s
                elif k == 1:
                    s = zero
                    for x in range(seg.size):
                        v = seg[x]
                        s += v
                        if v > amax:  # not max(): keeps today's NaN handling of float frames
                            amax = v
                    adf += s
                elif not com_full:
                    s = zero
                    sx = zero
                    for x in range(seg.size):
                        v = seg[x]
                        s += v
                        sx += (x0[r] + x) * v
                    m0 += s
                    mx += sx
                    my += y * s
        sums[i, 0] = bf
        sums[i, 1] = adf
        sums[i, 2] = m0
        sums[i, 3] = mx
        sums[i, 4] = my
        adf_max[i] = amax


@numba.njit(cache=True, nogil=True)
def _virtual_kernel_u32(frames, labels, sums, adf_max, sum_frame):
    """The kernel for unsigned frames of up to 16 bits, with 32-bit accumulators where exact.

    One dense pass over the frames, two at a time (``a`` and ``b``: ``sum_frame``
    is read and written once per pair), the regions read from the bits of
    ``labels`` (a pixel outside a region counts as 0; the whole-frame CoM region
    has its bit on every pixel). ``sum_frame`` (uint32, zeroed) sums the frames,
    and per row the region sums and, per frame, the column sums of the CoM
    region accumulate in uint32: the caller checks that none can overflow (see
    :func:`_narrow`). ``sums`` (n, 5) (int64, columns as in
    :func:`_virtual_kernel`) gets the totals of each frame, sum(x I) as
    sum_x x colsum[x] and sum(y I) as sum_y y rowsum[y], the same integers as
    the sums of per-pixel products. ``adf_max`` (n,) gets the ADF maxima: 0 for
    the pixels outside the annulus is exact as the counts are unsigned and the
    annulus holds a pixel.
    """
    n, qy, qx = frames.shape
    zero = frames.dtype.type(0)
    blank = np.zeros(qx, frames.dtype)  # frame b of an odd last frame: adds nothing
    colsum = np.empty((2, qx), np.uint32)
    col_a = colsum[0]
    col_b = colsum[1]
    for i in range(0, n, 2):
        pair = i + 1 < n
        bf_a = adf_a = m0_a = my_a = 0
        bf_b = adf_b = m0_b = my_b = 0
        amax_a = amax_b = zero
        colsum[:] = 0
        for y in range(qy):
            row_a = frames[i, y]
            row_b = frames[i + 1, y] if pair else blank
            acc = sum_frame[y]
            lab = labels[y]
            s_a = sb_a = sa_a = np.uint32(0)
            s_b = sb_b = sa_b = np.uint32(0)
            m_a = m_b = zero
            # The explicit uint32 / uint8 casts keep numba from widening the arithmetic
            # to 64 bits, and the branch-free selects let the loop vectorise.
            for x in range(qx):
                a = row_a[x]
                b = row_b[x]
                bits = lab[x]
                in_bf = np.uint8(bits & np.uint8(BF)) != 0
                in_adf = np.uint8(bits & np.uint8(ADF)) != 0
                in_com = np.uint8(bits & np.uint8(COM)) != 0
                acc[x] = np.uint32(acc[x] + np.uint32(a) + np.uint32(b))
                sb_a = np.uint32(sb_a + (a if in_bf else zero))
                sb_b = np.uint32(sb_b + (b if in_bf else zero))
                da = a if in_adf else zero
                db = b if in_adf else zero
                sa_a = np.uint32(sa_a + da)
                sa_b = np.uint32(sa_b + db)
                m_a = max(m_a, da)
                m_b = max(m_b, db)
                ca = a if in_com else zero
                cb = b if in_com else zero
                col_a[x] = np.uint32(col_a[x] + ca)
                col_b[x] = np.uint32(col_b[x] + cb)
                s_a = np.uint32(s_a + ca)
                s_b = np.uint32(s_b + cb)
            bf_a += sb_a
            bf_b += sb_b
            adf_a += sa_a
            adf_b += sa_b
            amax_a = max(amax_a, m_a)
            amax_b = max(amax_b, m_b)
            m0_a += s_a
            m0_b += s_b
            my_a += y * np.int64(s_a)
            my_b += y * np.int64(s_b)
        mx_a = mx_b = 0
        for x in range(qx):
            mx_a += x * np.int64(col_a[x])
            mx_b += x * np.int64(col_b[x])
        sums[i, 0] = bf_a
        sums[i, 1] = adf_a
        sums[i, 2] = m0_a
        sums[i, 3] = mx_a
        sums[i, 4] = my_a
        adf_max[i] = amax_a
        if pair:
            sums[i + 1, 0] = bf_b
            sums[i + 1, 1] = adf_b
            sums[i + 1, 2] = m0_b
            sums[i + 1, 3] = mx_b
            sums[i + 1, 4] = my_b
            adf_max[i + 1] = amax_b


def _narrow(frames: np.ndarray) -> bool:
    """Whether :func:`_virtual_kernel_u32` is exact on ``frames``: unsigned of up to 16 bits, and
    no uint32 sum (over the frames of the chunk, a row or a column) can exceed 2**32 - 1."""
    dt = frames.dtype
    if dt.kind != "u" or dt.itemsize > 2:
        return False
    return max(frames.shape) * int(np.iinfo(dt).max) <= np.iinfo(np.uint32).max


def _numba_raw(frames: np.ndarray, ops: VirtualOperators) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the kernel on a chunk: raw ``sums`` (n, 5), ``adf_max`` (n,) and the chunk's ``sum_frame``,
    uint32 from :func:`_virtual_kernel_u32` when exact, else int64 or float64."""
    frames, acc = _check_frames(frames, ops)
    n, qy, qx = frames.shape
    if _narrow(frames):
        sums = np.empty((n, 5), np.int64)
        adf_max = np.empty(n, frames.dtype)
        sum_frame = np.zeros((qy, qx), np.uint32)
        _virtual_kernel_u32(frames, ops.labels, sums, adf_max, sum_frame)
        return sums, adf_max, sum_frame
    sums = np.empty((n, 5), acc)
    first = ops.index[ADF][0]
    adf_max = frames[:, first // qx, first % qx].astype(acc)
    sum_frame = np.zeros((qy, qx), acc)
    _virtual_kernel(frames, ops.row_ptr, ops.x0, ops.x1, ops.kind, ops.com_full, acc.type(0),
                    sums, adf_max, sum_frame)
    return sums, adf_max, sum_frame


def virtual_numba(frames: np.ndarray, ops: VirtualOperators) -> dict[str, np.ndarray]:
    """Virtual detector values of a chunk of frames (n, qy, qx) with the numba kernel.

    Returns
    -------
    dict
        ``vbf``, ``adf_sum``, ``adf_max``, ``com_x``, ``com_y``: float64 arrays (n,)
        (CoM in pixels relative to ``ops.center``, NaN where the CoM region holds
        no counts); ``sum_frame``: float64 (qy, qx), the sum of the frames.
    """
    sums, adf_max, sum_frame = _numba_raw(frames, ops)
    return _finish(sums, adf_max, sum_frame.astype(np.float64, copy=False), ops)


def virtual_numpy(frames: np.ndarray, ops: VirtualOperators) -> dict[str, np.ndarray]:
    """The numpy twin of :func:`virtual_numba`: same results (bit for bit for integer frames)."""
    frames, acc = _check_frames(frames, ops)
    flat = frames.reshape(frames.shape[0], -1)
    sums = np.empty((flat.shape[0], 5), acc)
    sums[:, 0] = flat[:, ops.index[BF]].sum(axis=1, dtype=acc)
    adf = flat[:, ops.index[ADF]]
    sums[:, 1] = adf.sum(axis=1, dtype=acc)
    if ops.com_full:  # projections: exact for integers, and far faster than a product per pixel
        proj_x = frames.sum(axis=1, dtype=acc)
        sums[:, 2] = proj_x.sum(axis=1)
        sums[:, 3] = proj_x @ np.arange(frames.shape[2], dtype=acc)
        sums[:, 4] = frames.sum(axis=2, dtype=acc) @ np.arange(frames.shape[1], dtype=acc)
    else:
        com = flat[:, ops.index[COM]]
        sums[:, 2] = com.sum(axis=1, dtype=acc)
        sums[:, 3] = np.einsum("ij,j->i", com, ops.com_x.astype(acc), dtype=acc)
        sums[:, 4] = np.einsum("ij,j->i", com, ops.com_y.astype(acc), dtype=acc)
    return _finish(sums, adf.max(axis=1).astype(acc), frames.sum(axis=0, dtype=acc).astype(np.float64), ops)


def _check_frames(frames: np.ndarray, ops: VirtualOperators) -> tuple[np.ndarray, np.dtype]:
    """Check shape and dtype; return C-contiguous frames and the accumulator dtype."""
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[1:] != ops.labels.shape:
        raise ValueError(f"frames must be (n, {ops.labels.shape[0]}, {ops.labels.shape[1]}), got {frames.shape}")
    dt = frames.dtype
    if dt.kind in "iu" and dt.itemsize <= 4:
        acc = np.dtype(np.int64)  # exact: 32-bit counts times 16-bit coordinates fit easily
    elif dt.kind == "f" and dt.itemsize in (4, 8):
        acc = np.dtype(np.float64)
    else:
        raise ValueError(f"frames must be of an integer type of up to 32 bits, float32 or float64, got {dt}")
    return np.ascontiguousarray(frames), acc


def _finish(sums: np.ndarray, adf_max: np.ndarray, sum_frame: np.ndarray,
            ops: VirtualOperators) -> dict[str, np.ndarray]:
    """Turn the raw sums into results; shared by both twins so they round alike.

    ``sum_frame`` is passed through as it comes (float64 from the public functions)."""
    total, mx, my = (sums[:, k].astype(np.float64) for k in (2, 3, 4))
    com_x = np.full(total.shape, np.nan)
    com_y = np.full(total.shape, np.nan)
    ok = total != 0
    com_x[ok] = mx[ok] / total[ok] - ops.center[1]
    com_y[ok] = my[ok] / total[ok] - ops.center[0]
    return {"vbf": sums[:, 0].astype(np.float64), "adf_sum": sums[:, 1].astype(np.float64),
            "adf_max": adf_max.astype(np.float64), "com_x": com_x, "com_y": com_y,
            "sum_frame": sum_frame}


class VirtualDetectors(Analyzer):
    """Virtual bright field, annular dark field, centre of mass, and the sum frame.

    Frame-partitioned. Parameters are those of :class:`VirtualParams` (radii in
    px or Å⁻¹, optional centre and CoM radius, ``use_numba``).

    Examples
    --------
    >>> import numpy as np
    >>> from emlive.stream.types import FrameChunk, ResultBuffers, RunInfo
    >>> run = RunInfo(run_uid="demo", frame_shape=(32, 32), dtype="uint16", scan_shape=(2, 3))
    >>> vd = VirtualDetectors(bf_radius=3, adf_inner=6, adf_outer=14)
    >>> store = ResultBuffers(run, vd.results(run))
    >>> vd.prepare(run)
    >>> frames = np.ones((6, 32, 32), dtype=np.uint16)
    >>> vd.merge(store, vd.process(FrameChunk(seq=0, first=0, frames=frames)))
    >>> store.view("vbf")  # pixels in the disk
    array([[32., 32., 32.],
           [32., 32., 32.]])
    >>> store.view("com_x")  # a flat frame has its centre of mass at the centre
    array([[0., 0., 0.],
           [0., 0., 0.]])
    >>> store["sum_frame"].shape, store["sum_frame"][0, 0]
    ((32, 32), np.float64(6.0))
    """

    name: ClassVar[str] = "virtual"

    def __init__(self, **params: Any) -> None:
        try:
            self.config = VirtualParams(**params)
        except TypeError as exc:
            if "unexpected keyword" not in str(exc):
                raise
            known = ", ".join(VirtualParams.__dataclass_fields__)
            raise TypeError(f"{exc}; VirtualDetectors takes: {known}") from None
        super().__init__(**params)
        self._ops: VirtualOperators | None = None

    def results(self, run: RunInfo) -> dict[str, ResultSpec]:
        self.config.geometry(run)  # fail before the run starts, not in the workers
        axes = scan_axes(run.scan_shape)
        units = {"vbf": "counts", "adf_sum": "counts", "adf_max": "counts", "com_x": "px", "com_y": "px"}
        what = {"vbf": "virtual bright field: sum over the BF disk", "adf_sum": "sum over the ADF annulus",
                "adf_max": "brightest pixel in the ADF annulus",
                "com_x": "centre of mass along x relative to the pattern centre",
                "com_y": "centre of mass along y relative to the pattern centre"}
        specs = {name: ResultSpec(kind="map", shape=(run.n_frames,), dtype="float64", axes=axes,
                                  units=units[name], merge="frames", description=what[name])
                 for name in _MAP_NAMES}
        specs["sum_frame"] = ResultSpec(kind="frame", shape=tuple(run.frame_shape), dtype="float64",
                                        axes=("qy", "qx"), units="counts", merge="sum",
                                        description="sum of all frames")
        return specs

    def prepare(self, run: RunInfo) -> None:
        center, bf, inner, outer, com = self.config.geometry(run)
        self._ops = build_operators(run.frame_shape, center, bf, inner, outer, com)
        logger.debug("virtual detectors for run %s: centre %s, BF r<=%.3g px, ADF %.3g..%.3g px, CoM r<=%s",
                     run.run_uid, center, bf, inner, outer, "frame" if com is None else f"{com:.3g} px")

    def process(self, chunk: FrameChunk) -> Partial:
        if self._ops is None:
            raise RuntimeError("VirtualDetectors.process called before prepare(run)")
        if not self.config.use_numba:
            return Partial(first=chunk.first, count=chunk.count, values=virtual_numpy(chunk.frames, self._ops))
        sums, adf_max, sum_frame = _numba_raw(chunk.frames, self._ops)
        # A uint32 sum frame (exact; see _virtual_kernel_u32) stays uint32: half the bytes of
        # float64 to ship back to the host, and merged into the float64 "sum_frame" buffer
        # (merge="sum") it adds exactly. Other accumulators go out as float64, as declared.
        if sum_frame.dtype != np.uint32:
            sum_frame = sum_frame.astype(np.float64, copy=False)
        return Partial(first=chunk.first, count=chunk.count, values=_finish(sums, adf_max, sum_frame, self._ops))
