"""Per-pixel intensity autocorrelation g2(τ) for electron correlation microscopy (ECM).

Two estimators of the same quantity, the symmetric g2 of a dark-field image series
(Lumma et al., Rev. Sci. Instrum. 71 (2000) 3274; Zhang et al., Nat. Commun. 9 (2018) 1129):

    g2(τ) = ⟨I(t) I(t+τ)⟩ / (⟨I(t)⟩ ⟨I(t+τ)⟩),

every mean taken over the same n = T − τ overlapping pairs (t = 0 .. T−τ−1), so the
"past" mean ⟨I(t)⟩ and the "future" mean ⟨I(t+τ)⟩ differ. This removes the bias of a
slowly drifting mean intensity that the one-mean normalisation ⟨I⟩² has.

* :class:`MultiTauCorrelator` streams: frames arrive in time order and the memory per
  pixel does not grow with the series. Level 0 keeps the last ``per_level`` (m) frames
  and correlates lags 0 .. m−1; level i ≥ 1 keeps the last m frames of the series
  binned by 2^i (each the mean of two consecutive level-(i−1) frames) and correlates
  lags m/2 .. m−1 of that binned series, i.e. physical lags (m/2 + j)·2^i frames. At
  every level the sums run over all overlapping pairs of that level's series, so level
  i is *exactly* the symmetric g2 of the 2^i-binned series (its first ⌊T/2^i⌋·2^i
  frames) at lag j; relative to the unbinned g2 at the same physical lag it is a
  triangle-weighted average over lags jb ± (b−1), b = 2^i (see :func:`multi_tau_lags`).
* :func:`fft_g2` is the exact g2 of a recorded series at any integer lags, all lags at
  once: the lag sums Σ I_t I_{t+τ} by a zero-padded real FFT (Wiener–Khinchin) and the
  partial means from a cumulative sum. It is the reference the streaming one is tested
  against, and the batch tool for a recording.

Lag 0: :func:`multi_tau_lags` and the correlator include it (scikit-beam's
convention), but :meth:`MultiTauCorrelator.g2` drops it unless asked: g2(0) =
⟨I²⟩/⟨I⟩² contains the shot noise (white noise adds to lag 0 only) and is not a
point of the KWW curve.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from scipy import fft as sfft

__all__ = ["multi_tau_lags", "MultiTauCorrelator", "fft_g2"]

_BLOCK = 512            # pixels per block of the streaming kernel: one block's state stays in cache for a chunk
_FFT_BLOCK_VALUES = 1 << 22  # float64 values per pixel block of fft_g2 (x nfft): ~32 MB per temporary


def multi_tau_lags(n_levels: int, per_level: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Lags (in frames) and their level of a multi-tau correlator, in scikit-beam's convention.

    Level 0 has lags 0 .. m−1; level i ≥ 1 has lags (m/2 + j)·2^i, j = 0 .. m/2−1, where
    its frames are averages of 2^i consecutive frames (so lag m/2 + j of level i). With
    m = 8: 0..7, 8 10 12 14, 16 20 24 28, 32 40 48 56, ... — a constant m/2 points per
    octave, the relative lag spacing ≤ 2/m. Lag 0 is included (see the module docstring).

    Parameters
    ----------
    n_levels : int
        Number of levels (>= 1); the largest lag is (m − 1)·2^(n_levels − 1).
    per_level : int
        m, the lags of level 0 and the frames buffered per level; even, >= 2.

    Returns
    -------
    lags : (m + (n_levels − 1)·m/2,) int64 array, increasing
    levels : same shape, int64: the level of each lag
    """
    n_levels, m = _check_levels(n_levels, per_level)
    lags = [np.arange(m, dtype=np.int64)]
    levels = [np.zeros(m, dtype=np.int64)]
    for i in range(1, n_levels):
        lags.append((m // 2 + np.arange(m // 2, dtype=np.int64)) << i)
        levels.append(np.full(m // 2, i, dtype=np.int64))
    return np.concatenate(lags), np.concatenate(levels)


def _check_levels(n_levels: Any, per_level: Any) -> tuple[int, int]:
    if not isinstance(n_levels, (int, np.integer)) or not 1 <= n_levels <= 40:
        raise ValueError(f"n_levels must be an integer in 1..40, got {n_levels!r}")
    if not isinstance(per_level, (int, np.integer)) or per_level < 2 or per_level % 2:
        raise ValueError(f"per_level must be an even integer >= 2, got {per_level!r}")
    return int(n_levels), int(per_level)


class MultiTauCorrelator:
    """Streaming per-pixel multi-tau g2 with symmetric normalisation.

    Memory is O(npix · n_levels · per_level) whatever the series length: per level a
    ring buffer of the last m (binned) frames, and per lag the per-pixel sums of
    I(t)·I(t+τ), I(t) and I(t+τ) over the pairs counted so far, plus the pair count
    (the same for every pixel). Frames go through a numba kernel one at a time, so any
    chunking of :meth:`update` gives bit-identical sums. Pixels are independent: a
    pixel-partitioned analyzer keeps one correlator per tile and merges nothing; the
    state is plain numpy arrays (:meth:`state` / :meth:`from_state`, or pickle), pixel-blocked:
    ``sum_product[block, lag_row, k]`` is pixel ``block·B + k`` (B = ``buffer.shape[-1]``).

    A NaN or inf in a pixel's frame propagates into that pixel's sums only.

    Lost frames (a chunk that never arrived) are declared with :meth:`skip`: time advances
    over them and no pair that involves one is counted, at any level (a binned frame exists
    only if both its halves do), so every lag keeps its meaning and its own pair count.

    Parameters
    ----------
    npix : int
        Pixels per frame (frames are given flattened, (n, npix)).
    n_levels : int
        Levels; the largest lag is (per_level − 1)·2^(n_levels − 1) frames (1792 at the defaults).
    per_level : int
        m, even: lags 0..m−1 at level 0, m/2..m−1 of the binned series at the others.
    dtype : float64 or float32
        Precision of the buffers and sums. float32 halves the memory, but its running sums round at
        ~6e-8 relative per frame added (worst case growing with the series length).

    Examples
    --------
    >>> c = MultiTauCorrelator(4, n_levels=3, per_level=4)
    >>> c.update(np.ones((20, 4), dtype=np.float32))
    >>> lags, g2 = c.g2()
    >>> lags.tolist(), g2.shape, bool(np.all(g2 == 1))
    ([1, 2, 3, 4, 6, 8, 12], (4, 7), True)
    """

    def __init__(self, npix: int, n_levels: int = 9, per_level: int = 8, dtype: Any = np.float64) -> None:
        if not isinstance(npix, (int, np.integer)) or npix < 1:
            raise ValueError(f"npix must be a positive integer, got {npix!r}")
        self.n_levels, self.per_level = _check_levels(n_levels, per_level)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        self.npix = int(npix)
        self.lags, self.levels = multi_tau_lags(self.n_levels, self.per_level)
        nlags, m = self.lags.size, self.per_level
        # Block-major layout (block, ..., pixel in block): one block's state is contiguous and stays in cache
        # while the kernel runs a whole chunk of frames through it.
        nb, bs = -(-self.npix // _BLOCK), min(_BLOCK, self.npix)
        self.buffer = np.zeros((nb, self.n_levels, m, bs), dtype=self.dtype)  # ring of the last m frames per level
        self.level_frames = np.zeros(self.n_levels, dtype=np.int64)           # frames seen at each level
        self.valid = np.zeros((self.n_levels, m), dtype=np.uint8)              # 1: that buffered frame exists
        self.sum_product = np.zeros((nb, nlags, bs), dtype=self.dtype)        # Σ I(t) I(t+τ)
        self.sum_past = np.zeros((nb, nlags, bs), dtype=self.dtype)           # Σ I(t)
        self.sum_future = np.zeros((nb, nlags, bs), dtype=self.dtype)         # Σ I(t+τ)
        self.counts = np.zeros(nlags, dtype=np.int64)                         # pairs per lag (same for all pixels)

    @property
    def n_frames(self) -> int:
        """Frames consumed so far."""
        return int(self.level_frames[0])

    @property
    def nbytes(self) -> int:
        """Bytes of state (independent of the number of frames)."""
        return sum(getattr(self, k).nbytes for k in self._STATE_ARRAYS)

    def update(self, frames: np.ndarray) -> None:
        """Consume the next frames, (n, npix) or (npix,) for one, in time order.

        float32 and float64 frames are read as they are; other real dtypes are converted to float64.
        """
        a = np.asarray(frames)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2 or a.shape[1] != self.npix:
            raise ValueError(f"frames must be (n, {self.npix}) (or ({self.npix},) for one frame), got {a.shape}")
        if a.dtype.kind not in "fiub":
            raise ValueError(f"frames must be real numbers, got dtype {a.dtype}")
        if a.dtype not in (np.float32, np.float64):
            a = a.astype(np.float64)
        if a.shape[0] == 0:
            return
        self._push(np.ascontiguousarray(a), np.ones(a.shape[0], dtype=np.uint8))

    def skip(self, n: int) -> None:
        """Advance time over ``n`` missing frames (lost in transit): pairs involving them are not counted."""
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        if n:
            self._push(np.zeros((0, self.npix), dtype=self.dtype), np.zeros(int(n), dtype=np.uint8))

    def _push(self, frames: np.ndarray, present: np.ndarray) -> None:
        _update(frames, present, self.buffer, self.valid, self.level_frames, self.sum_product, self.sum_past,
                self.sum_future, self.counts)

    def _per_pixel(self, a: np.ndarray) -> np.ndarray:
        """(blocks, rows, block) -> (rows, npix) float64."""
        nb, rows, bs = a.shape
        return a.transpose(1, 0, 2).reshape(rows, nb * bs)[:, :self.npix].astype(np.float64)

    def g2(self, include_zero: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The symmetric g2 so far.

        Returns
        -------
        lags : (nlags,) int64
            Lags in frames (lag 0 only with ``include_zero``).
        g2 : (npix, nlags) float64
            Σ I(t)I(t+τ)·n / (Σ I(t) · Σ I(t+τ)) over the n pairs of each lag (at level i the
            2^i-binned frames); NaN where a lag has no pair yet or a pixel's mean intensity is 0.
        """
        n = self.counts.astype(np.float64)[:, None]
        num = self._per_pixel(self.sum_product) * n
        den = self._per_pixel(self.sum_past) * self._per_pixel(self.sum_future)
        with np.errstate(invalid="ignore", divide="ignore"):
            g = np.where((n > 0) & (den != 0), num / np.where(den != 0, den, 1.0), np.nan)
        keep = slice(None) if include_zero else slice(1, None)
        return self.lags[keep].copy(), np.ascontiguousarray(g[keep].T)

    # ---------------------------------------------------------------- state
    _STATE_ARRAYS = ("buffer", "valid", "level_frames", "sum_product", "sum_past", "sum_future", "counts")

    def state(self) -> dict[str, Any]:
        """The full state as plain values and numpy arrays (copies)."""
        out: dict[str, Any] = {"npix": self.npix, "n_levels": self.n_levels, "per_level": self.per_level,
                               "dtype": self.dtype.str}
        out.update({k: getattr(self, k).copy() for k in self._STATE_ARRAYS})
        return out

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MultiTauCorrelator:
        """Rebuild a correlator from :meth:`state`; continues exactly where that one stopped."""
        try:
            c = cls(state["npix"], state["n_levels"], state["per_level"], np.dtype(state["dtype"]))
            for k in cls._STATE_ARRAYS:
                want = getattr(c, k)
                got = np.asarray(state[k])
                if got.shape != want.shape:
                    raise ValueError(f"state[{k!r}] has shape {got.shape}, expected {want.shape}")
                want[...] = got
        except KeyError as e:
            raise ValueError(f"state lacks {e.args[0]!r}") from None
        return c


@numba.njit(cache=True, nogil=True)
def _accumulate(prod, past, future, a, c):
    # three loops, not one: with five arrays LLVM gives up its runtime alias checks and does not vectorise
    for p in range(prod.size):
        prod[p] += a[p] * c[p]
    for p in range(past.size):
        past[p] += a[p]
    for p in range(future.size):
        future[p] += c[p]


@numba.njit(cache=True, nogil=True)
def _update(frames, present, buffer, valid, level_frames, prod, past, future, counts):
    """Push a stretch of time through all levels, one pixel block at a time (its state stays in cache).

    ``present`` (one entry per time step) says which steps have a frame: the present ones are the
    rows of ``frames`` (n_present, npix), in order; a missing step advances time with no frame.
    The per-level frame counters and validity flags evolve identically for every block, so each
    block replays them from the same start; the first block also counts the pairs. Pixels of the
    last block beyond npix stay 0.
    """
    nblocks, n_levels, m, bs = buffer.shape
    npix = frames.shape[1]
    half = m // 2
    nt = present.size
    final = level_frames.copy()
    final_valid = valid.copy()
    for blk in range(nblocks):
        b0 = blk * bs
        w = min(bs, npix - b0)
        buf = buffer[blk]
        nl = level_frames.copy()
        vl = valid.copy()
        fi = 0
        for f in range(nt):
            slot = nl[0] % m
            if present[f]:
                row0 = buf[0, slot]
                src = frames[fi, b0:b0 + w]
                for p in range(w):
                    row0[p] = src[p]
                fi += 1
            vl[0, slot] = present[f]
            nl[0] += 1
            level = 0
            while True:
                n = nl[level]
                now = (n - 1) % m
                cur = buf[level, now]
                if vl[level, now]:
                    jmin = 0 if level == 0 else half
                    base = 0 if level == 0 else m + (level - 1) * half - half  # row of lag j is base + j
                    for j in range(jmin, min(m - 1, n - 1) + 1):
                        then = (n - 1 - j) % m
                        if vl[level, then]:
                            r = base + j
                            _accumulate(prod[blk, r], past[blk, r], future[blk, r], buf[level, then], cur)
                            if blk == 0:
                                counts[r] += 1
                if level + 1 >= n_levels or n % 2:
                    break
                before = (n - 2) % m
                both = vl[level, before] and vl[level, now]   # a binned frame needs both of its halves
                up = nl[level + 1] % m
                if both:
                    prev, nxt = buf[level, before], buf[level + 1, up]
                    for p in range(bs):
                        nxt[p] = 0.5 * (prev[p] + cur[p])
                vl[level + 1, up] = both
                nl[level + 1] += 1
                level += 1
        final[:] = nl
        final_valid[:] = vl
    level_frames[:] = final
    valid[:] = final_valid


def fft_g2(series: np.ndarray, lags: np.ndarray | None = None) -> np.ndarray:
    """Exact symmetric g2 of a recorded series at integer lags, by FFT, in float64.

    For lag τ over the n = T − τ overlapping pairs: num = Σ_t I_t I_{t+τ} / n from the
    inverse rFFT of |rFFT(I)|² zero-padded to >= 2T − 1 (no wrap-around), and with
    S = [0, cumsum(I)]: ⟨I(t)⟩ = S[T−τ]/n, ⟨I(t+τ)⟩ = (S[T] − S[τ])/n; g2 = num/(⟨I(t)⟩⟨I(t+τ)⟩).
    The FFT's rounding error is ~1e-16·log T of Σ I² (lag 0), so intensities well above
    0 give ~1e-14 relative at every lag; a zero-mean signal would lose digits at long lags.

    Parameters
    ----------
    series : (T, npix) or (T, ny, nx) array
        Frames in time order (T >= 2).
    lags : 1-D int array, optional
        Lags in frames, 0 <= lag < T (lag 0 allowed: ⟨I²⟩/⟨I⟩²). Default: 1 .. T−1.

    Returns
    -------
    (npix, nlags) or (ny, nx, nlags) float64; NaN where a pixel's partial mean is 0.
    """
    a = np.asarray(series)
    if a.ndim not in (2, 3) or a.dtype.kind not in "fiub":
        raise ValueError(f"series must be a real (T, npix) or (T, ny, nx) array, got {a.dtype} {a.shape}")
    t_len = a.shape[0]
    if t_len < 2:
        raise ValueError(f"series needs at least 2 frames, got {t_len}")
    out_shape = a.shape[1:]
    a = a.reshape(t_len, -1)
    if lags is None:
        lag = np.arange(1, t_len, dtype=np.int64)
    else:
        lag = np.asarray(lags)
        if lag.ndim != 1 or lag.size == 0 or lag.dtype.kind not in "iu":
            raise ValueError(f"lags must be a non-empty 1-D integer array, got {lag.dtype} {lag.shape}")
        if lag.min() < 0 or lag.max() >= t_len:
            raise ValueError(f"lags must be in 0..{t_len - 1} (T = {t_len} frames), got {lag.min()}..{lag.max()}")
        lag = lag.astype(np.int64)
    npix = a.shape[1]
    nfft = sfft.next_fast_len(2 * t_len - 1, real=True)
    n = (t_len - lag).astype(np.float64)
    out = np.empty((npix, lag.size))
    step = max(1, _FFT_BLOCK_VALUES // nfft)
    for p0 in range(0, npix, step):
        x = np.ascontiguousarray(a[:, p0:p0 + step].T, dtype=np.float64)  # (pixels, T)
        spec = sfft.rfft(x, n=nfft, axis=1)
        acf = sfft.irfft(spec.real ** 2 + spec.imag ** 2, n=nfft, axis=1)[:, lag]
        del spec
        s = np.zeros((x.shape[0], t_len + 1))
        np.cumsum(x, axis=1, out=s[:, 1:])
        past = s[:, t_len - lag]
        future = s[:, t_len:] - s[:, lag]
        den = past * future
        with np.errstate(invalid="ignore", divide="ignore"):
            out[p0:p0 + step] = np.where(den != 0, acf * n / np.where(den != 0, den, 1.0), np.nan)
    return out.reshape(*out_shape, lag.size)
