"""The two ways `jax.grad` goes through a solve (`linnet._solver.integrate.differentiable_solve`): forward mode for
few perturbed entries, diffrax's checkpointed reverse pass otherwise. Each is checked against closed-form
derivatives of a linear ODE (scipy.linalg.expm), against the other at t = ∞ on a stiff FT instance, and for which
one runs.

Tolerances: the solves run at rtol = 1e-10, atol = 1e-12; the derivative of the discrete solution differs from the
exact derivative by the solver's error, a few times rtol, so 1e-7 relative (1000 × rtol) is the check against the
closed forms. The two modes differentiate the same discrete solution, computed by two compiled programs: they agree
to the rounding bound of two compilations (`helpers.rounding_tol`; at t = ∞ the steady-state stop follows the
rounding of the step sizes).
"""

from __future__ import annotations

from types import SimpleNamespace

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from helpers import rel_err, rounding_tol, stiff_ft_instance

import linnet
from linnet._methods import ft_flow
from linnet._solver import integrate as integrate_mod
from linnet._solver.integrate import integrate
from linnet._solver.rosenbrock import Rodas5P

A = np.array([[2.0, 1.0], [-0.5, 1.5]])  # non-normal, eigenvalues 1.75 ± 0.66i: decaying rotation
Y0 = np.array([1.0, -2.0])
TIMES = np.array([0.3, 1.0, 2.5])
C = np.array([[1.0, 0.5], [-0.3, 2.0], [0.7, -1.1]])  # the weights of the scalar objective Σ_t c_tᵀ y(t)

MODES = {"forward": 10**9, "reverse": 0}


def _objective(y0, theta, times):
    """Σ_t c_tᵀ y(t) for dy/dt = −θ A y (θ a closed-over parameter of the field), by linnet's driver."""
    A_ = jnp.asarray(A)

    def field(t, y, args):
        del t, args
        return -theta * (A_ @ y)

    ys, result, _, _ = integrate(field, y0, None, times, steady=None, solver=Rodas5P(), rtol=1e-10, atol=1e-12,
                                 max_steps=10_000)  # fmt: skip
    return jnp.sum(jnp.asarray(C) * ys), result


def _closed_form(theta):
    """The derivatives of Σ c_tᵀ expm(−θ A t) y0 in y0, θ and each t_i."""
    Es = [scipy.linalg.expm(-theta * A * t) for t in TIMES]
    d_y0 = sum(E.T @ c for E, c in zip(Es, C, strict=True))
    d_theta = sum(c @ (-t * A @ E @ Y0) for E, c, t in zip(Es, C, TIMES, strict=True))
    d_times = np.array([c @ (-theta * A @ E @ Y0) for E, c in zip(Es, C, strict=True)])
    return d_y0, d_theta, d_times


@pytest.mark.parametrize("mode", MODES)
def test_gradient_matches_closed_form_in_initial_state_parameter_and_times(mode, monkeypatch):
    """Both modes against the closed form: the initial state (2 entries), a parameter the field closes over (a
    traced θ: the closure is hoisted into the custom derivative's inputs) and the saved times."""
    monkeypatch.setattr(integrate_mod, "FORWARD_MODE_MAX", MODES[mode])
    theta = 0.8
    grads = jax.grad(lambda y, th, ts: _objective(y, th, ts)[0], argnums=(0, 1, 2))(
        jnp.asarray(Y0), jnp.asarray(theta), jnp.asarray(TIMES)
    )
    for got, want in zip(grads, _closed_form(theta), strict=True):
        assert rel_err(np.asarray(got), want) < 1e-7, (mode, got, want)


@pytest.mark.parametrize("mode", MODES)
def test_gradient_under_jit_and_vmap(mode, monkeypatch):
    """`jit(vmap(grad))` over three initial states equals the closed form for each (the objective is linear in
    y0, so its gradient in y0 is the same for all three)."""
    monkeypatch.setattr(integrate_mod, "FORWARD_MODE_MAX", MODES[mode])
    y0s = jnp.asarray([Y0, 2 * Y0, [0.5, 0.5]])
    g = jax.jit(jax.vmap(jax.grad(lambda y: _objective(y, 0.8, jnp.asarray(TIMES))[0])))(y0s)
    want = _closed_form(0.8)[0]
    for row in np.asarray(g):
        assert rel_err(row, want) < 1e-7


def _ft_limit_objective(v0, G0, s, a):
    """A scalar of the FT limit (t = ∞, the steady-state event) on the generalised flow: Σ v∞ + Σ G∞ ⊙ W."""
    params = jnp.asarray(ft_flow.FT_PARAMS, v0.dtype)
    ys, result, steps, _ = integrate(ft_flow.general_field, (v0, G0), (s, a, G0, params), jnp.asarray([jnp.inf]),
                                     steady=ft_flow.steady_state(1e-10, 1e-12), solver=ft_flow.default_solver(),
                                     rtol=1e-10, atol=1e-12, max_steps=100_000)  # fmt: skip
    v, G = ys
    W = jnp.cos(jnp.arange(G.size, dtype=G.dtype)).reshape(G.shape[1:])
    return jnp.sum(v[-1]) + jnp.sum(G[-1] * W), (result, steps)


def test_modes_agree_at_the_limit_on_a_stiff_ft_instance(monkeypatch):
    """At t = ∞ (event-stopped, stiff, Rodas5P with the closed-form Newton solve), the gradient in the head by
    forward mode and by the checkpointed reverse pass agree to the rounding bound of two compilations (measured 0.1
    of it), and both agree with central differences of the solve (step 1e-5: truncation O(h²) ≈ 1e-10 relative,
    the solves' tolerance 1e-10 over 2h ≈ 1e-5; 1e-4)."""
    p, v0 = stiff_ft_instance()
    r = p.reduced
    inputs = (v0, r.G0, r.s, r.Uty)
    out = {}
    for mode, limit in MODES.items():
        monkeypatch.setattr(integrate_mod, "FORWARD_MODE_MAX", limit)
        _, (result, steps) = _ft_limit_objective(*inputs)
        assert bool(result == dfx.RESULTS.event_occurred)
        out[mode] = jax.grad(lambda v: _ft_limit_objective(v, *inputs[1:])[0])(v0)
    tol = rounding_tol(p, SimpleNamespace(num_steps=steps))
    assert rel_err(np.asarray(out["forward"]), np.asarray(out["reverse"])) < tol
    h, e = 1e-5, np.eye(3)
    value = jax.jit(lambda v: _ft_limit_objective(v, *inputs[1:])[0])
    fd = [(value(v0 + h * e[i]) - value(v0 - h * e[i])) / (2 * h) for i in range(3)]
    assert rel_err(np.asarray(out["forward"]), np.asarray(fd)) < 1e-4


class _Spy(dfx.ForwardMode):
    calls = 0

    def __init__(self):
        _Spy.calls += 1


def test_forward_mode_runs_only_for_few_perturbed_entries(monkeypatch):
    """The head alone (3 entries ≤ FORWARD_MODE_MAX = 4) goes by forward mode; the head and the features G0
    (3 + 3 r entries) by the reverse pass; and an undifferentiated solve by neither."""
    assert integrate_mod.FORWARD_MODE_MAX == 4
    monkeypatch.setattr(integrate_mod.dfx, "ForwardMode", _Spy)
    p, v0 = stiff_ft_instance()
    r = p.reduced
    _Spy.calls = 0
    jax.grad(lambda v: _ft_limit_objective(v, r.G0, r.s, r.Uty)[0])(v0)
    assert _Spy.calls == 1
    _Spy.calls = 0
    jax.grad(lambda v, G: _ft_limit_objective(v, G, r.s, r.Uty)[0], argnums=(0, 1))(v0, r.G0)
    _ft_limit_objective(v0, r.G0, r.s, r.Uty)
    assert _Spy.calls == 0


def test_vmap_of_grad_of_fine_tune_with_a_finite_end_equals_a_loop():
    """`vmap(grad)` of FT over heads whose solves take different numbers of steps, to a finite last time, by the
    reverse pass (k = 5 > FORWARD_MODE_MAX): a member that has reached t1 runs masked steps of length 0, whose
    zero cotangents must not meet a non-finite partial derivative (Rodas5P's cᵢⱼuⱼ/Δt; NaN before). Against a
    loop of single gradients, to the rounding bound of two compilations."""
    p = linnet.subspace_shift(jax.random.PRNGKey(4), d=40, k=5, n=12, eps=0.2)
    heads = jax.random.normal(jax.random.PRNGKey(5), (3, 5)) * jnp.asarray([[1.0], [0.3], [2.0]])
    times = [0.0, 1.0, 5.0]

    def f(v):
        return linnet.fine_tune(p, v, times).ood_error[1:].sum()

    batched = np.asarray(jax.vmap(jax.grad(f))(heads))
    trs = [linnet.fine_tune(p, h, times) for h in heads]
    assert len({int(t.num_steps) for t in trs}) > 1  # the members stop at different steps
    for i, h in enumerate(heads):
        one = np.asarray(jax.grad(f)(h))
        assert np.all(np.isfinite(batched[i]))
        assert rel_err(batched[i], one) < rounding_tol(p, *trs)


def test_a_users_grad_reaches_the_forward_program_at_top_level(monkeypatch, small_problem):
    """An un-jitted `jax.grad` of `fine_tune` in the head (k = 2 ≤ FORWARD_MODE_MAX) differentiates at the level of
    the integration program (`solve_program`): its forward-mode program is called with concrete arrays, i.e. as a
    top-level program that linnet compiles with its own options, not traced inside the gradient; under
    `jax.jit(jax.grad)` the same program is part of the caller's trace. The two gradients agree to the rounding
    bound of two compilations, and both with central differences (step 1e-5; 1e-4, as above)."""
    calls = []
    real = integrate_mod._program_forward

    def spy(values, **kwargs):
        calls.append(any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(values)))
        return real(values, **kwargs)

    monkeypatch.setattr(integrate_mod, "_program_forward", spy)
    p = small_problem
    v0 = jnp.asarray([0.8, -0.5])

    def f(v):
        return linnet.fine_tune(p, v, [2.0, np.inf]).ood_error.sum()

    eager = np.asarray(jax.grad(f)(v0))
    assert calls == [False]
    staged = np.asarray(jax.jit(jax.grad(f))(v0))
    assert calls == [False, True]
    tr = linnet.fine_tune(p, v0, [2.0, np.inf])
    assert rel_err(eager, staged) < rounding_tol(p, tr)
    h, e = 1e-5, np.eye(2)
    value = jax.jit(f)
    fd = np.asarray([(value(v0 + h * e[i]) - value(v0 - h * e[i])) / (2 * h) for i in range(2)])
    assert rel_err(eager, fd) < 1e-4
