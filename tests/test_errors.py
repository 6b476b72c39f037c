"""Closed-form errors against Monte Carlo estimates and direct numpy sums."""

import jax
import numpy as np
import pytest

import linnet


@pytest.fixture(scope="module")
def prob():
    rng = np.random.default_rng(0)
    d = 12
    A = rng.standard_normal((d, d))
    sigma = A @ A.T / d
    return linnet.subspace_shift(jax.random.PRNGKey(1), d=d, k=2, n=5, eps=0.4, ood=sigma)


def _mc(w, w_star, chol, n, rng):
    """Monte Carlo of E[((w − w⋆)ᵀ x)²] with x = L g, g ~ N(0, I); returns mean and its standard error."""
    x = rng.standard_normal((n, chol.shape[1])) @ chol.T
    sq = (x @ (w - w_star)) ** 2
    return sq.mean(), sq.std() / np.sqrt(n)


def test_ood_error_matches_monte_carlo(prob):
    rng = np.random.default_rng(2)
    v = rng.standard_normal(2)
    B = np.asarray(prob.B0) + 0.1 * rng.standard_normal((2, 12))
    exact = float(linnet.ood_error(prob, v, B))
    lam, Q = np.linalg.eigh(np.asarray(prob.sigma_ood))
    chol = Q * np.sqrt(np.clip(lam, 0, None))
    mean, se = _mc(B.T @ v, np.asarray(prob.w_star), chol, 400_000, rng)
    assert abs(mean - exact) < 5 * se


def test_id_error_matches_monte_carlo_on_subspace(prob):
    """Σ_id = P_S: x = P_S g, g ~ N(0, I) has second moment P_S."""
    rng = np.random.default_rng(3)
    v = rng.standard_normal(2)
    B = np.asarray(prob.B0) + 0.1 * rng.standard_normal((2, 12))
    exact = float(linnet.id_error(prob, v, B))
    PS = np.asarray(linnet.projection(prob.X))
    mean, se = _mc(B.T @ v, np.asarray(prob.w_star), PS, 400_000, rng)
    assert abs(mean - exact) < 5 * se
    # and the closed form itself is ‖P_S (w − w⋆)‖²
    assert abs(exact - np.sum((PS @ (B.T @ v - np.asarray(prob.w_star))) ** 2)) < 1e-12


def test_train_loss_is_the_unscaled_sum(prob):
    rng = np.random.default_rng(4)
    v = rng.standard_normal(2)
    B = rng.standard_normal((2, 12))
    X, y = np.asarray(prob.X), np.asarray(prob.y)
    ref = sum((X[i] @ B.T @ v - y[i]) ** 2 for i in range(X.shape[0]))
    assert abs(float(linnet.train_loss(prob, v, B)) - ref) < 1e-12 * max(1, ref)


def test_errors_vanish_at_truth_and_batch(prob):
    assert float(linnet.ood_error(prob, prob.v_star, prob.B_star)) < 1e-28
    vs = np.stack([np.asarray(prob.v_star), np.zeros(2)])
    Bs = np.stack([np.asarray(prob.B_star)] * 2)
    out = linnet.ood_error(prob, vs, Bs)
    assert out.shape == (2,)
    ref = np.asarray(prob.w_star) @ np.asarray(prob.sigma_ood) @ np.asarray(prob.w_star)
    np.testing.assert_allclose(out, [0.0, ref], atol=1e-13)
