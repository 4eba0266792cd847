"""Pearson similarity of every scan position's curve to one chosen position (seed 000, Fig. 8).

A query, not a live result: the user picks a reference pixel (in the viewer, a
modifier-click) and wants the whole map at once. Each curve is z-scored over the
chosen window once, so the answer for a new reference is a single matrix-vector
product over the stack (research note a4).
"""

from __future__ import annotations

import numpy as np

__all__ = ["pearson_map", "zscore_rows"]


def zscore_rows(curves: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm (float64); rows with NaN or no variance become NaN."""
    x = np.asarray(curves, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"curves must be (n, npoints), got shape {x.shape}")
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = x / norm
    z[~np.isfinite(norm[:, 0]) | (norm[:, 0] == 0)] = np.nan
    return z


def pearson_map(curves: np.ndarray, reference: int | np.ndarray, window: np.ndarray | slice | None = None
                ) -> np.ndarray:
    """Pearson correlation (n,) of each row of ``curves`` (n, npoints) with the reference row or curve.

    Parameters
    ----------
    curves : (n, npoints) array
        E.g. every position's G(r); rows holding NaN (not yet measured) give NaN.
    reference : int or (npoints,) array
        Row index of the reference position, or a reference curve.
    window : bool mask or slice over npoints, optional
        The part of the curve compared (e.g. 2–8 Å of G(r)); all of it by default.

    Examples
    --------
    >>> g = np.array([[0., 1., 2.], [0., 2., 4.], [2., 1., 0.]])
    >>> pearson_map(g, 0).round(6).tolist()
    [1.0, 1.0, -1.0]
    """
    x = np.asarray(curves)
    if x.ndim != 2:
        raise ValueError(f"curves must be (n, npoints), got shape {x.shape}")
    if window is not None:
        x = x[:, window]
    if np.ndim(reference) == 0:
        index = int(reference)
        if not -x.shape[0] <= index < x.shape[0]:
            raise IndexError(f"reference {index} outside 0..{x.shape[0] - 1}")
        ref = x[index]
    else:
        ref = np.asarray(reference, dtype=np.float64)
        if window is not None and ref.shape[0] == np.asarray(curves).shape[1]:
            ref = ref[window]
        if ref.shape != (x.shape[1],):
            raise ValueError(f"reference curve must have {x.shape[1]} points, got shape {ref.shape}")
    zref = zscore_rows(ref[None, :])[0]
    if not np.isfinite(zref).all():
        raise ValueError("the reference curve is not finite or has no variance")
    return zscore_rows(x) @ zref
