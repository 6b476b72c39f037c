"""Closed-form errors of a predictor w = Bᵀv (Section 3.1). No Monte Carlo: each is a quadratic form."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._problem import Problem
from ._validate import check_value


def predictor(v: jax.Array, B: jax.Array) -> jax.Array:
    """The linear predictor w = Bᵀ v of f_{v,B}(x) = vᵀ B x; `v` (..., k), `B` (..., k, d) → (..., d)."""
    return jnp.einsum("...k,...kd->...d", v, B)


def _check_vB(problem: Problem, v, B):
    v = jnp.asarray(v)
    B = jnp.asarray(B)
    k, d = problem.k, problem.d
    if v.ndim < 1 or v.shape[-1] != k:
        raise ValueError(f"`v` must have shape (..., {k}) (k = problem.k), got {v.shape}")
    if B.ndim < 2 or B.shape[-2:] != (k, d):
        raise ValueError(f"`B` must have shape (..., {k}, {d}) (k, d of the problem), got {B.shape}")
    bad = ~(jnp.all(jnp.isfinite(v)) & jnp.all(jnp.isfinite(B)))
    return check_value((v, B), bad, "`v` and `B` must be finite (got NaN or inf)")


def ood_error_of_predictor(problem: Problem, w: jax.Array) -> jax.Array:
    """L_ood = (w − w⋆)ᵀ Σ_ood (w − w⋆) for predictors `w` (..., d)."""
    e = w - problem.w_star
    return problem.error_form(e, e, which="ood")


def id_error_of_predictor(problem: Problem, w: jax.Array) -> jax.Array:
    """L_id = (w − w⋆)ᵀ Σ_id (w − w⋆); with the default Σ_id = P_S this is L_id:subspace = ‖P_S(w − w⋆)‖²."""
    e = w - problem.w_star
    return problem.error_form(e, e, which="id")


def bilinear_error(problem: Problem, a: jax.Array, b: jax.Array, *, which: str) -> jax.Array:
    """aᵀ Σ b for Σ = Σ_ood (`which="ood"`) or Σ_id (`which="id"`); see `Problem.error_form`."""
    return problem.error_form(a, b, which=which)


def train_loss_of_predictor(problem: Problem, w: jax.Array) -> jax.Array:
    """L̂ = ‖X w − y‖² (no ½, no 1/n: the paper's scaling, which fixes the time unit)."""
    r = jnp.einsum("nd,...d->...n", problem.X, w) - problem.y
    return jnp.sum(r**2, axis=-1)


def ood_error(problem: Problem, v: jax.Array, B: jax.Array) -> jax.Array:
    """OOD error L_ood(v, B) = (Bᵀv − w⋆)ᵀ Σ_ood (Bᵀv − w⋆).

    With the default Σ_ood = I this is the submission's worst case over the unit ball, ‖Bᵀv − w⋆‖²; a general
    Σ_ood = E[x xᵀ] gives the camera-ready expected squared error.

    **Arguments:** `problem`; `v` (..., k); `B` (..., k, d) — leading batch axes broadcast.

    **Returns:** (...) array.
    """
    v, B = _check_vB(problem, v, B)
    return ood_error_of_predictor(problem, predictor(v, B))


def id_error(problem: Problem, v: jax.Array, B: jax.Array) -> jax.Array:
    """ID error (Bᵀv − w⋆)ᵀ Σ_id (Bᵀv − w⋆); default Σ_id = P_S gives L_id:subspace. Shapes as `ood_error`."""
    v, B = _check_vB(problem, v, B)
    return id_error_of_predictor(problem, predictor(v, B))


def train_loss(problem: Problem, v: jax.Array, B: jax.Array) -> jax.Array:
    """Training loss L̂(v, B) = ‖X Bᵀ v − y‖² (Section 3.1). Shapes as `ood_error`."""
    v, B = _check_vB(problem, v, B)
    return train_loss_of_predictor(problem, predictor(v, B))
