"""Theorem 3.1's constants: both readings of ε, the exact tight constant c*(1) = 1/2 at t = ∞ against the
simulator and the search, and the gradient search for any k through the simulator, replayed by scipy Radau."""

import math

import jax
import numpy as np
import pytest

import linnet
from linnet import _search
from linnet import theory as th


def _k1_instance(V, a2, v0, seed=0):
    """k = 1, d = 6, n = 3, ε = 0: b = B0 = B⋆ with ‖P_S b‖² = a2 (built from X's right singular vectors)."""
    X = np.random.default_rng(seed).standard_normal((3, 6))
    vt = np.linalg.svd(X)[2]
    b = math.sqrt(a2) * vt[0] + math.sqrt(1 - a2) * vt[3]
    return linnet.Problem(X, b[None], b[None], np.array([V])), np.array([v0])


def test_eps_readings_differ_by_the_square():
    """The theorem's reading subtracts ε², Section 3.1's ε (ε = 0.3 here, from the generator's exact ε)."""
    p = linnet.subspace_shift(jax.random.PRNGKey(0), d=30, k=2, n=10, eps=0.3)
    v0 = np.array([0.3, -0.2])
    a = float(th.ft_ood_lower_bound(p, v0))
    b = float(th.ft_ood_lower_bound(p, v0, eps_form="theorem"))
    assert b - a == pytest.approx(0.3 - 0.09, rel=1e-10)
    with pytest.raises(ValueError, match="eps_form"):
        th.ft_ood_lower_bound(p, v0, eps_form="squared")


@pytest.mark.parametrize(("V", "a2", "v0"), [(3.0, 0.5, 3.03), (10.0, 0.9, 9.9), (2.0, 0.2, 2.5)])
def test_k1_ratio_closed_form_matches_the_simulated_limit(V, a2, v0):
    """`theorem_3_1_ratio_k1` against √L_ood(fine_tune(t = ∞)) / RHS₀ from the simulator, at rtol 1e-10: the
    limit is resolved to ~1e-9 relative, so 1e-6 relative is asserted."""
    p, h = _k1_instance(V, a2, v0)
    tr = linnet.fine_tune(p, h, [np.inf], rtol=1e-10, atol=1e-12)
    simulated = math.sqrt(float(tr.ood_error[-1])) / float(th.theorem_3_1_rhs0(p, h))
    assert float(th.theorem_3_1_ratio_k1(V, a2, v0)) == pytest.approx(simulated, rel=1e-6)


def test_k1_tight_constant_is_one_half_approached_in_its_regime():
    """Small δ: the ratio equals the expansion (1 + V)²/(2 (V² + α²)) (to 1e-6 at δ = 1e-8), which decreases to
    1/2 as V → ∞ and α² → 1; on a random grid of (V, α², v0) the ratio is never below 1/2."""
    for V in (10.0, 100.0, 1000.0):
        a2 = 1 - 1e-6
        r = float(th.theorem_3_1_ratio_k1(V, a2, math.sqrt(V**2 - 1e-8)))
        assert r == pytest.approx((1 + V) ** 2 / (2 * (V**2 + a2)), rel=1e-6)
        assert th.C_STAR_K1 < r < th.C_STAR_K1 * (1 + 2.5 / V)
    rng = np.random.default_rng(1)
    V = np.exp(rng.uniform(-3, 7, 200_000))
    a2 = rng.uniform(0, 1, V.size)
    v0 = V * np.exp(rng.uniform(-0.5, 0.5, V.size))
    keep = v0**2 > a2  # the closed form's hypothesis c > 0
    assert float(np.min(np.asarray(th.theorem_3_1_ratio_k1(V[keep], a2[keep], v0[keep])))) > th.C_STAR_K1


def test_search_through_the_simulator_never_beats_c_star_and_radau_agrees():
    """k = 1, ε = 0, t = ∞: Adam through `simulate` (4 starts, 15 steps) reaches a ratio ≥ 1/2 (it cannot go
    below the exact infimum; 1e-6 for the solver's tolerance); the best instance replayed by scipy Radau on the
    full state gives the same relative slack to 1e-6."""
    found = _search.gradient_search_k(jax.random.PRNGKey(0), 1, starts=4, steps=15, eps_zero=True, times=(np.inf,))
    best = found[0]["relative_slack"]
    assert best >= th.C_STAR_K1 - 1 - 1e-6
    rep = _search.replay_radau(found[0], times=(np.inf,))
    assert rep["relative_slack"] == pytest.approx(best, abs=1e-6)


def test_search_for_k2_with_eps_reports_instances_radau_confirms():
    """k = 2, ε > 0 (B0 = rows of expm(Ω⋆) expm(Ω_Δ): orthonormal rows, checked): the search improves on its
    starting value, and Radau on the full state reproduces the reported relative slack to 1e-6 at every time."""
    found = _search.gradient_search_k(jax.random.PRNGKey(1), 2, starts=3, steps=8)
    f = found[0]
    assert f["history"][-1] < f["history"][0]
    p, _ = _search.unpack({a: np.asarray(b) for a, b in f["theta"].items()}, 2)
    np.testing.assert_allclose(np.asarray(p.B0 @ p.B0.T), np.eye(2), atol=1e-12)
    assert float(th.feature_error(p)) > 0
    rep = _search.replay_radau(f)
    assert rep["relative_slack"] == pytest.approx(f["relative_slack"], abs=1e-6)
