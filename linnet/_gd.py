"""Discrete gradient descent on (v, B) — what people actually run — declared in the registry as an iteration."""

from __future__ import annotations

import equinox.internal as eqxi
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ._flow import residual
from ._general_flows import residual_loss
from ._problem import Problem
from ._registry import Method, Param, register
from ._simulate import check_head, simulate
from ._trajectory import RESULTS, Trajectory
from ._validate import is_traced


def _gd_step(s, a, lr, state):
    v, G = state
    g = s * residual(s, a, v, G)
    return v - lr * 2.0 * (G @ g), G - lr * 2.0 * jnp.outer(v, g)


def _gd_loss(s, a, state):
    return residual_loss(s, a, *state)


def _gd_segment(s, a, lr, state, n_iter, max_iter, rtol, atol, limit):
    """Run n_iter steps (or, if `limit`, until the steady-state test) from `state`; stops early on blow-up."""
    loss0 = _gd_loss(s, a, state)

    def cond(c):
        i, _, bad, done = c
        return (i < jnp.where(limit, max_iter, n_iter)) & ~bad & ~done

    def body(c):
        i, st, _, _ = c
        new = _gd_step(s, a, lr, st)
        loss = _gd_loss(s, a, new)
        bad = ~jnp.isfinite(loss) | (loss > 1e12 * (1.0 + loss0))
        v, G = new
        step = jnp.sqrt(jnp.sum((new[0] - st[0]) ** 2) + jnp.sum((new[1] - st[1]) ** 2))
        s2 = jnp.where(s > 0, s**2, jnp.inf)
        rate = 2.0 * lr * jnp.min(s2) * jnp.sum(v**2)  # per-step contraction of the slowest residual direction
        norm = jnp.sqrt(jnp.sum(v**2) + jnp.sum(G**2))
        done = limit & (step <= rate * (atol + rtol * norm))
        return i + 1, new, bad, done

    # equinox's checkpointed while loop, so that reverse-mode `jax.grad` goes through the iterations (with
    # recursive checkpointing, as diffrax does for ODE steps); forward it runs as a plain while loop
    init = (jnp.asarray(0), state, jnp.asarray(False), jnp.asarray(False))
    i, st, bad, done = eqxi.while_loop(cond, body, init, max_steps=max_iter, kind="checkpointed")
    return st, i, bad, done


def _gd_path(s, a, v0, G0, t_all, lr, rtol, atol, max_iter):
    """GD sampled at iterations round(t/lr) for the (increasing) times `t_all`, `inf` = run to the steady state.
    Returns (v (T, k), G (T, k, r), iterations, diverged, every t = ∞ reached)."""

    def step(carry, t):
        state, done, bad, conv = carry
        limit = jnp.isinf(t) & ~bad
        target = jnp.where(jnp.isinf(t), 0, jnp.round(jnp.where(jnp.isinf(t), 0.0, t) / lr)).astype(done.dtype)
        n = jnp.where(bad, 0, jnp.maximum(target - done, 0))
        new, it, b, reached = _gd_segment(s, a, lr, state, n, max_iter, rtol, atol, limit)
        conv = conv & jnp.where(limit, reached, True)
        return (new, done + it, bad | b, conv), new

    init = ((v0, G0), jnp.asarray(0), jnp.asarray(False), jnp.asarray(True))
    (_, iters, bad, conv), (v, G) = jax.lax.scan(step, init, t_all)
    return v, G, iters, bad, conv


@jax.jit
def hessian_lmax(s, a, theta0):
    """λ_max of the Hessian of the reduced loss at θ0 = (v, G), by 200 power iterations on Hessian-vector products."""

    def hvp(u):
        return jax.jvp(jax.grad(lambda th: _gd_loss(s, a, th)), (theta0,), (u,))[1]

    u0 = jax.tree_util.tree_map(lambda x: jnp.ones_like(x) / jnp.sqrt(x.size), theta0)

    def body(_, u):
        hu = hvp(u)
        n = jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(hu)))
        return jax.tree_util.tree_map(lambda x: x / n, hu)

    u = jax.lax.fori_loop(0, 200, body, u0)
    hu = hvp(u)
    return sum(jnp.sum(x * y) for x, y in zip(jax.tree_util.tree_leaves(u), jax.tree_util.tree_leaves(hu), strict=True))


def _gd_run(problem: Problem, v0, times, p, rtol, atol, max_steps):
    del max_steps  # GD counts iterations: `max_iter`
    red = problem.reduced
    lr = p["lr"] if p["lr"] is not None else p["lr_fraction"] * 2.0 / hessian_lmax(red.s, red.Uty, (v0, red.G0))
    v, G, iters, bad, conv = _gd_path(red.s, red.Uty, v0, red.G0, times, lr, rtol, atol, p["max_iter"])
    ok = RESULTS.where(conv, RESULTS.successful, RESULTS.max_steps_reached)
    result = RESULTS.where(bad, RESULTS.nonlinear_divergence, ok)  # pyright: ignore[reportArgumentType]
    return v, G - red.G0, red.V, result, iters


def _gd_advice(problem, v0, p):
    at = float(gd_stability_step(problem, v0))
    return (
        "gradient descent diverged or did not settle "
        f"(`lr` = {float(p['lr']) if p['lr'] is not None else float('nan'):g}; 2/λ_max at the start = {at:.4g}; "
        f"for a run to t = inf that ends without a steady state, raise `max_iter` = {p['max_iter']})"
    )


register(
    Method(
        "gd",
        "discrete gradient descent θ ← θ − lr ∇L̂(θ) on (v, B), iteration i at time i · lr",
        "iteration",
        params=(
            Param("lr", None, positive=True, doc="step (default: lr_fraction · 2/λ_max at the start)"),
            Param("lr_fraction", 0.5, positive=True, doc="step as a fraction of 2/λ_max when lr is None"),
            Param("max_iter", 10_000_000, "int", 1, doc="iteration budget"),
        ),
        path=_gd_run,
        advice=_gd_advice,
    )
)


def gradient_descent(
    problem: Problem,
    v0: ArrayLike,
    times,
    *,
    lr,
    rtol=1e-8,
    atol=1e-10,
    max_iter: int = 10_000_000,
    throw: bool = True,
) -> Trajectory:
    """Discrete gradient descent θ ← θ − lr ∇L̂(θ) on (v, B) from (v0, B0) — what people actually run.

    Iteration i is compared with the flow at time t = i · lr: a finite time t is sampled at iteration round(t/lr);
    `inf` runs until the steps are below the steady-state tolerance (as `fine_tune`). Like the flow, GD moves B
    only inside S (each step adds rows in S), so it runs in the same reduced coordinates.

    **Predictions:** its limit tends to the flow's as lr → 0 (first order in lr); beyond a problem-dependent step
    (about 2/λ_max(∇²L̂) near the path) it diverges — detected (`RESULTS.nonlinear_divergence`; with `throw`, a
    `DivergenceError`), never a NaN result.

    **Returns:** a `Trajectory` (method "gd"; `num_steps` is the number of iterations).
    """
    return simulate("gd", problem, v0, times, lr=lr, rtol=rtol, atol=atol, max_iter=max_iter, throw=throw)


def gd_stability_step(problem: Problem, v0: ArrayLike):
    """2/λ_max(∇²L̂(v0, B0)): the largest step for which GD is stable near the initial point (power iteration on
    Hessian-vector products of the reduced loss; 200 iterations). A float (a traced scalar under tracing)."""
    v0 = check_head(problem, v0)
    red = problem.reduced
    step = 2.0 / hessian_lmax(red.s, red.Uty, (v0, red.G0))
    return step if is_traced(step) else float(step)
