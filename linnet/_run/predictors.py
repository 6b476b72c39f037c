"""`batched_predictors`: the predictors w(t) and heads v(t) of one method over a batched `Problem`, sharded over
devices; what the figures and the counterexample search need beyond `sweep`'s metrics."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .._config import jit
from .._problem import Problem
from .._registry import get_method
from .._solver.choice import explicit_is_enough
from .._trajectory import ConvergenceError, is_okay
from .._validate import check_times
from .plan import (
    explicit_allowed,
    host_workers,
    is_closed_form,
    lp_heads,
    mode_options,
    plan_method,
    run_in_parts,
    run_planned,
    shard_batch,
)
from .simulate import simulate


def batched_predictors(
    problems: Problem,
    v0s,
    times,
    *,
    method: str = "ft",
    rtol=1e-8,
    atol=1e-10,
    max_steps=100_000,
    devices=None,
    workers: int | None = None,
):
    """Predictors w(t) (N, T, d) and heads v(t) (N, T, k) of one registered method on a batched `Problem`: a thin
    alias of `lax.map(linnet.simulate)` over the batch, sharded over `devices` (default all) and run in parts on
    `workers` host threads like `sweep`; the solver is chosen as in `fine_tune`, from the concrete data. As in
    `sweep`, methods on one shared flow run its compiled batch (`plan.plan_method`): LP-FT is FT's batch from the
    LP heads, computed first, so the two compile one program per shape."""
    devices = list(jax.devices() if devices is None else devices)
    workers = host_workers(devices, workers)
    t_all = check_times(times)
    m = get_method(method)
    dtype = problems.X.dtype
    runner, reals, statics, lp_first, scale = plan_method(m, {}, np.asarray(t_all), dtype)
    flags = np.asarray(explicit_is_enough(np.asarray(problems.reduced.s))) & explicit_allowed(m, {})
    heads = jnp.asarray(v0s, dtype)
    heads = lp_heads(problems, heads) if lp_first else heads
    inputs = (heads, jnp.asarray(flags))

    ts = tuple(float(t) for t in np.asarray(t_all) * scale)
    key = (runner, ts, float(rtol), float(atol), int(max_steps), statics)

    def run(mode):
        (v, w, ok) = _run_sharded(_predictor_batch(*key, mode), problems, inputs, reals, devices, workers)
        return (v, w), None, ok

    (v, w), _, ok = run_planned(run, flags)
    if not bool(jnp.all(ok)):
        bad = np.flatnonzero(~np.asarray(ok))
        raise ConvergenceError(
            f"{bad.size} of {ok.shape[0]} instances did not converge (first: index {bad[0]}); "
            f"increase `max_steps` (now {max_steps})"
        )
    return v, w


@functools.lru_cache(maxsize=64)
def _predictor_batch(runner, times: tuple, rtol: float, atol: float, max_steps: int, statics: tuple, mode: str):
    """The compiled batch function of `batched_predictors` for one runner (a method's name, or the runner of a
    shared program), set of times, tolerances, static options and solver mode: (problems (N, …), (heads (N, k),
    explicit (N,)), reals) → (v (N, T, k), w (N, T, d), ok (N,)). Cached, so repeated calls on one shape (a
    search's batches, a figure's methods) compile once; the real parameters are arguments."""

    def one(p, v0, e, reals):
        # compiled per shape, as `sweep`'s batch: the members run the unpadded flow (a bucket of r would only cost)
        tr = simulate(runner, p, v0, jnp.asarray(times), rtol=rtol, atol=atol, throw=False, _pad=False,
                      **mode_options(mode, e, max_steps), **dict(statics), **reals)  # fmt: skip
        return tr.v, tr.predictor, is_okay(tr.result)

    return jit(lambda P, xs, reals: jax.lax.map(lambda a: one(a[0], a[1][0], a[1][1], reals), (P, xs)),
               setup=is_closed_form(runner))  # fmt: skip


def _run_sharded(fn, problems, v0s, reals, devices, workers):
    """`fn(problems, v0s, reals)` with the batch axis sharded over `devices` (a 1-D `Mesh` and `shard_map`; each
    device runs its own compiled loop over its shard). The batch is padded to a multiple of the device count by
    repeating the last instance, and the padding is dropped afterwards. One device runs `fn` in `workers` parts on
    host threads (`run_in_parts`)."""
    if len(devices) == 1:
        return run_in_parts(fn, (problems, v0s, reals), (True, True, False), workers)
    n_dev = len(devices)
    N = jax.tree_util.tree_leaves(v0s)[0].shape[0]
    pad = (-N) % n_dev
    if pad:
        problems, v0s = jax.tree_util.tree_map(
            lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]), (problems, v0s)
        )
    out = shard_batch(fn, devices, (True, True, False))(problems, v0s, reals)
    return jax.tree_util.tree_map(lambda a: a[:N], out)
