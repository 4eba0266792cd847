"""Pearson similarity map: against scipy's pearsonr row by row."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from emlive.analyzers.similarity import pearson_map


def test_matches_scipy_pearsonr_row_by_row():
    rng = np.random.default_rng(3)
    base = np.sin(np.linspace(0, 9, 200))
    curves = base + rng.normal(0, rng.uniform(0.05, 2, (300, 1)), (300, 200))
    window = slice(20, 180)
    rho = pearson_map(curves, 17, window)
    expected = [stats.pearsonr(row[window], curves[17, window]).statistic for row in curves]
    np.testing.assert_allclose(rho, expected, rtol=1e-12, atol=1e-12)
    assert rho[17] == pytest.approx(1.0)


def test_unmeasured_rows_are_nan_and_a_reference_curve_works():
    curves = np.vstack([np.arange(5.0), np.full(5, np.nan), -np.arange(5.0), np.ones(5)])
    rho = pearson_map(curves, np.arange(5.0) ** 2)
    assert np.isnan(rho[1]) and np.isnan(rho[3])  # not measured; no variance
    assert rho[0] == pytest.approx(stats.pearsonr(np.arange(5.0), np.arange(5.0) ** 2).statistic)
    assert rho[2] == pytest.approx(-rho[0])


def test_bad_input():
    with pytest.raises(ValueError):
        pearson_map(np.zeros(5), 0)
    with pytest.raises(IndexError):
        pearson_map(np.zeros((3, 5)), 7)
    with pytest.raises(ValueError, match="variance"):
        pearson_map(np.ones((3, 5)), 0)
