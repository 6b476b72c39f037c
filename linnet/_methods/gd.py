"""Discrete gradient descent on (v, B) — what people actually run — declared in the registry as an iteration."""

from __future__ import annotations

import equinox.internal as eqxi
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .._config import jit
from .._numerics import residual_at_rounding_floor, safe_norm
from .._problem import Problem
from .._registry import IterationMethod, Param, register
from .._run.simulate import check_head, simulate
from .._trajectory import RESULTS, Trajectory
from .._validate import is_traced
from .ft_flow import residual
from .general_flows import residual_loss


def _gd_step(s, a, lr, state):
    v, G = state
    g = s * residual(s, a, v, G)
    return v - lr * 2.0 * (G @ g), G - lr * 2.0 * jnp.outer(v, g)


def _gd_loss(s, a, state):
    return residual_loss(s, a, *state)


def _gd_segment(s, a, lr, state, n_iter, rtol, atol, limit, max_iter):
    """Run `n_iter` steps (or, if `limit`, up to `n_iter` steps until the steady-state test) from `state`; stops
    early on blow-up. Returns (state, iterations run, blew up, steady state reached)."""
    loss0 = _gd_loss(s, a, state)

    def cond(c):
        i, _, bad, done = c
        return (i < n_iter) & ~bad & ~done

    def body(c):
        i, st, _, _ = c
        new = _gd_step(s, a, lr, st)
        loss = _gd_loss(s, a, new)
        bad = ~jnp.isfinite(loss) | (loss > 1e12 * (1.0 + loss0))
        v, _ = new
        step = safe_norm(jax.tree_util.tree_map(jnp.subtract, new, st))
        s_min = jnp.min(jnp.where(s > 0, s, jnp.inf))
        # per-step contraction of the slowest residual direction, 2 lr s_min² ‖v‖², formed without squaring a
        # possibly tiny s_min or ‖v‖ on its own (scale-safe, as the flow's test)
        rate = 2.0 * lr * (s_min * safe_norm(v)) ** 2
        # or the residual at its rounding floor (as the flows' rule, `gradient_steady`): the steps are then rounding
        # noise, and in float32 on stiff data the first test is never met
        at_floor = residual_at_rounding_floor(s, a, residual(s, a, *new))
        done = limit & ((step <= rate * (atol + rtol * safe_norm(new))) | at_floor)
        return i + 1, new, bad, done

    # equinox's checkpointed while loop, so that reverse-mode `jax.grad` goes through the iterations (with
    # recursive checkpointing, as diffrax does for ODE steps); forward it runs as a plain while loop
    init = (jnp.asarray(0, n_iter.dtype), state, jnp.asarray(False), jnp.asarray(False))
    i, st, bad, done = eqxi.while_loop(cond, body, init, max_steps=max_iter, kind="checkpointed")
    return st, i, bad, done


def _gd_path(s, a, v0, G0, t_all, lr, rtol, atol, max_iter):
    """GD sampled at iterations round(t/lr) for the (increasing) times `t_all`, `inf` = run to the steady state.

    The budget `max_iter` counts every iteration of the run. A finite time whose iteration round(t/lr) is beyond
    the budget is not reached (nor is any later one), and neither is t = ∞ when the steady state is not met within
    the budget; unreached times hold NaN, so that no value is mistaken for the state at a time it never got to.
    **Returns:** (v (T, k), G (T, k, r), iterations, diverged, every time reached, time reached = iterations · lr).
    """
    max_iter_f = jnp.asarray(float(max_iter), t_all.dtype)

    def step(carry, t):
        state, done, bad, ok = carry
        inf = jnp.isinf(t)
        # the target iteration, in floating point: round(t/lr) can exceed every integer type (t = 1e30)
        target = jnp.round(jnp.where(inf, 0.0, t) / lr)
        within = inf | (target <= max_iter_f)
        left = max_iter - done  # iterations of the budget not yet used
        n = jnp.where(
            inf, left, jnp.minimum(jnp.where(within, target, max_iter_f), max_iter_f).astype(done.dtype) - done
        )
        n = jnp.where(bad | ~ok, 0, jnp.maximum(n, 0))
        new, it, b, steady = _gd_segment(s, a, lr, state, n, rtol, atol, inf & ~bad & ok, max_iter)
        bad = bad | b
        ok = ok & ~bad & within & jnp.where(inf, steady, True)
        nan = jax.tree_util.tree_map(lambda x: jnp.where(ok, x, jnp.nan), new)
        return (new, done + it, bad, ok), nan

    init = ((v0, G0), jnp.zeros((), jnp.int_), jnp.asarray(False), jnp.asarray(True))  # int64 with x64 on
    (_, iters, bad, ok), (v, G) = jax.lax.scan(step, init, t_all)
    return v, G, iters, bad, ok, iters.astype(t_all.dtype) * lr


@jit
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
    v, G, iters, bad, ok, t_stop = _gd_path(red.s, red.Uty, v0, red.G0, times, lr, rtol, atol, p["max_iter"])
    result = RESULTS.where(ok, RESULTS.successful, RESULTS.max_steps_reached)
    result = RESULTS.where(bad, RESULTS.nonlinear_divergence, result)  # pyright: ignore[reportArgumentType]
    return v, G - red.G0, red.V, result, iters, t_stop


def _gd_advice(problem, v0, p):
    at = float(gd_stability_step(problem, v0))
    return (
        f"(`lr` = {float(p['lr']) if p['lr'] is not None else float('nan'):g}; 2/λ_max at the start = {at:.4g}; "
        f"the time t takes round(t / lr) iterations of the budget `max_iter` = {p['max_iter']})"
    )


register(
    IterationMethod(
        "gd",
        "discrete gradient descent θ ← θ − lr ∇L̂(θ) on (v, B), iteration i at time i · lr",
        params=(
            Param("lr", None, positive=True, doc="step (default: lr_fraction · 2/λ_max at the start)"),
            Param("lr_fraction", 0.5, positive=True, doc="step as a fraction of 2/λ_max when lr is None"),
            Param("max_iter", 10_000_000, "int", 1, doc="iteration budget"),
        ),
        path=_gd_run,
        advice=_gd_advice,
        budget="max_iter",
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
