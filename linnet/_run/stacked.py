"""One ODE over a stack of instances: how `sweep(..., batching="stacked")` amortises a batch.

A batch of N instances of the generalised FT flow (`linnet._methods.ft_flow.general_field`: FT, LP-FT, two learning
rates, L2-SP) is integrated as one ODE on the stacked state (v (N, k), G (N, k, r)), through the one driver
(`linnet._solver.integrate.integrate`), with one step-size controller for all members:

- the field is the single-instance field mapped over the stack (members do not interact);
- the controller's error norm is the largest of the members' RMS norms (`stack_rms_norm`), so a step is
  accepted only when every member meets the tolerance it would meet alone;
- the Newton matrix is block-diagonal over the stack, and each block is factored in closed form
  (`Rodas5P(batched=True)`, its k × k LU unrolled): O(N (r k² + k³)) per factorisation, vectorised over the
  stack, with no dense solve of the N k (r + 1) state;
- the steady-state rule holds for the stack when it holds for every member, so t = ∞ ends at the slowest
  member's stop, and members that stopped earlier have been integrated further towards their limits.

Why not `vmap` of single solves: a vmapped adaptive solve runs every member for the slowest member's steps anyway,
but keeps N controllers, N Newton loops and per-member branches turned into selects, so nothing per step is
shared. The shared controller has its own cost: it takes the union of the members' small steps, so a stack's
step count grows with its size (`benchmarks/RESULTS.md`, batch-size curve, which gives the steps and the time per
trajectory of each route); it is one fused computation per step, which is what accelerators want. Each
member's accepted steps are the stack's, so its trajectory differs from its single solve within the tolerance,
not to rounding.
"""

from __future__ import annotations

import functools
from functools import partial

import jax
import jax.numpy as jnp

from .._config import jit
from .._registry import Method
from .._solver import choice
from .._solver.integrate import integrate
from .._trajectory import RESULTS, is_okay, make_trajectory
from .plan import shard_batch


def stack_rms_norm(tree) -> jax.Array:
    """max over members n of the RMS norm of member n's entries, for a pytree whose leaves share a leading stack
    axis N: the norm with which a shared controller holds every member to its own tolerance."""
    leaves = jax.tree_util.tree_leaves(tree)
    n = leaves[0].shape[0]
    squares = sum(jnp.sum(jnp.reshape(jnp.abs(x) ** 2, (n, -1)), axis=1) for x in leaves)
    count = sum(x[0].size for x in leaves)
    return jnp.sqrt(jnp.max(squares) / count)


def can_stack(m: Method) -> bool:
    """Whether method `m` can run as one ODE over a stack: a flow that declares its `stacked_solver`."""
    return m.kind == "flow" and m.stacked_solver is not None


@partial(jit, static_argnames=("m", "explicit", "max_steps"))
def stacked_metrics(m: Method, problems, v0s, times, reals, rtol, atol, *, explicit: bool, max_steps: int):
    """Integrate method `m` (`can_stack(m)`) on a batched `Problem` (leading axis N) from the heads `v0s` (N, k)
    as one stacked ODE, and return its metrics at `times` (T,).

    **Arguments:** `reals`: the method's real parameters (a dict of scalars shared by the stack); `rtol`, `atol`:
    tolerances, per member; `explicit`: Tsit5 with its own step budget (`choice.EXPLICIT_STEPS`) instead of the
    implicit solver; `max_steps`: step budget of the stack.

    **Returns:** `((L̂, L_id, L_ood) each (N, T), num_steps (), ok ())`: the stack's step count and success.
    """
    init, decode, one_field = m.init, m.decode, m.field
    assert init is not None and m.steady is not None and decode is not None and one_field is not None
    p = dict(reals)
    y0, args, _ = jax.vmap(lambda prob, v0: init(prob, v0, p, None))(problems, v0s)
    rule = m.steady(rtol, atol)

    def field(t, y, a):
        return jax.vmap(one_field, in_axes=(None, 0, 0))(t, y, a)

    def steady(t, y, a, **kw):
        return jnp.all(jax.vmap(lambda yy, aa: rule(t, yy, aa, **kw))(y, a))

    if explicit:
        solver, budget = choice.explicit_solver(), min(max_steps, choice.EXPLICIT_STEPS)
        assert m.dt0 is not None
        dt0 = jnp.min(jax.vmap(m.dt0)(y0, args))
    else:
        assert m.stacked_solver is not None
        solver, budget, dt0 = m.stacked_solver(), max_steps, None
    ys, result, steps, _ = integrate(
        field, y0, args, times, steady=steady, solver=solver, rtol=rtol, atol=atol, max_steps=budget, dt0=dt0,
        norm=stack_rms_norm,
    )  # fmt: skip

    def metrics(problem, y, a):
        v, dG, basis = decode(problem, y, a, None, p)
        tr = make_trajectory(problem, times, v, dG, basis, num_steps=0, result=RESULTS.successful, t_stop=0.0,
                             method=m.name, solver="stacked")  # fmt: skip
        return tr.train_loss, tr.id_error, tr.ood_error

    out = jax.vmap(metrics, in_axes=(0, 1, 0))(problems, ys, args)
    return out, steps, is_okay(result)


@functools.lru_cache(maxsize=64)
def stacked_batch(m: Method, explicit: bool, max_steps: int, devices: tuple):
    """`sweep`'s compiled batch function for `batching="stacked"`: (problems (N, …), heads (N, k), times, reals,
    rtol, atol) → ((L̂, L_id, L_ood) (N, T), steps (N,), ok (N,)), each member reporting its stack's steps and
    success. Over several devices each device's shard is one stack (`shard_map`)."""

    def batch(problems, v0s, times, reals, rtol, atol):
        out, steps, ok = stacked_metrics(m, problems, v0s, times, reals, rtol, atol, explicit=explicit,
                                         max_steps=max_steps)  # fmt: skip
        n = v0s.shape[0]
        return out, jnp.full((n,), steps), jnp.full((n,), ok)

    return shard_batch(batch, devices, (True, True, False, False, False, False))
