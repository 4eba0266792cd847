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

Convention: ``drift[t] = (dy, dx)`` means the content at x in frame 0 is at x + d in
frame t (the simulator's convention); :func:`undo_shift` moves it back.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["DriftTracker", "bright_feature_window", "undo_shift"]


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
    """

    def __init__(self, window: tuple[slice, slice] | None = None, upsample: int = 50,
                 rereference_every: int = 200) -> None:
        if upsample < 1 or rereference_every < 0:
            raise ValueError("upsample must be >= 1 and rereference_every >= 0")
        self.window = window
        self.upsample = int(upsample)
        self.rereference_every = int(rereference_every)
        self.n_frames = 0
        self._ref: np.ndarray | None = None
        self._ref_offset = np.zeros(2)

    def update(self, frames: np.ndarray) -> np.ndarray:
        """(n, 2) drift of each frame of ``frames`` (n, ny, nx) relative to the first frame of the series."""
        from skimage.registration import phase_cross_correlation

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
                shift, _, _ = phase_cross_correlation(self._ref, np.asarray(frame[self.window], dtype=np.float64),
                                                      upsample_factor=self.upsample, normalization=None)
                # shift registers the moving window onto the reference: the content moved by -shift
                out[k] = self._ref_offset - shift
                if self.rereference_every and (self.n_frames % self.rereference_every == 0):
                    self._rereference(frame, out[k])
            self.n_frames += 1
        return out

    def _rereference(self, frame: np.ndarray, drift: np.ndarray) -> None:
        """This frame's window becomes the reference; later shifts are chained onto its drift."""
        self._ref = np.asarray(frame[self.window], dtype=np.float64)
        self._ref_offset = drift.copy()
