"""Hypothesis property tests over random small shapes: invariants of the flow and the closed-form errors."""

import jax
import numpy as np
import pytest
import scipy.linalg as sla
from hypothesis import given, settings
from hypothesis import strategies as st

import linnet

# (k, n, d): every k from 1 to 3, n from k + 1 to k + 4 and d from n + k + 1 to n + k + 6, at the corners of
# those ranges. Hypothesis draws the values (ε, seed, head scale) freely; the shapes come from this
# set because each new shape compiles the implicit solver again (~7 s on a CI core), so a few shapes leave the
# examples' time to the values. The flow test, which compiles a solve per shape, takes one shape per k.
SHAPES = [(1, 2, 4), (1, 5, 12), (2, 3, 6), (2, 6, 14), (3, 4, 8), (3, 7, 16)]
FLOW_SHAPES = [(1, 5, 12), (2, 3, 6), (3, 7, 16)]


@st.composite
def instances(draw, shapes=SHAPES):
    k, n, d = draw(st.sampled_from(shapes))
    eps = draw(st.floats(0.0, 1.4))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.0, 0.3, 1.0]))
    return k, n, d, eps, seed, scale


@pytest.mark.slow  # compiles a search, a transform or a subprocess (5-8 s)
# facts 1–2 are also checked at fixed shapes in test_fine_tune.py and test_theorems.py
@settings(max_examples=10, deadline=None)
@given(instances(FLOW_SHAPES))
def test_flow_invariants(inst):
    """Facts 1–2 on random shapes: B(t) = B0 on S⊥ (scipy null_space, 1e-10); v vᵀ − B Bᵀ constant (1e-6)."""
    k, n, d, eps, seed, scale = inst
    key1, key2 = jax.random.split(jax.random.PRNGKey(seed))
    p = linnet.subspace_shift(key1, d=d, k=k, n=n, eps=eps)
    v0 = linnet.random_head(key2, k, scale)
    traj = linnet.fine_tune(p, v0, [0.0, 0.5, 5.0])
    N = sla.null_space(np.asarray(p.X))
    B = np.asarray(traj.B)
    np.testing.assert_allclose(
        B @ N, np.broadcast_to(np.asarray(p.B0) @ N, (*B.shape[:1], k, N.shape[1])), rtol=0, atol=1e-10
    )
    inv = np.einsum("ti,tj->tij", traj.v, traj.v) - np.einsum("tid,tjd->tij", B, B)
    np.testing.assert_allclose(inv - inv[0], 0.0, atol=1e-6)
    # gradient flow decreases the loss
    assert np.all(np.diff(np.asarray(traj.train_loss)) <= 1e-12)


@settings(max_examples=25, deadline=None)
@given(instances(), st.integers(0, 2**31 - 1))
def test_closed_form_errors(inst, seed2):
    """ood/id/train errors equal their definitions evaluated directly in numpy."""
    k, n, d, eps, seed, _ = inst
    p = linnet.subspace_shift(jax.random.PRNGKey(seed), d=d, k=k, n=n, eps=eps, ood="mixture", shift=0.3)
    rng = np.random.default_rng(seed2)
    v = rng.standard_normal(k)
    B = rng.standard_normal((k, d))
    e = B.T @ v - np.asarray(p.w_star)
    Q = sla.orth(np.asarray(p.X).T)
    PS = Q @ Q.T
    assert np.isclose(float(linnet.ood_error(p, v, B)), e @ (0.7 * PS + 0.3 * (np.eye(d) - PS)) @ e, rtol=1e-10)
    assert np.isclose(float(linnet.id_error(p, v, B)), np.sum((PS @ e) ** 2), rtol=1e-10, atol=1e-14)
    r = np.asarray(p.X) @ B.T @ v - np.asarray(p.y)
    assert np.isclose(float(linnet.train_loss(p, v, B)), r @ r, rtol=1e-10)
