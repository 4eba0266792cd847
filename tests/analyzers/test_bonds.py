"""NMF bond maps and the SRO parameter, against the glass simulator's ground truth."""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest

from emlive.analyzers import bonds
from emlive.analyzers.bonds import fit_bonds, pair_fractions, sro_alpha
from emlive.analyzers.form_factors import electron_form_factor
from emlive.simulators import glass

QMIN, QMAX = 0.1, 8.1
R = np.arange(2.1, 4.0 + 1e-9, 0.01)


def test_doctests():
    assert doctest.testmod(bonds, optionflags=doctest.ELLIPSIS).failed == 0


def test_sro_alpha_inverts_the_simulators_pair_fractions():
    c = np.linspace(0.2, 0.8, 13)[:, None]
    a = np.linspace(-0.4, 0.4, 9)[None, :]
    xzz, xzx, xxx = glass.pair_fractions(np.broadcast_to(c, (13, 9)), np.broadcast_to(a, (13, 9)))
    np.testing.assert_allclose(sro_alpha(xzz, xzx, xxx), np.broadcast_to(a, (13, 9)), atol=1e-12)


@pytest.fixture(scope="module")
def glass_curves():
    """G(r) of 600 glass positions with random composition and SRO, plus noise (the laminate's ranges)."""
    rng = np.random.default_rng(0)
    n = 600
    c = rng.uniform(0.25, 0.65, n)
    a = rng.uniform(-0.2, 0.2, n)
    q = np.arange(0.0, 12.0, 0.02)
    _, sq = glass.glass_curves(c, a, q)
    g = glass.reduced_pdf(q, sq, R, QMIN, QMAX)
    g += rng.normal(0, 0.02 * np.abs(g).max(), g.shape)
    return c, a, g


def _cos(u, v):
    u, v = u - u.mean(), v - v.mean()
    return float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))


def test_components_match_the_partial_pdfs(glass_curves):
    """From nndsvda's deterministic start, the seed's protocol, the components are the partials.

    Other starts reach the same error with other components (see the stability
    test below): this is what this start finds, not what the data impose.
    """
    c, a, g = glass_curves
    fit = fit_bonds(g, R, random_state=0)
    truth = glass.partial_pdfs(float(c.mean()), 0.0, R, QMIN, QMAX)
    pairs = ("XX", "ZrX", "ZrZr")
    sim = np.array([[_cos(h, truth[p]) for p in pairs] for h in fit.components])
    best = max(itertools.permutations(range(4), 3), key=lambda pr: sum(sim[pr[i], i] for i in range(3)))
    assert min(sim[best[i], i] for i in range(3)) >= 0.9, sim
    # the roles the module assigns are those the matching finds
    assert tuple(fit.pair_components) == best
    assert fit.background not in best


def test_sro_sign_from_bond_maps(glass_curves):
    c, a, g = glass_curves
    fit = fit_bonds(g, R, random_state=0)
    q = np.linspace(0.5, QMAX, 64)
    f_zr = electron_form_factor("Zr", q).mean()
    f_x = sum(w * electron_form_factor(el, q) for el, w in glass.X_MIXTURE.items()).mean()
    est = pair_fractions(fit, R, (f_x * f_x, f_zr * f_x, f_zr * f_zr))
    np.testing.assert_allclose(est["xx"] + est["zrx"] + est["zrzr"], 1.0)
    strong = np.abs(a) > 0.05
    agree = np.mean(np.sign(est["alpha"][strong]) == np.sign(a[strong]))
    assert agree >= 0.8
    # the X–X bond fraction follows the X content
    assert np.corrcoef(est["xx"], 1 - c)[0, 1] > 0.8


def test_rows_with_nan_are_left_out_and_bad_input_refused(glass_curves):
    _, _, g = glass_curves
    g = g[:50].copy()
    g[3, 5] = np.nan
    fit = fit_bonds(g, R)
    assert np.isnan(fit.weights[3]).all() and np.isfinite(fit.weights[np.arange(50) != 3]).all()
    with pytest.raises(ValueError, match="match r"):
        fit_bonds(g[:, :10], R)
    with pytest.raises(ValueError, match=">= 4"):
        fit_bonds(g, R, n_components=3)


def test_projection_reproduces_the_weights_of_the_factorised_curves(glass_curves):
    from emlive.analyzers.bonds import project_bonds

    _, _, g = glass_curves
    fit = fit_bonds(g, R, random_state=0)
    again = project_bonds(fit, g)
    model = fit.weights @ fit.components - fit.shift
    resid_fit = np.linalg.norm(g - model)
    resid_proj = np.linalg.norm(g - (again.weights @ fit.components - fit.shift))
    assert resid_proj <= resid_fit * 1.1  # the W step alone (200 iterations) nearly reaches the joint optimum
    assert np.all(again.weights >= 0)


def _separable_components() -> np.ndarray:
    """Four non-negative curves, each zero somewhere the others are not: three shifted partials and a ramp."""
    parts = glass.partial_pdfs(0.5, 0.0, R, QMIN, QMAX)
    h = np.array([parts[p] for p in ("XX", "ZrX", "ZrZr")])
    h = h - h.min(axis=1, keepdims=True)
    return np.vstack([h, np.linspace(1.0, 0.0, R.size) * h.max()])


def test_stability_is_high_where_the_data_determine_the_components():
    """Positions close to each pure component (a sparse Dirichlet mixture): NMF is unique and restarts agree."""
    from emlive.analyzers.bonds import component_stability

    rng = np.random.default_rng(1)
    h = _separable_components()
    w = rng.dirichlet([0.1] * 4, 300)
    x = w @ h + rng.normal(0, 0.003, (300, R.size))
    fit = fit_bonds(x, R, shift=0.0, max_iter=20000, tol=1e-6)
    assert min(max(_cos(c, t) for t in h) for c in fit.components) >= 0.95  # the factorisation finds the truth ...
    stability, counted = component_stability(fit, x, restarts=3)
    assert counted == 3
    assert stability.min() >= 0.95, stability  # ... and says so


def test_stability_flags_glass_that_mixes_every_pair_everywhere(glass_curves):
    """The glass positions' pair fractions never approach zero, so the data do not pin the components down."""
    from emlive.analyzers.bonds import component_stability

    c, a, g = glass_curves
    fractions = np.stack(glass.pair_fractions(c, a))
    assert fractions.min() > 0.05  # every position mixes all three pairs: no position anchors a component
    fit = fit_bonds(g, R, random_state=0)
    stability, counted = component_stability(fit, g, restarts=4)
    assert counted >= 3
    assert stability[list(fit.pair_components)].min() < 0.9, stability
    with pytest.raises(ValueError, match="restarts"):
        component_stability(fit, g, restarts=0)
    with pytest.raises(ValueError, match="like the components"):
        component_stability(fit, g[:, :10])
