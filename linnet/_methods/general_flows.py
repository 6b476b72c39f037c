"""Methods whose features also move outside S: LoRA and deeper feature extractors. Each is a gradient flow of the
paper's loss on a small reduced state, integrated by the one ODE driver (`linnet._solver.integrate`) through the
registry."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .._numerics import residual_at_rounding_floor, safe_norm
from .._problem import Problem
from .._registry import REQUIRED, FlowMethod, Param, register
from .._run.simulate import simulate
from .._trajectory import Trajectory
from .ft_flow import dense_solver, residual


def residual_loss(s, a, v, G):
    """L̂ − ‖(I − UUᵀ) y‖² = ‖s ⊙ (Gᵀ v) − Uᵀy‖² in the eigenbasis (the dropped constant has no gradient)."""
    return jnp.sum(residual(s, a, v, G) ** 2)


def squared(residual_fn):
    """The loss ‖ρ(θ)‖² of a residual function ρ = `residual_fn(θ, args)`."""

    def loss(th, args):
        return jnp.sum(residual_fn(th, args) ** 2)

    return loss


def gradient_field(loss):
    """θ̇ = −∇ loss(θ, args): the vector field of a gradient flow."""

    def field(t, th, args):
        del t
        return jax.tree_util.tree_map(jnp.negative, jax.grad(loss)(th, args))

    return field


def gradient_steady(residual_fn):
    """Steady-state rule of the gradient flow of ‖ρ(θ)‖², ρ = `residual_fn(θ, args)` = s ⊙ z − Uᵀy with
    z = B(θ)ᵀv (args = (s, Uᵀy, …)). It stops at the first of:

    - ‖θ̇‖ ≤ 2 s_min² ‖v‖² (atol + rtol ‖θ‖), the rate being FT's slowest relaxation rate near a fit (for these
      parametrisations a heuristic, not a bound; the tests check the limits against scipy at long times);
    - ρ at its rounding floor, ‖ρ‖ ≤ 4 eps s_max (s_max ‖z‖ + ‖Uᵀy‖): the data are fitted as well as the dtype
      can tell, and the velocity 2 Jᵀρ is rounding noise (in float32 on stiff data it never meets the first test:
      LoRA ran out of 10⁵ steps at cond(X)² ≈ 10⁵, rtol = atol = 1e-4). In float64 this floor is far below
      what the first test needs.

    Norms are scale-safe (`safe_norm`)."""

    field = gradient_field(squared(residual_fn))

    def make(rtol, atol):
        def steady(t, th, args, **kwargs):
            del kwargs
            s, a = args[0], args[1]
            s_min = jnp.min(jnp.where(s > 0, s, jnp.inf))
            rate = 2.0 * (s_min * safe_norm(th[0])) ** 2
            by_rate = safe_norm(field(t, th, args)) <= rate * (atol + rtol * safe_norm(th))
            return by_rate | residual_at_rounding_floor(s, a, residual_fn(th, args))

        return steady

    return make


def complement_basis(problem: Problem, A: jax.Array) -> jax.Array:
    """Orthonormal basis (d, p) of P_S⊥ Aᵀ (the S⊥ parts of A's rows), p = A.shape[0]; zero columns where the rank
    drops (a pivot below 100 · max(d, p) · eps · max|A| counts as zero)."""
    V = problem.id_basis
    R = A.T - V @ (V.T @ A.T)
    Q, r = jnp.linalg.qr(R)
    tol = 100 * max(A.shape) * jnp.finfo(A.dtype).eps
    # relative to A's own scale (not to 1), so that a tiny or huge A gets the same rank decision
    keep = jnp.abs(jnp.diag(r)) > tol * jnp.max(jnp.abs(A))
    return Q * keep


# ------------------------------------------------------------------------------------------------------
# LoRA: B = B0 + U W, state (v, U, H = W V)
# ------------------------------------------------------------------------------------------------------


def _lora_residual(th, args):
    v, U, H = th
    s, a, G0 = args
    return residual(s, a, v, G0 + U @ H)


def _lora_init(problem: Problem, v0, p, key):
    red = problem.reduced
    rank = p["rank"]
    W0 = p["init_scale"] / jnp.sqrt(problem.d) * jax.random.normal(key, (rank, problem.d), v0.dtype)
    y0 = (v0, jnp.zeros((problem.k, rank), v0.dtype), W0 @ red.V)
    return y0, (red.s, red.Uty, red.G0), W0


def _lora_decode(problem: Problem, ys, args, W0, p):
    del args, p
    v, U, H = ys
    Q = complement_basis(problem, W0)
    dG = jnp.concatenate([U @ H, U @ (W0 @ Q)], axis=-1)  # B − B0 = U H Vᵀ + U W0 P_S⊥
    return v, dG, jnp.concatenate([problem.reduced.V, Q], axis=1)


# ------------------------------------------------------------------------------------------------------
# Deeper extractors: B = W_L ⋯ W_2 W_1, state (v, W_2..W_L, ΔG of W_1 in S)
# ------------------------------------------------------------------------------------------------------


def _chain(Ws):
    """M = W_L ⋯ W_2 for stacked Ws (L − 1, k, k), W_2 first."""
    M = Ws[0]
    for j in range(1, Ws.shape[0]):
        M = Ws[j] @ M
    return M


def _deep_residual(th, args):
    v, Ws, dG = th
    s, a, G0 = args
    return residual(s, a, v, _chain(Ws) @ (G0 + dG))


def _deep_init(problem: Problem, v0, p, key):
    del key
    red = problem.reduced
    Ws0 = jnp.broadcast_to(jnp.eye(problem.k, dtype=v0.dtype), (p["depth"] - 1, problem.k, problem.k))
    return (v0, Ws0, jnp.zeros_like(red.G0)), (red.s, red.Uty, red.G0), None


def _deep_decode(problem: Problem, ys, args, aux, p):
    del args, aux, p
    v, Ws, dG1 = ys
    red = problem.reduced
    M = jax.vmap(_chain)(Ws)
    Q = complement_basis(problem, problem.B0)
    eye = jnp.eye(problem.k, dtype=v.dtype)
    dG = jnp.concatenate([M @ (red.G0 + dG1) - red.G0, (M - eye) @ (problem.B0 @ Q)], axis=-1)
    return v, dG, jnp.concatenate([red.V, Q], axis=1)


def _general(name, summary, residual_fn, init, decode, params, **kw) -> FlowMethod:
    """A flow method that is the gradient flow of L̂ = ‖ρ(θ)‖² (up to a constant) for the residual `residual_fn`."""
    return FlowMethod(
        name=name,
        summary=summary,
        params=params,
        init=init,
        field=gradient_field(squared(residual_fn)),
        steady=gradient_steady(residual_fn),
        decode=decode,
        solver=dense_solver,
        **kw,
    )


register(
    _general(
        "lora",
        "LoRA: B = B0 + U W, U = 0 and W random at the start",
        _lora_residual,
        _lora_init,
        _lora_decode,
        (
            Param("rank", REQUIRED, "int", 1, doc="adapter rank"),
            Param("init_scale", 1.0, doc="W0 ~ N(0, init_scale²/d)"),
        ),
        needs_key=True,
    )
)
register(
    _general(
        "deep",
        "FT of a deeper extractor B = W_L ⋯ W_1 from W_1 = B0, W_j = I",
        _deep_residual,
        _deep_init,
        _deep_decode,
        (Param("depth", 2, "int", 1, doc="layers below the head"),),
        delegate=lambda p: ("ft", {}, 1.0) if p["depth"] == 1 else None,
    )
)


def lora(
    problem: Problem,
    v0: ArrayLike,
    times,
    *,
    rank: int,
    key,
    init_scale=1.0,
    lp_head: bool = False,
    rtol=1e-8,
    atol=1e-10,
    max_steps=100_000,
    throw: bool = True,
) -> Trajectory:
    """LoRA fine-tuning: B = B0 + U W with U (k, rank) = 0 and W (rank, d) ~ N(0, init_scale²/d) at the start;
    gradient flow on (v, U, W) with the paper's loss.

    **Prediction:** ∇_W = 2 Uᵀv (Xᵀr)ᵀ has rows in S, so W's S⊥ part stays W0 P_S⊥; but B − B0 = U W then has the
    S⊥ part U(t) W0 P_S⊥, nonzero once U moves. Unlike full FT, LoRA changes features on S⊥ whenever W0 has S⊥
    components (always, for a random W0): exactly, B(t) P_S⊥ = B0 P_S⊥ + U(t) W0 P_S⊥.

    Solved in reduced coordinates (v, U, H = W V); the trajectory's `basis` is [V, Q] with Q an orthonormal basis
    of the S⊥ parts of W0's rows. `lp_head=True` starts from the LP head v_lp^∞ (LP then LoRA).
    **Returns:** a `Trajectory` (method "lora").
    """
    return simulate(
        "lora",
        problem,
        v0,
        times,
        rank=rank,
        key=key,
        init_scale=init_scale,
        lp_head=lp_head,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        throw=throw,
    )


def deep_fine_tune(
    problem: Problem,
    v0: ArrayLike,
    times,
    *,
    depth: int = 2,
    lp_head: bool = False,
    rtol=1e-8,
    atol=1e-10,
    max_steps=100_000,
    throw: bool = True,
) -> Trajectory:
    """Fine-tuning a deeper feature extractor B = W_L ⋯ W_2 W_1 (`depth` = L layers below the head), from
    W_1 = B0 and W_j = I_k (j ≥ 2), so B(0) = B0; gradient flow on (v, W_1, …, W_L).

    **Prediction:** only the first layer's gradient has rows in S; the upper layers mix the pretrained features,
    so B(t) P_S⊥ = M(t) B0 P_S⊥ with M = W_L ⋯ W_2, which changes for L ≥ 2: features on S⊥ now move.
    `depth` = 1 is FT; `lp_head=True` starts from the LP head v_lp^∞ (LP-FT for the deeper extractor).

    **Returns:** a `Trajectory` (method "deep"; `basis` is [V, Q] with Q an orthonormal basis of the S⊥ parts
    of B0's rows).
    """
    return simulate(
        "deep", problem, v0, times, depth=depth, lp_head=lp_head, rtol=rtol, atol=atol, max_steps=max_steps, throw=throw
    )
