"""Problem construction, defaults and the synthetic generators, against scipy/numpy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sla

import linnet


def _proj_scipy(A):
    Q = sla.orth(np.asarray(A).T)
    return Q @ Q.T


def test_defaults_match_definitions():
    """y = X B*ᵀ v*, Σ_ood = I, Σ_id = P_S with P_S built by scipy.linalg.orth."""
    rng = np.random.default_rng(1)
    n, d, k = 6, 15, 2
    X = rng.standard_normal((n, d))
    B0 = np.linalg.qr(rng.standard_normal((d, k)))[0].T
    Bs = np.linalg.qr(rng.standard_normal((d, k)))[0].T
    vs = rng.standard_normal(k)
    p = linnet.Problem(X, B0, Bs, vs)
    np.testing.assert_allclose(p.w_star, Bs.T @ vs, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(p.y, X @ Bs.T @ vs, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(p.sigma_ood, np.eye(d))
    np.testing.assert_allclose(p.sigma_id, _proj_scipy(X), atol=1e-12)
    assert (p.n, p.d, p.k, p.rank) == (n, d, k, n)
    assert p.X.dtype == jnp.float64


def test_explicit_y_and_sigmas_are_kept():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((4, 12))
    B = np.linalg.qr(rng.standard_normal((12, 1)))[0].T
    y = rng.standard_normal(4)
    S = np.diag(np.arange(12.0))
    p = linnet.Problem(X, B, B, np.ones(1), y=y, sigma_ood=S, sigma_id=np.eye(12))
    np.testing.assert_array_equal(p.y, y)
    np.testing.assert_array_equal(p.sigma_ood, S)
    np.testing.assert_array_equal(p.sigma_id, np.eye(12))


def test_problem_is_an_immutable_pytree(small_problem):
    with pytest.raises(AttributeError, match="immutable"):
        small_problem.X = 0
    leaves, tree = jax.tree_util.tree_flatten(small_problem)
    back = jax.tree_util.tree_unflatten(tree, leaves)
    np.testing.assert_array_equal(back.B0, small_problem.B0)
    # passes through jit as an argument
    out = jax.jit(lambda p: p.w_star @ p.w_star)(small_problem)
    assert np.isclose(out, np.sum(np.asarray(small_problem.w_star) ** 2))


def test_replace_rederives_defaults(small_problem):
    p2 = small_problem.replace(v_star=2 * small_problem.v_star)
    np.testing.assert_allclose(p2.y, 2 * small_problem.y, rtol=1e-12)
    with pytest.raises(TypeError, match="unknown fields"):
        small_problem.replace(Z=1)


@pytest.mark.parametrize("eps", [0.0, 1e-6, 1e-3, 0.1, 0.5, 1.0, 1.4])
def test_subspace_shift_sets_feature_error_exactly(eps):
    """feature_distance(B0, B*) == eps to 1e-12, and 2 sin(θ_max/2) with scipy's principal angles agrees."""
    p = linnet.subspace_shift(jax.random.PRNGKey(3), d=40, k=3, n=12, eps=eps)
    assert abs(float(linnet.feature_distance(p.B0, p.B_star)) - eps) < 1e-12
    theta = sla.subspace_angles(np.asarray(p.B0).T, np.asarray(p.B_star).T).max()
    assert abs(2 * math.sin(theta / 2) - eps) < 1e-10
    for B in (p.B0, p.B_star):
        np.testing.assert_allclose(B @ B.T, np.eye(3), atol=1e-13)


def test_subspace_shift_geometry():
    """rowspace(X) has dimension m; the OOD options are I, P_S⊥, P_S and the stated mixture (P_S via scipy)."""
    key = jax.random.PRNGKey(4)
    d, k, n, m = 40, 2, 12, 7
    p = linnet.subspace_shift(key, d=d, k=k, n=n, m=m, eps=0.2, ood="orthogonal")
    assert np.linalg.matrix_rank(np.asarray(p.X)) == m
    PS = _proj_scipy(p.X)
    np.testing.assert_allclose(p.sigma_ood, np.eye(d) - PS, atol=1e-12)
    np.testing.assert_allclose(p.sigma_id, PS, atol=1e-12)
    pm = linnet.subspace_shift(key, d=d, k=k, n=n, m=m, eps=0.2, ood="mixture", shift=0.25)
    np.testing.assert_allclose(pm.sigma_ood, 0.75 * PS + 0.25 * (np.eye(d) - PS), atol=1e-12)
    pi = linnet.subspace_shift(key, d=d, k=k, n=n, m=m, eps=0.2)
    np.testing.assert_array_equal(pi.sigma_ood, np.eye(d))
    S = np.diag(np.linspace(0, 1, d))
    pg = linnet.subspace_shift(key, d=d, k=k, n=n, eps=0.2, ood=S)
    np.testing.assert_array_equal(pg.sigma_ood, S)


def test_subspace_shift_is_deterministic_in_key():
    a = linnet.subspace_shift(jax.random.PRNGKey(5), d=20, k=2, n=5, eps=0.1)
    b = linnet.subspace_shift(jax.random.PRNGKey(5), d=20, k=2, n=5, eps=0.1)
    c = linnet.subspace_shift(jax.random.PRNGKey(6), d=20, k=2, n=5, eps=0.1)
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.allclose(a.X, c.X)


def test_subspace_shift_is_one_compiled_program_per_shape_and_equals_its_eager_draw():
    """A draw below the Gram route's size with a named Σ_ood is one compiled set-up program per shape and options
    (a second call on the shape compiles nothing; a new shape, at most one program). Reference: the same draw run
    eagerly, operation by operation (`_generators._draw`, the route a given Σ_ood array or a large problem takes): the
    random bits are the same, the products and factorisations round differently when fused, so X, B0, B⋆, v⋆, y,
    Σ_ood and s agree to 1e-12 relative (measured ≤ 5e-14)."""
    from linnet import _generators

    cases = [
        dict(d=30, k=2, n=10, eps=0.2),
        dict(d=30, k=2, n=12, eps=0.2, inputs="isotropic", ood="mixture", shift=0.3),
        dict(d=24, k=3, n=9, eps=0.1, labels="sign", flip=0.2),
    ]
    for case in cases:
        before = _generators._draw_compiled._cache_size()
        got = linnet.subspace_shift(jax.random.PRNGKey(9), **case)
        compiled = _generators._draw_compiled._cache_size()
        assert compiled - before <= 1  # at most one program for the shape (another test may have compiled it)
        again = linnet.subspace_shift(jax.random.PRNGKey(9), **case)
        assert _generators._draw_compiled._cache_size() == compiled  # the same shape: nothing new
        np.testing.assert_array_equal(again.X, got.X)
        eps, shift, flip = case.pop("eps"), case.pop("shift", 1.0), case.pop("flip", 0.0)
        options = dict(m=case["n"], ood="isotropic", rotate=True, inputs="subspace", labels="linear",
                       dtype=jnp.dtype(jnp.float64)) | case  # fmt: skip
        ref = _generators._draw(jax.random.PRNGKey(9), eps, shift, 1.0, flip, **options)
        for name in ("X", "B0", "B_star", "v_star", "y", "sigma_ood"):
            a, b = np.asarray(getattr(got, name)), np.asarray(getattr(ref, name))
            assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(b)), name
        np.testing.assert_allclose(got.reduced.s, ref.reduced.s, rtol=1e-12)


def test_figure2_toy():
    p = linnet.figure2_toy(b_star_angle=0.3, b0_angle=0.8)
    assert (p.n, p.d, p.k) == (1, 2, 1)
    assert abs(float(linnet.feature_distance(p.B0, p.B_star)) - 2 * math.sin(0.25)) < 1e-14
    x_ood = linnet.figure2_ood_point(p)
    assert abs(float(x_ood @ p.X[0])) < 1e-15 and abs(float(jnp.linalg.norm(x_ood)) - 1) < 1e-15


def test_random_head_distribution():
    """v0 ~ N(0, σ² I): sample mean and variance over many keys (4 standard errors)."""
    keys = jax.random.split(jax.random.PRNGKey(7), 4000)
    heads = jax.vmap(lambda kk: linnet.random_head(kk, 3, 0.7))(keys)
    assert heads.shape == (4000, 3)
    assert np.all(np.abs(np.mean(heads, 0)) < 4 * 0.7 / np.sqrt(4000))
    assert np.all(np.abs(np.var(heads, 0) - 0.49) < 4 * 0.49 * np.sqrt(2 / 4000))


def test_isotropic_inputs_span_a_random_n_dim_subspace():
    """inputs='isotropic': X has iid N(0, 1) entries (Theorem 3.2's setting); Σ options use P_S of rowspace(X)."""
    p = linnet.subspace_shift(jax.random.PRNGKey(8), d=40, k=2, n=10, eps=0.2, inputs="isotropic", ood="orthogonal")
    X = np.asarray(p.X)
    assert np.linalg.matrix_rank(X) == 10
    np.testing.assert_allclose(p.sigma_ood, np.eye(40) - _proj_scipy(X), atol=1e-12)
    assert abs(X.std() - 1) < 0.1
    with pytest.raises(ValueError, match="`inputs`"):
        linnet.subspace_shift(jax.random.PRNGKey(8), d=40, k=2, n=10, eps=0.2, inputs="uniform")


@pytest.mark.parametrize("shape", [(1,), (3,), (5, 7), (64,), (65,), (30, 10), (2, 3, 4)])
def test_generator_draws_equal_jax_random_normal_bit_for_bit(shape):
    """The generators draw Gaussians through a flat draw of power-of-two length (fewer compiled programs); the
    result must be exactly `jax.random.normal(key, shape)` for raw and typed keys, eager and under jit."""
    from linnet._generators import _normal

    for key in (jax.random.PRNGKey(11), jax.random.key(11)):
        ref = np.asarray(jax.random.normal(key, shape, jnp.float64))
        assert np.array_equal(np.asarray(_normal(key, shape, jnp.float64)), ref)
        jitted = jax.jit(lambda k: _normal(k, shape, jnp.float64))(key)
        assert np.array_equal(np.asarray(jitted), ref)


def test_generator_draws_keep_jax_values_with_the_older_threefry():
    """With JAX's older, non-partitionable threefry a flat draw's prefix is *not* the shaped draw (checked here),
    so the generators must take the plain call: the values are still `jax.random.normal(key, shape)`."""
    from linnet._generators import _normal

    key = jax.random.PRNGKey(1)
    with jax.threefry_partitionable(False):
        ref = np.asarray(jax.random.normal(key, (5, 7), jnp.float64))
        assert not np.array_equal(np.asarray(jax.random.normal(key, (64,), jnp.float64))[:35].reshape(5, 7), ref)
        assert np.array_equal(np.asarray(_normal(key, (5, 7), jnp.float64)), ref)


def test_the_gram_route_of_the_svd_agrees_with_numpy_and_is_refused_when_ill_conditioned(monkeypatch):
    """`thin_svd` through X Xᵀ (forced here on small X by lowering `GRAM_MIN_SIZE`), with its
    products in NumPy's BLAS (the CPU route) and in XLA (other backends'), against NumPy's SVD: singular values to
    1e-13 relative and U diag(s) Vᵀ = X, VᵀV = I to 1e-13 on a well-conditioned X (cond ≈ 6: eps · cond² ≈ 1e-14).
    On X with cond = 1e6 (eps · cond² ≈ 2e-4) the orthogonality check fails, the Gram route is refused and the
    result is the SVD's, bit for bit. The problem built either way gives FT the same limit to 1e-9."""
    from linnet import _geometry

    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 80))
    W, _, Zt = np.linalg.svd(X, full_matrices=False)
    X_ill = (W * np.logspace(0, -6, 30)) @ Zt
    # both routes: the products in NumPy's BLAS (what CPU arrays take) and in XLA (what other backends take)
    # NumPy arrays take the host route; JAX arrays take it on the CPU backend (as in CI) and the XLA route elsewhere
    assert _geometry._on_cpu(X) and _geometry._on_cpu(jnp.asarray(X)) == (jax.default_backend() == "cpu")
    for route in (_geometry._gram_svd, _geometry._gram_route_xla):
        U, s, Vt, ok = route(jnp.asarray(X))
        assert bool(ok)
        np.testing.assert_allclose(np.asarray(s), np.linalg.svd(X, compute_uv=False), rtol=1e-13)
        np.testing.assert_allclose(np.asarray((U * s) @ Vt), X, atol=1e-13 * np.abs(X).max())
        np.testing.assert_allclose(np.asarray(Vt @ Vt.T), np.eye(30), atol=1e-13)
        assert not bool(route(jnp.asarray(X_ill))[3])
    p = linnet.subspace_shift(jax.random.PRNGKey(3), d=80, k=2, n=30, eps=0.2, inputs="isotropic")  # by the SVD
    assert bool(_geometry._gram_svd(p.X)[3])  # so that the Problem below takes the Gram route
    monkeypatch.setattr(_geometry, "GRAM_MIN_SIZE", 0)
    for a, b in zip(_geometry.thin_svd(jnp.asarray(X_ill)), jnp.linalg.svd(jnp.asarray(X_ill), full_matrices=False),
                    strict=True):  # fmt: skip
        assert np.array_equal(np.asarray(a), np.asarray(b))
    q = linnet.Problem(p.X, p.B0, p.B_star, p.v_star)  # built through the Gram route
    np.testing.assert_allclose(np.asarray(q.reduced.s), np.asarray(p.reduced.s), rtol=1e-13)
    v0 = np.array([0.5, -1.0])
    w_p = linnet.fine_tune(p, v0, [np.inf]).predictor[-1]
    w_q = linnet.fine_tune(q, v0, [np.inf]).predictor[-1]
    np.testing.assert_allclose(np.asarray(w_q), np.asarray(w_p), rtol=0, atol=1e-9 * float(np.linalg.norm(w_p)))
