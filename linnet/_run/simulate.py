"""`simulate`: run any registered method on a problem, purely (jit, vmap and grad compose with it).

What happens, in order:

1. Shape and static checks, eagerly (they raise `ValueError`/`TypeError` naming the argument).
2. Value checks (finite head, times, parameter bounds): eagerly on concrete inputs, through `eqx.error_if`
   when traced, with the same message.
3. The solver plan. A given `solver=` is used as is. Otherwise a flow uses its implicit default, except plain FT
   on data that are not stiff (cond(X)² ≤ 100, `linnet._solver.choice.explicit_is_enough`), decided from the
   *concrete* singular values before anything is traced: it tries the explicit Tsit5 with a small step budget and
   falls back to the implicit method if that fails. With concrete inputs the fallback is decided on the host;
   under tracing by `lax.cond` on the result code (under `vmap` that evaluates both branches). A traced problem
   (e.g. `vmap` over a batch of problems) gets the implicit method. `Trajectory.solver` records the choice.
4. The jit-compiled core (`_core`) runs the method with `throw=False` semantics and returns a `Trajectory` with
   its `result` code.
5. `throw=True` raises at the edge: `ConvergenceError`/`DivergenceError` with a specific message on concrete
   inputs, the result's own message through `error_if` when traced.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._closed_forms import lp_limit_head
from .._config import jit
from .._context import REFERENCE
from .._numerics import scale_out_of_range, scale_range
from .._problem import Problem
from .._registry import REQUIRED, Method, get_method
from .._solver import choice
from .._solver.integrate import integrate
from .._trajectory import RESULTS, ConvergenceError, DivergenceError, Trajectory, is_okay, make_trajectory
from .._validate import (
    check_head,
    check_times,
    check_tolerance,
    check_value,
    is_traced,
    warn_tolerance,
    warn_unresolved_limit,
)
from .padded import paddable, padded_core


def parse_params(m: Method, given: dict, dtype) -> tuple[dict, tuple]:
    """Validated parameters: (reals {name: array}, statics ((name, value), ...)). Bounds are checked eagerly
    on concrete values and by `error_if` on traced ones."""
    unknown = set(given) - {q.name for q in m.params}
    if unknown:
        raise TypeError(
            f"method {m.name!r} got unknown parameters {sorted(unknown)}; it takes {[q.name for q in m.params]}"
        )
    reals, statics = {}, []
    for q in m.params:
        val = given.get(q.name, q.default)
        if val is REQUIRED:
            raise TypeError(f"method {m.name!r} needs the parameter `{q.name}` ({q.doc})")
        if q.kind in ("int", "bool"):
            if is_traced(val):
                raise TypeError(f"`{q.name}` must be a concrete Python {q.kind}: it fixes the computation's structure")
            if q.kind == "int" and (int(val) != val or (q.lower is not None and val < q.lower)):
                raise ValueError(f"`{q.name}` must be an integer >= {q.lower:g}, got {val}")
            statics.append((q.name, int(val) if q.kind == "int" else bool(val)))
            continue
        if val is None:
            statics.append((q.name, None))
            continue
        # a concrete value stays concrete (NumPy) even inside a caller's `jit`, where `jnp.asarray` would stage it:
        # value checks then run eagerly, and a delegation (`Method.delegate`) can be decided on it
        xp = jnp if is_traced(val) else np
        x = xp.asarray(val, dtype)
        if x.shape != ():
            raise ValueError(f"`{q.name}` must be a scalar, got shape {x.shape}")
        bad = ~xp.isfinite(x)
        if q.lower is not None:
            bad = bad | ((x <= q.lower) if q.positive else (x < q.lower))
        bound = "" if q.lower is None else f" {'>' if q.positive else '>='} {q.lower:g}"
        reals[q.name] = check_value(x, bad, f"`{q.name}` must be a finite number{bound}, got {val}")
    return reals, tuple(statics)


def solver_plan(m: Method, s, p: dict, solver, k: int | None = None) -> list:
    """The fallback rule, written once: the solvers to try, in order, each with its step budget, as
    [(solver, max_steps or EXPLICIT_STEPS), ...] (see the module docstring, step 3).

    `s` is the concrete singular values of X (any batch shape), or None when the problem is traced: then the
    explicit solver is never chosen automatically, since its choice inspects the data. `k` (static) is the number
    of features, which the method's default implicit solver may depend on (`linnet._methods.ft_flow.default_solver`)."""
    big = 1 << 62  # "no budget of its own": the caller's max_steps applies
    if m.kind != "flow":
        return [(None, big)]
    if solver is not None:
        return [(solver, big)]
    assert m.solver is not None, f"flow method {m.name!r} declares no default solver"
    implicit = m.solver(k)
    if s is not None and m.explicit_ok is not None and m.explicit_ok(p) and choice.explicit_is_enough(s):
        return [(choice.explicit_solver(), choice.EXPLICIT_STEPS), (implicit, big)]
    return [(implicit, big)]


@partial(jit, static_argnames=("name", "loss", "statics", "solver", "max_steps"))
def _core(problem, v0, times, reals, key, rtol, atol, *, name, loss, statics, solver, max_steps) -> Trajectory:
    m = get_method(name, loss)
    # the solve's own settings travel with the parameters, for methods whose initial state is itself a solve
    p = {**reals, **dict(statics), "_rtol": rtol, "_atol": atol, "_max_steps": max_steps}
    zero = jnp.asarray(0)
    if m.kind == "closed_form":
        assert m.path is not None
        v, dG, basis = m.path(problem, v0, times, p)
        result, steps, t_stop, label = RESULTS.successful, zero, 0.0, "closed form"
    elif m.kind == "iteration":
        assert m.path is not None
        v, dG, basis, result, steps, t_stop = m.path(problem, v0, times, p, rtol, atol, max_steps)
        label = "iteration"
    else:
        assert m.init is not None and m.field is not None and m.steady is not None and m.decode is not None
        y0, args, aux = m.init(problem, v0, p, key)
        explicit = not choice.is_implicit(solver)
        dt0 = m.dt0(y0, args) if (explicit and m.dt0 is not None) else None
        ys, result, steps, t_stop = integrate(
            m.field,
            y0,
            args,
            times,
            steady=m.steady(rtol, atol),
            solver=solver,
            rtol=rtol,
            atol=atol,
            max_steps=max_steps,
            dt0=dt0,
            log_time=m.log_time,
        )
        if isinstance(aux, dict) and "result" in aux:  # a preliminary phase (logistic LP-FT's LP) that failed
            result = RESULTS.where(is_okay(aux["result"]), result, aux["result"])
            steps = steps + aux["num_steps"]
            # nothing after a failed first phase is a state of the method: every time is unreached
            ys = jax.tree_util.tree_map(lambda y: jnp.where(is_okay(aux["result"]), y, jnp.nan), ys)
        v, dG, basis = m.decode(problem, ys, args, aux, p)
        label = choice.solver_name(solver)
    tr = make_trajectory(
        problem, times, v, dG, basis, num_steps=steps, result=result, t_stop=t_stop, method=name, solver=label,
        loss=m.loss,
    )  # fmt: skip
    # The problem's own arrays are left out of the program's outputs and put back by `_with_inputs`: XLA copies an
    # output that is an input, and for V (d, r) that copy was most of a call's cost at large d (measured at
    # d = 10⁵, r = 200: about 60 ms of a 110 ms call that takes 226 steps to t = 1).
    return dataclasses.replace(tr, B0=None, basis=None if basis is problem.reduced.V else tr.basis)


def _with_inputs(tr: Trajectory, problem) -> Trajectory:
    """`_core`'s trajectory with the problem's arrays it left out (B0, and V where it is the basis)."""
    return dataclasses.replace(tr, B0=problem.B0, basis=problem.reduced.V if tr.basis is None else tr.basis)


_lp_limit_head = jit(lp_limit_head, setup=True)  # one small program, not a dispatch per operation on eager calls


def simulate(
    method,
    problem: Problem,
    v0,
    times,
    *,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
    solver=None,
    throw: bool = True,
    key=None,
    lp_head: bool = False,
    loss: str = "squared",
    _explicit=None,
    _pad: bool = True,
    **params,
) -> Trajectory:
    """Run the registered method `method` on `problem` from the head `v0`, saving at `times`.

    **Arguments:**

    - `method`: a registered name (`linnet.methods()`) or a `linnet.Method`.
    - `problem`: a `Problem`; `v0`: (k,) initial head; `times`: (T,) increasing times ≥ 0 in the paper's units,
      a last `inf` for the limit. All three may be traced.
    - `rtol`, `atol`: tolerances of the step controller and the steady-state test; `max_steps`: step budget
      (iterations for GD: see its `max_iter`); `solver`: a diffrax solver for flows (default: see the module).
    - `throw`: raise on failure (default); `False` returns the trajectory with its `result` code instead.
    - `key`: a `jax.random` key for methods that draw (LoRA); `lp_head`: start from the LP limit v_lp^∞.
    - `loss`: "squared" (L̂ = ‖X Bᵀv − y‖², default) or "logistic" (L̂ = Σ_i log(1 + exp(−y_i vᵀBx_i)), labels
      y ∈ {±1}; the variants `linnet.methods("logistic")`, integrated in log time; see `linnet._methods.logistic`).
    - `**params`: the method's parameters (`linnet.get_method(name).params`).
    - `_explicit` (internal, for batched callers such as `sweep`): a per-member boolean, decided from the concrete
      data of each member before tracing, that selects the explicit plan with its fallback by `lax.cond`.
    - `_pad` (internal): whether a flow that declares `pad` takes its padded route (`linnet._run.padded`: one
      integration program per bucket of r). A caller whose own program is compiled per shape anyway (the batches
      of `sweep` and `batched_predictors`) passes False: there padding buys no reuse and costs arithmetic on
      bucket(r) columns (up to 1.25 r; 8 for r < 8).

    **Returns:** a `Trajectory` (its `method`, `solver`, `result`, `num_steps` and `t_stop` say how it was
    obtained).
    """
    m = get_method(method, loss)
    reference = REFERENCE.get()
    if reference is not None:  # inside `linnet.testing.reference()`: the independent simulator answers instead
        return reference(m, problem, v0, times, params, lp_head=lp_head, key=key)
    if not isinstance(problem, Problem):
        raise TypeError(f"`problem` must be a linnet.Problem, got {type(problem).__name__}")
    if problem.X.ndim != 2:
        raise ValueError(
            f"`problem` must be one instance (X of shape (n, d)), got X of shape {problem.X.shape}; "
            "use jax.vmap or linnet.sweep for a batched Problem"
        )
    v0 = check_head(problem, v0)
    times = check_times(times)
    rtol, atol = check_tolerance(rtol, "rtol"), check_tolerance(atol, "atol")
    if solver is not None:
        import diffrax as dfx

        if m.kind != "flow":
            raise ValueError(f"`solver` applies to methods solved as ODEs; {m.name!r} is a {m.kind.replace('_', ' ')}")
        if not isinstance(solver, dfx.AbstractSolver):
            raise TypeError(f"`solver` must be a diffrax solver instance (e.g. diffrax.Kvaerno5()), got {solver!r}")
    if int(max_steps) != max_steps or max_steps < 1:
        raise ValueError(f"`max_steps` must be a positive integer, got {max_steps}")
    dtype = problem.X.dtype
    if m.kind != "closed_form":  # a closed form is exact: its tolerances are not used
        warn_tolerance(rtol, atol, dtype)
        if m.pad is not None and not is_traced(problem, times) and bool(np.isinf(np.asarray(times)[-1])):
            warn_unresolved_limit(problem.reduced.s, rtol, dtype)  # the FT-family flows (they pad r)
    reals, statics = parse_params(m, params, dtype)
    p = {**reals, **dict(statics)}
    if m.checks is not None:
        for bad, message in m.checks(p, times):
            v0 = check_value(v0, bad, message)
    if m.loss == "logistic":
        v0 = check_value(
            v0, ~jnp.all(jnp.abs(problem.y) == 1),
            "the logistic loss needs labels `problem.y` in {-1, +1}; use subspace_shift(..., labels='sign')",
        )  # fmt: skip
    if m.no_limit is not None and not is_traced(times) and bool(np.isinf(np.asarray(times)[-1])):
        why = None if is_traced(problem) else m.no_limit(problem, p)
        if why is None and is_traced(problem) and m.loss != "squared":
            why = f"{m.name} (loss={m.loss!r}) decides whether t = inf exists from concrete data; pass finite times"
        if why is not None:
            raise ValueError(f"`times` ends in inf, but {why}")
    if m.delegate is not None and not is_traced(reals):
        other = m.delegate(p)
        if other is not None:
            name, kw, scale = other
            if not is_traced(times):
                t = np.asarray(times)
                fin = np.isfinite(t)
                with np.errstate(over="ignore"):  # an overflow is what this check reports
                    ts = t[fin] * scale
                if not (np.all(np.isfinite(ts)) and np.all(ts[1:] > ts[:-1]) and np.all((ts > 0) == (t[fin] > 0))):
                    raise ValueError(
                        f"{m.name} with these parameters is {name} on the time η · t with η = {scale:g} (the rate "
                        f"that is not 0), and η · `times` leaves the range of floating point or collapses; pass a rate "
                        "or times of a representable product"
                    )
            traj = simulate(
                name,
                problem,
                v0,
                times * scale,
                rtol=rtol,
                atol=atol,
                max_steps=max_steps,
                throw=throw,
                key=key,
                lp_head=lp_head,
                _pad=_pad,
                **kw,
            )
            return dataclasses.replace(traj, times=jnp.asarray(times, dtype), method=m.name)
    if m.kind != "closed_form":  # the closed forms are scale-free; a solved flow or an iteration is not
        if is_traced(problem):
            v0 = check_value(v0, _scale_bad(problem), "linnet: " + _scale_advice(problem))
        elif not _representable(problem):
            raise ValueError(_scale_advice(problem))
    if m.needs_key:
        if key is None:
            raise TypeError(f"method {m.name!r} draws its initialisation: pass `key` (a jax.random key)")
    else:
        key = None
    # the LP head is computed before the core, so that LP-FT runs FT's compiled program (see `Method.program`)
    start = _lp_limit_head(problem, v0) if (lp_head or m.lp_head) else v0
    name, core_reals, core_statics = m.name, reals, statics
    if m.program is not None:
        name, core_reals = m.program(p, dtype)
        core_statics = ()
    args = (problem, start, times, core_reals, key, rtol, atol)
    plan = solver_plan(m, None if is_traced(problem) else problem.reduced.s, p, solver, problem.k)
    traced = is_traced(args)

    pads = get_method(name, m.loss).pad is not None

    def run(i):
        solver_i, budget = plan[i]
        tr = (padded_core if _pad and pads and paddable(solver_i) else _core)(
            *args,
            name=name,
            loss=m.loss,
            statics=core_statics,
            solver=solver_i,
            max_steps=min(int(max_steps), budget),
        )
        tr = _with_inputs(tr, problem)
        return tr if tr.method == m.name else dataclasses.replace(tr, method=m.name)

    if _explicit is not None and len(plan) == 1 and solver is None and m.explicit_ok is not None and m.explicit_ok(p):
        plan = [(choice.explicit_solver(), choice.EXPLICIT_STEPS), plan[0]]
        label = "|".join(choice.solver_name(s) for s, _ in plan)

        def relabel(tr):
            return dataclasses.replace(tr, solver=label)

        # the implicit solve is traced once, after the explicit attempt: the program holds one copy of each solver
        # (a nested `cond` with the implicit solve in both branches held two: 2.4 s against 1.6 s to compile)
        explicit = jnp.asarray(_explicit)
        shapes = jax.eval_shape(lambda: relabel(run(0)))
        skipped = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
        first = jax.lax.cond(explicit, lambda: relabel(run(0)), lambda: skipped)
        traj = jax.lax.cond(explicit & is_okay(first.result), lambda: first, lambda: relabel(run(1)))
    elif len(plan) == 1:
        traj = run(0)
    elif not traced:
        traj = run(0)
        traj = traj if bool(is_okay(traj.result)) else run(1)
    else:
        traj = run(0)
        label = "|".join(choice.solver_name(s) for s, _ in plan)
        first = dataclasses.replace(traj, solver=label)
        traj = jax.lax.cond(is_okay(first.result), lambda: first, lambda: dataclasses.replace(run(1), solver=label))
    if throw:
        traj = _throw(traj, m, problem, v0, p, times, max_steps, traced)
    return traj


def _throw(traj: Trajectory, m: Method, problem, v0, p, times, max_steps, traced) -> Trajectory:
    if traced:
        # one message for every failure: under vmap the members may fail differently, and a per-code message
        # would name one member's code for all
        msg = (f"linnet.{m.name}: the solve did not succeed (max_steps reached, a failed step, or divergence); pass "
               "throw=False to get each member's `result` code (linnet.RESULTS) instead of this error")  # fmt: skip
        return eqx.error_if(traj, ~is_okay(traj.result), msg)
    if bool(is_okay(traj.result)):
        return traj
    t = np.asarray(times)
    target = "a steady state (t = inf)" if np.isinf(t[-1]) else f"t = {t[-1]:g}"
    advice = m.advice(problem, v0, p) if m.advice is not None else ""
    if traj.result == RESULTS.nonlinear_divergence:
        raise DivergenceError(
            f"{m.name}: diverged after {int(traj.num_steps)} iterations (the loss blew up): the step must stay below "
            f"about 2/λ_max of the Hessian of L̂ along the path. {advice}".strip()
        )
    if m.budget != "max_steps":  # a method with a budget of its own (GD's `max_iter`)
        unreached = t[t > float(traj.t_stop)]
        if unreached.size and np.isfinite(unreached[0]):
            target = f"t = {unreached[0]:g}"
        raise ConvergenceError(
            f"{m.name} did not reach {target} within {int(traj.num_steps)} iterations; it ended at "
            f"t = {float(traj.t_stop):.6g}. Increase `{m.budget}` (now {p[m.budget]}). {advice}".strip()
        )
    raise ConvergenceError(
        f"{m.name} did not reach {target} within {int(traj.num_steps)} steps ({RESULTS[traj.result]}); it ended at "
        f"t = {float(traj.t_stop):.6g}. Increase `max_steps` (now {max_steps}) or loosen `rtol`/`atol`. "
        f"{advice}".strip()
    )


def _scale_bad(problem):
    """Whether X's scale (largest singular value) is outside `scale_range` of its dtype (a traced bool when
    traced; NumPy on a concrete problem, since inside a caller's `jit` jnp would stage even a constant)."""
    s = problem.reduced.s
    return scale_out_of_range(s if is_traced(problem) else np.asarray(s), problem.X.dtype)


def _representable(problem) -> bool:
    return is_traced(problem) or not bool(_scale_bad(problem))


def _scale_advice(problem) -> str:
    lo, hi = scale_range(problem.X.dtype)
    c = "traced" if is_traced(problem) else f"{float(np.max(np.asarray(problem.reduced.s))):.3g}"
    return (
        f"the scale of `problem.X` (largest singular value {c}) is outside [{lo:.2g}, {hi:.2g}], the range over which "
        f"{jnp.dtype(problem.X.dtype).name} represents the flow's rates (about s²) and the solver's norms (about "
        "s⁴); rescale X and y by a common factor c: no limit changes, and time scales by 1/c²"
    )
