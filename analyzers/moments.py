"""Running first and second moments (count, mean, M2) that merge across chunks and workers.

A live analysis sees a scan as chunks processed by several workers in any order,
so every statistic over probe positions is kept as the triple

    n   number of samples,
    mean  their mean,
    M2  Σ (x − mean)², the sum of squared deviations,

computed per chunk with a shifted two-pass formula and combined with the
pairwise update of Chan, Golub & LeVeque (1979; Welford 1962 is its one-sample
case):

    n = n_a + n_b,  δ = mean_b − mean_a,
    mean = mean_a + δ · n_b / n,
    M2 = M2_a + M2_b + δ² · n_a n_b / n.

Unlike raw power sums (Σx, Σx²) this never subtracts two large, nearly equal
numbers, so the variance of a quantity whose fluctuations are 10⁻⁴ of its mean
(a well-exposed FEM ring) keeps its digits. The update is exact in real
arithmetic; in floating point, merging the same chunks in another order changes
the result only by rounding (a few ulp of mean and M2 per merge), and merging
with an empty side (n = 0) returns the other side unchanged.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["chunk_moments", "merge_moments", "merge_moments_into", "merge_sums_into", "variance"]


def chunk_moments(x: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, mean, M2) of ``x`` along ``axis``, NaNs left out (each element counts its finite samples).

    Two passes (mean, then squared deviations), so M2 is as accurate as the data.
    Where no sample is finite, n = 0, mean = 0 and M2 = 0 (the identity of the merge).
    """
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    n = ok.sum(axis=axis).astype(np.float64)
    xs = np.where(ok, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, xs.sum(axis=axis) / np.maximum(n, 1), 0.0)
    dev = np.where(ok, x - np.expand_dims(mean, axis), 0.0)
    m2 = (dev * dev).sum(axis=axis)
    return n, mean, m2


def merge_moments(n_a, mean_a, m2_a, n_b, mean_b, m2_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chan's pairwise merge of two (n, mean, M2) states; arrays broadcast, n may be 0 on either side.

    Returns new arrays (the inputs are not modified).
    """
    n_a, n_b = np.asarray(n_a, dtype=np.float64), np.asarray(n_b, dtype=np.float64)
    mean_a, mean_b = np.asarray(mean_a, dtype=np.float64), np.asarray(mean_b, dtype=np.float64)
    n = n_a + n_b
    safe = np.where(n > 0, n, 1.0)
    delta = mean_b - mean_a
    mean = np.where(n > 0, mean_a + delta * (n_b / safe), 0.0)
    m2 = np.where(n > 0, np.asarray(m2_a) + np.asarray(m2_b) + delta * delta * (n_a * n_b / safe), 0.0)
    return n, mean, m2


@numba.njit(cache=True, nogil=True)
def _merge_into(n_a, mean_a, m2_a, n_b, mean_b, m2_b):  # pragma: no cover - numba
    n = n_a + n_b
    if n_b == 0:
        return
    wb = n_b / n
    cross = n_a * n_b / n
    for i in range(mean_a.size):
        d = mean_b[i] - mean_a[i]
        mean_a[i] += d * wb
        m2_a[i] += m2_b[i] + d * d * cross


def merge_moments_into(n_a: float, mean_a: np.ndarray, m2_a: np.ndarray, n_b: float, mean_b: np.ndarray,
                       m2_b: np.ndarray) -> float:
    """In place: merge (n_b, mean_b, M2_b) into (n_a, mean_a, M2_a), one count shared by all elements.

    The fast path for large states (one per detector pixel), one pass without
    temporaries. ``mean_a`` and ``m2_a`` must be writable contiguous float64
    1-D arrays. Returns the merged count.
    """
    if not (mean_a.dtype == m2_a.dtype == np.float64 and mean_a.ndim == 1 and mean_a.shape == m2_a.shape
            and mean_a.flags.c_contiguous and m2_a.flags.c_contiguous):
        raise ValueError("mean_a and m2_a must be contiguous 1-D float64 arrays of one shape")
    mean_b = np.ascontiguousarray(mean_b, dtype=np.float64).reshape(-1)
    m2_b = np.ascontiguousarray(m2_b, dtype=np.float64).reshape(-1)
    if mean_b.shape != mean_a.shape or m2_b.shape != mean_a.shape:
        raise ValueError(f"states differ in size: {mean_a.shape} and {mean_b.shape}")
    if n_a < 0 or n_b < 0:
        raise ValueError("counts must be >= 0")
    _merge_into(float(n_a), mean_a, m2_a, float(n_b), mean_b, m2_b)
    return float(n_a) + float(n_b)


@numba.njit(cache=True, nogil=True)
def _merge_sums(n_a, mean_a, m2_a, n_b, s1, s2, ref, shifted, exact):  # pragma: no cover - numba
    n = n_a + n_b
    wb = n_b / n
    cross = n_a * n_b / n
    inv = 1.0 / n_b
    for i in range(mean_a.size):
        if exact:  # integer sums: n·Σd² − (Σd)² in int64, exact
            a = np.int64(s1[i])
            m2b = (n_b * np.int64(s2[i]) - a * a) * inv
            mb = a * inv
        else:
            x = np.float64(s1[i])
            m2b = (np.float64(s2[i]) - x * (x * inv))
            mb = x * inv
        if m2b < 0.0:
            m2b = 0.0
        if shifted:
            mb += ref[i]
        d = mb - mean_a[i]
        mean_a[i] += d * wb
        m2_a[i] += m2b + d * d * cross


def merge_sums_into(n_a: float, mean_a: np.ndarray, m2_a: np.ndarray, n_b: int, s1: np.ndarray, s2: np.ndarray,
                    ref: np.ndarray | None = None) -> float:
    """In place: merge ``n_b`` samples given as power sums Σd, Σd² (d = x − ref) into (n_a, mean_a, M2_a).

    Why sums: a worker's per-pixel state is then two accumulators and no division,
    and for integer data the sums are exact, so the chunk's M2 = (n Σd² − (Σd)²)/n
    has an exact numerator (int64: the caller keeps n²·max|d|² < 2⁶³). For float
    data ``ref`` (a sample of each element, e.g. the chunk's first frame) keeps the
    subtraction from cancelling. The chunk's (mean, M2) then enter Chan's update.
    ``mean_a`` and ``m2_a`` must be writable contiguous float64 1-D arrays; ``s1``, ``s2``
    integer (any width) or float arrays of the same size. Returns the merged count.
    """
    if not (mean_a.dtype == m2_a.dtype == np.float64 and mean_a.ndim == 1 and mean_a.shape == m2_a.shape
            and mean_a.flags.c_contiguous and m2_a.flags.c_contiguous):
        raise ValueError("mean_a and m2_a must be contiguous 1-D float64 arrays of one shape")
    if n_a < 0 or n_b < 0:
        raise ValueError("counts must be >= 0")
    if n_b == 0:
        return float(n_a)
    s1, s2 = np.ascontiguousarray(s1).reshape(-1), np.ascontiguousarray(s2).reshape(-1)
    exact = s1.dtype.kind in "iu" and s2.dtype.kind in "iu"   # the caller keeps n·Σd² and (Σd)² < 2⁶³
    if not exact:                                              # integers of any width go as they are (no copy)
        s1, s2 = s1.astype(np.float64, copy=False), s2.astype(np.float64, copy=False)
    if s1.shape != mean_a.shape or s2.shape != mean_a.shape:
        raise ValueError(f"states differ in size: {mean_a.shape}, {s1.shape} and {s2.shape}")
    shifted = ref is not None
    ref = np.ascontiguousarray(ref, dtype=np.float64).reshape(-1) if shifted else np.zeros(1)
    if shifted and ref.shape != mean_a.shape:
        raise ValueError(f"ref has {ref.size} elements for {mean_a.size}")
    _merge_sums(float(n_a), mean_a, m2_a, int(n_b), s1, s2, ref, shifted, exact)
    return float(n_a) + float(n_b)


def variance(n, m2, ddof: int = 1) -> np.ndarray:
    """M2 / (n − ddof), NaN where n ≤ ddof."""
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > ddof, np.asarray(m2, dtype=np.float64) / (n - ddof), np.nan)
