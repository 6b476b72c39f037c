"""Theorem 3.1's constants: both readings of ε, the exact tight constant c*(1) = 1/2 at t = ∞ against the
simulator and the search, and the search by k through `linnet.testing`, replayed by scipy Radau."""

import math

import jax
import numpy as np
import pytest

import linnet
from linnet import theory as th
from linnet.testing import statements

pytestmark = pytest.mark.slow  # searches replayed by scipy Radau (about 40 s)


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
    """k = 1, ε = 0, t = ∞: `linnet.testing.search` of the relative statement √L_ood(∞)/RHS₀ − 1 (64 random
    instances, 2 starts × 10 Adam steps through `jax.grad` of `fine_tune`) reaches a ratio ≥ ½ (it cannot go below
    the exact infimum c*(1) = ½; 1e-6 for the solver's tolerance); its best instance replayed by scipy Radau on the
    full state gives the same relative slack to 1e-6."""
    from linnet import testing

    rep = testing.search(statements.theorem_3_1_relative_limit, key=jax.random.PRNGKey(0), shapes=[(6, 1, 3)],
                         eps=(0.0, 0.0), random=64, starts=2, steps=10, progress=False, shrink=False)  # fmt: skip
    assert rep.min_slack >= th.C_STAR_K1 - 1 - 1e-6
    assert testing.replay(statements.theorem_3_1_relative_limit, rep.worst) == pytest.approx(rep.min_slack, abs=1e-6)


def test_search_by_k_for_k2_with_eps_keeps_orthonormal_rows_and_radau_confirms_its_values():
    """k = 2, ε ∈ [0, 0.3] (`statements.search_by_k`, a small budget): the reported worst instance has B0, B⋆ with
    orthonormal rows and ε in range (checked), and the reference (scipy Radau, full state) reproduces its relative
    slack to 1e-6; the ε = 0 search's c*(2) estimate is confirmed the same way."""
    from linnet import testing

    out = statements.search_by_k(jax.random.PRNGKey(1), (2,), random=32, starts=1, steps=4, progress=False,
                                 names=("theorem_3_1", "c_star_t_inf"))  # fmt: skip
    for name, row in out[2].items():
        inst = testing.Instance.from_json(row["worst"])
        p = inst.problem
        np.testing.assert_allclose(np.asarray(p.B0 @ p.B0.T), np.eye(2), atol=1e-12)
        np.testing.assert_allclose(np.asarray(p.B_star @ p.B_star.T), np.eye(2), atol=1e-12)
        assert 0.0 <= float(th.feature_error(p)) <= (0.3 + 1e-9 if name == "theorem_3_1" else 1e-9)
        statement = statements.BY_K[name][0]
        slack = float(statement(p, inst.v0))
        # the search evaluated it compiled with the problem traced (the implicit solver), this call eagerly (the
        # solver chosen from the data): two solves within rtol 1e-8, so 1e-6 (the search's tie tolerance)
        assert slack == pytest.approx(row["worst_slack"], abs=1e-6)
        assert testing.replay(statement, inst) == pytest.approx(slack, abs=1e-6)
    assert out[2]["c_star_t_inf"]["c_star_replayed"] == pytest.approx(out[2]["c_star_t_inf"]["c_star_estimate"],
                                                                       abs=1e-6)  # fmt: skip


def _cancelling_instance(V, a2, rel, seed=0):
    """k = 1, ε > 0, chosen so that FT's limit is exact: B0 differs from B⋆ on S⊥ by just what cancels the head's
    error there (P_S⊥ b0 = ‖v⋆‖ P_S⊥ b⋆ / v∞, found by scipy's brentq on fact 5's v∞), so √L_ood(∞) = 0 while
    RHS₀ > 0. v0 = ‖v⋆‖ (1 + rel)."""
    from scipy.optimize import brentq

    X = np.random.default_rng(seed).standard_normal((3, 6))
    vt = np.linalg.svd(X)[2]
    al, be = math.sqrt(a2), math.sqrt(1 - a2)
    v0 = V * (1 + rel)

    def v_inf(bp):  # fact 5 with b0 = √(1 − bp²) vt[0] + bp vt[3]
        c = v0**2 - (1 - bp**2)
        return math.sqrt((c + math.sqrt(c * c + 4 * (V * al) ** 2)) / 2)

    bp = brentq(lambda bp: bp - V * be / v_inf(bp), 1e-9, 1 - 1e-12)
    b0 = math.sqrt(1 - bp**2) * vt[0] + bp * vt[3]
    return linnet.Problem(X, b0[None], (al * vt[0] + be * vt[3])[None], np.array([V])), np.array([v0])


@pytest.mark.parametrize(("V", "rel", "low"), [(10.0, 4.64e-3, 0.74), (100.0, 4.64e-5, 0.96)])
def test_a_constant_eps_coefficient_is_not_enough(V, rel, low):
    """On the cancelling instances (√L_ood(FT(∞)) = 0 by construction, simulated below 1e-6), even c = ½ needs
    λ ≥ ½ RHS₀/ε, and that grows like ‖w⋆‖: measured λ/(1 + ‖w⋆‖) = 0.760 at ‖v⋆‖ = 10 and 0.970 at 100
    (‖P_S b⋆‖² = 0.999). So the ε term must scale with ‖w⋆‖; the corrected form's (1 + ‖w⋆‖) ε is enough here."""
    p, v0 = _cancelling_instance(V, 0.999, rel)
    tr = linnet.fine_tune(p, v0, [np.inf], rtol=1e-10, atol=1e-12)
    assert math.sqrt(float(tr.ood_error[-1])) < 1e-6
    lam_needed = 0.5 * float(th.theorem_3_1_rhs0(p, v0)) / float(th.feature_error(p))
    assert low * (1 + V) < lam_needed < 1 + V
    assert float(th.theorem_3_1_corrected(p, v0)) < 0 <= math.sqrt(float(tr.ood_error[-1]))


def test_corrected_inequality_holds_on_the_pinned_counterexample_and_the_c_star_regime():
    """The printed statement's pinned counterexample, and the k = 1 regime that approaches c* = ½ (‖v⋆‖ = 100,
    ‖P_S b⋆‖² = 0.999, δ = v⋆² − v0² = 0.01), satisfy the corrected form at every saved time. Measured
    √L_ood / bound: 1.678 on the first; 1.0200 on the second, which is 2 · `theorem_3_1_ratio_k1` (= 1.01999836):
    at ε = 0 the corrected bound is RHS₀/2. That instance needs rtol = 1e-12: its error, 1.6e-6, is a difference of
    predictors of size 100, and rtol = 1e-8 stops at t = 0 (the state is within tolerance of its limit there)."""
    from linnet import stress

    p, v0 = stress.theorem_3_1_counterexample()
    tr = linnet.fine_tune(p, v0, list(stress.TIMES))
    assert np.min(np.sqrt(np.asarray(tr.ood_error))) >= 1.6 * float(th.theorem_3_1_corrected(p, v0))
    p, v0 = _k1_instance(100.0, 0.999, math.sqrt(100.0**2 - 1e-2))
    tr = linnet.fine_tune(p, v0, [0.0, 1.0, np.inf], rtol=1e-12, atol=1e-14)
    ratio = np.min(np.sqrt(np.asarray(tr.ood_error))) / float(th.theorem_3_1_corrected(p, v0))
    # the tolerance bounds the predictor's error by ~rtol · ‖w⋆‖ = 1e-10 absolute, 6e-5 of this error (1.1e-11, i.e.
    # 7e-6 relative, measured)
    assert ratio == pytest.approx(2 * float(th.theorem_3_1_ratio_k1(100.0, 0.999, float(v0[0]))), rel=6e-5)
    assert ratio > 1.015
