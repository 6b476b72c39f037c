"""The one ODE driver: every flow in linnet (the reduced FT flow and its generalisations, LoRA, deep extractors)
is integrated here, saved at the requested times, and stopped at a steady state for t = ∞.

Times. `times` (T,) is increasing from ≥ 0; its last entry may be `inf`. The solve runs from t = 0 to
t1 = times[-1] and saves at times[:-1] and at t1, so one code path serves finite and infinite horizons and
`times` may be traced. The saved times are stepped to (the step controller clips a step that would pass one),
so a saved state carries the step's own error, not that of the dense output between steps. The method's
steady-state rule is a diffrax `Event`: when it fires, the solve ends there (for t1 = ∞ this is how the limit is
reached; for a finite t1 past the steady state it saves work), and every requested time after the stop gets the
stopped state, which is the limit to tolerance.

Differentiation. `jax.grad` goes through the solve by diffrax's default `RecursiveCheckpointAdjoint`
(backpropagation through the steps actually taken, with checkpointing). At t = ∞ this differentiates the
event-stopped solution: the stop time depends on the inputs, but the state there is stationary to tolerance,
so its contribution is of the order of the tolerance. Implicit differentiation of the limit is not an option
for FT: its limits form a manifold of minimisers (rotations of (v, B) that keep the fit), the Hessian there is
singular, and which minimiser is reached is decided by the whole path (`docs/theory.md`, "Derivatives").
"""

from __future__ import annotations

import diffrax as dfx
import jax
import jax.numpy as jnp


def integrate(
    field, y0, args, times, *, steady, solver, rtol, atol, max_steps: int, dt0=None, log_time=False, norm=None
):
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

    **Returns:** `(ys, result, num_steps, t_stop)`: `ys` the states at `times` (leading axis T), `result` a
    `linnet.RESULTS` code (diffrax's, `event_occurred` for a steady-state stop), `num_steps` the steps taken and
    `t_stop` the time the solve ended. After a failure the times not reached hold NaN.
    """
    dtype = jax.tree_util.tree_leaves(y0)[0].dtype
    times = jnp.asarray(times, dtype)
    if log_time:
        times = jnp.log1p(times)  # inf stays inf
        field, steady = _in_log_time(field, steady)
    ts = times[:-1]
    saveat = dfx.SaveAt(ts=ts if ts.shape[0] > 0 else None, t1=True)
    sol = dfx.diffeqsolve(
        dfx.ODETerm(field),
        solver,
        t0=jnp.asarray(0.0, dtype),
        t1=times[-1],
        dt0=dt0,
        y0=y0,
        args=args,
        saveat=saveat,
        # the saved times are stepped to, not interpolated: the dense output between a step's ends is a cubic
        # Hermite polynomial (third order), so a fifth-order step much longer than its error allows for the
        # cubic put the saved states far outside the tolerance (up to 100 × rtol on FT paths; tests/test_accuracy.py)
        stepsize_controller=dfx.ClipStepSizeController(
            dfx.PIDController(rtol=rtol, atol=atol, pcoeff=0.3, icoeff=0.4, **({} if norm is None else {"norm": norm})),
            step_ts=ts if ts.shape[0] > 0 else None,
        ),
        event=None if steady is None else dfx.Event(steady),
        max_steps=max_steps,
        throw=False,
    )
    # diffrax packs saves contiguously: the requested times reached before a steady-state stop come first, then the
    # final (t1 or event) state, then unfilled slots (time inf). Requested times after the stop get the final state.
    assert sol.ts is not None and sol.ys is not None and sol.stats is not None
    # A failed solve (step budget spent, a step that failed) did not reach the times from `last` on: they get NaN,
    # as diffrax marks unfilled saves, so that no value is mistaken for the state at a time the solve never got to.
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
