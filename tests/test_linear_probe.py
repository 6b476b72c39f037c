"""Linear probing is a linear ODE: compare with scipy's expm, solve_ivp, and the least-squares limit."""

import jax
import numpy as np
import pytest
import scipy.linalg as sla
from scipy.integrate import solve_ivp

import linnet


@pytest.fixture(scope="module")
def setup():
    p = linnet.subspace_shift(jax.random.PRNGKey(11), d=25, k=3, n=8, eps=0.5)
    v0 = np.asarray(linnet.random_head(jax.random.PRNGKey(12), 3, 1.0))
    return p, v0


def test_lp_matches_scipy_expm(setup):
    """v(t) = v∞ + expm(−2FᵀF t)(v0 − v∞), with the affine ODE solved by an augmented-matrix expm."""
    p, v0 = setup
    F = np.asarray(p.X) @ np.asarray(p.B0).T
    c = 2 * F.T @ np.asarray(p.y)
    A = np.zeros((4, 4))
    A[:3, :3] = -2 * F.T @ F
    A[:3, 3] = c  # d/dt [v; 1] = A [v; 1]
    times = np.array([0.0, 1e-3, 0.05, 0.7, 3.0])
    traj = linnet.linear_probe(p, v0, times)
    for i, t in enumerate(times):
        ref = (sla.expm(A * t) @ np.append(v0, 1.0))[:3]
        np.testing.assert_allclose(traj.v[i], ref, rtol=1e-10, atol=1e-11)
    np.testing.assert_array_equal(traj.B, np.broadcast_to(np.asarray(p.B0), (5, 3, 25)))


def test_lp_matches_solve_ivp(setup):
    p, v0 = setup
    F = np.asarray(p.X) @ np.asarray(p.B0).T
    y = np.asarray(p.y)
    times = np.array([0.0, 0.01, 0.2, 1.5])
    sol = solve_ivp(
        lambda t, v: -2 * F.T @ (F @ v - y), (0, 1.5), v0, method="Radau", t_eval=times, rtol=1e-12, atol=1e-14
    )
    traj = linnet.linear_probe(p, v0, times)
    np.testing.assert_allclose(traj.v, sol.y.T, rtol=1e-8, atol=1e-10)


def test_lp_limit_is_least_squares_plus_null_component():
    """Rank-deficient F (k = 3 features, but B0 sees only a 2-dim slice of S): v∞ = P_null v0 + F⁺ y."""
    rng = np.random.default_rng(0)
    d, n, k = 12, 5, 3
    X = rng.standard_normal((n, d))
    B0 = np.linalg.qr(rng.standard_normal((d, k)))[0].T
    null_X = sla.null_space(X)
    B0[2] = null_X[:, 0]  # a feature orthogonal to the data: F has rank 2
    Bs = np.linalg.qr(rng.standard_normal((d, k)))[0].T
    p = linnet.Problem(X, B0, Bs, rng.standard_normal(k))
    F = X @ B0.T
    v0 = rng.standard_normal(k)
    N = sla.null_space(F)
    ref = N @ N.T @ v0 + np.linalg.pinv(F) @ np.asarray(p.y)
    traj = linnet.linear_probe(p, v0, [0.0, np.inf])
    np.testing.assert_allclose(traj.v[-1], ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(traj.v[0], v0, rtol=0, atol=1e-15)
