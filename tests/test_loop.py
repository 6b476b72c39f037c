"""linnet's own adaptive loop for Rodas5P and Tsit5 (`linnet._solver.loop`): against closed forms (a stiff linear
ODE for Rodas5P, a non-stiff one for Tsit5, scipy.linalg.expm, and its derivative in y0), against diffrax's
`diffeqsolve` with the same solver, controller and first step (the same steps to rounding), and its edge cases:
saved times at 0 and repeated, a steady state at the start, a spent step budget.

Tolerances: rtol = 1e-10 and atol = 1e-12 against the closed form; a fifth-order method's global error is a few
times rtol (1e-8 relative, 100 × rtol, is the check). The two drivers make the same decisions from the same
numbers, so they differ only by the rounding of their compiled programs: 1e-12 relative.
"""

from __future__ import annotations

from types import SimpleNamespace

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from helpers import rounding_tol, stiff_ft_instance

from linnet._methods import ft_flow
from linnet._solver.loop import adaptive_loop
from linnet._solver.rosenbrock import Rodas5P

# a stiff, non-normal linear system: eigenvalues −1, −30, −1e4 (a rate ratio of 1e4) mixed by a triangular factor
_Q = np.array([[1.0, 0.4, -0.2], [0.0, 1.0, 0.7], [0.0, 0.0, 1.0]])
A = -_Q @ np.diag([1.0, 30.0, 1e4]) @ np.linalg.inv(_Q)
Y0 = np.array([1.0, -0.5, 2.0])


def _linear(t, y, args):
    return args @ y


def _run(times, *, steady=None, max_steps=10_000, rtol=1e-10, atol=1e-12, dt0=None, adjoint=None, y0=Y0, A=A,
         solver=None):  # fmt: skip
    solver = Rodas5P() if solver is None else solver
    return adaptive_loop(_linear, solver, jnp.asarray(y0), jnp.asarray(A), jnp.asarray(times), steady=steady,
                           rtol=rtol, atol=atol, norm=None, max_steps=max_steps, pcoeff=0.3, icoeff=0.4,
                           adjoint=dfx.ForwardMode() if adjoint is None else adjoint, dt0=dt0)  # fmt: skip


def test_saved_states_match_the_matrix_exponential():
    """y(t) = expm(A t) y0 at the saved times (a first time of 0, a repeated time, a late time where the fast modes
    are long gone), both with the lax loop (forward mode) and the checkpointed one (reverse mode)."""
    times = np.array([0.0, 1e-3, 0.05, 0.05, 0.7, 3.0])
    want = np.stack([scipy.linalg.expm(A * t) @ Y0 for t in times])
    for adjoint in (dfx.ForwardMode(), dfx.RecursiveCheckpointAdjoint()):
        ys, result, steps, t_stop = _run(times, adjoint=adjoint)
        assert result == dfx.RESULTS.successful
        assert float(t_stop) == 3.0 and 10 < int(steps) < 2_000
        err = np.max(np.abs(np.asarray(ys) - want), axis=1) / np.max(np.abs(want), axis=1)
        assert np.all(err < 1e-8), err
        np.testing.assert_array_equal(np.asarray(ys[0]), Y0)  # time 0 is the initial state itself


# a non-stiff linear system for Tsit5: eigenvalues −0.5, −1.5, −4, mixed by the same factor
A_MILD = -_Q @ np.diag([0.5, 1.5, 4.0]) @ np.linalg.inv(_Q)


def test_tsit5_matches_the_matrix_exponential_and_its_derivative():
    """Tsit5 in the loop (its first-same-as-last state carried between steps): the saved states against
    expm(A t) y0 (1e-8 relative: a fifth-order method at rtol = 1e-10), and the derivative of the last state in y0
    against expm(A t), by forward mode (the loop differentiated as it runs) and by reverse mode (the kept steps
    replayed in the checkpointed loop, each evaluating its first stage afresh): both within 1e-8 of the closed
    form, and within 1e-12 of each other (they differentiate the same discrete steps)."""
    times = np.array([0.0, 0.3, 0.3, 2.0, 5.0])
    want = np.stack([scipy.linalg.expm(A_MILD * t) @ Y0 for t in times])
    jacobians = []
    for adjoint in (dfx.ForwardMode(), dfx.RecursiveCheckpointAdjoint()):
        ys, result, steps, t_stop = _run(times, adjoint=adjoint, A=A_MILD, solver=dfx.Tsit5())
        assert result == dfx.RESULTS.successful and float(t_stop) == 5.0 and 10 < int(steps) < 2_000
        err = np.max(np.abs(np.asarray(ys) - want), axis=1) / np.max(np.abs(want), axis=1)
        assert np.all(err < 1e-8), err

        def last(y0, adjoint=adjoint):
            return _run(times, adjoint=adjoint, A=A_MILD, solver=dfx.Tsit5(), y0=y0)[0][-1]

        diff = jax.jacfwd if isinstance(adjoint, dfx.ForwardMode) else jax.jacrev
        jac = np.asarray(diff(last)(jnp.asarray(Y0)))
        ref = scipy.linalg.expm(A_MILD * 5.0)
        assert np.max(np.abs(jac - ref)) < 1e-8 * np.max(np.abs(ref))
        jacobians.append(jac)
    assert np.max(np.abs(jacobians[0] - jacobians[1])) < 1e-12 * np.max(np.abs(jacobians[0]))


def test_tsit5_takes_diffraxs_steps_from_the_same_first_step():
    """On a non-stiff FT flow (isotropic inputs, n = 10 of d = 40; t = ∞ by the steady-state rule, saves at 0.1 and
    1): diffrax's `diffeqsolve` with Tsit5 (its own first-same-as-last state), the same PI controller clipped to the
    saved times and the rule as an event, from the same first step, takes as many steps and saves the same states
    (1e-12 relative at 0.1 and 1; the rounding bound at the stop)."""
    import linnet

    p = linnet.subspace_shift(jax.random.PRNGKey(3), d=40, k=2, n=10, eps=0.2, inputs="isotropic")
    v0 = jax.random.normal(jax.random.PRNGKey(4), (2,))
    y0, args = ft_flow.initial_state(p.reduced, v0, jnp.asarray(ft_flow.FT_PARAMS))
    rtol, atol, dt0 = 1e-8, 1e-10, 1e-3
    steady = ft_flow.steady_state(rtol, atol)
    times = jnp.asarray([0.1, 1.0, jnp.inf])
    ys, result, steps, t_stop = adaptive_loop(
        ft_flow.general_field, dfx.Tsit5(), y0, args, times, steady=steady, rtol=rtol, atol=atol, norm=None,
        max_steps=10_000, pcoeff=0.3, icoeff=0.4, adjoint=dfx.ForwardMode(), dt0=dt0,
    )  # fmt: skip
    controller = dfx.ClipStepSizeController(dfx.PIDController(rtol=rtol, atol=atol, pcoeff=0.3, icoeff=0.4),
                                            step_ts=times[:-1])  # fmt: skip
    sol = dfx.diffeqsolve(dfx.ODETerm(ft_flow.general_field), dfx.Tsit5(), 0.0, jnp.inf, dt0, y0, args,
                          saveat=dfx.SaveAt(ts=times[:-1], t1=True), stepsize_controller=controller,
                          event=dfx.Event(steady), max_steps=10_000, throw=False)  # fmt: skip
    assert result == dfx.RESULTS.event_occurred and sol.result == dfx.RESULTS.event_occurred
    assert sol.stats is not None and sol.ys is not None and sol.ts is not None
    assert int(steps) == int(sol.stats["num_steps"]) and 10 < int(steps) < 5_000
    assert abs(float(t_stop) - float(sol.ts[-1])) <= 1e-6 * float(sol.ts[-1])
    for mine, theirs in zip(ys, sol.ys, strict=True):
        mine, theirs = np.asarray(mine), np.asarray(theirs)
        scale = np.max(np.abs(theirs))
        assert np.max(np.abs(mine[:2] - theirs[:2])) <= 1e-12 * scale
        assert np.max(np.abs(mine[2] - theirs[2])) <= rounding_tol(p, SimpleNamespace(num_steps=steps)) * scale


def test_same_steps_as_diffrax_from_the_same_first_step():
    """On the stiff FT flow (t = ∞ by the steady-state rule, saves at 0.1 and 1): diffrax's `diffeqsolve` with
    Rodas5P, its PID controller (pcoeff 0.3, icoeff 0.4) clipped to the saved times and the rule as an event,
    from the same first step, takes as many steps and saves the same states at 0.1 and 1 (1e-12) and at the stop
    (the rounding bound of two compiled programs, `helpers.rounding_tol`)."""
    p, v0 = stiff_ft_instance()
    r = p.reduced
    params = jnp.asarray(ft_flow.FT_PARAMS)
    y0, args = ft_flow.initial_state(r, v0, params)
    rtol, atol, dt0 = 1e-8, 1e-10, 1e-4
    steady = ft_flow.steady_state(rtol, atol)
    solver = ft_flow.default_solver()
    times = jnp.asarray([0.1, 1.0, jnp.inf])
    ys, result, steps, t_stop = adaptive_loop(
        ft_flow.general_field, solver, y0, args, times, steady=steady, rtol=rtol, atol=atol, norm=None,
        max_steps=10_000, pcoeff=0.3, icoeff=0.4, adjoint=dfx.ForwardMode(), dt0=dt0,
    )  # fmt: skip
    assert result == dfx.RESULTS.event_occurred
    controller = dfx.ClipStepSizeController(dfx.PIDController(rtol=rtol, atol=atol, pcoeff=0.3, icoeff=0.4),
                                            step_ts=times[:-1])  # fmt: skip
    sol = dfx.diffeqsolve(dfx.ODETerm(ft_flow.general_field), solver, 0.0, jnp.inf, dt0, y0, args,
                          saveat=dfx.SaveAt(ts=times[:-1], t1=True), stepsize_controller=controller,
                          event=dfx.Event(steady), max_steps=10_000, throw=False)  # fmt: skip
    assert sol.result == dfx.RESULTS.event_occurred and sol.stats is not None and sol.ys is not None
    assert int(steps) == int(sol.stats["num_steps"])
    # Near the limit the error estimates are at rounding level, so the last, long steps follow rounding: the stopped
    # state, stationary there, agrees to the rounding bound (below), and the stop time to 1e-4 or to 4 × how far a
    # change of v0 by one ulp moves the stops (measured: 9e-6 relative apart with XLA's defaults; with the suite's
    # flags diffrax stopped at 2373 against 2502, and v0 ± 1 ulp moved its stop to 2438 and 2426)
    stops = [float(t_stop), float(np.asarray(sol.ts)[-1])]
    for direction in (np.inf, -np.inf):
        v = jnp.asarray(np.nextafter(np.asarray(v0), direction))
        y, a = ft_flow.initial_state(r, v, params)
        stops.append(float(np.asarray(dfx.diffeqsolve(dfx.ODETerm(ft_flow.general_field), solver, 0.0, jnp.inf, dt0,
                                                      y, a, saveat=dfx.SaveAt(t1=True), stepsize_controller=controller,
                                                      event=dfx.Event(steady), max_steps=10_000).ts)[-1]))  # fmt: skip
    spread = max(stops[1:]) - min(stops[1:])  # diffrax's stops from v0 and v0 ± 1 ulp
    assert abs(stops[0] - stops[1]) <= max(1e-4 * stops[1], 4 * spread), stops
    for mine, theirs in zip(ys, sol.ys, strict=True):
        mine, theirs = np.asarray(mine), np.asarray(theirs)
        scale = np.max(np.abs(theirs))
        assert np.max(np.abs(mine[:2] - theirs[:2])) <= 1e-12 * scale  # t = 0.1, 1: measured ≤ 1.3e-15
        assert np.max(np.abs(mine[2] - theirs[2])) <= rounding_tol(p, SimpleNamespace(num_steps=steps)) * scale


def test_a_steady_start_takes_no_step_and_fills_every_time():
    """A rule that holds at t = 0 stops there: no step, `event_occurred`, every saved time holds y0."""
    ys, result, steps, t_stop = _run([0.5, 1.0, np.inf], steady=lambda t, y, a: jnp.asarray(True))
    assert result == dfx.RESULTS.event_occurred and int(steps) == 0 and float(t_stop) == 0.0
    np.testing.assert_array_equal(np.asarray(ys), np.tile(Y0, (3, 1)))


def test_a_stop_fills_the_later_times_with_the_stopped_state():
    """A rule that holds once |y| is small stops the solve before the last finite time: the times after the stop
    get the stopped state, the ones before it their own (against the matrix exponential, 1e-8)."""
    ys, result, _, t_stop = _run([0.1, 50.0, 80.0], steady=lambda t, y, a: jnp.max(jnp.abs(y)) < 1e-6)
    assert result == dfx.RESULTS.event_occurred and float(t_stop) < 50.0
    want = scipy.linalg.expm(A * 0.1) @ Y0
    assert np.max(np.abs(np.asarray(ys[0]) - want)) < 1e-8 * np.max(np.abs(want))
    np.testing.assert_array_equal(np.asarray(ys[1]), np.asarray(ys[2]))
    assert np.max(np.abs(np.asarray(ys[2]))) < 1e-6


def test_a_spent_budget_fails_and_leaves_the_unreached_times_nan():
    """With 20 steps for a solve that needs hundreds: `max_steps_reached`, 20 steps, the times reached hold their
    states and the others NaN, and the stop time is where the solve got to."""
    ys, result, steps, t_stop = _run([0.0, 1e-5, 3.0], max_steps=20)
    assert result == dfx.RESULTS.max_steps_reached and int(steps) == 20
    assert 1e-5 < float(t_stop) < 3.0
    assert np.all(np.isfinite(np.asarray(ys[:2]))) and np.all(np.isnan(np.asarray(ys[2])))


def test_under_jit_and_vmap_members_stop_on_their_own():
    """`vmap` over initial states of very different sizes (so the members take different step counts): each
    member's saves equal its own single solve's, to rounding."""
    y0s = jnp.asarray([Y0, 1e-3 * Y0[::-1], 5.0 * Y0])
    times = jnp.asarray([0.2, 2.0])

    def one(y0):
        ys, _, steps, _ = _run(times, y0=y0)
        return ys, steps

    batched, steps = jax.jit(jax.vmap(one))(y0s)
    assert len(set(np.asarray(steps).tolist())) > 1
    for i in range(3):
        single, _ = one(y0s[i])
        assert np.max(np.abs(np.asarray(batched[i]) - np.asarray(single))) <= 1e-12 * np.max(np.abs(single))
