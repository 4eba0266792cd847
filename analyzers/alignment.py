"""Tilt-series alignment from the HAADF maps, applied to every signal recorded at the same probe positions.

A tilt series for tomography must have its rotation axis fixed in the images. Between
tilts the stage moves the specimen; the HAADF maps, which are bright and low-noise,
measure it (seed 001, Methods: alignment from HAADF, applied to the EDS maps):

* **across the axis** (x, the axis is along y): the projection of a rigid object
  rotated about an axis keeps its centre of mass on that axis when the axis passes
  through the object's centre of mass, so each map is shifted to put its x centre of
  mass at the image centre (the reconstruction then rotates about the particle's
  centre of mass);
* **along the axis** (y): the sum over x of a projection about y is the object's mass
  along y, the same at every tilt, so consecutive y profiles are registered by
  upsampled cross-correlation (scikit-image) and chained from the middle tilt outwards.

Shifts are (dy, dx) in probe positions; :func:`apply_shifts` moves maps by them
(linear interpolation, zero outside: the signal is 0 off the specimen).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["tilt_shifts", "apply_shifts", "com_x", "profile_shift"]


def com_x(image: np.ndarray) -> float:
    """x centre of mass (pixels) of a non-negative map; NaN for an empty one."""
    img = np.clip(np.asarray(image, dtype=np.float64), 0, None)
    total = img.sum()
    if not total > 0:
        return float("nan")
    return float((img.sum(axis=0) * np.arange(img.shape[1])).sum() / total)


def profile_shift(reference: np.ndarray, moving: np.ndarray, upsample: int = 100) -> float:
    """Shift s (pixels) with moving(y) ≈ reference(y − s): upsampled cross-correlation (scikit-image)."""
    from skimage.registration import phase_cross_correlation

    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(moving, dtype=np.float64)
    shift, _, _ = phase_cross_correlation(a, b, upsample_factor=upsample, normalization=None)
    return float(-shift[0])


def tilt_shifts(haadf: np.ndarray) -> np.ndarray:
    """(n_tilt, 2) shifts (dy, dx) that align a HAADF tilt series (n_tilt, ny, nx), tilt axis along y.

    Applying ``apply_shifts(maps, -shifts)`` brings every tilt onto the common frame.
    Tilts with an empty map get NaN.
    """
    maps = np.asarray(haadf, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"haadf must be (n_tilt, ny, nx), got shape {maps.shape}")
    n, ny, nx = maps.shape
    out = np.full((n, 2), np.nan)
    centre_x = (nx - 1) / 2
    for t in range(n):
        out[t, 1] = com_x(maps[t]) - centre_x
    profiles = np.clip(maps, 0, None).sum(axis=2)
    mid = n // 2
    out[mid, 0] = 0.0
    for order in (range(mid + 1, n), range(mid - 1, -1, -1)):
        prev = mid
        for t in order:
            out[t, 0] = out[prev, 0] + profile_shift(profiles[prev], profiles[t])
            prev = t
    # reference the y shifts to their mean, so no tilt is privileged
    out[:, 0] -= np.nanmean(out[:, 0])
    return out


def apply_shifts(maps: np.ndarray, shifts: np.ndarray, order: int = 1) -> np.ndarray:
    """Each map (n_tilt, ny, nx) moved by its (dy, dx); zero outside the field of view."""
    maps = np.asarray(maps, dtype=np.float64)
    shifts = np.asarray(shifts, dtype=np.float64)
    if maps.ndim != 3 or shifts.shape != (maps.shape[0], 2):
        raise ValueError(f"maps (n, ny, nx) and shifts (n, 2) expected, got {maps.shape} and {shifts.shape}")
    out = np.empty_like(maps)
    for t in range(maps.shape[0]):
        s = shifts[t] if np.isfinite(shifts[t]).all() else (0.0, 0.0)
        out[t] = ndimage.shift(maps[t], s, order=order, mode="constant", cval=0.0)
    return out
