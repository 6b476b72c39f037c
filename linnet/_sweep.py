"""Batched (vmapped) simulation of many instances of one shape: the machinery behind stress searches and sweeps."""

from __future__ import annotations

import functools
from functools import partial

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np

from . import _flow
from ._methods import ConvergenceError, _lp_heads, _predictor
from ._problem import Problem, subspace_shift
from ._validate import check_times


def batched_subspace_shifts(
    keys, eps, *, d: int, k: int, n: int, m: int | None = None, v_star_scale=None, inputs: str = "subspace"
):
    """A batch of `subspace_shift` problems of one shape, one per key and ε (a batched `Problem` pytree).

    **Arguments:** `keys` (N,) keys, `eps` (N,) feature errors, `v_star_scale` (N,) or None (1).
    """
    scale = jnp.ones_like(eps) if v_star_scale is None else v_star_scale
    make = _batched_generator(d, k, n, m, inputs)
    # Generated in vmapped chunks of at most _GEN_CHUNK: on this project's CPU machines one vmapped call over 64 or
    # more problems of d = 200 hung inside XLA (no CPU use, reproducibly at N = 64, never at N = 32).
    parts = [
        make(keys[i : i + _GEN_CHUNK], eps[i : i + _GEN_CHUNK], scale[i : i + _GEN_CHUNK])
        for i in range(0, keys.shape[0], _GEN_CHUNK)
    ]
    return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *parts)


_GEN_CHUNK = 32


@functools.lru_cache(maxsize=32)
def _batched_generator(d, k, n, m, inputs):
    def one(key, e, s):
        return subspace_shift(key, d=d, k=k, n=n, m=m, eps=e, v_star_scale=s, inputs=inputs)

    return jax.jit(jax.vmap(one))


@partial(jax.jit, static_argnames=("to_inf", "max_steps", "chunk"))
def _ft_batch(problems: Problem, v0s, ts, to_inf, rtol, atol, max_steps, chunk):
    def one(p, v0):
        G0 = p.B0 @ p._V
        v, G, result, steps, _ = _flow.solve_reduced(
            p._s, p._Uty, v0, G0, ts, to_inf=to_inf, rtol=rtol, atol=atol, max_steps=max_steps
        )
        w = _predictor(p.B0, p._V, v, G - G0)
        return v, w, result, steps

    # lax.map runs the instances inside one compiled loop, vmapping `chunk` at a time. On CPU chunk = 1 is fastest:
    # a vmapped adaptive solve runs every member for as many steps as the slowest one, and its implicit stages turn
    # per-instance branches into selects (measured: 16 instances vmapped took 11 s, one after another 6 s).
    return jax.lax.map(lambda a: one(*a), (problems, v0s), batch_size=None if chunk == 1 else chunk)


def _sharded_ft(problems: Problem, v0s, ts, to_inf, rtol, atol, max_steps, chunk, devices):
    """`_ft_batch` with the batch axis sharded over `devices` (a 1-D `Mesh`, `shard_map`): each device runs its own
    compiled loop over its shard. The batch is padded to a multiple of the device count by repeating the last
    instance, and the padding is dropped afterwards."""
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    n_dev = len(devices)
    N = v0s.shape[0]
    pad = (-N) % n_dev
    if pad:
        problems, v0s = jax.tree_util.tree_map(
            lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]), (problems, v0s)
        )
    mesh = Mesh(np.asarray(devices), ("batch",))

    def local(p, v0):
        return _ft_batch(p, v0, ts, to_inf, rtol, atol, max_steps, chunk)

    spec = P("batch")
    out = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(spec, spec), out_specs=spec, check_vma=False))(
        problems, v0s
    )
    return jax.tree_util.tree_map(lambda a: a[:N], out)


def batched_predictors(
    problems: Problem,
    v0s,
    times,
    *,
    method: str = "ft",
    rtol=1e-8,
    atol=1e-10,
    max_steps=100_000,
    chunk: int = 1,
    devices=None,
):
    """Predictors w(t) = B(t)ᵀ v(t) for a batch of problems of one shape.

    **Arguments:** `problems` a batched `Problem`, `v0s` (N, k), `times` as in `fine_tune`, `method` in
    {"ft", "lp", "lpft"}, `chunk` how many instances are vmapped together inside the compiled loop (1 is fastest on
    CPU; larger chunks suit accelerators), `devices` the devices to shard the batch axis over (default: all of
    `jax.devices()`; one device runs unsharded). On several hosts call `jax.distributed.initialize()` first.

    **Returns:** `(v (N, T, k), w (N, T, d))`. Raises `ConvergenceError` naming how many instances failed.
    """
    finite, to_inf = check_times(times)
    dtype = problems.X.dtype
    t_all = jnp.asarray(np.asarray(times, dtype=np.float64), dtype)
    if method == "lp":
        v = jax.vmap(_lp_heads, in_axes=(0, 0, None))(problems, v0s, t_all)
        return v, jnp.einsum("ntk,nkd->ntd", v, problems.B0)
    if method == "lpft":
        v0s = jax.vmap(_lp_heads, in_axes=(0, 0, None))(problems, v0s, jnp.asarray([jnp.inf], dtype))[:, 0]
    elif method != "ft":
        raise ValueError(f"`method` must be 'ft', 'lp' or 'lpft', got {method!r}")
    devices = jax.devices() if devices is None else list(devices)
    ts = jnp.asarray(finite, dtype)
    if len(devices) > 1:
        v, w, result, _ = _sharded_ft(problems, v0s, ts, to_inf, rtol, atol, int(max_steps), int(chunk), devices)
    else:
        v, w, result, _ = _ft_batch(problems, v0s, ts, to_inf, rtol, atol, int(max_steps), int(chunk))
    ok = (result == dfx.RESULTS.successful) | (result == dfx.RESULTS.event_occurred)
    if not bool(jnp.all(ok)):
        bad = np.flatnonzero(~np.asarray(ok))
        raise ConvergenceError(
            f"{bad.size} of {ok.shape[0]} instances did not converge (first: index {bad[0]}); "
            f"increase `max_steps` (now {max_steps})"
        )
    return v, w
