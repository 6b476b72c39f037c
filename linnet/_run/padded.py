"""The route of a flow that can pad its reduced dimension: three compiled programs, of which the expensive one (the
integration) is shared by every shape in a bucket.

A method that declares `pad` says that its state and arguments can be padded in the reduced dimension r by
columns that do not move. For the FT flow these are columns with singular value s = 0, Uᵀy = 0 and G0 = 0: their
residual, velocity and Newton blocks are zero, so padding is exact (`docs/theory.md`, "Reduced coordinates"). The
integration program then depends on the bucket `bucket(r)` and on k, not on n, d or r, so a notebook's next cell
with another n or d (same k, r in the same bucket), or another number of times (padded to 4, 8, 16, … by repeated
saves), compiles no new solver: only the two small programs around it, which set up the state (`_prepare`) and
turn the path into a `Trajectory` (`_finish`), are per shape.

The step controller's norm is the RMS norm over the unpadded state (`count` entries), so the padded solve takes
the unpadded solve's decisions: the padded entries add exact zeros to every sum. The cost is arithmetic on
bucket(r) ≤ 1.25 r columns (1.25 × at most, just past a bucket's edge; none at its edge), measured in
`benchmarks/RESULTS.md`.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import diffrax as dfx
import jax
import jax.numpy as jnp

from .._config import jit
from .._registry import get_method
from .._solver.choice import is_implicit, solver_name
from .._solver.fused import FusedKvaerno5
from .._solver.integrate import integrate, solve_program
from .._trajectory import Trajectory, make_trajectory

# the bucket edges, four to an octave: 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, … (each 8/7 to 5/4 times the one
# before). Two to an octave (8, 12, 16, 24, …) padded up to 1.5 r, and the arithmetic follows: the small stiff
# benchmark (r = 100 → 128) solved in 12.0 ms against 9.5 ms unpadded; now r = 100 → 112
_EDGES = tuple(sorted({m * 2**i for m in (8, 10, 12, 14) for i in range(40)}))


def bucket(r: int) -> int:
    """The padded size of a reduced dimension r: the smallest edge 8, 10, 12, 14, 16, 20, 24, 28, 32, … (four to
    an octave) that is ≥ r, at most 1.25 r (r ≥ 8)."""
    for edge in _EDGES:
        if edge >= r:
            return edge
    return r


def paddable(solver) -> bool:
    """Whether `solver` can run the padded flow: an explicit solver, `Rodas5P` or `FusedKvaerno5`. diffrax's own
    implicit solvers hand the controller's norm to an optimistix root finder, which keeps it as a static part of a
    custom derivative, where the norm's traced entry count cannot go; they run the unpadded program."""
    return isinstance(solver, FusedKvaerno5) or not isinstance(solver, dfx.AbstractImplicitSolver)  # Rodas5P is not one


def time_bucket(T: int) -> int:
    """The padded number of saved times: the smallest power of two ≥ T, at least 4."""
    return max(4, 1 << (T - 1).bit_length())


def _pad_times(times):
    """(T,) times → (time_bucket(T),): the saves (all but the last time) continued by repeats of their last entry
    (of 0 if there is none), then the last time. The solve takes the same steps: a repeated save time is stepped to
    once; `_finish` keeps the entries of the original times."""
    T = times.shape[0]
    extra = time_bucket(T) - T
    if extra == 0:
        return times
    fill = times[-2] if T > 1 else jnp.zeros((), times.dtype)
    return jnp.concatenate([times[:-1], jnp.full((extra,), fill, times.dtype), times[-1:]])


def _count_norm(count):
    """RMS norm over `count` entries (the unpadded state), of a padded pytree whose extra entries are zero."""

    def norm(tree):
        leaves = jax.tree_util.tree_leaves(tree)
        total = sum(jnp.sum(jnp.abs(x) ** 2) for x in leaves)
        return jnp.sqrt(total / count)

    return norm


@partial(jit, setup=True, static_argnames=("name", "loss", "statics"))
def _prepare(problem, v0, times, reals, key, *, name, loss, statics):
    m = get_method(name, loss)
    assert m.init is not None and m.pad is not None
    y0, args, _ = m.init(problem, v0, dict(reals) | dict(statics), key)
    dtype = jax.tree_util.tree_leaves(y0)[0].dtype
    count = sum(x.size for x in jax.tree_util.tree_leaves(y0))
    y0p, argsp = m.pad(y0, args, bucket)
    return y0p, argsp, _pad_times(jnp.asarray(times, dtype)), jnp.asarray(count, dtype)


def _integration(y0, args, times, rtol, atol, count, *, name, loss, solver, max_steps, adjoint=None):
    m = get_method(name, loss)
    assert m.field is not None and m.steady is not None
    explicit = not is_implicit(solver)
    dt0 = m.dt0(y0, args) if (explicit and m.dt0 is not None) else None
    return integrate(
        m.field, y0, args, times, steady=m.steady(rtol, atol), solver=solver, rtol=rtol, atol=atol,
        max_steps=max_steps, dt0=dt0, log_time=m.log_time, norm=_count_norm(count), adjoint=adjoint,
    )  # fmt: skip


# the integration program alone, as `solve_program` compiles it for a call without derivatives (the benchmarks
# trace and compile it ahead of time)
_integrate = partial(jit, static_argnames=("name", "loss", "solver", "max_steps"))(_integration)


@partial(jit, setup=True, static_argnames=("name", "loss", "statics", "label", "method"))
def _finish(problem, v0, times, reals, key, ys, result, steps, t_stop, *, name, loss, statics, label, method):
    m = get_method(name, loss)
    assert m.init is not None and m.decode is not None
    p = dict(reals) | dict(statics)
    y0, args, aux = m.init(problem, v0, p, key)  # the unpadded state's shapes and arguments (cheap, fused here)
    T = times.shape[0]  # the saves asked for, then the last time: the padded ones between them are dropped

    def unpad(y, y_0):
        y = y if y.shape[0] == T else jnp.concatenate([y[: T - 1], y[-1:]])
        return y[(slice(None), *(slice(0, n) for n in y_0.shape))]

    ys = jax.tree_util.tree_map(unpad, ys, y0)
    v, dG, basis = m.decode(problem, ys, args, aux, p)
    tr = make_trajectory(problem, times, v, dG, basis, num_steps=steps, result=result, t_stop=t_stop,
                         method=method, solver=label, loss=m.loss)  # fmt: skip
    return dataclasses.replace(tr, B0=None, basis=None if basis is problem.reduced.V else tr.basis)


def padded_core(problem, v0, times, reals, key, rtol, atol, *, name, loss, statics, solver, max_steps) -> Trajectory:
    """What `simulate`'s core computes for a flow that declares `pad`, as three programs (see the module
    docstring); the same arguments and the same `Trajectory` (with B0 and the basis left out, as the core does)."""
    y0, args, padded_times, count = _prepare(problem, v0, times, reals, key, name=name, loss=loss, statics=statics)
    # one program for the bucket, differentiated at this level (forward mode for a few perturbed entries, compiled
    # as a top-level program of its own under a caller's un-jitted `jax.grad`); tolerances and the count are
    # not differentiated
    options = (("name", name), ("loss", loss), ("solver", solver), ("max_steps", max_steps))
    fixed = jax.lax.stop_gradient((rtol, atol, count))
    out: Any = solve_program(_integration, options, y0, args, padded_times, *fixed)
    ys, result, steps, t_stop = out
    return _finish(problem, v0, times, reals, key, ys, result, steps, t_stop, name=name, loss=loss, statics=statics,
                   label=solver_name(solver), method=name)  # fmt: skip


__all__ = ["bucket", "paddable", "padded_core", "time_bucket"]
