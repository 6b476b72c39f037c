"""The arrowhead Newton solver against a dense numpy solve, and the default solver against diffrax's dense one."""

import diffrax as dfx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

import linnet
from linnet import _flow
from linnet._structured import ArrowheadSolver


@pytest.mark.parametrize(
    ("k", "n", "gamma", "params"),
    [
        (1, 5, 0.1, None),
        (3, 8, 1e-3, None),
        (4, 10, 10.0, None),
        (12, 14, 0.5, None),  # k > _UNROLLED_MAX_K: the LAPACK branch
        (3, 8, 2.0, (2.0, 0.3, 0.1, 0.5)),  # two learning rates and L2-SP, in the scaled coordinates
    ],
)
def test_arrowhead_solve_matches_dense_numpy(k, n, gamma, params):
    """(I − γ J_f) x = b with J_f the flow's Jacobian at a random off-equilibrium point: numpy.linalg.solve on the
    dense matrix from jax.jacfwd is the reference; agreement to 1e-10 relative."""
    p = linnet.subspace_shift(jax.random.PRNGKey(k), d=3 * n, k=k, n=n, m=n - 2, eps=0.4)
    rng = np.random.default_rng(k)
    v = jnp.asarray(rng.standard_normal(k))
    G = p.B0 @ p.reduced.V + 0.3 * jnp.asarray(rng.standard_normal((k, n)))
    if params is None:
        args = (p.reduced.s, p.reduced.Uty)
        f = lambda y: _flow.ft_vector_field(0.0, y, args)  # noqa: E731
    else:
        args = (p.reduced.s, p.reduced.Uty, p.B0 @ p.reduced.V, jnp.asarray(params))
        f = lambda y: _flow.general_field(0.0, y, args)  # noqa: E731
    _, jvp = jax.linearize(f, (v, G))
    op = lx.FunctionLinearOperator(
        lambda x: jax.tree_util.tree_map(lambda a, b: a - gamma * b, x, jvp(x)), jax.eval_shape(lambda: (v, G))
    )
    b = (jnp.asarray(rng.standard_normal(k)), jnp.asarray(rng.standard_normal((k, n))))
    x = lx.linear_solve(op, b, ArrowheadSolver()).value
    flat = lambda y: jnp.concatenate([jnp.ravel(y[0]), jnp.ravel(y[1])])  # noqa: E731
    Jd = np.asarray(jax.jacfwd(lambda th: flat(f((th[:k], th[k:].reshape(k, n)))))(flat((v, G))))
    ref = np.linalg.solve(np.eye(k + k * n) - gamma * Jd, np.asarray(flat(b)))
    np.testing.assert_allclose(np.asarray(flat(x)), ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())


def test_default_solver_matches_dense_kvaerno5():
    """Same ESDIRK method, structured vs dense LU Newton solves: trajectories agree to 1e-9."""
    p = linnet.subspace_shift(jax.random.PRNGKey(9), d=40, k=3, n=12, eps=0.2)
    v0 = linnet.random_head(jax.random.PRNGKey(10), 3, 1.0)
    t = [0.0, 0.3, 3.0, np.inf]
    a = linnet.fine_tune(p, v0, t)
    b = linnet.fine_tune(p, v0, t, solver=dfx.Kvaerno5())
    np.testing.assert_allclose(a.predictor, b.predictor, rtol=0, atol=1e-9)


def test_spd_block_inverse_matches_numpy():
    """The pivot-free batched elimination on blocks of the flow's form (1 + λ) I + c v vᵀ (c, λ ≥ 0, c spanning 12
    orders of magnitude, so cond(D) up to ~10⁷) against numpy.linalg.inv (LAPACK, pivoted). Backward stability:
    ‖D X − I‖ ≤ 10 k ε ‖D‖ ‖X‖ for every block; forward: X agrees with numpy's to 10 k ε cond(D) ‖D⁻¹‖, the
    accuracy that any backward-stable inverse has."""
    from linnet._structured import _inverse_spd_blocks

    eps = np.finfo(np.float64).eps
    rng = np.random.default_rng(0)
    for k in (1, 2, 5, 10):
        v = rng.standard_normal(k)
        c = 10.0 ** rng.uniform(-6, 6, 50)
        lam = rng.uniform(0, 3, 50)
        D = np.eye(k) * (1 + lam)[:, None, None] + c[:, None, None] * np.outer(v, v)
        X = np.asarray(_inverse_spd_blocks(jnp.asarray(D)))
        ref = np.linalg.inv(D)
        for Dq, Xq, Rq in zip(D, X, ref, strict=True):
            nD, nX = np.linalg.norm(Dq, 2), np.linalg.norm(Xq, 2)
            assert np.linalg.norm(Dq @ Xq - np.eye(k), 2) <= 10 * k * eps * nD * nX
            assert np.linalg.norm(Xq - Rq, 2) <= 10 * k * eps * np.linalg.cond(Dq) * np.linalg.norm(Rq, 2)
