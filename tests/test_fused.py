"""`FusedKvaerno5`, Kvaerno5 as one fused step (the stiff default before Rodas5P; the FT family's through
`ft_flow.kvaerno5_solver()`): diffrax's Kvaerno5 step for step at two chord iterations, scipy's Radau at its
default three, failed stages rejected, bad arguments refused; its dense-LU Newton solve (the flows with no
structure: logistic loss, LoRA, deep) against the closed form and against diffrax's Kvaerno5."""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest
from helpers import FT_PARAMS as PARAMS
from helpers import scipy_radau_reduced, stiff_ft_instance

import linnet
from linnet._methods import ft_flow as _flow
from linnet._methods.ft_jacobian import FTNewton
from linnet._methods.logistic import _args as _logistic_args
from linnet._methods.logistic import logistic_field
from linnet._solver.fused import FusedKvaerno5
from linnet._solver.integrate import integrate
from linnet._solver.newton import DenseNewton


@pytest.fixture(scope="module")
def stiff():
    return stiff_ft_instance()


def _reduced(p, v0, times, solver, params, rtol=1e-8, atol=1e-10):
    r = p.reduced
    return _flow.solve_reduced(r.s, r.Uty, v0, r.G0, jnp.asarray(times), rtol=rtol, atol=atol, max_steps=100_000,
                               solver=solver, params=jnp.asarray(params))  # fmt: skip


@pytest.mark.slow  # step-by-step comparisons with diffrax
def test_two_chord_iterations_take_diffrax_kvaerno5s_steps(stiff):
    """With `root_find_max_steps=2` (the count diffrax's VeryChord effectively allows) the fused step makes every
    decision of diffrax's own Kvaerno5 with dense LU Newton solves (the independent reference): the same number of
    steps to t = ∞, and the same states to 1e-9. Two linear solvers may differ by what the chord iteration leaves
    (it stops with up to κ = 1e-2 of the tolerance rtol 1e-8 left), not only by rounding: measured 1.8e-11, the
    bound used for the same comparison in test_structured.py. The default three iterations take fewer steps here."""
    p, v0 = stiff
    times = [0.0, 0.3, 3.0, np.inf]
    fused = _reduced(p, v0, times, FusedKvaerno5(newton=FTNewton(), root_find_max_steps=2), PARAMS["ft"])
    ref = _reduced(p, v0, times, dfx.Kvaerno5(), PARAMS["ft"])
    assert int(fused[3]) == int(ref[3])
    np.testing.assert_allclose(np.asarray(fused[0]), np.asarray(ref[0]), rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.asarray(fused[1]), np.asarray(ref[1]), rtol=0, atol=1e-9)
    default = _reduced(p, v0, times, FusedKvaerno5(newton=FTNewton()), PARAMS["ft"])
    assert int(default[3]) < int(ref[3])


@pytest.mark.parametrize("method", sorted(PARAMS))
@pytest.mark.slow  # step-by-step comparisons with diffrax
def test_default_solver_matchesscipy_radau_reduced(stiff, method):
    """FT, two learning rates and L2-SP through the default `FusedKvaerno5` (rtol 1e-8, atol 1e-10) against scipy's
    Radau at rtol 1e-12: the state (v, G = B V) agrees to 1e-6 relative at t = 0.3, 3 and 30. The bound is 100× the
    local tolerance, room for the global error of the adaptive solve through the stiff transient (measured at most
    9e-9)."""
    p, v0 = stiff
    times = [0.3, 3.0, 30.0]
    v, G, _, _, _ = _reduced(p, v0, [0.0, *times], FusedKvaerno5(newton=FTNewton()), PARAMS[method])
    rv, rG = scipy_radau_reduced(p, v0, times, PARAMS[method])
    state = np.concatenate([np.asarray(v)[1:], np.asarray(G)[1:].reshape(len(times), -1)], axis=1)
    ref = np.concatenate([rv, rG.reshape(len(times), -1)], axis=1)
    err = np.linalg.norm(state - ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert err.max() < 1e-6, err


@pytest.mark.slow  # step-by-step comparisons with diffrax
def test_a_stage_that_does_not_converge_rejects_the_step(stiff):
    """A first step of Δt = 100 from θ0 (the fast rates are about 1e3, so the chord iteration from the second
    stage's linearisation cannot converge in three iterations): the step reports an infinite error estimate (so the
    PID controller rejects and shrinks it), every returned stage is finite (failed stages return 0), and the result
    is `successful`, as diffrax's own implicit solvers report a non-converged step. The same call at Δt = 1e-4
    converges, with a finite error estimate below 1e-6."""
    p, v0 = stiff
    y0, args = _flow.initial_state(p.reduced, v0, jnp.asarray(PARAMS["ft"]))
    term = dfx.ODETerm(_flow.general_field)
    solver = FusedKvaerno5(newton=FTNewton(), root_finder=dfx.VeryChord(rtol=1e-8, atol=1e-10, norm=optx.rms_norm))
    t0 = jnp.asarray(0.0)
    state = solver.init(term, t0, t0 + 1.0, y0, args)
    for dt, fails in ((100.0, True), (1e-4, False)):
        y1, err, dense, f1, result = jax.jit(solver.step, static_argnums=(0, 6))(
            term, t0, t0 + dt, y0, args, state, False
        )
        assert result == dfx.RESULTS.successful
        leaves = jax.tree_util.tree_leaves(err)
        assert all(bool(jnp.all(jnp.isinf(e))) == fails for e in leaves)
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves((y1, f1, dense)))
        if not fails:
            assert max(float(jnp.max(jnp.abs(e))) for e in leaves) < 1e-6


def test_fewer_than_two_chord_iterations_is_refused():
    with pytest.raises(ValueError, match="root_find_max_steps"):
        FusedKvaerno5(root_find_max_steps=1)


def test_unknown_or_unbatchable_newton_solve_is_refused():
    with pytest.raises(TypeError, match="`newton` must be an AbstractNewton"):
        FusedKvaerno5(newton="qr")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="batched=True"):
        FusedKvaerno5(newton=DenseNewton(), batched=True)  # the dense solve evaluates the (stacked) field
    assert FusedKvaerno5(newton=FTNewton(), batched=True).batched


@pytest.mark.slow  # step-by-step comparisons with diffrax
def test_lu_newton_solve_takes_the_closed_forms_steps(stiff):
    """The same fused method with the Newton matrix I − γΔt J materialised by forward mode and LU-factored, against
    the Sherman–Morrison closed form (`linnet._solver.newton`), on FT and L2-SP: the two solve the same linear systems,
    so every step is the same (equal step counts to t = ∞) and the states agree to 1e-9, the bound of the
    two-linear-solver comparison above (what the chord iteration leaves, up to κ = 1e-2 of rtol 1e-8)."""
    p, v0 = stiff
    times = [0.0, 0.3, 3.0, np.inf]
    for params in (PARAMS["ft"], PARAMS["l2_sp"]):
        lu = _reduced(p, v0, times, FusedKvaerno5(newton=DenseNewton()), params)
        closed = _reduced(p, v0, times, FusedKvaerno5(newton=FTNewton()), params)
        assert int(lu[3]) == int(closed[3])
        for a, b in zip(lu[:2], closed[:2], strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-9)


@pytest.mark.slow  # step-by-step comparisons with diffrax
def test_lu_newton_solve_with_two_iterations_takes_diffrax_kvaerno5s_steps_on_the_logistic_flow():
    """The logistic flow in log time (time-dependent field, Jacobian with no arrowhead structure), FT from a random
    head to t = 10⁸: `FusedKvaerno5(newton=DenseNewton(), root_find_max_steps=2)` against diffrax's own Kvaerno5 with
    its dense LU solve (the independent reference) makes the same number of steps and reaches the same state to 1e-8
    relative (the comparison above, on a state whose norm grows like log t); at the default three iterations it
    takes no more."""
    p = linnet.subspace_shift(jax.random.PRNGKey(4), d=30, k=3, n=12, eps=0.1, labels="sign")
    red = p.reduced
    y0 = (0.1 * jax.random.normal(jax.random.PRNGKey(5), (3,)), red.G0)
    args = _logistic_args(p, 1.0, y0[0].dtype)  # FT: η_v = η_B = 1
    times = jnp.asarray([1.0, 1e4, 1e8])

    def run(solver):
        ys, result, steps, _ = integrate(logistic_field, y0, args, times, steady=None, solver=solver, rtol=1e-8,
                                         atol=1e-10, max_steps=100_000, log_time=True)  # fmt: skip
        assert linnet.is_okay(result)
        return np.concatenate([np.asarray(ys[0]), np.asarray(ys[1]).reshape(len(times), -1)], axis=1), int(steps)

    fused, n_fused = run(FusedKvaerno5(newton=DenseNewton(), root_find_max_steps=2))
    ref, n_ref = run(dfx.Kvaerno5())
    assert n_fused == n_ref
    err = np.linalg.norm(fused - ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert err.max() < 1e-8, err
    assert run(FusedKvaerno5(newton=DenseNewton()))[1] <= n_ref
