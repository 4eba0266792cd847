"""Fluctuation electron microscopy: the variance V(k) of nano-diffraction over probe positions, live.

The four estimators of Daulton, Bondi & Kelton (Ultramicroscopy 110 (2010) 1279),
each with the shot-noise term derived below, per HAADF thickness bin and combined.

Notation. A probe position p records counts I_pj on pixel j, in ADU; ring k is
the set of N_k good pixels whose ellipse-corrected radius lies in
[r_min + k·w, r_min + (k+1)·w) (no pixel splitting, the SNEM calibration and
masks). Ā_pk = Σ_j I_pj / N_k is the ring mean of probe p. For a set of n probes
(a thickness bin), s²[x] is the sample variance of x with ``ddof`` (1 by default,
so it is unbiased) and m[x] its mean. The four estimators:

=======  ==========================================  ====================================
Ω        variance over probes of the ring mean        V = (s²_p[Ā] − P_Ω) / m_p[Ā]²
r        per-probe annular variance, averaged         V = m_p[(s²_j[I_p] − P_r,p) / Ā_p²]
re       pooled variance of all pixels × probes       V = (s²_pj[I] − P_re) / m_pj[I]²
VImage   per-pixel variance over probes, ring mean    V = m_j∈k[(s²_p[I_j] − P_V,j) / m_p[I_j]²]
=======  ==========================================  ====================================

Shot noise from first principles. A pixel collects a Poisson number of
electrons with mean λ and reports I = G·n ADU (G = ``gain``, counts per
electron), so E[I] = μ = Gλ and Var[I] = G²λ = G·μ; pixels are independent
given their means. Whatever the structure (the means μ_pj may vary with p and
j), the ``ddof=1`` sample variances therefore split into the structural part
plus a shot-noise expectation P that is a known multiple of the *same* mean:

* Ω: Var[Ā_p | μ] = Σ_j G μ_pj / N_k² = G μ̄_p / N_k, so E[s²_p[Ā]] = s²[μ̄] + G·m[Ā]/N_k:
  **P_Ω = G · m_p[Ā] / N_k** (the ring mean averages N_k independent pixels).
* r: over the N_k pixels of one probe, E[Σ_j (I_j − Ā)²] = Σ_j (μ_j − μ̄)² + G Σ_j μ_j (1 − 1/N_k),
  so E[s²_j] = (structure) + G μ̄: **P_r,p = G · Ā_p**, per probe, before the division by Ā_p².
* re: the same argument over all n·N_k values of the bin: **P_re = G · m_pj[I]** (= G · m_p[Ā]).
* VImage: over the n probes of one pixel, E[s²_p[I_j]] = s²_p[μ_j] + G · m_p[μ_j]:
  **P_V,j = G · m_p[I_j]**, per pixel, before the ring average.

So pure Poisson frames give V = 0 in expectation for every estimator (the
numerators are unbiased; the division by a squared sample mean adds only a
bias of order G/(N μ) or G/(n μ), and for Poisson counts the covariance that
would drive it cancels at first order). pyxem's ``get_variance`` uses gain/Σring,
gain/ring-mean, (1/gain)/scalar and (1/gain)/Σprobes for the four: only the
first is consistent. ``ddof=0`` with ``noise.correct=false`` gives the
textbook ⟨x²⟩/⟨x⟩² − 1 forms (what pyxem computes without a gain); the
correction is exact only with ``ddof=1``.

Running moments, merge-safe: per chunk and per thickness bin a worker returns
(n, mean, M2) of Ā (per ring) and of the per-probe V_r (per ring), Σ_p of the
within-ring M2 (for re), and for VImage the power sums Σd, Σd² of every ring
pixel: exact unsigned integers (d = I) for uint8/uint16 frames, sent in the
narrowest type that holds them, float64 shifted by the chunk's first frame
(d = I − I_first) otherwise. The host turns each pixel's sums into the chunk's
(mean, M2), with the exact integer numerator n·Σd² − (Σd)² for integer frames, and
merges them with Chan's formula (:mod:`.moments`); "combined" merges the bins'
states. Any order of chunks gives the same V within float rounding (a few ulp per
merge); the executor merges in submission order, so a run is reproducible bit for bit.

Thickness: t = (HAADF − black) / slope per probe, from the chunk's readback
``thickness.readback`` (``chunk.positions``) or a per-probe ``thickness.map``;
probes outside ``thickness.window`` or outside the bin edges take no part in
V(k) (their annular-variance map value is still written). V ∝ 1/t at first order,
so compare only same-thickness bins.

Cost: one pass per frame, numba, no temporaries of frame size: the frame is cut
into bands of rows; per band, the ring sums of I and I² gather the band's ring
pixels (sorted by ring, so a ring's sums stay in registers) and the per-pixel sums
run over its rows in natural order (vectorised). Frames of one thickness bin go
four at a time. For uint8/uint16 frames a vectorised pass first packs the four
frames' band into 64-bit words while it adds the per-pixel sums, so the gather
does one load and one add per word for several frames and no multiply: four
frames' I in 16-bit lanes and their I² in two words of 32-bit lanes where a
segment's ΣI fits 16 bits (a counting detector's few counts), else two frames' I
per word; a lane sum that could pass 2³² splits the I² words into 64-bit sums
instead, so the sums stay exact. Other dtypes gather the four frames directly.
Per-pixel results (VImage, the variance image) are rebuilt every ``live_every``
merged frames and at the end.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, ClassVar

import msgspec
import numba
import numpy as np

from .base import Analyzer, FrameChunk, Partial, ResultBuffers, ResultSpec, RunInfo, scan_axes
from .integration import inscribed_radius
from .masks import ring_index, static_mask
from .moments import merge_moments, merge_sums_into, variance
from .snem_config import CalibrationOverrides

__all__ = ["FemAnalyzer", "FemConfig", "RingConfig", "NoiseConfig", "ThicknessConfig", "parse_fem_config",
           "ESTIMATORS", "RingLayout", "fem_sums"]

logger = logging.getLogger(__name__)

#: Merged frames between refreshes of the V(k) curves (every chunk would cost the host more than the merge itself).
_RING_UPDATE_FRAMES = 256

#: Estimator names, in the order of the result curves ``v_<name>``.
ESTIMATORS = ("omega", "r", "re", "vimage")


# ------------------------------------------------------------------ configuration
class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class RingConfig(_Section):
    """Rings on the ellipse-corrected radius (pixels) and the static mask."""

    r_min: float = 2.0                          # px: the direct beam lies inside
    r_max: float | None = None                  # px, default the inscribed circle
    ring_width: float = 1.0                     # px
    edge: int = 0                               # pixels cut at each detector border
    dead_pixels: list[tuple[int, int]] = []     # (y, x) pixels left out

    def __post_init__(self) -> None:
        if not (math.isfinite(self.r_min) and self.r_min >= 0):
            raise ValueError("rings.r_min must be finite and >= 0")
        if self.r_max is not None and not (math.isfinite(self.r_max) and self.r_max > self.r_min):
            raise ValueError("rings.r_max must be finite and > r_min")
        if not (math.isfinite(self.ring_width) and self.ring_width > 0) or self.edge < 0:
            raise ValueError("rings.ring_width must be > 0 and rings.edge >= 0")


class NoiseConfig(_Section):
    """Shot-noise correction: ``gain`` counts per electron (None: the calibration's)."""

    gain: float | None = None
    correct: bool = True
    ddof: int = 1                               # 1: unbiased variances (the correction is exact); 0: textbook

    def __post_init__(self) -> None:
        if self.gain is not None and not (math.isfinite(self.gain) and self.gain > 0):
            raise ValueError("noise.gain must be finite and > 0")
        if self.ddof not in (0, 1):
            raise ValueError("noise.ddof must be 0 or 1")


class ThicknessConfig(_Section):
    """Thickness t = (HAADF − black) / slope (nm), its window and bins."""

    readback: str = "haadf"                     # name in chunk.positions
    black: float = 0.0                          # HAADF counts at t = 0
    slope: float = 1.0                          # HAADF counts per nm
    window: tuple[float, float] | None = None   # nm: probes outside are excluded
    bins: list[float] | None = None             # nm: increasing edges, bins [e_i, e_i+1)
    map: list[float] | None = None              # nm per probe in scan order, instead of the readback

    def __post_init__(self) -> None:
        if not (math.isfinite(self.slope) and self.slope != 0 and math.isfinite(self.black)):
            raise ValueError("thickness.slope must be finite and non-zero, thickness.black finite")
        if self.window is not None:
            lo, hi = self.window
            if not (lo < hi) or math.isnan(lo) or math.isnan(hi):
                raise ValueError(f"thickness.window must be (low, high) with low < high, got {self.window}")
        if self.bins is not None:
            e = np.asarray(self.bins, dtype=float)
            if e.size < 2 or not np.all(np.isfinite(e)) or not np.all(np.diff(e) > 0):
                raise ValueError(f"thickness.bins must be >= 2 finite increasing edges, got {self.bins}")

    @property
    def needed(self) -> bool:
        return self.window is not None or self.bins is not None


class FemConfig(_Section):
    """The whole FEM recipe (one TOML section)."""

    calibration: CalibrationOverrides = CalibrationOverrides()
    rings: RingConfig = RingConfig()
    noise: NoiseConfig = NoiseConfig()
    thickness: ThicknessConfig = ThicknessConfig()
    map_k: float | None = None                  # Å⁻¹ (k = 1/d): the annular-variance map's k; None: mid-range
    map_width: float = 0.0                      # Å⁻¹: rings within ±width/2 of map_k are averaged (0: nearest)
    live_every: int = 2048                      # frames between rebuilds of the per-pixel results

    def __post_init__(self) -> None:
        if not (math.isfinite(self.map_width) and self.map_width >= 0) or self.live_every < 1:
            raise ValueError("map_width must be >= 0 and live_every >= 1")


def parse_fem_config(params: dict[str, Any] | None) -> FemConfig:
    """Validate analyzer parameters into a :class:`FemConfig`; ``ValueError`` names the offending field."""
    try:
        return msgspec.convert(dict(params or {}), FemConfig)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid fem configuration: {exc}") from None


# ------------------------------------------------------------------ kernels
# The frame is cut into bands of rows small enough that four frames' bands stay in L1/L2. Per band: the ring
# sums gather the band's good ring pixels in (ring, raveled index) order, so a ring's sum stays in registers,
# then the per-pixel sums run over the band's rows in natural order (contiguous, vectorised). Frames of one
# accumulation slot go four at a time: one index load and one read-modify-write of the per-pixel sums serve
# four frames. Indices are unsigned (numba then drops its negative-index wrap-around code). Sums are exact
# integers for uint8/uint16 frames (uint32 ΣI, uint64 ΣI²) and float64 shifted by the chunk's first frame
# otherwise (stable). uint8/uint16 blocks of four take the packed path: the gather's cost was the per-frame
# load + multiply of scalar code, packing frames into 64-bit words cuts the loads and moves the squares into the
# vectorised pass. Where a segment's ΣI fits 16 bits (counting detectors: a few counts per pixel) the narrow
# packing (_pack3 + _rings3) keeps four frames' I in one word and I² two per word: three words per four frames,
# whose stores and loads are what the packed passes spend their time on (−30 % against four words); otherwise
# the wide packing (_pack4 + _rings4) keeps two frames' I per word. (Transposing blocks of 16-64 frames to
# pixel-major was slower in numba: the transpose of 16-bit values stays scalar and cost more than the gather.)
@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _band4(flat, f0, f1, f2, f3, seg_pix, seg_start, seg_ring, s_lo, s_hi, row_lo, row_hi, r_lo, r_hi, ref, zero,
           rs1, rs2, s1, s2, acc):  # pragma: no cover - numba
    g0, g1, g2, g3 = flat[f0], flat[f1], flat[f2], flat[f3]
    for s in range(s_lo, s_hi):
        a0 = a1 = a2 = a3 = zero
        q0 = q1 = q2 = q3 = zero
        for j in range(seg_start[s], seg_start[s + 1]):
            p = seg_pix[j]
            x0, x1, x2, x3 = zero + g0[p], zero + g1[p], zero + g2[p], zero + g3[p]
            a0 += x0
            a1 += x1
            a2 += x2
            a3 += x3
            q0 += x0 * x0
            q1 += x1 * x1
            q2 += x2 * x2
            q3 += x3 * x3
        k = seg_ring[s]
        rs1[f0, k] += a0
        rs1[f1, k] += a1
        rs1[f2, k] += a2
        rs1[f3, k] += a3
        rs2[f0, k] += q0
        rs2[f1, k] += q1
        rs2[f2, k] += q2
        rs2[f3, k] += q3
    if not acc:
        return
    for r in range(r_lo, r_hi):
        if ref is None:
            for i in range(row_lo[r], row_hi[r]):
                y0, y1, y2, y3 = np.uint32(g0[i]), np.uint32(g1[i]), np.uint32(g2[i]), np.uint32(g3[i])
                s1[i] += (y0 + y1) + (y2 + y3)
                s2[i] += (np.uint64(y0 * y0) + np.uint64(y1 * y1)) + (np.uint64(y2 * y2) + np.uint64(y3 * y3))
        else:
            for i in range(row_lo[r], row_hi[r]):
                c = ref[i]
                d0, d1, d2, d3 = g0[i] - c, g1[i] - c, g2[i] - c, g3[i] - c
                s1[i] += (d0 + d1) + (d2 + d3)
                s2[i] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _band1(flat, f, seg_pix, seg_start, seg_ring, s_lo, s_hi, row_lo, row_hi, r_lo, r_hi, ref, zero,
           rs1, rs2, s1, s2, acc):  # pragma: no cover - numba
    g = flat[f]
    for s in range(s_lo, s_hi):
        a = q = zero
        for j in range(seg_start[s], seg_start[s + 1]):
            x = zero + g[seg_pix[j]]
            a += x
            q += x * x
        k = seg_ring[s]
        rs1[f, k] += a
        rs2[f, k] += q
    if not acc:
        return
    for r in range(r_lo, r_hi):
        if ref is None:
            for i in range(row_lo[r], row_hi[r]):
                y = np.uint32(g[i])
                s1[i] += y
                s2[i] += np.uint64(y * y)
        else:
            for i in range(row_lo[r], row_hi[r]):
                d = g[i] - ref[i]
                s1[i] += d
                s2[i] += d * d


_LO32, _SH32 = np.uint64(0xFFFFFFFF), np.uint64(32)


@numba.njit(cache=True, nogil=True)
def _four_frames(flat, f0, f1, f2, f3, blank):  # pragma: no cover - numba
    """The frames of a packed group; an index ≥ ``flat.shape[0]`` stands for ``blank`` (zeros, pads a short run)."""
    nf = flat.shape[0]
    return (flat[f0] if f0 < nf else blank, flat[f1] if f1 < nf else blank, flat[f2] if f2 < nf else blank,
            flat[f3] if f3 < nf else blank)


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _pack4(flat, f0, f1, f2, f3, row_lo, row_hi, r_lo, r_hi, off, w, s1, s2, acc, blank):  # pragma: no cover
    """Pack four uint8/uint16 frames' band as two frames per uint64 (32-bit lanes): I and I², per-pixel sums too.

    Contiguous and vectorised; returns the OR of every value (≥ the band's maximum) for the overflow check.
    A frame index ≥ ``flat.shape[0]`` stands for ``blank`` (zeros), which pads a run of fewer than four frames.
    """
    g0, g1, g2, g3 = _four_frames(flat, f0, f1, f2, f3, blank)
    w0, w1, w2, w3 = w[0], w[1], w[2], w[3]
    top = np.uint64(0)
    for r in range(r_lo, r_hi):
        for i in range(row_lo[r], row_hi[r]):
            x0, x1, x2, x3 = np.uint64(g0[i]), np.uint64(g1[i]), np.uint64(g2[i]), np.uint64(g3[i])
            q0, q1, q2, q3 = x0 * x0, x1 * x1, x2 * x2, x3 * x3
            u = i - off
            w0[u] = x0 | (x1 << _SH32)
            w1[u] = q0 | (q1 << _SH32)
            w2[u] = x2 | (x3 << _SH32)
            w3[u] = q2 | (q3 << _SH32)
            top |= (x0 | x1) | (x2 | x3)
            if acc:
                s1[i] += np.uint32((x0 + x1) + (x2 + x3))
                s2[i] += (q0 + q1) + (q2 + q3)
    return top


_SH16, _SH48, _LO16 = np.uint64(16), np.uint64(48), np.uint64(0xFFFF)
NARROW_SUM = 2 ** 16     # the narrow packing holds a segment's ΣI below this, per frame


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _pack3(flat, f0, f1, f2, f3, row_lo, row_hi, r_lo, r_hi, off, w, s1, s2, acc, blank):  # pragma: no cover
    """As :func:`_pack4`, narrow: four frames' I in 16-bit lanes of one word, I² in 32-bit lanes of two.

    The lanes only hold if every segment's ΣI < 2¹⁶: the caller checks the returned OR of every value.
    """
    g0, g1, g2, g3 = _four_frames(flat, f0, f1, f2, f3, blank)
    w0, w1, w2 = w[0], w[1], w[2]
    top = np.uint64(0)
    for r in range(r_lo, r_hi):
        for i in range(row_lo[r], row_hi[r]):
            x0, x1, x2, x3 = np.uint64(g0[i]), np.uint64(g1[i]), np.uint64(g2[i]), np.uint64(g3[i])
            q0, q1, q2, q3 = x0 * x0, x1 * x1, x2 * x2, x3 * x3
            u = i - off
            w0[u] = (x0 | (x1 << _SH16)) | ((x2 << _SH32) | (x3 << _SH48))
            w1[u] = q0 | (q1 << _SH32)
            w2[u] = q2 | (q3 << _SH32)
            top |= (x0 | x1) | (x2 | x3)
            if acc:
                s1[i] += np.uint32((x0 + x1) + (x2 + x3))
                s2[i] += (q0 + q1) + (q2 + q3)
    return top


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _rings3(f0, f1, f2, f3, seg_pix, seg_start, seg_ring, s_lo, s_hi, off, w, rs1, rs2):  # pragma: no cover
    """Ring sums of four narrow-packed frames: three adds per pixel for four frames' ΣI and ΣI²."""
    w0, w1, w2 = w[0], w[1], w[2]
    nw = np.uint64(w0.size)
    for s in range(s_lo, s_hi):
        a = b01 = b23 = np.uint64(0)
        for j in range(seg_start[s], seg_start[s + 1]):
            u = seg_pix[j] - off
            if u >= nw:   # never taken: a second exit keeps LLVM from vectorising with gathers (~20 % slower)
                break
            a += w0[u]
            b01 += w1[u]
            b23 += w2[u]
        k = seg_ring[s]
        rs1[f0, k] += np.int64(a & _LO16)
        rs1[f1, k] += np.int64((a >> _SH16) & _LO16)
        rs1[f2, k] += np.int64((a >> _SH32) & _LO16)
        rs1[f3, k] += np.int64(a >> _SH48)
        rs2[f0, k] += np.int64(b01 & _LO32)
        rs2[f1, k] += np.int64(b01 >> _SH32)
        rs2[f2, k] += np.int64(b23 & _LO32)
        rs2[f3, k] += np.int64(b23 >> _SH32)


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _rings4(f0, f1, f2, f3, seg_pix, seg_start, seg_ring, s_lo, s_hi, off, w, lanes, rs1, rs2):  # pragma: no cover
    """Ring sums of four packed frames: one add per word serves two frames, no multiply in the gather.

    ``lanes``: every segment's Σ of a 32-bit lane fits (else the I² words are split into 64-bit sums).
    """
    w0, w1, w2, w3 = w[0], w[1], w[2], w[3]
    nw = np.uint64(w0.size)
    for s in range(s_lo, s_hi):
        a01 = a23 = b01 = b23 = np.uint64(0)
        q0 = q1 = q2 = q3 = np.uint64(0)
        if lanes:
            for j in range(seg_start[s], seg_start[s + 1]):
                u = seg_pix[j] - off
                if u >= nw:   # never taken: keeps the loop scalar (see _rings3)
                    break
                a01 += w0[u]
                b01 += w1[u]
                a23 += w2[u]
                b23 += w3[u]
            q0, q1, q2, q3 = b01 & _LO32, b01 >> _SH32, b23 & _LO32, b23 >> _SH32
        else:
            for j in range(seg_start[s], seg_start[s + 1]):
                u = seg_pix[j] - off
                if u >= nw:
                    break
                a01 += w0[u]
                a23 += w2[u]
                c01, c23 = w1[u], w3[u]
                q0 += c01 & _LO32
                q1 += c01 >> _SH32
                q2 += c23 & _LO32
                q3 += c23 >> _SH32
        k = seg_ring[s]
        rs1[f0, k] += np.int64(a01 & _LO32)
        rs1[f1, k] += np.int64(a01 >> _SH32)
        rs1[f2, k] += np.int64(a23 & _LO32)
        rs1[f3, k] += np.int64(a23 >> _SH32)
        rs2[f0, k] += np.int64(q0)
        rs2[f1, k] += np.int64(q1)
        rs2[f2, k] += np.int64(q2)
        rs2[f3, k] += np.int64(q3)


@numba.njit(cache=True, nogil=True)
def _fem_pass(flat, seg_pix, seg_start, seg_ring, band_seg, band_row, band_off, seg_max, row_lo, row_hi, slot, order,
              ref, zero, w, rs1, rs2, s1, s2, blank):  # pragma: no cover - numba
    n = order.size
    packed = ref is None
    wide = False       # once a band overflows the narrow lanes, the rest of the chunk packs wide
    i = 0
    while i < n:  # ``order`` groups the frames by slot; runs of one slot go four at a time
        b = slot[order[i]]
        m = 1
        while m < 4 and i + m < n and slot[order[i + m]] == b:
            m += 1
        acc = b >= 0
        bb = b if acc else 0
        for t in range(band_seg.size - 1):
            if packed:  # a run of fewer than four is padded with the blank frame (index n: rs1/rs2's spare row)
                f0 = order[i]
                f1 = order[i + 1] if m > 1 else n
                f2 = order[i + 2] if m > 2 else n
                f3 = order[i + 3] if m > 3 else n
                summed = False
                if not wide:
                    top = np.float64(_pack3(flat, f0, f1, f2, f3, row_lo, row_hi, band_row[t], band_row[t + 1],
                                            band_off[t], w, s1[bb], s2[bb], acc, blank))
                    if seg_max * top < NARROW_SUM:
                        _rings3(f0, f1, f2, f3, seg_pix, seg_start, seg_ring, band_seg[t], band_seg[t + 1],
                                band_off[t], w, rs1, rs2)
                        continue
                    wide, summed = True, True        # this band's pixel sums are in: repack it without them
                top = np.float64(_pack4(flat, f0, f1, f2, f3, row_lo, row_hi, band_row[t], band_row[t + 1],
                                        band_off[t], w, s1[bb], s2[bb], acc and not summed, blank))
                lanes = seg_max * top * top < 2.0 ** 32
                _rings4(f0, f1, f2, f3, seg_pix, seg_start, seg_ring, band_seg[t], band_seg[t + 1], band_off[t], w,
                        lanes, rs1, rs2)
            elif m == 4:
                _band4(flat, order[i], order[i + 1], order[i + 2], order[i + 3], seg_pix, seg_start, seg_ring,
                       band_seg[t], band_seg[t + 1], row_lo, row_hi, band_row[t], band_row[t + 1], ref, zero,
                       rs1, rs2, s1[bb], s2[bb], acc)
            else:
                for u in range(i, i + m):
                    _band1(flat, order[u], seg_pix, seg_start, seg_ring, band_seg[t], band_seg[t + 1], row_lo,
                           row_hi, band_row[t], band_row[t + 1], ref, zero, rs1, rs2, s1[bb], s2[bb], acc)
        i += m


@numba.njit(cache=True, nogil=True)
def _bin_states(a, w, v, slot, counts, mean_a, m2_a, sum_w, n_r, mean_v, m2_v):  # pragma: no cover - numba
    """Per slot: (n, mean, M2) of the ring means ``a``, Σ of ``w``, (n, mean, M2) of the finite ``v``; two passes.

    The chunk's part of the merge-safe states (as :func:`.moments.chunk_moments` per slot, in one loop); frames
    with slot −1 take no part. Where a slot has no finite sample, n = mean = M2 = 0 (the merge's identity).
    """
    n, nk = a.shape
    for f in range(n):
        b = slot[f]
        if b < 0:
            continue
        counts[b] += 1.0
        for k in range(nk):
            if np.isfinite(a[f, k]):   # NaN only for a ring without good pixels: it keeps mean 0, as in the merge
                mean_a[b, k] += a[f, k]
            sum_w[b, k] += w[f, k]
            x = v[f, k]
            if np.isfinite(x):
                n_r[b, k] += 1.0
                mean_v[b, k] += x
    for b in range(counts.size):
        for k in range(nk):
            mean_a[b, k] = mean_a[b, k] / counts[b] if counts[b] > 0 else 0.0
            mean_v[b, k] = mean_v[b, k] / n_r[b, k] if n_r[b, k] > 0 else 0.0
    for f in range(n):
        b = slot[f]
        if b < 0:
            continue
        for k in range(nk):
            d = a[f, k] - mean_a[b, k]
            if np.isfinite(d):
                m2_a[b, k] += d * d
            x = v[f, k]
            if np.isfinite(x):
                e = x - mean_v[b, k]
                m2_v[b, k] += e * e


class RingLayout:
    """The good ring pixels cut into row bands, for :func:`fem_sums`.

    Parameters
    ----------
    ring : (qy*qx,) int, ring of each pixel, −1 for pixels in no ring
    shape : (qy, qx)
    n_rings : int
    band_rows : int, rows per band (default: the narrow packing's three words per pixel fill ~24 kB)
    """

    def __init__(self, ring: np.ndarray, shape: tuple[int, int], n_rings: int, band_rows: int | None = None) -> None:
        ny, nx = shape
        ring = np.asarray(ring, dtype=np.int64).reshape(-1)
        if ring.size != ny * nx:
            raise ValueError(f"ring has {ring.size} pixels for a {ny}×{nx} frame")
        self.band_rows = int(band_rows or max(1, 24576 // (24 * nx)))
        sel = np.flatnonzero(ring >= 0)
        band = (sel // nx) // self.band_rows
        order = np.lexsort((sel, ring[sel], band))            # by band, ring, raveled index
        pix, rk, bd = sel[order], ring[sel][order], band[order]
        key = bd * (n_rings + 1) + rk
        new = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if pix.size else np.zeros(0, dtype=np.int64)
        self.seg_pix = pix.astype(np.uint32 if ny * nx < 2 ** 32 else np.uint64)
        self.seg_start = np.r_[new, pix.size].astype(np.uint64)
        self.seg_ring = rk[new].astype(np.uint64)
        n_bands = -(-ny // self.band_rows)
        self.band_seg = np.searchsorted(bd[new], np.arange(n_bands + 1)).astype(np.uint64)
        self.band_row = np.minimum(np.arange(n_bands + 1) * self.band_rows, ny).astype(np.uint64)
        self.band_off = (self.band_row * np.uint64(nx)).astype(np.uint64)    # first raveled pixel of each band
        self.band_pixels = self.band_rows * nx
        self.seg_max = float(np.diff(self.seg_start).max(initial=0))          # longest (band, ring) segment
        rows = sel // nx                                       # per row, the span of its ring pixels
        lo = np.full(ny, 0, dtype=np.int64)
        hi = np.full(ny, 0, dtype=np.int64)
        if sel.size:
            first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
            last = np.r_[first[1:], sel.size] - 1
            lo[rows[first]], hi[rows[first]] = sel[first], sel[last] + 1
        self.row_lo, self.row_hi = lo.astype(np.uint64), hi.astype(np.uint64)
        self.npix, self.n_rings = ny * nx, int(n_rings)
        self._blanks: dict[str, np.ndarray] = {}

    def blank(self, dtype: np.dtype) -> np.ndarray:
        """A zero frame of ``dtype``, made once: the packed kernel pads short runs with it (and never writes it)."""
        key = np.dtype(dtype).str
        if key not in self._blanks:
            self._blanks[key] = np.zeros(self.npix, dtype=dtype)
        return self._blanks[key]


def _exact_integer(dtype: np.dtype, n: int) -> bool:
    """Whether the unsigned sums (uint32 ΣI, uint64 ΣI², the merge's int64 n·ΣI² − (ΣI)²) are exact."""
    if dtype.kind != "u" or dtype.itemsize > 2:
        return False
    vmax = float(np.iinfo(dtype).max)
    return n * vmax < 2.0 ** 32 and float(n) ** 2 * vmax ** 2 < 2.0 ** 62


def fem_sums(frames: np.ndarray, layout: RingLayout, pix: np.ndarray, slot: np.ndarray, n_slots: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """One pass over a chunk: per-frame ring sums and per-slot sums of every good ring pixel.

    Parameters
    ----------
    frames : (n, qy, qx) or (n, npix) real array
    layout : :class:`RingLayout` of the rings
    pix : (g,) int, the raveled pixels whose per-pixel sums are returned, in this order
    slot : (n,) int, accumulation slot (thickness bin) of each frame, −1: ring sums only
    n_slots : int

    Returns
    -------
    ΣI, ΣI² per frame and ring (n, n_rings); frames per slot (n_slots,) int64; per slot and pixel of
    ``pix`` Σd, Σd² (n_slots, g) with d = I − ref; ``ref`` (g,) float64, the chunk's first frame, for float,
    signed or wide integer frames (float64 sums), None for uint8/uint16 frames (d = I: exact unsigned sums,
    in the narrowest unsigned type that holds them).
    """
    flat = frames.reshape(frames.shape[0], -1)
    if not flat.flags.c_contiguous:
        flat = np.ascontiguousarray(flat)
    n = flat.shape[0]
    slot = np.ascontiguousarray(slot, dtype=np.int64)
    counts = np.bincount(slot[slot >= 0], minlength=n_slots)[:n_slots].astype(np.int64)
    ns, npix, nk = max(n_slots, 1), layout.npix, layout.n_rings
    if _exact_integer(flat.dtype, n):
        zero, ref, acc1, acc2 = np.int64(0), None, np.uint32, np.uint64
    else:
        zero, acc1, acc2 = np.float64(0.0), np.float64, np.float64
        ref = flat[0].astype(np.float64) if n else np.zeros(npix)
    rs1, rs2 = np.zeros((n + 1, nk), dtype=type(zero)), np.zeros((n + 1, nk), dtype=type(zero))  # + a spare row
    s1, s2 = _scratch(ns, npix, acc1, acc2)
    order = np.argsort(slot, kind="stable").astype(np.int64)
    w = np.empty((4, layout.band_pixels if ref is None else 0), dtype=np.uint64)   # the packed band
    blank = layout.blank(flat.dtype)                                               # pads runs of < 4 frames
    _fem_pass(flat, layout.seg_pix, layout.seg_start, layout.seg_ring, layout.band_seg, layout.band_row,
              layout.band_off, layout.seg_max, layout.row_lo, layout.row_hi, slot, order, ref, zero, w, rs1, rs2,
              s1, s2, blank)
    rs1, rs2 = rs1[:n], rs2[:n]
    pix = np.ascontiguousarray(pix, dtype=np.int64)
    p1, p2 = np.empty((n_slots, pix.size), dtype=acc1), np.empty((n_slots, pix.size), dtype=acc2)
    _take_and_clear(s1, s2, pix, layout.row_lo, layout.row_hi, p1, p2)
    if ref is None:  # exact integers: the narrowest unsigned type that holds them (a smaller partial to send)
        p1, p2 = _narrow(p1), _narrow(p2)
    return rs1, rs2, counts, p1, p2, (None if ref is None else ref[pix])


def _narrow(x: np.ndarray) -> np.ndarray:
    top = int(x.max(initial=0))
    for t in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(t).max:
            return x.astype(t) if x.dtype.itemsize > np.dtype(t).itemsize else x
    return x


_SCRATCH = threading.local()


def _scratch(ns: int, npix: int, t1: type, t2: type) -> tuple[np.ndarray, np.ndarray]:
    """Zeroed per-pixel accumulators, kept per thread: fresh ones would page-fault on every chunk."""
    key = (npix, np.dtype(t1).str, np.dtype(t2).str)
    have = getattr(_SCRATCH, "buffers", {}).get(key)
    if have is None or have[0].shape[0] < ns:
        have = (np.zeros((ns, npix), dtype=t1), np.zeros((ns, npix), dtype=t2))
        _SCRATCH.buffers = {key: have}
    return have[0][:ns], have[1][:ns]


@numba.njit(cache=True, nogil=True)
def _take_and_clear(s1, s2, pix, row_lo, row_hi, p1, p2):  # pragma: no cover - numba
    for b in range(p1.shape[0]):
        a1, a2, o1, o2 = s1[b], s2[b], p1[b], p2[b]
        for j in range(pix.size):
            o1[j] = a1[pix[j]]
            o2[j] = a2[pix[j]]
    for b in range(s1.shape[0]):
        a1, a2 = s1[b], s2[b]
        for r in range(row_lo.size):
            for i in range(row_lo[r], row_hi[r]):
                a1[i] = 0
                a2[i] = 0


@numba.njit(cache=True, nogil=True)
def _merge_ring_states(idx, counts, n, mean_a, m2_a, sum_w, n_r, mean_v, m2_v, p_mean_a, p_m2_a, p_sum_w, p_n_r,
                       p_mean_v, p_m2_v):  # pragma: no cover - numba
    """In place: a partial's per-bin ring states (rows ``i`` for bins ``idx[i]``) into the host's, by Chan's update.

    The same arithmetic as :func:`.moments.merge_moments` on each element, without its temporaries: the
    host merges every chunk, and on (bins × rings) arrays numpy's per-call cost was most of the merge.
    ``n`` (per bin) is not updated here: the caller still needs it for the per-pixel states.
    """
    for i in range(idx.size):
        nb = counts[i]
        if nb <= 0:
            continue
        b = idx[i]
        na = n[b]
        tot = na + nb
        wb, cross = nb / tot, na * nb / tot
        for k in range(mean_a.shape[1]):
            d = p_mean_a[i, k] - mean_a[b, k]
            mean_a[b, k] = mean_a[b, k] + d * wb
            m2_a[b, k] = m2_a[b, k] + p_m2_a[i, k] + d * d * cross
            sum_w[b, k] += p_sum_w[i, k]
            ra, rb = n_r[b, k], p_n_r[i, k]
            rt = ra + rb
            if rt > 0:
                e = p_mean_v[i, k] - mean_v[b, k]
                mean_v[b, k] = mean_v[b, k] + e * (rb / rt)
                m2_v[b, k] = m2_v[b, k] + p_m2_v[i, k] + e * e * (ra * rb / rt)
            else:
                mean_v[b, k] = 0.0
                m2_v[b, k] = 0.0
            n_r[b, k] = rt


@numba.njit(cache=True, nogil=True)
def _pixel_v(n, mean, m2, ddof, gain, correct):  # pragma: no cover - numba
    """V of one pixel over probes, (var − G·mean)/mean² (without G with the correction off); NaN where n ≤ ddof
    or the mean is not > 0."""
    var = m2 / (n - ddof) if n > ddof else np.nan
    if correct:
        var = var - gain * mean
    return var / (mean * mean) if mean > 0 else np.nan


@numba.njit(cache=True, nogil=True)
def _vimage(n, mean, m2, ring, ddof, gain, correct, s_bins, c_bins, s_all, c_all, v_all):  # pragma: no cover
    """VImage per bin and combined in one pass over the pixels: sums and counts of the finite per-pixel V per ring
    (``s_*``, ``c_*``, zeroed by the caller) and the combined per-pixel V (``v_all``). The bins' states combine by
    Chan's update in bin order, the same arithmetic as :func:`.moments.merge_moments`."""
    nb, g = mean.shape
    for j in range(g):
        k = ring[j]
        nt, mt, qt = n[0], mean[0, j], m2[0, j]
        for b in range(nb):
            if b:
                nbb = n[b]
                tot = nt + nbb
                if tot > 0:
                    d = mean[b, j] - mt
                    mt = mt + d * (nbb / tot)
                    qt = qt + m2[b, j] + d * d * (nt * nbb / tot)
                else:
                    mt = qt = 0.0
                nt = tot
            x = _pixel_v(n[b], mean[b, j], m2[b, j], ddof, gain, correct)
            if np.isfinite(x):
                s_bins[b, k] += x
                c_bins[b, k] += 1.0
        x = _pixel_v(nt, mt, qt, ddof, gain, correct)
        v_all[j] = x
        if np.isfinite(x):
            s_all[k] += x
            c_all[k] += 1.0


# ------------------------------------------------------------------ analyzer
class FemAnalyzer(Analyzer):
    """FEM variance V(k): Ω, r, re and VImage per thickness bin and combined, live.

    Parameters: the sections of :class:`FemConfig` as nested dicts
    (``calibration``, ``rings``, ``noise``, ``thickness``) and ``map_k``,
    ``map_width``, ``live_every``. Needs ``reciprocal_pixel_size`` from the stream
    header or ``calibration``. k is reported as 1/d (Å⁻¹, the FEM convention): k = q / 2π.
    """

    name: ClassVar[str] = "fem"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.config: FemConfig = parse_fem_config(params)

    # ----------------------------------------------------------------- operators
    def prepare(self, run: RunInfo) -> None:
        cfg = self.config
        cal = cfg.calibration.apply(run.calibration)
        if cal.reciprocal_pixel_size is None:
            raise ValueError("fem needs reciprocal_pixel_size (Å⁻¹ per pixel, q = 2π/d) in the stream's "
                             "calibration or in the analyzer's [calibration] section")
        shape = tuple(int(v) for v in run.frame_shape)
        ny, nx = shape
        rc = cfg.rings
        center = cal.center if cal.center is not None else ((ny - 1) / 2, (nx - 1) / 2)
        dead = np.asarray(rc.dead_pixels, dtype=np.int64).reshape(-1, 2) if rc.dead_pixels else None
        good = static_mask(shape, edge=rc.edge, center=center, dead_pixels=dead).reshape(-1)
        r_max = rc.r_max if rc.r_max is not None else inscribed_radius(shape, cal)
        if not r_max > rc.r_min:
            raise ValueError(f"the radial range ({rc.r_min}, {r_max}) px is empty")
        ring, n_rings = ring_index(shape, cal, ring_width=rc.ring_width, r_min=rc.r_min, r_max=r_max)
        ring = np.where(good, ring, -1)
        # per-pixel states in raveled order: the worker's gather of its sums then streams through memory
        self.pix = np.flatnonzero(ring >= 0).astype(np.int64)
        self.ring_of_pix = ring[self.pix].astype(np.int64)
        self.layout = RingLayout(ring, shape, n_rings)
        self.ring_full = ring.astype(np.int64)
        self.n_pixels = np.bincount(self.ring_of_pix, minlength=n_rings).astype(np.float64)
        self.n_rings = int(n_rings)
        self.shape, self.npix = shape, ny * nx
        self.calibration = cal
        self.radius_px = rc.r_min + (np.arange(n_rings) + 0.5) * rc.ring_width
        self.k = self.radius_px * cal.reciprocal_pixel_size / (2 * math.pi)
        self.gain = float(cfg.noise.gain if cfg.noise.gain is not None else cal.gain)
        self.ddof = int(cfg.noise.ddof)
        self.correct = bool(cfg.noise.correct)
        tc = cfg.thickness
        self.edges = np.asarray(tc.bins, dtype=float) if tc.bins is not None else None
        self.n_bins = 1 if self.edges is None else self.edges.size - 1
        self.map_rings = self._map_rings()
        self.thickness_map = None
        if tc.map is not None:
            tmap = np.asarray(tc.map, dtype=float).reshape(-1)
            if tmap.size != run.n_frames:
                raise ValueError(f"thickness.map has {tmap.size} values for {run.n_frames} probes")
            self.thickness_map = tmap
        self.run = run

    def _map_rings(self) -> np.ndarray:
        cfg = self.config
        k0 = cfg.map_k if cfg.map_k is not None else float(np.median(self.k))
        sel = np.flatnonzero(np.abs(self.k - k0) <= cfg.map_width / 2)
        if sel.size == 0:
            sel = np.array([int(np.argmin(np.abs(self.k - k0)))])
        return sel

    # ----------------------------------------------------------------- results
    def results(self, run: RunInfo) -> dict[str, ResultSpec]:
        if not hasattr(self, "pix"):
            self.prepare(run)
        n, axes, nk, nb = run.n_frames, scan_axes(run.scan_shape), self.n_rings, self.n_bins
        what = {"omega": "Ω: variance over probes of the ring mean", "r": "r: per-probe annular variance, averaged",
                "re": "re: pooled variance of ring pixels over probes",
                "vimage": "VImage: per-pixel variance over probes, ring-averaged"}
        corr = "shot noise removed" if self.correct else "no shot-noise correction"
        specs = {
            "k": ResultSpec("curve", (nk,), "float64", ("k",), "Å⁻¹", "custom", "ring centres, k = 1/d"),
            "n_pixels": ResultSpec("curve", (nk,), "float64", ("k",), "", "custom", "good pixels per ring"),
            "bin_edges": ResultSpec("curve", (nb + 1,), "float64", ("edge",), "nm", "custom",
                                    "thickness bin edges (NaN: no binning)"),
            "probes_bins": ResultSpec("curve", (nb,), "float64", ("thickness_bin",), "", "custom",
                                      "probes merged per thickness bin"),
            "mean_intensity": ResultSpec("curve", (nk,), "float64", ("k",), "counts", "custom",
                                         "mean ring intensity I(k) per pixel, all bins"),
            "mean_intensity_bins": ResultSpec("curve", (nb, nk), "float64", ("thickness_bin", "k"), "counts",
                                              "custom", "mean ring intensity per thickness bin"),
            "variance_image": ResultSpec("frame", self.shape, "float64", ("qy", "qx"), "", "custom",
                                         f"per-pixel V over probes (VImage before the ring mean), {corr}"),
            "annular_variance": ResultSpec("map", (n,), "float32", axes, "", "frames",
                                           f"per-probe annular variance at k = {self.k[self.map_rings].mean():.4g} "
                                           f"Å⁻¹ ({corr})"),
            "thickness": ResultSpec("map", (n,), "float32", axes, "nm", "frames", "(HAADF − black) / slope"),
            "thickness_bin": ResultSpec("map", (n,), "float32", axes, "", "frames",
                                        "thickness bin of the probe, NaN: excluded"),
        }
        for est in ESTIMATORS:
            specs[f"v_{est}"] = ResultSpec("curve", (nk,), "float64", ("k",), "", "custom",
                                           f"V(k), {what[est]}, all bins, {corr}")
            specs[f"v_{est}_bins"] = ResultSpec("curve", (nb, nk), "float64", ("thickness_bin", "k"), "", "custom",
                                                f"V(k), {what[est]}, per thickness bin, {corr}")
        return specs

    def initialize(self, store: ResultBuffers) -> None:
        store["k"][:] = self.k
        store["n_pixels"][:] = self.n_pixels
        store["bin_edges"][:] = self.edges if self.edges is not None else np.nan
        store["probes_bins"][:] = 0
        nb, nk, g = self.n_bins, self.n_rings, self.pix.size
        self._n = np.zeros(nb)
        self._mean_a, self._m2_a, self._sum_w = np.zeros((nb, nk)), np.zeros((nb, nk)), np.zeros((nb, nk))
        self._n_r, self._mean_v, self._m2_v = np.zeros((nb, nk)), np.zeros((nb, nk)), np.zeros((nb, nk))
        self._pix_mean, self._pix_m2 = np.zeros((nb, g)), np.zeros((nb, g))
        self._since_pixels = self._since_rings = 0

    # ----------------------------------------------------------------- per chunk (workers)
    def thickness_of(self, chunk: FrameChunk) -> np.ndarray | None:
        """Thickness (nm) of the chunk's probes, or None if neither a map nor the readback is there."""
        if self.thickness_map is not None:
            return self.thickness_map[chunk.first:chunk.first + chunk.count]
        tc = self.config.thickness
        haadf = chunk.positions.get(tc.readback) if chunk.positions else None
        if haadf is None:
            if tc.needed:
                raise ValueError(f"fem: thickness binning needs the readback {tc.readback!r} in the chunk's "
                                 f"positions (has {sorted(chunk.positions or {})}) or thickness.map")
            return None
        haadf = np.asarray(haadf, dtype=np.float64).reshape(-1)
        if haadf.size != chunk.count:
            raise ValueError(f"readback {tc.readback!r} has {haadf.size} values for {chunk.count} frames")
        return (haadf - tc.black) / tc.slope

    def bin_of(self, t: np.ndarray | None, count: int) -> np.ndarray:
        """Thickness bin per probe (int64, −1: excluded by the window, the edges or a NaN thickness)."""
        if t is None:
            return np.zeros(count, dtype=np.int64)
        tc = self.config.thickness
        ok = np.isfinite(t)
        if tc.window is not None:
            ok &= (t >= tc.window[0]) & (t <= tc.window[1])
        if self.edges is None:
            return np.where(ok, 0, -1).astype(np.int64)
        b = np.searchsorted(self.edges, np.where(ok, t, np.nan), side="right") - 1
        ok &= (b >= 0) & (b < self.n_bins)
        return np.where(ok, b, -1).astype(np.int64)

    def process(self, chunk: FrameChunk) -> Partial:
        frames = np.asarray(chunk.frames)
        n = frames.shape[0]
        if frames.ndim != 3 or frames.shape[1:] != self.shape:
            raise ValueError(f"fem: frames must be (n, {self.shape[0]}, {self.shape[1]}), got {frames.shape}")
        if frames.dtype == bool or not (np.issubdtype(frames.dtype, np.integer)
                                        or np.issubdtype(frames.dtype, np.floating)):
            raise ValueError(f"fem: frames must be real numbers, got dtype {frames.dtype}")
        t = self.thickness_of(chunk)
        bins = self.bin_of(t, n)
        present = np.unique(bins[bins >= 0])
        slot = np.where(bins >= 0, np.searchsorted(present, bins), -1)   # bin -> row of this partial
        rs1, rs2, _, ps1, ps2, ref = fem_sums(frames, self.layout, self.pix, slot, present.size)
        big_n, ddof, g = self.n_pixels, self.ddof, self.gain
        with np.errstate(invalid="ignore", divide="ignore"):
            a = rs1 / big_n                                   # ring mean per probe
            w = np.maximum(rs2 - rs1 * a, 0.0)                # within-ring M2 per probe
            s2 = np.where(big_n > ddof, w / (big_n - ddof), np.nan)
            num = s2 - g * a if self.correct else s2
            v_r = np.where(a > 0, num / (a * a), np.nan)      # per-probe annular variance V_r,p(k)
            amap = np.nanmean(v_r[:, self.map_rings], axis=1) if self.map_rings.size > 1 \
                else v_r[:, self.map_rings[0]]
        values: dict[str, np.ndarray] = {
            "annular_variance": amap.astype(np.float32),
            "thickness": (np.full(n, np.nan) if t is None else t).astype(np.float32),
            "thickness_bin": np.where(bins >= 0, bins, np.nan).astype(np.float32),
            "bins_present": present.astype(np.int64),
        }
        nb_p, nk = present.size, self.n_rings
        st = {key: np.zeros((nb_p, nk)) for key in ("mean_a", "m2_a", "sum_w", "n_r", "mean_v", "m2_v")}
        counts = np.zeros(nb_p)
        _bin_states(a, w, v_r, slot, counts, st["mean_a"], st["m2_a"], st["sum_w"], st["n_r"], st["mean_v"],
                    st["m2_v"])
        values["bin_counts"] = counts
        values.update(st)
        values["pix_s1"], values["pix_s2"] = ps1, ps2
        if ref is not None:
            values["pix_ref"] = ref
        return Partial(chunk.first, n, values)

    # ----------------------------------------------------------------- host
    def merge(self, store: ResultBuffers, partial: Partial) -> None:
        v = partial.values
        sl = slice(partial.first, partial.first + partial.count)
        for name in ("annular_variance", "thickness", "thickness_bin"):
            store[name][sl] = v[name]
        counts = np.asarray(v["bin_counts"], dtype=np.float64)
        idx = np.asarray(v["bins_present"], dtype=np.int64)
        if idx.size:
            _merge_ring_states(idx, counts, self._n, self._mean_a, self._m2_a, self._sum_w, self._n_r, self._mean_v,
                               self._m2_v, *(np.asarray(v[key], dtype=np.float64) for key in
                                             ("mean_a", "m2_a", "sum_w", "n_r", "mean_v", "m2_v")))
            for i in np.flatnonzero(counts > 0):
                b = int(idx[i])
                merge_sums_into(self._n[b], self._pix_mean[b], self._pix_m2[b], int(counts[i]), v["pix_s1"][i],
                                v["pix_s2"][i], v.get("pix_ref"))
                self._n[b] += counts[i]
        self._since_rings += partial.count
        if self._since_rings >= _RING_UPDATE_FRAMES:
            self._update_rings(store)
        self._since_pixels += partial.count
        if self._since_pixels >= self.config.live_every:
            self._update_pixels(store)
        store.version += 1

    def finalize(self, store: ResultBuffers) -> None:
        self._update_rings(store)
        self._update_pixels(store)
        store.version += 1

    # ----------------------------------------------------------------- estimators from states
    def _combined(self) -> dict[str, np.ndarray]:
        """The bins' ring states merged (Chan) into one: the 'all bins' estimators."""
        n, mean_a, m2_a = self._n[0], self._mean_a[0], self._m2_a[0]
        n_r, mean_v, m2_v = self._n_r[0], self._mean_v[0], self._m2_v[0]
        for b in range(1, self.n_bins):
            n2, mean_a, m2_a = merge_moments(n, mean_a, m2_a, self._n[b], self._mean_a[b], self._m2_a[b])
            n_r, mean_v, m2_v = merge_moments(n_r, mean_v, m2_v, self._n_r[b], self._mean_v[b], self._m2_v[b])
            n = n2
        return {"n": np.asarray(n), "mean_a": mean_a, "m2_a": m2_a, "sum_w": self._sum_w.sum(axis=0),
                "n_r": n_r, "mean_v": mean_v}

    def _ring_estimators(self, n, mean_a, m2_a, sum_w, n_r, mean_v) -> dict[str, np.ndarray]:
        big_n, g, ddof = self.n_pixels, self.gain, self.ddof
        with np.errstate(invalid="ignore", divide="ignore"):
            m2 = mean_a * mean_a
            var_a = variance(n, m2_a, ddof)
            pooled = variance(n * big_n, sum_w + big_n * m2_a, ddof)
            if self.correct:
                var_a = var_a - g * mean_a / big_n
                pooled = pooled - g * mean_a
            ok = (n > 0) & (mean_a > 0)
            return {"omega": np.where(ok, var_a / m2, np.nan), "re": np.where(ok, pooled / m2, np.nan),
                    "r": np.where(n_r > 0, mean_v, np.nan), "mean": np.where(n > 0, mean_a, np.nan)}

    def _update_rings(self, store: ResultBuffers) -> None:
        self._since_rings = 0
        est = self._ring_estimators(self._n[:, None], self._mean_a, self._m2_a, self._sum_w, self._n_r,
                                    self._mean_v)                       # all bins at once, (n_bins, n_rings)
        for name in ("omega", "r", "re"):
            store[f"v_{name}_bins"][:] = est[name]
        store["mean_intensity_bins"][:] = est["mean"]
        c = self._combined()
        est = self._ring_estimators(c["n"], c["mean_a"], c["m2_a"], c["sum_w"], c["n_r"], c["mean_v"])
        for name in ("omega", "r", "re"):
            store[f"v_{name}"][:] = est[name]
        store["mean_intensity"][:] = est["mean"]
        store["probes_bins"][:] = self._n

    def _update_pixels(self, store: ResultBuffers) -> None:
        self._since_pixels = 0
        nb, nk = self.n_bins, self.n_rings
        s_bins, c_bins, s_all, c_all = np.zeros((nb, nk)), np.zeros((nb, nk)), np.zeros(nk), np.zeros(nk)
        v = np.empty(self.pix.size)
        _vimage(self._n, self._pix_mean, self._pix_m2, self.ring_of_pix, float(self.ddof), self.gain, self.correct,
                s_bins, c_bins, s_all, c_all, v)
        with np.errstate(invalid="ignore", divide="ignore"):
            store["v_vimage_bins"][:] = np.where(c_bins > 0, s_bins / c_bins, np.nan)
            store["v_vimage"][:] = np.where(c_all > 0, s_all / c_all, np.nan)
        img = np.full(self.npix, np.nan)
        img[self.pix] = v
        store["variance_image"][:] = img.reshape(self.shape)
