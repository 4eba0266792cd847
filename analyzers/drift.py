"""Sample drift in an image series: register every frame to a static bright feature, undo the shift.

ECM (seed 003) correlates the same sample point over thousands of frames, so a drift
of a fraction of a speckle decorrelates the signal and shortens τ. The reference is
a static feature (a crystallite): a window around the brightest smoothed spot of
the first frame. Each frame's window is registered to the reference window by
subpixel phase cross-correlation (scikit-image). Registering always to the first
frame fails once the speckle under the window has changed; registering to the
previous frame accumulates error at every frame. So the reference is renewed every
``rereference_every`` frames and the offsets are chained at those points only
(research note (d)): the error grows with the number of renewals, not of frames.
A single registration near a fluctuating speckle is off by up to 0.2 px, and a
chained offset keeps that error for good, so the new reference's offset is the
mean over ``overlap`` frames registered to both the old and the new reference.

The same speckle noise makes each frame's raw shift scatter by ~0.05 px rms,
correlated over only a few frames, while real drift is slow. :class:`DriftSmoother`
replaces each raw shift by a local linear fit over ±``half_width`` frames
(a centred moving average inside the series, unbiased for a linear trend at its
ends). It needs ``half_width`` frames of look-ahead, so a live consumer holds
back that many frames and flushes them at the end of the run. The reference frame
registers to itself exactly, without the bias the speckle under the window gives
every other frame's registration, so the origin of the trace is the smoothed value
at the first frame, not its raw zero.

Convention: ``drift[t] = (dy, dx)`` means the content at x in frame 0 is at x + d in
frame t (the simulator's convention); :func:`undo_shift` moves it back.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["DriftTracker", "DriftSmoother", "bright_feature_window", "smooth_drift", "undo_shift"]


def bright_feature_window(frame: np.ndarray, size: int = 24, margin: int = 4) -> tuple[slice, slice]:
    """A ``size``² window centred on the brightest spot of the smoothed frame, kept ``margin`` px from the edges."""
    img = np.asarray(frame, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"frame must be 2-D, got shape {img.shape}")
    ny, nx = img.shape
    size = int(min(size, ny - 2 * margin, nx - 2 * margin))
    if size < 8:
        raise ValueError(f"frame {img.shape} too small for a registration window")
    y, x = np.unravel_index(np.argmax(ndimage.gaussian_filter(img, 1.5)), img.shape)
    y0 = int(np.clip(y - size // 2, margin, ny - margin - size))
    x0 = int(np.clip(x - size // 2, margin, nx - margin - size))
    return slice(y0, y0 + size), slice(x0, x0 + size)


def undo_shift(frame: np.ndarray, shift: tuple[float, float], order: int = 1) -> np.ndarray:
    """The frame moved back by ``shift`` (dy, dx): spline interpolation of ``order``, edges repeated."""
    return ndimage.shift(np.asarray(frame, dtype=np.float32), (-shift[0], -shift[1]), order=order,
                         mode="nearest")


class DriftTracker:
    """Streaming drift estimate: feed frames in time order, get each frame's (dy, dx).

    Parameters
    ----------
    window : (slice, slice), optional
        Registration window; default :func:`bright_feature_window` of the first frame.
    upsample : int
        Subpixel precision 1/upsample (phase_cross_correlation's upsample_factor).
    rereference_every : int
        Frames between reference renewals (0: always the first frame).
    overlap : int
        Frames registered to both the old and the new reference at a renewal; the
        new reference's offset is their mean (must be < ``rereference_every``).
    """

    def __init__(self, window: tuple[slice, slice] | None = None, upsample: int = 50,
                 rereference_every: int = 1000, overlap: int = 400) -> None:
        if upsample < 1 or rereference_every < 0 or overlap < 0:
            raise ValueError("upsample must be >= 1, rereference_every and overlap >= 0")
        if rereference_every and overlap >= rereference_every:
            raise ValueError(f"overlap ({overlap}) must be shorter than rereference_every ({rereference_every})")
        self.window = window
        self.upsample = int(upsample)
        self.rereference_every = int(rereference_every)
        self.overlap = int(overlap)
        self.n_frames = 0
        self._ref: np.ndarray | None = None
        self._ref_offset = np.zeros(2)
        self._candidate: np.ndarray | None = None   # the next reference, during the overlap
        self._candidate_offsets: list[np.ndarray] = []

    def _shift(self, ref: np.ndarray, window: np.ndarray) -> np.ndarray:
        from skimage.registration import phase_cross_correlation

        shift, _, _ = phase_cross_correlation(ref, window, upsample_factor=self.upsample, normalization=None)
        return shift  # registers the moving window onto the reference: the content moved by -shift

    def update(self, frames: np.ndarray) -> np.ndarray:
        """(n, 2) drift of each frame of ``frames`` (n, ny, nx) relative to the first frame of the series."""
        frames = np.asarray(frames)
        if frames.ndim != 3:
            raise ValueError(f"frames must be (n, ny, nx), got shape {frames.shape}")
        out = np.empty((frames.shape[0], 2))
        for k, frame in enumerate(frames):
            if self._ref is None:
                if self.window is None:
                    self.window = bright_feature_window(frame)
                self._ref = np.asarray(frame[self.window], dtype=np.float64)
                out[k] = self._ref_offset
            else:
                win = np.asarray(frame[self.window], dtype=np.float64)
                out[k] = self._ref_offset - self._shift(self._ref, win)
                if self._candidate is not None:
                    self._candidate_offsets.append(out[k] + self._shift(self._candidate, win))
                    if len(self._candidate_offsets) > self.overlap:
                        self._ref = self._candidate
                        self._ref_offset = np.mean(self._candidate_offsets, axis=0)
                        self._candidate, self._candidate_offsets = None, []
                elif self.rereference_every and self.n_frames % self.rereference_every == 0:
                    self._candidate, self._candidate_offsets = win, [out[k].copy()]
                    if self.overlap == 0:
                        self._ref, self._ref_offset = win, out[k].copy()
                        self._candidate, self._candidate_offsets = None, []
            self.n_frames += 1
        return out


def smooth_drift(raw: np.ndarray, half_width: int, frames: np.ndarray | None = None) -> np.ndarray:
    """Each row of ``raw`` (n, 2) replaced by a local linear fit over the frames within ±``half_width``, there.

    ``frames`` are the rows' frame indices (increasing; default 0..n−1): the window is
    in frames of the series, so a gap of lost frames is a gap in time, not a jump.
    Windows are cut at the ends of the series (the fit then extrapolates the trend,
    where a moving average would lag behind it).
    """
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 2 or half_width < 0:
        raise ValueError("raw must be (n, k) and half_width >= 0")
    n = raw.shape[0]
    t = np.arange(n, dtype=np.float64) if frames is None else np.asarray(frames, dtype=np.float64)
    if t.shape != (n,) or (n > 1 and not np.all(np.diff(t) > 0)):
        raise ValueError("frames must be n increasing frame indices")
    if half_width == 0 or n < 3:
        return raw.copy()
    t = t - t[0]                                                  # small numbers in the sums below
    zero = np.zeros((1, raw.shape[1]))
    c_x = np.vstack([zero, np.cumsum(raw, axis=0)])               # prefix sums of x, x·t, t, t²
    c_xt = np.vstack([zero, np.cumsum(raw * t[:, None], axis=0)])
    c_t = np.concatenate([[0.0], np.cumsum(t)])
    c_tt = np.concatenate([[0.0], np.cumsum(t * t)])
    lo_all = np.searchsorted(t, t - half_width, side="left")
    hi_all = np.searchsorted(t, t + half_width, side="right")
    out = np.empty_like(raw)
    for i in range(n):
        lo, hi = lo_all[i], hi_all[i]
        m = hi - lo
        st, stt = c_t[hi] - c_t[lo], c_tt[hi] - c_tt[lo]
        sx, sxt = c_x[hi] - c_x[lo], c_xt[hi] - c_xt[lo]
        tbar = st / m
        var = stt - st * tbar
        slope = (sxt - tbar * sx) / var if var > 1e-12 * max(stt, 1.0) else 0.0
        out[i] = sx / m + slope * (t[i] - tbar)
    return out


class DriftSmoother:
    """:func:`smooth_drift` on a stream: push raw shifts, get the smoothed ones once their look-ahead is in.

    ``push`` returns the smoothed drift of the oldest frames not yet returned whose
    look-ahead (frames up to ``half_width`` later) has arrived, in order; ``flush``
    returns the rest at the end of the series. The result equals :func:`smooth_drift`
    of the whole series, minus its first value if ``from_first`` (the trace then starts at 0).
    """

    def __init__(self, half_width: int = 20, from_first: bool = True) -> None:
        if half_width < 0:
            raise ValueError("half_width must be >= 0")
        self.half_width = int(half_width)
        self.from_first = bool(from_first)
        self._origin: np.ndarray | None = None
        self._raw = np.zeros((0, 2))
        self._t = np.zeros(0, dtype=np.int64)   # frame index of each kept row
        self._done = 0                          # kept rows already returned

    def push(self, raw: np.ndarray, frames: np.ndarray | None = None) -> np.ndarray:
        """Raw shifts of the next frames (``frames``: their indices, default following the last ones)."""
        raw = np.asarray(raw, dtype=np.float64).reshape(-1, 2)
        if frames is None:
            start = int(self._t[-1]) + 1 if self._t.size else 0
            frames = np.arange(start, start + raw.shape[0])
        frames = np.asarray(frames, dtype=np.int64).reshape(-1)
        if frames.size != raw.shape[0] or (self._t.size and frames.size and frames[0] <= self._t[-1]):
            raise ValueError("frames must give one increasing index per shift, after the ones pushed before")
        self._raw = np.vstack([self._raw, raw])
        self._t = np.concatenate([self._t, frames])
        if not self._t.size:
            return np.zeros((0, 2))
        ready = int(np.searchsorted(self._t, self._t[-1] - self.half_width, side="right"))  # look-ahead complete
        return self._emit(ready)

    def flush(self) -> np.ndarray:
        return self._emit(self._t.size)

    def _emit(self, upto: int) -> np.ndarray:
        if upto <= self._done:
            return np.zeros((0, 2))
        sm = smooth_drift(self._raw, self.half_width, self._t)  # kept history covers every emitted row's window
        out = sm[self._done:upto]
        if self._origin is None:
            self._origin = out[0].copy() if self.from_first else np.zeros(2)
        out = out - self._origin
        # keep the rows within half_width before the next row to emit
        nxt = self._t[upto] if upto < self._t.size else self._t[-1] + 1
        drop = int(np.searchsorted(self._t, nxt - self.half_width, side="left"))
        self._raw, self._t, self._done = self._raw[drop:], self._t[drop:], upto - drop
        return out
