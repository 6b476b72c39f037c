"""The one ODE driver: every flow in linnet (the reduced FT flow and its generalisations, LoRA, deep extractors)
is integrated here, saved at the requested times, and stopped at a steady state for t = ∞.

Times. `times` (T,) is increasing from ≥ 0; its last entry may be `inf`. The solve runs from t = 0 to
t1 = times[-1] and saves at times[:-1] and at t1, so one code path serves finite and infinite horizons and
`times` may be traced. The saved times are stepped to (the step controller clips a step that would pass one),
so a saved state carries the step's own error, not that of the dense output between steps. The method's
steady-state rule is a diffrax `Event`: when it fires, the solve ends there (for t1 = ∞ this is how the limit is
reached; for a finite t1 past the steady state it saves work), and every requested time after the stop gets the
stopped state, which is the limit to tolerance.

Rodas5P (the default stiff solver) and Tsit5 (the explicit one) run in linnet's own loop (`linnet._solver.loop`),
which makes the same step-size decisions as the diffrax controller below in a program that compiles in about half
the time; every other solver runs through `diffrax.diffeqsolve`.

Differentiation. `jax.grad` differentiates the steps actually taken (discretise, then differentiate), in one of
two ways chosen when it is traced (`differentiable_solve`), both exact for that discrete solution:

- forward mode when the inputs being differentiated have at most `FORWARD_MODE_MAX` entries in all (a gradient
  in the head v0, or in a method's scalar parameters): the solve runs once with the tangents of those entries
  carried along (diffrax's `ForwardMode`, vmapped over the directions), the Jacobian of the saved states is kept,
  and the backward pass is one product with it. Its program compiles in about half the time of the reverse pass
  of the checkpointed loop (`benchmarks/RESULTS.md`, latency);
- otherwise diffrax's `RecursiveCheckpointAdjoint` (backpropagation through the steps with checkpointing).

A route that compiles its integration as a program of its own (`linnet._run.padded`) makes the same choice one
level up, around that program (`solve_program`): under a user's un-jitted `jax.grad` the forward-mode program is
then compiled as a top-level program, with linnet's compiler options (`linnet._config.jit`), where inside the
gradient's trace JAX would take none (first gradient on the latency benchmark: 5.4 s → 4.2 s).

The first step Δt₀ is not differentiated (a different first step changes the path only at tolerance level).
At t = ∞ this differentiates the event-stopped solution: the stop time depends on the inputs, but the state there
is stationary to tolerance, so its contribution is of the order of the tolerance. Implicit differentiation of the
limit is not an option for FT: its limits form a manifold of minimisers (rotations of (v, B) that keep the fit),
the Hessian there is singular, and which minimiser is reached is decided by the whole path (`docs/theory.md`,
"Derivatives").
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jax.custom_derivatives import SymbolicZero
from jax.tree_util import tree_unflatten

from .._config import jit
from .loop import adaptive_loop
from .rosenbrock import Rodas5P

# `jax.grad` through a solve goes by forward mode when the perturbed inputs have at most this many entries. Its
# program compiles in about half the time of the checkpointed reverse pass, but its run time grows with the
# number of directions, the reverse pass's does not (FT to t = ∞, d = 300, k = 4, 8, 16 heads, n = 60, 2 CPU
# cores, warm: 42, 130, 630 ms against 38, 49, 84 ms; first call 4.8–5.5 s against 8.3–9.0 s), so only a few
# directions go forward: a gradient in the head of a small k, or in a few scalar parameters
FORWARD_MODE_MAX = 4
# the PI step-size controller of every solve (diffrax's PIDController, and linnet's own loop)
PCOEFF, ICOEFF = 0.3, 0.4


def integrate(
    field, y0, args, times, *, steady, solver, rtol, atol, max_steps: int, dt0=None, log_time=False, norm=None,
    adjoint=None,
):  # fmt: skip
    """Integrate dy/dt = field(t, y, args) from y(0) = y0 and save at `times`.

    **Arguments:**

    - `field`: the vector field, `field(t, y, args)` → a pytree like `y`.
    - `y0`, `args`: pytrees of arrays.
    - `times`: (T,) increasing times ≥ 0, the last possibly `inf`.
    - `steady`: `steady(t, y, args)` → bool, the steady-state rule (stops the solve), or None (no steady state).
    - `solver`: a diffrax solver; `rtol`, `atol`: tolerances of the PID controller; `max_steps`: step budget;
      `dt0`: first step (None: diffrax's heuristic).
    - `log_time`: integrate in τ = log(1 + t), dy/dτ = (1 + t) field(t, y, args), for flows whose dynamics slow
      down like 1/t (the logistic loss on separable data): steps are then spread evenly over decades of t. The
      tolerances apply to the state as before; `times` and the returned `t_stop` stay in t (`dt0` is in τ).
    - `norm`: the norm of the step controller's scaled error estimates (and of the Newton iteration's
      convergence test), default diffrax's RMS norm; a stack of instances (`linnet._run.stacked`) passes the largest
      RMS norm of its members, so every member meets the tolerance it would meet alone.
    - `adjoint`: None (the default): `jax.grad` goes by `differentiable_solve`. A diffrax adjoint: the solve with
      that adjoint alone, for a caller that chooses the mode of differentiation itself (`solve_program`).

    **Returns:** `(ys, result, num_steps, t_stop)`: `ys` the states at `times` (leading axis T), `result` a
    `linnet.RESULTS` code (diffrax's, `event_occurred` for a steady-state stop), `num_steps` the steps taken and
    `t_stop` the time the solve ended. After a failure the times not reached hold NaN.
    """
    dtype = jax.tree_util.tree_leaves(y0)[0].dtype
    times = jnp.asarray(times, dtype)
    if log_time:
        times = jnp.log1p(times)  # inf stays inf
        field, steady = _in_log_time(field, steady)
    # The solve is a custom-derivative function (`differentiable_solve`), which may not close over traced values:
    # those the field, the steady-state rule and the norm close over are made explicit inputs. The field's may be
    # differentiated (a parameter it closes over); the tolerances, the first step (a choice of the integrator: a
    # different one changes the path at tolerance level) and the stopping rule's and norm's are not.
    t_ex = jnp.zeros((), dtype)
    field_c, field_consts = jax.closure_convert(lambda t, y, a: field(t, y, a), t_ex, y0, args)
    steady_c, steady_consts = (
        (None, []) if steady is None else jax.closure_convert(lambda t, y, a: steady(t, y, a), t_ex, y0, args)
    )
    norm_c, norm_consts = (None, []) if norm is None else jax.closure_convert(norm, y0)
    dt0 = None if dt0 is None else jnp.asarray(dt0, dtype)
    fixed = jax.lax.stop_gradient((jnp.asarray(rtol, dtype), jnp.asarray(atol, dtype), dt0, steady_consts, norm_consts))

    def solve(y0, args, times, field_consts, fixed, adjoint):
        rtol, atol, dt0, steady_consts, norm_consts = fixed

        def vf(t, y, a):
            return field_c(t, y, a, *field_consts)

        event = None
        if steady_c is not None:
            rule = steady_c

            def stop(t, y, a, **kwargs):
                del kwargs
                return rule(t, y, a, *steady_consts)

            event = dfx.Event(stop)
        norm_fn = None
        if norm_c is not None:
            norm_of = norm_c
            norm_fn = lambda tree: norm_of(tree, *norm_consts)  # noqa: E731

        if isinstance(solver, Rodas5P | dfx.Tsit5):  # linnet's own loop: the same steps, a smaller program (`loop`)
            ys, result, num_steps, t_stop = adaptive_loop(
                vf, solver, y0, args, times, steady=None if event is None else event.cond_fn, rtol=rtol, atol=atol,
                norm=norm_fn, max_steps=max_steps, pcoeff=PCOEFF, icoeff=ICOEFF, adjoint=adjoint, dt0=dt0,
            )  # fmt: skip
            return ys, result, num_steps, jnp.expm1(t_stop) if log_time else t_stop
        controller = dfx.PIDController(rtol=rtol, atol=atol, pcoeff=PCOEFF, icoeff=ICOEFF)
        if norm_fn is not None:
            controller = dfx.PIDController(rtol=rtol, atol=atol, pcoeff=PCOEFF, icoeff=ICOEFF, norm=norm_fn)
        ts = times[:-1]
        saveat = dfx.SaveAt(ts=ts if ts.shape[0] > 0 else None, t1=True)
        sol = dfx.diffeqsolve(
            dfx.ODETerm(vf),
            solver,
            t0=jnp.asarray(0.0, dtype),
            t1=times[-1],
            dt0=dt0,
            y0=y0,
            args=args,
            saveat=saveat,
            # the saved times are stepped to, not interpolated: the dense output between a step's ends is a cubic
            # Hermite polynomial (third order), so a fifth-order step much longer than its error allows for the
            # cubic put the saved states far outside the tolerance (up to 100 × rtol on FT paths;
            # tests/test_accuracy.py)
            stepsize_controller=dfx.ClipStepSizeController(controller, step_ts=ts if ts.shape[0] > 0 else None),
            event=event,
            max_steps=max_steps,
            adjoint=dfx.RecursiveCheckpointAdjoint() if adjoint is None else adjoint,
            throw=False,
        )
        # diffrax packs saves contiguously: the requested times reached before a steady-state stop come first, then
        # the final (t1 or event) state, then unfilled slots (time inf). Requested times after the stop get the final
        # state.
        assert sol.ts is not None and sol.ys is not None and sol.stats is not None
        # A failed solve (step budget spent, a step that failed) did not reach the times from `last` on: they get
        # NaN, as diffrax marks unfilled saves, so that no value is mistaken for the state at a time the solve never
        # got to.
        n_saved = jnp.sum(jnp.isfinite(sol.ts))
        last = jnp.maximum(n_saved - 1, 0)
        reached = jnp.arange(times.shape[0]) < last
        stopped_ok = (sol.result == dfx.RESULTS.successful) | (sol.result == dfx.RESULTS.event_occurred)

        def fill(y):
            after = jnp.where(stopped_ok, y[last], jnp.nan)
            return jnp.where(reached.reshape((-1,) + (1,) * (y.ndim - 1)), y, after)

        ys = jax.tree_util.tree_map(fill, sol.ys)
        t_stop = jnp.where(n_saved > 0, sol.ts[last], jnp.asarray(0.0, dtype))
        if log_time:
            t_stop = jnp.expm1(t_stop)
        return ys, sol.result, sol.stats["num_steps"], t_stop

    if adjoint is not None:
        return solve(y0, args, times, field_consts, fixed, adjoint)
    return differentiable_solve(solve)(y0, args, times, field_consts, fixed)


def differentiable_solve(solve):
    """`solve(*inputs, adjoint)` → outputs (`adjoint` None for a solve that is not differentiated, else the diffrax
    adjoint of the mode), as a function of `inputs` (pytrees) whose reverse-mode derivative
    goes by forward mode when the perturbed inputs (the leaves `jax.grad` differentiates, known when it traces)
    have at most `FORWARD_MODE_MAX` entries, else by diffrax's `RecursiveCheckpointAdjoint` (module docstring).
    Both differentiate the same discrete solution; `tests/test_gradients.py` checks them against each other and
    against finite differences. Forward-mode derivatives of the result (`jax.jvp`) are not supported, as with
    diffrax's checkpointed solve."""

    @jax.custom_vjp
    def run(*inputs):
        return solve(*inputs, None)  # not differentiated

    def fwd(*inputs):
        values, treedef, shapes, perturbed = _split(inputs)
        static = dict(treedef=treedef, perturbed=perturbed, inputs=shapes)
        if not perturbed:
            return solve(*tree_unflatten(treedef, values), None), _Residual(**static)

        def of_perturbed(adjoint):
            return lambda *pert: solve(*_with(values, treedef, perturbed, pert), adjoint)

        if _forward(shapes, perturbed):
            out, jac = _forward_jacobian(of_perturbed(dfx.ForwardMode()), values, shapes, perturbed)
            return out, _Residual(**static, sizes=_sizes(shapes, perturbed), jacobian=jac)
        out, pullback = jax.vjp(of_perturbed(dfx.RecursiveCheckpointAdjoint()), *[values[i] for i in perturbed])
        return out, _Residual(**static, pullback=pullback)

    def bwd(res, cotangent):
        return _bwd(res, cotangent)

    run.defvjp(fwd, bwd, symbolic_zeros=True)
    return run


def _bwd(res, cotangent):
    """The backward pass of both custom derivatives: Jᵀc (forward mode) or the pullback (reverse mode), as
    cotangents of every input (zeros for those not perturbed)."""
    cots = [_instantiate(c) for c in jax.tree_util.tree_leaves(cotangent, is_leaf=_is_zero)]
    if res.jacobian is not None:  # Jᵀ c over the inexact outputs, then split into the perturbed leaves
        inexact = [c for c in cots if c.dtype != jax.dtypes.float0]
        terms = [jnp.tensordot(j, c, axes=c.ndim) for j, c in zip(res.jacobian, inexact, strict=True)]
        flat = functools.reduce(jnp.add, terms)
        offsets = np.cumsum([0, *res.sizes])
        grads = [flat[a:b] for a, b in itertools.pairwise(offsets)]
    elif res.pullback is not None:
        grads = res.pullback(tree_unflatten(jax.tree_util.tree_structure(cotangent, is_leaf=_is_zero), cots))
    else:
        grads = []
    out = [_zero(shape, dtype) for shape, dtype in res.inputs]
    for i, g in zip(res.perturbed, grads, strict=True):
        out[i] = jnp.reshape(g, res.inputs[i][0]).astype(res.inputs[i][1])
    return tree_unflatten(res.treedef, out)


def _split(inputs):
    """The leaves of the custom-derivative inputs: their values, tree, (shape, dtype) each, and the indices of the
    perturbed inexact ones."""
    leaves, treedef = jax.tree_util.tree_flatten(inputs)
    values = [x.value for x in leaves]
    shapes = tuple((jnp.shape(v), jnp.result_type(v)) for v in values)
    perturbed = tuple(i for i, x in enumerate(leaves) if x.perturbed and jnp.issubdtype(shapes[i][1], jnp.inexact))
    return values, treedef, shapes, perturbed


def _with(values, treedef, perturbed, pert):
    """The inputs with the perturbed leaves replaced by `pert`."""
    new = list(values)
    for i, x in zip(perturbed, pert, strict=True):
        new[i] = x
    return tree_unflatten(treedef, new)


def _sizes(shapes, perturbed) -> tuple:
    return tuple(math.prod(shapes[i][0]) for i in perturbed)


def _forward(shapes, perturbed) -> bool:
    """Whether the derivative goes by forward mode: few perturbed entries (`FORWARD_MODE_MAX`)."""
    return sum(_sizes(shapes, perturbed)) <= FORWARD_MODE_MAX


def _forward_jacobian(f, values, shapes, perturbed):
    """`f(*perturbed leaves)` and its Jacobian in every perturbed entry: one solve carrying the tangents of the
    unit directions (vmapped jvp). **Returns:** `(out, jac)`, `jac` the inexact outputs' Jacobians, each with the
    directions on its leading axis."""
    sizes = _sizes(shapes, perturbed)
    basis = jnp.eye(sum(sizes), dtype=shapes[perturbed[0]][1])
    offsets = np.cumsum([0, *sizes])

    def directional(e):
        pieces = zip(perturbed, itertools.pairwise(offsets), strict=True)
        tangent = [e[a:b].reshape(shapes[i][0]).astype(shapes[i][1]) for i, (a, b) in pieces]
        out, dout = jax.jvp(f, [values[i] for i in perturbed], tangent)
        return out, _inexact(dout)

    return jax.vmap(directional, out_axes=(None, 0))(basis)


_ADJOINTS = {"default": None, "forward": dfx.ForwardMode(), "reverse": dfx.RecursiveCheckpointAdjoint()}


@functools.partial(jit, static_argnames=("program", "mode", "statics"))
def _program(inputs, *, program, mode, statics):
    return program(*inputs, adjoint=_ADJOINTS[mode], **dict(statics))


@functools.partial(jit, static_argnames=("program", "statics", "treedef", "perturbed"))
def _program_forward(values, *, program, statics, treedef, perturbed):
    shapes = tuple((jnp.shape(v), jnp.result_type(v)) for v in values)

    def f(*pert):
        return program(*_with(values, treedef, perturbed, pert), adjoint=dfx.ForwardMode(), **dict(statics))

    return _forward_jacobian(f, values, shapes, perturbed)


def solve_program(program, statics: tuple, *inputs):
    """`program(*inputs, adjoint=..., **dict(statics))`, a module-level function that ends in one `integrate(...,
    adjoint=adjoint)`, as one compiled program, differentiated as `differentiable_solve` does but at the caller's
    level: called outside any trace (a user's `jax.grad` of an un-jitted function), the forward-mode derivative
    program is compiled at top level, with linnet's compiler options (`linnet._config.jit`), instead of inside
    `jax.grad`'s trace, where JAX takes none. `statics`: hashable `(name, value)` pairs."""
    if not any(isinstance(x, Tracer) for x in jax.tree_util.tree_leaves(inputs)):
        # concrete inputs: nothing is differentiated or traced, so the program is called directly; JAX's
        # custom-derivative call costs about 1 ms of Python per solve (8 % of a warm small solve)
        return _program(inputs, program=program, mode="default", statics=statics)
    return _solve_program(program, statics, *inputs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _solve_program(program, statics: tuple, *inputs):
    return _program(inputs, program=program, mode="default", statics=statics)


def _solve_program_fwd(program, statics, *inputs):
    values, treedef, shapes, perturbed = _split(inputs)
    static = dict(treedef=treedef, perturbed=perturbed, inputs=shapes)
    if not perturbed:
        out = _program(tree_unflatten(treedef, values), program=program, mode="default", statics=statics)
        return out, _Residual(**static)
    if _forward(shapes, perturbed):
        out, jac = _program_forward(values, program=program, statics=statics, treedef=treedef, perturbed=perturbed)
        return out, _Residual(**static, sizes=_sizes(shapes, perturbed), jacobian=jac)

    def f(*pert):
        return _program(_with(values, treedef, perturbed, pert), program=program, mode="reverse", statics=statics)

    out, pullback = jax.vjp(f, *[values[i] for i in perturbed])
    return out, _Residual(**static, pullback=pullback)


def _solve_program_bwd(program, statics, res, cotangent):
    del program, statics
    return _bwd(res, cotangent)


_solve_program.defvjp(_solve_program_fwd, _solve_program_bwd, symbolic_zeros=True)


class _Residual(eqx.Module):
    """What the backward pass of `differentiable_solve` keeps: the static layout of the inputs (their tree, the
    indices of the perturbed leaves, every leaf's shape and dtype) and either the Jacobian of the inexact outputs
    in the perturbed directions (forward mode) or the reverse-mode pullback."""

    treedef: Any = eqx.field(static=True)
    perturbed: tuple = eqx.field(static=True)
    inputs: tuple = eqx.field(static=True)
    sizes: tuple = eqx.field(static=True, default=())
    jacobian: Any = None
    pullback: Any = None


def _is_zero(x) -> bool:
    return isinstance(x, SymbolicZero)


def _zero(shape, dtype):
    if jnp.issubdtype(dtype, jnp.inexact):
        return jnp.zeros(shape, dtype)
    return np.zeros(shape, jax.dtypes.float0)


def _instantiate(c):
    return _zero(c.shape, c.dtype) if _is_zero(c) else c


def _inexact(tree) -> tuple:
    """The inexact (floating) leaves of `tree`, in order."""
    return tuple(x for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact))


def _in_log_time(field, steady):
    """The field and steady-state rule in τ = log(1 + t): dy/dτ = (1 + t) field(t, y, args), t = e^τ − 1."""

    def field_tau(tau, y, args):
        t = jnp.expm1(tau)
        return jax.tree_util.tree_map(lambda f: (1.0 + t) * f, field(t, y, args))

    if steady is None:
        return field_tau, None

    def steady_tau(tau, y, args, **kw):
        return steady(jnp.expm1(tau), y, args, **kw)

    return field_tau, steady_tau
