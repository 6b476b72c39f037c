"""linnet.theory quantities against independent references (scipy principal angles, Monte Carlo, brute force)."""

import math

import jax
import numpy as np
import pytest
import scipy.linalg as sla

import linnet
from linnet import theory as th


@pytest.fixture(scope="module")
def prob():
    return linnet.subspace_shift(jax.random.PRNGKey(0), d=40, k=3, n=12, eps=0.05)


def test_head_alignment_forms():
    v_star = np.array([1.0, 2.0])  # ‖v⋆‖² = 5
    v0 = np.array([1.0, 0.0])  # v0ᵀv⋆ = 1 < 5
    assert float(th.head_alignment_sq(v0, v_star)) == 1.0 - 25.0
    assert math.isnan(float(th.head_alignment_error(v0, v_star, form="printed")))
    assert float(th.head_alignment_error(v0, v_star)) == pytest.approx(math.sqrt(24.0), rel=1e-15)
    v0 = np.array([3.0, 2.0])  # v0ᵀv⋆ = 7
    assert float(th.head_alignment_error(v0, v_star, form="printed")) == pytest.approx(math.sqrt(49 - 25), rel=1e-15)
    with pytest.raises(ValueError, match="`form`"):
        th.head_alignment_error(v0, v_star, form="signed")


def test_cos_theta_k_matches_scipy(prob):
    """cos θ_k(R, S⊥) and cos θ_k(R, S): the smallest cosines from scipy.linalg.subspace_angles."""
    B0 = np.asarray(prob.B0)
    N = sla.null_space(np.asarray(prob.X))
    ref_perp = np.cos(sla.subspace_angles(B0.T, N)).min()
    ref_id = np.cos(sla.subspace_angles(B0.T, np.asarray(prob.X).T)).min()
    assert abs(float(th.cos_theta_k(prob)) - ref_perp) < 1e-12
    assert abs(float(th.cos_theta_k(prob, "id")) - ref_id) < 1e-12
    # and the generic principal_cosines agrees: k-th largest singular value
    assert abs(float(linnet.principal_cosines(B0, N.T)[prob.k - 1]) - ref_perp) < 1e-12


def test_cos_theta_k_zero_when_R_meets_S():
    """R ⊂ S (B0 inside the data span): cos θ_k(R, S⊥) = 0 and cos θ_k(R, S) = 1."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 15))
    B0 = np.linalg.qr(X.T[:, :2])[0].T  # rows in rowspace(X)
    p = linnet.Problem(X, B0, B0, np.ones(2))
    assert float(th.cos_theta_k(p)) < 1e-7
    assert abs(float(th.cos_theta_k(p, "id")) - 1) < 1e-12
    a = th.check_assumptions(p)
    assert not a.holds["theorem_3_1"] and "cos θ_k(R, S⊥) > 0" in a.failing("theorem_3_1")


def test_bound_formula_by_hand(prob):
    """The Theorem 3.1 bound recomputed from its printed formula with numpy/scipy pieces."""
    v0 = np.array([0.3, -1.0, 2.0])
    vs, w = np.asarray(prob.v_star), np.asarray(prob.w_star)
    phi = math.sqrt(abs((v0 @ vs) ** 2 - (vs @ vs) ** 2))
    wn = np.linalg.norm(w)
    cos = np.cos(sla.subspace_angles(np.asarray(prob.B0).T, sla.null_space(np.asarray(prob.X)))).min()
    ref = cos / math.sqrt(3) * min(phi, phi**2 / wn) / (1 + wn) ** 2 - 0.05
    assert abs(float(th.ft_ood_lower_bound(prob, v0)) - ref) < 1e-12
    # the camera-ready form scales by √σ_min(Σ): with Σ = 4 I, by 2
    p4 = prob.replace(sigma_ood=4 * np.eye(40))
    assert abs(float(th.ft_ood_lower_bound(p4, v0, camera_ready=True)) - 2 * ref) < 1e-12


def test_prob_head_alignment_below_matches_monte_carlo():
    """P(φ² < δ) for v0 ~ N(0, σ²I): closed form vs 200 000 sampled heads (5 standard errors)."""
    v_star = np.array([0.8, -0.5, 0.3])
    keys = jax.random.split(jax.random.PRNGKey(1), 200_000)
    heads = jax.vmap(lambda kk: linnet.random_head(kk, 3, 1.3))(keys)
    phi2 = np.abs((np.asarray(heads) @ v_star) ** 2 - (v_star @ v_star) ** 2)
    for delta in (0.01, 0.05, 0.2):
        p = th.prob_head_alignment_below(delta, v_star, 1.3)
        mc = np.mean(phi2 < delta)
        assert abs(mc - p) < 5 * math.sqrt(p * (1 - p) / phi2.size) + 1e-12
    assert th.prob_head_alignment_below(0.01, v_star, 0.0) == 0.0  # zero head: φ² = ‖v⋆‖⁴ ≈ 0.96 > 0.01


def test_lp_limit_is_least_squares(prob):
    F = np.asarray(prob.X) @ np.asarray(prob.B0).T
    ref = np.linalg.lstsq(F, np.asarray(prob.y), rcond=None)[0]  # F has full column rank: no null component
    np.testing.assert_allclose(th.lp_limit(prob, np.ones(3)), ref, rtol=1e-10)
    e = np.asarray(prob.B0).T @ ref - np.asarray(prob.w_star)
    assert abs(float(th.lp_ood_error(prob, np.ones(3))) - e @ e) < 1e-12 * max(1, e @ e)


@pytest.mark.parametrize("v0", [2.0, -1.5, 0.0, 0.2])
def test_ft_limit_k1_matches_simulation(v0):
    """The closed form of fact 5 against fine_tune to t = ∞ (and the sign read from the flow when c ≤ 0)."""
    p = linnet.subspace_shift(jax.random.PRNGKey(3), d=30, k=1, n=10, eps=0.5)
    v_inf, B_inf = th.ft_limit_k1(p, np.array([v0]))
    tr = linnet.fine_tune(p, np.array([v0]), [np.inf])
    np.testing.assert_allclose(v_inf, tr.v[-1], rtol=1e-7)
    np.testing.assert_allclose(B_inf, tr.B[-1], rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="k = 1"):
        th.ft_limit_k1(linnet.subspace_shift(jax.random.PRNGKey(3), d=30, k=2, n=10, eps=0.5), np.ones(2))


def test_check_assumptions_reports_each_hypothesis():
    p0 = linnet.subspace_shift(jax.random.PRNGKey(4), d=30, k=2, n=10, eps=0.0)
    a = th.check_assumptions(p0, np.zeros(2))
    assert a.holds["proposition_3_2"] and a.holds["theorem_3_1"]
    p = linnet.subspace_shift(jax.random.PRNGKey(4), d=30, k=2, n=10, eps=0.2, ood="orthogonal")
    a = th.check_assumptions(p)
    assert not a.holds["proposition_3_2"] and a.failing("proposition_3_2") == ["B0 = U B* (ε = 0)"]
    assert "Σ_ood = I (else use camera_ready=True)" in a.failing("theorem_3_1")
    # w⋆ inside rowspace(B0): Proposition 3.1's hypothesis fails
    pw = linnet.Problem(p.X, p.B0, p.B0, p.v_star)
    assert th.check_assumptions(pw).failing("proposition_3_1") == ["w* not in rowspace(B0)"]
    assert "NOT satisfied" in str(th.check_assumptions(pw))
