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


@pytest.mark.parametrize(("k", "n", "gamma"), [(1, 5, 0.1), (3, 8, 1e-3), (4, 10, 10.0)])
def test_arrowhead_solve_matches_dense_numpy(k, n, gamma):
    """(I − γ J_f) x = b with J_f the flow's Jacobian at a random off-equilibrium point: numpy.linalg.solve on the
    dense matrix from jax.jacfwd is the reference; agreement to 1e-10 relative."""
    p = linnet.subspace_shift(jax.random.PRNGKey(k), d=3 * n, k=k, n=n, m=n - 2, eps=0.4)
    rng = np.random.default_rng(k)
    v = jnp.asarray(rng.standard_normal(k))
    G = p.B0 @ p._V + 0.3 * jnp.asarray(rng.standard_normal((k, n)))
    args = (p._s, p._Uty)
    f = lambda y: _flow.ft_vector_field(0.0, y, args)  # noqa: E731
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
