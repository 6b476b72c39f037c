"""Subspace geometry: projections, principal angles and the feature distance d(B, B*) of Section 3.1."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._config import jit
from ._validate import as_float_array, check_shape, is_traced


def orthonormal_basis(A: jax.Array, rtol: float | None = None) -> tuple[jax.Array, jax.Array]:
    """Orthonormal basis of rowspace(A) by SVD, with a numerical-rank mask.

    **Arguments:**

    - `A`: (p, d) matrix whose rows span the subspace.
    - `rtol`: singular values below `rtol * s_max` count as zero (default `max(p, d) * machine eps`, as
      `numpy.linalg.matrix_rank`).

    **Returns:** `(E, mask)` with `E` of shape (d, min(p, d)) holding the right singular vectors as columns and
    `mask` a boolean (min(p, d),) marking those that span rowspace(A). The shape does not depend on the rank,
    so the function is jit- and vmap-safe.
    """
    _, s, vt = jnp.linalg.svd(A, full_matrices=False)
    return vt.T, rank_mask(s, A.shape, rtol)


def rank_mask(s: jax.Array, shape: tuple[int, ...], rtol: float | None = None) -> jax.Array:
    """Which singular values `s` of a matrix of `shape` count as nonzero: s > rtol · s_max with the default
    rtol = max(shape[-2:]) · machine eps (as `numpy.linalg.matrix_rank`)."""
    tol = max(shape[-2:]) * float(jnp.finfo(s.dtype).eps) if rtol is None else rtol
    return s > tol * jnp.max(s, initial=0.0)


def projection(A: jax.Array) -> jax.Array:
    """Orthogonal projection P onto rowspace(A), shape (d, d). For A = X this is P_S."""
    A = as_float_array(A, "A", 2)
    E, mask = orthonormal_basis(A)
    E = E * mask
    return E @ E.T


def complement_projection(A: jax.Array) -> jax.Array:
    """Orthogonal projection onto the orthogonal complement of rowspace(A) (P_{S⊥} for A = X), shape (d, d)."""
    A = as_float_array(A, "A", 2)
    return jnp.eye(A.shape[1], dtype=A.dtype) - projection(A)


def principal_cosines(A: jax.Array, B: jax.Array) -> jax.Array:
    """Cosines of the principal angles between rowspace(A) and rowspace(B), largest first.

    With orthonormal bases E of rowspace(A) (dim p) and F of rowspace(B) (dim q), these are the singular values
    σ_1 ≥ … ≥ σ_min(p,q) of Eᵀ F. The paper's cos θ_k(R, S⊥) (Definition, Section 3) is entry k-1 of
    `principal_cosines(B0, P_S⊥)` when dim R = k.

    **Arguments:** `A` (p, d), `B` (q, d) any matrices (rank is detected numerically).

    **Returns:** (min(rank A, rank B),) cosines in [0, 1], decreasing.
    """
    A = as_float_array(A, "A", 2)
    B = as_float_array(B, "B", 2)
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"`A` and `B` must have the same number of columns d, got {A.shape[1]} and {B.shape[1]}")
    E, ma = orthonormal_basis(A)
    F, mb = orthonormal_basis(B)
    ra, rb = int(ma.sum()), int(mb.sum())
    sv = jnp.linalg.svd(E[:, :ra].T @ F[:, :rb], compute_uv=False)
    return jnp.clip(sv[: min(ra, rb)], 0.0, 1.0)


def procrustes_rotation(B: jax.Array, B_star: jax.Array) -> jax.Array:
    """The orthogonal U (k, k) that aligns B_star to B: the polar factor W Zᵀ of B B_starᵀ = W Σ Zᵀ."""
    # thin (the same factors for this square k × k matrix): jax 0.7 differentiates only the thin SVD
    W, _, Zt = jnp.linalg.svd(B @ B_star.T, full_matrices=False)
    return W @ Zt


def feature_distance(B: jax.Array, B_star: jax.Array) -> jax.Array:
    """Feature error ε = d(B, B*) = min over orthogonal U of ‖B − U B*‖₂ (spectral norm), Section 3.1.

    The minimiser is taken to be the polar factor U = W Zᵀ of B B*ᵀ = W Σ Zᵀ. When both matrices have
    orthonormal rows the minimum equals 2 sin(θ_max / 2), θ_max the largest principal angle between their
    row spaces, and that U attains it (the tests check this against brute-force search over U).

    **Arguments:** `B`, `B_star` of shape (k, d).

    **Returns:** a scalar.
    """
    B = as_float_array(B, "B", 2)
    B_star = as_float_array(B_star, "B_star", 2)
    check_shape(B_star, "B_star", B.shape, "the same shape as B")
    U = procrustes_rotation(B, B_star)
    return jnp.linalg.norm(B - U @ B_star, ord=2)


def has_orthonormal_rows(B: jax.Array, atol: float | None = None) -> bool:
    """Whether B Bᵀ = I to `atol` (max-abs), as the theorems assume of B0 and B*; the default atol is
    max(1e-8, 10³ · d · eps) of B's dtype (1e-8 in float64, about 0.02 at d = 200 in float32), the rounding of
    rows orthonormalised in that precision."""
    B = jnp.asarray(B)
    if atol is None:
        atol = max(1e-8, 1e3 * B.shape[-1] * float(jnp.finfo(B.dtype).eps))
    return bool(jnp.max(jnp.abs(B @ B.T - jnp.eye(B.shape[0], dtype=B.dtype))) <= atol)


# The thin SVD of the inputs X (n, d), done once per Problem. For large, wide X it is formed from the Gram matrix
# X Xᵀ = U diag(s²) Uᵀ: one product, an n × n symmetric eigendecomposition and V = Xᵀ U / s.
# Measured at n = 5 000, d = 10⁴ on 2 CPU cores: about 25 s (the products 9 s, the eigh 16 s; see
# benchmarks/setup_profile.py) against 75 s for the SVD of X. Its price is accuracy in
# the worst case: the eigenvalues carry an absolute error of about eps · s_max², so column j of V may be off
# (in norm, and in orthogonality to the others) by up to about eps · (s_max / s_j)². The criterion is therefore
# measured, not assumed: the route is kept only if VᵀV = I holds to GRAM_MAX_ERROR (1e-8, below the solver's
# default rtol) on the GRAM_CHECK columns of smallest s_j, where those errors concentrate (each such column's
# inner products with every column of V, O(GRAM_CHECK · n d) work). Otherwise the SVD of X is computed as before.
# On the default generator at that size (cond(X) = 1.6e4, so the worst-case bound eps · cond² is 6e-8) the
# measured error was 3.2e-9, and FT's limit agreed with the SVD route's rtol-1e-10 reference to 1.6e-8, as the
# SVD route's own limit does. It is tried only on concrete X with n ≤ d and n · d ≥ GRAM_MIN_SIZE, so smaller
# problems (all the tests' and figures') and traced ones (a caller's jit or vmap) always take the SVD.
GRAM_MIN_SIZE = 20_000_000
GRAM_MAX_ERROR = 1e-8
GRAM_CHECK = 64


def _on_cpu(X) -> bool:
    """Whether X is in host memory: a NumPy array, or a JAX array on CPU devices only."""
    return not hasattr(X, "devices") or all(dev.platform == "cpu" for dev in X.devices())


# On the CPU backend the two large products go to the host's BLAS (NumPy's, through zero-copy views): XLA:CPU
# computes X Xᵀ as a general product, while NumPy recognises it as a symmetric rank-k update, and its general
# product is faster too. Measured at n = 5 000, d = 10⁴ on 2 cores: X Xᵀ 2.7 s against 7.7–9.3 s, Uᵀ X 5.4 s against
# 8.1 s. The eigendecomposition stays in JAX (15 s, against 17 s for SciPy's). On other backends all of it runs there.
def _gram_svd(X):
    """(U, s, Vt, ok) from X Xᵀ, with `ok` the criterion above."""
    return _gram_route(np.asarray(X), np) if _on_cpu(X) else _gram_route_xla(X)


def _gram_route(X, xp):
    """The Gram route with its products in `xp` (NumPy on the host arrays, or jax.numpy), its eigh in JAX."""
    w, U = _descending_eigh(jnp.asarray(X @ X.T))
    s = jnp.sqrt(jnp.maximum(w, 0.0))
    Vt = (xp.asarray(U).T @ X) / xp.asarray(jnp.where(s > 0, s, 1.0))[:, None]
    m = min(GRAM_CHECK, X.shape[0])
    tail = Vt[-m:]  # the columns of V with the smallest s_j, where the errors concentrate
    err = xp.max(xp.abs(tail @ Vt.T - xp.eye(X.shape[0], dtype=Vt.dtype)[-m:]))
    return U, s, jnp.asarray(Vt), (w[-1] > 0) & (err <= GRAM_MAX_ERROR)


_gram_route_xla = jit(lambda X: _gram_route(X, jnp))


@jit
def _descending_eigh(A):
    w, U = jnp.linalg.eigh(A)
    return w[::-1], U[:, ::-1]  # descending, as the SVD orders them


def thin_svd(X: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`jnp.linalg.svd(X, full_matrices=False)`, through the Gram matrix where that is measured to be accurate
    (see the comment above `GRAM_MIN_SIZE`). **Returns:** `(U (n, r), s (r,), Vt (r, d))`, r = min(n, d), s
    descending."""
    n, d = X.shape
    if not is_traced(X) and n <= d and n * d >= GRAM_MIN_SIZE:
        U, s, Vt, ok = _gram_svd(X)
        if bool(ok):
            return U, s, Vt
    U, s, Vt = jnp.linalg.svd(X, full_matrices=False)
    return U, s, Vt
