"""linnet's own adaptive time-stepping loop, for the FT family's two default solvers: the Rosenbrock method `Rodas5P`
(stiff flows) and diffrax's `Tsit5` (the explicit choice for flows that are not stiff).

`integrate` runs every other solver through `diffrax.diffeqsolve`. These two steps need none of what makes that
loop general (no dense output: the saved times are stepped to, and the steady-state rule stops at a step's end;
the only solver state is Tsit5's first-same-as-last field evaluation, carried as diffrax carries it), and the
generality costs compile time: the FT flow's integration program traces and compiles in 0.9 s here against 1.7 s
through diffrax (small stiff problem, Rodas5P, 2 CPU cores), and a first explicit `fine_tune` (d = 200, k = 3,
n = 40, isotropic inputs) takes 1.0 s against 1.9 s, at about the same run time per step (the step's own
arithmetic dominates; measured at d = 5 000, k = 20, n = 1 000 with Tsit5: 3–6 % slower warm, the same operations
in a profile). The loop makes the same decisions as diffrax's `PIDController` (with `pcoeff`, `icoeff` as
`integrate` sets them; `dcoeff = 0`), clipped to the saved times as `ClipStepSizeController` clips them. Its
first step, where the caller gives none, is Hairer's estimate (Hairer, Nørsett & Wanner, Solving ODEs I, §II.4,
as diffrax's `PIDController` computes it for an `ODETerm`); inside `diffeqsolve` the term reaches the controller
wrapped, and diffrax then starts from Δt = 0.01, which on the stiff FT flows is rejected several times (small
stiff problem: 6 tries to the first kept step against 4 here, 191 steps in all against 189). From the same first
step both drivers take the same steps (`tests/test_loop.py`).

- A step of length h from (t, y) gives y₁ and an error estimate e. With the scaled error
  ε = ‖e / (atol + rtol · max(|y|, |y₁|))‖ (the given norm, RMS by default), the step is kept if ε < 1, and the
  next length is h · clip(0.9 · ε^−(p+i)/q · ε_prev^(p/q), 1 (kept) or 0.2 (rejected), 10 (kept) or 0.9
  (rejected)), q the solver's error order and ε_prev the last kept step's ε. A non-finite estimate (the step
  blew up) shrinks the step by 0.2. The controller's decisions are not differentiated (as in diffrax).
- A step never passes the next saved time: it is clipped to end there, and its end state is saved; repeated
  saved times are saved at once, without a step.
- After every kept step (and at t = 0) the steady-state rule is evaluated; when it holds, the solve stops and every
  saved time not yet reached gets the stopped state.
- `max_steps` counts every step tried, kept or rejected (diffrax's `num_steps`); a solve that runs out of them
  fails with `max_steps_reached`, and the saved times it did not reach hold NaN.

- A solver state (Tsit5's: whether this is the first step, and f at the step's start, taken from the last stage of
  the step before) is the new one after a kept step and the old one after a rejected step, as in diffrax.

Differentiation: forward mode (`diffrax.ForwardMode`) differentiates the loop as it runs (`lax.while_loop`).
Reverse mode (`diffrax.RecursiveCheckpointAdjoint`) first runs the loop without derivatives, recording the steps
it keeps, then replays exactly those steps in equinox's checkpointed while loop, which backpropagates through them
with recursive checkpointing (`_decide_then_replay`): the derivative is that of the solution returned. The
step-size decisions are not differentiated, as in diffrax. An undifferentiated solve runs the plain loop.
"""

from __future__ import annotations

import diffrax as dfx
import equinox as eqx
import equinox.internal as eqxi  # its while loop: the one diffrax's RecursiveCheckpointAdjoint runs on
import jax
import jax.numpy as jnp
import optimistix as optx

# diffrax's PIDController defaults, which `integrate` keeps: safety factor, step growth and shrink limits
_SAFETY, _GROW, _SHRINK = 0.9, 10.0, 0.2


def adaptive_loop(field, solver, y0, args, times, *, steady, rtol, atol, norm, max_steps: int, pcoeff, icoeff,
                    adjoint, dt0=None):  # fmt: skip
    """Integrate dy/dt = field(t, y, args) from y(0) = y0 with `solver` (a one-step method with an error estimate whose
    only state is diffrax's `init`/`step` solver state: `Rodas5P`, `Tsit5`) and save at `times`, as described in the
    module docstring.

    **Arguments:** as `linnet._solver.integrate.integrate` (`times` (T,) increasing from ≥ 0, the last possibly
    `inf`; `steady(t, y, args)` → bool or None; `norm` a function of a pytree like `y0`), and `pcoeff`, `icoeff`
    (the PI controller's coefficients), `adjoint` (None: not differentiated; `diffrax.ForwardMode`;
    `RecursiveCheckpointAdjoint`: reverse mode, by the replay below, about twice the work of a solve), `dt0`
    (the first step; None: chosen as below).

    **Returns:** `(ys, result, num_steps, t_stop)` as `integrate`: the states at `times` (leading axis T), a
    `diffrax.RESULTS` code (`successful`, `event_occurred` for a steady-state stop, `max_steps_reached`), the steps
    tried and the time the solve ended.
    """
    replay_solver = _scan_kind(solver, "bounded")
    solver = _scan_kind(solver, "lax")
    leaves = jax.tree_util.tree_leaves(y0)
    dtype = leaves[0].dtype
    T = times.shape[0]
    rows = jnp.arange(T)
    term = dfx.ODETerm(field)
    order = solver.error_order(term)
    zero = jnp.zeros((), dtype)
    rtol, atol = jnp.asarray(rtol, dtype), jnp.asarray(atol, dtype)
    norm = optx.rms_norm if norm is None else norm  # diffrax's default
    is_steady = (lambda t, y: jnp.asarray(False)) if steady is None else (lambda t, y: steady(t, y, args))

    def tmap(f, *trees):
        return jax.tree_util.tree_map(f, *trees)

    def save(ys, y, mask):  # rows `mask` of every saved leaf set to y
        def write(ys):
            return tmap(lambda buf, x: jnp.where(mask.reshape((-1,) + (1,) * x.ndim), x[None], buf), ys, y)

        # only the steps that end at a saved time write: a write touches every row of the buffers (T × the state),
        # which at d = 5 000, n = 1 000 was a tenth of an explicit step
        return jax.lax.cond(jnp.any(mask), write, lambda ys: ys, ys)

    # the first step (as diffrax chooses it when not given): from the sizes of y0, f(y0) and a difference quotient of f
    scale = tmap(lambda y: atol + rtol * jnp.abs(y), y0)
    f0 = field(zero, y0, args)
    d0 = norm(tmap(jnp.divide, y0, scale))
    d1 = norm(tmap(jnp.divide, f0, scale))
    small = (d0 < 1e-5) | (d1 < 1e-5)
    h0 = jnp.where(small, 1e-6, 0.01 * d0 / jnp.where(small, 1.0, d1))
    f1 = field(h0, tmap(lambda y, f: y + h0 * f, y0, f0), args)
    d2 = norm(tmap(lambda a, b, s: (a - b) / s, f1, f0, scale)) / h0
    d12 = jnp.maximum(d1, d2)
    flat = d12 <= 1e-15
    h1 = jnp.where(flat, jnp.maximum(1e-6, h0 * 1e-3), (0.01 / jnp.where(flat, 1.0, d12)) ** (1 / order))
    first = jnp.minimum(100 * h0, h1) if dt0 is None else dt0
    first = jax.lax.stop_gradient(jnp.asarray(first, dtype))

    stop0 = is_steady(zero, y0)
    state0 = solver.init(term, zero, times[-1], y0, args)  # None for a one-step method; FSAL: (first step?, f(y))
    ys0 = save(tmap(lambda y: jnp.full((T, *y.shape), jnp.nan, y.dtype), y0), y0, (times <= 0) & (rows < T - 1))
    idx0 = jnp.sum(times <= 0).astype(jnp.int32)
    # carry: t, y, proposed step, ε of the last kept step (its inverse), saves, saved count, steps tried, stopped,
    # the solver's state
    init = (zero, y0, first, jnp.ones((), dtype), ys0, idx0, jnp.asarray(0), stop0, state0)
    coeff1, coeff2 = (pcoeff + icoeff) / order, -pcoeff / order

    def cond(carry):
        _, _, _, _, _, idx, n, stopped, _ = carry
        return (~stopped) & (idx < T) & (n < max_steps)

    def body(carry):
        t, y, dt, prev_inv, ys, idx, n, _, state = carry
        t_save = times[jnp.minimum(idx, T - 1)]
        clipped = t + dt >= t_save
        t_next = jnp.where(clipped, t_save, t + dt)
        y1, err, _, state1, _ = solver.step(term, t, t_next, y, args, state, False)

        def scaled(y_0, y_1, e):
            y_1 = jnp.where(jnp.isnan(y_1), y_0, y_1)
            return e / (atol + rtol * jnp.maximum(jnp.abs(y_0), jnp.abs(y_1)))

        inv = jax.lax.stop_gradient(1.0 / norm(tmap(scaled, y, y1, err)))
        keep = inv > 1.0
        factor = _SAFETY * inv**coeff1 * prev_inv**coeff2
        factor = jnp.clip(factor, jnp.where(keep, 1.0, _SHRINK), jnp.where(keep, _GROW, _SAFETY))
        factor = jnp.where(jnp.isnan(factor), _SHRINK, factor)
        dt_next = (t_next - t) * factor
        inv = jnp.where((inv == 0) | jnp.isinf(inv), 1.0, inv)
        prev_inv = jnp.where(keep, inv, prev_inv)
        t = jnp.where(keep, t_next, t)
        y = tmap(lambda a, b: jnp.where(keep, b, a), y, y1)
        state = tmap(lambda a, b: jnp.where(keep, b, a), state, state1)  # a rejected step keeps the old state
        stopped = keep & is_steady(t, y)
        # saved here: every time ≤ t not saved before (repeated times at once) but the last, which, like every time
        # after a stop, is saved from the final state after the loop (so that its derivative does not depend on a
        # decision recomputed in reverse mode)
        ys = save(ys, y, keep & (rows >= idx) & (times <= t) & (rows < T - 1))
        idx = jnp.where(keep, jnp.sum(times <= t).astype(jnp.int32), idx)
        return t, y, dt_next, prev_inv, ys, idx, n + 1, stopped, state

    if not isinstance(adjoint, dfx.RecursiveCheckpointAdjoint):
        t, y, _, _, ys, idx, n, stopped, _ = jax.lax.while_loop(cond, body, init)
    else:
        t, y, ys, idx, n, stopped = _decide_then_replay(cond, body, init, replay_solver, term, args, times, save,
                                                        max_steps, adjoint.checkpoints)  # fmt: skip
    ys = save(ys, y, ((rows == T - 1) & (stopped | (idx >= T))) | (stopped & (rows >= idx)))
    finished = dfx.RESULTS.where(idx >= T, dfx.RESULTS.successful, dfx.RESULTS.max_steps_reached)
    return ys, dfx.RESULTS.where(stopped, dfx.RESULTS.event_occurred, finished), n, t


def _scan_kind(solver, kind: str):
    """`solver` with its stages run by a scan of `kind`, for diffrax's Runge–Kutta solvers (Tsit5) that leave it to
    the driver: diffrax sets "lax" under forward mode and "bounded" under its checkpointed adjoint; its default,
    "checkpointed", is a custom derivative that forward mode cannot differentiate. Other solvers as they are."""
    if hasattr(solver, "scan_kind") and solver.scan_kind is None:
        return eqx.tree_at(lambda s: s.scan_kind, solver, kind, is_leaf=lambda x: x is None)
    return solver


def _decide_then_replay(cond, body, init, solver, term, args, times, save, max_steps, checkpoints):
    """Reverse mode: the loop decides its steps without derivatives (recording where each kept step ends, and at
    which saved time if it was clipped to one), then the kept steps are replayed from the recorded times in
    equinox's checkpointed while loop, which backpropagates through them. The replay makes no decision, so its
    derivative is that of the solution it returns; a loop that decided again while being differentiated could
    decide differently at rounding level (its recomputation is another compiled program) and differentiate another
    path than the one it returned (measured: 4e-6 relative on an FT limit's gradient). A step clipped to a saved
    time ends at that (traced) time in the replay, so the saved states are differentiated in the times too."""
    T = times.shape[0]
    rows = jnp.arange(T)
    dtype = times.dtype

    def decide(start):
        def record(carry):
            inner, ends, at, kept = carry
            new = body(inner)
            keep = new[0] != inner[0]  # a kept step moves t (a step of length 0 is never tried)
            clipped = new[0] == times[jnp.minimum(inner[5], T - 1)]
            # written at the next free slot whether kept or not: a rejected step's entry is overwritten by the next
            # kept one, and the replay reads only the `kept` first
            slot = jnp.minimum(kept, max_steps - 1)
            ends = ends.at[slot].set(new[0])
            at = at.at[slot].set(jnp.where(clipped, inner[5], -1))
            return new, ends, at, kept + keep.astype(kept.dtype)

        marks = (jnp.zeros((max_steps,), dtype), jnp.full((max_steps,), -1, jnp.int32), jnp.asarray(0))
        # the record as equinox's loop buffers: written in place, also under vmap (a batched scatter into a
        # loop-carried array would copy it every step)
        return eqxi.while_loop(lambda c: cond(c[0]), record, (start, *marks), buffers=lambda c: (c[1], c[2]),
                               kind="lax")  # fmt: skip

    # every value the loop closes over (the field's and the rule's constants, the times) enters without derivative
    decide_c, consts = jax.closure_convert(decide, init)
    decided, ends, at, kept = decide_c(*jax.lax.stop_gradient((init, *consts)))
    t, _, _, _, _, idx, n, stopped, _ = decided
    _, y0, _, _, ys0, _, _, _, _ = init

    def end(k):  # where kept step k ends: its saved time (traced) if it was clipped to one
        return jnp.where(at[k] >= 0, times[jnp.maximum(at[k], 0)], ends[k])

    def replay(carry):
        k, y, ys = carry
        t0 = jnp.where(k > 0, end(jnp.maximum(k - 1, 0)), jnp.zeros((), dtype))
        t1 = end(k)
        # a fresh solver state: an FSAL method evaluates its first stage again rather than carry f(y) through the
        # differentiated loop (the same value)
        y, _, _, _, _ = solver.step(term, t0, t1, y, args, solver.init(term, t0, t1, y, args), False)
        return k + 1, y, save(ys, y, (times > t0) & (times <= t1) & (rows < T - 1))

    _, y, ys = eqxi.while_loop(lambda c: c[0] < kept, replay, (jnp.asarray(0), y0, ys0), max_steps=max_steps,
                               kind="checkpointed", checkpoints=checkpoints)  # fmt: skip
    return t, y, ys, idx, n, stopped
