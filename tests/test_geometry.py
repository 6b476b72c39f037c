"""Projections, principal angles and the feature distance against scipy and brute force."""

import math

import jax
import numpy as np
import pytest
import scipy.linalg as sla
from scipy.optimize import minimize

import linnet


def _orthonormal_rows(rng, k, d):
    return np.linalg.qr(rng.standard_normal((d, k)))[0].T


def test_projections_match_scipy_orth():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 3)) @ rng.standard_normal((3, 11))  # rank 3
    Q = sla.orth(X.T)
    np.testing.assert_allclose(linnet.projection(X), Q @ Q.T, atol=1e-12)
    np.testing.assert_allclose(linnet.complement_projection(X), np.eye(11) - Q @ Q.T, atol=1e-12)


def test_principal_cosines_match_scipy_subspace_angles():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((3, 9))
    B = rng.standard_normal((4, 9))
    ref = np.sort(np.cos(sla.subspace_angles(A.T, B.T)))[::-1]
    np.testing.assert_allclose(linnet.principal_cosines(A, B), ref, atol=1e-12)


def _brute_force_distance(B, Bs, starts=20, seed=0):
    """min over orthogonal U of ‖B − U Bs‖₂: Nelder–Mead over U = ±expm(skew), many starts (independent of
    the polar-factor formula)."""
    k = B.shape[0]
    iu = np.triu_indices(k, 1)
    rng = np.random.default_rng(seed)

    def obj(p, sign):
        S = np.zeros((k, k))
        S[iu] = p
        U = sla.expm(S - S.T)
        U[0] *= sign
        return np.linalg.norm(B - U @ Bs, 2)

    if k == 1:  # O(1) = {+1, -1}
        return min(obj(np.zeros(0), 1.0), obj(np.zeros(0), -1.0))
    best = np.inf
    for _ in range(starts):
        for sign in (1.0, -1.0):
            res = minimize(
                obj,
                rng.uniform(-np.pi, np.pi, len(iu[0])),
                args=(sign,),
                method="Nelder-Mead",
                options=dict(xatol=1e-10, fatol=1e-12, maxiter=20000),
            )
            best = min(best, res.fun)
    return best


@pytest.mark.parametrize("k", [1, 2, 3])
def test_feature_distance_against_brute_force(k):
    """The polar factor attains the minimum: brute force never does better, and gets within 1e-6 of it."""
    rng = np.random.default_rng(10 + k)
    d = 8
    B = _orthonormal_rows(rng, k, d)
    Bs = _orthonormal_rows(rng, k, d)
    ours = float(linnet.feature_distance(B, Bs))
    brute = _brute_force_distance(B, Bs)
    assert ours <= brute + 1e-9
    assert brute - ours < 1e-6
    theta_max = sla.subspace_angles(B.T, Bs.T).max()
    assert abs(ours - 2 * math.sin(theta_max / 2)) < 1e-12


def test_feature_distance_k2_exhaustive_grid():
    """k = 2: the orthogonal group is two circles; a 20 000-point grid on each cannot beat the polar factor."""
    rng = np.random.default_rng(3)
    B = _orthonormal_rows(rng, 2, 6)
    Bs = _orthonormal_rows(rng, 2, 6)
    ours = float(linnet.feature_distance(B, Bs))
    best = np.inf
    for a in np.linspace(0, 2 * np.pi, 20000, endpoint=False):
        c, s = np.cos(a), np.sin(a)
        for U in (np.array([[c, -s], [s, c]]), np.array([[c, s], [s, -c]])):
            best = min(best, np.linalg.norm(B - U @ Bs, 2))
    assert ours <= best + 1e-12
    assert best - ours < 1e-6


def test_feature_distance_is_rotation_invariant():
    rng = np.random.default_rng(4)
    B = _orthonormal_rows(rng, 3, 10)
    Bs = _orthonormal_rows(rng, 3, 10)
    U = np.asarray(linnet.random_orthogonal(jax.random.PRNGKey(0), 3))
    assert abs(float(linnet.feature_distance(U @ B, Bs)) - float(linnet.feature_distance(B, Bs))) < 1e-12
    assert float(linnet.feature_distance(U @ Bs, Bs)) < 1e-12
