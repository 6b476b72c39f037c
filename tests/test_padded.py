"""The FT flow's padded route (`linnet._run.padded`): a new shape whose reduced dimension r falls in a compiled
bucket reuses the compiled integration, and padding changes nothing: the padded solve takes the unpadded solve's
steps and reaches its states."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import rounding_tol

import linnet
from linnet._methods import ft_flow
from linnet._run import padded

K = 3
V0 = np.array([0.7, -0.4, 0.2])
TIMES = [0.0, 0.1, 1.0, np.inf]


def _assert_same_solve(p, tr, v, G, times=TIMES):
    """`tr` (padded) against the unpadded path (v, G): finite times to 1e-12 relative; t = ∞ (the last row) to
    rounding, since the steady-state stop follows the step sizes, which follow the rounding. At t = ∞ "rounding" is
    the larger of `rounding_tol` and 4 × the spread of the unpadded solve itself when v0 is changed by one unit in
    the last place (±2⁻⁵²): the PI controller carries a rounding-level change into the step sizes, so the stop
    lands elsewhere (measured at d = 150, n = 41: with the same 183 steps, ±1 ulp in v0 moves t_stop 125.36 →
    125.66 and the stopped G by 3.8e-10, 2.5 × `rounding_tol`, which models rounding within steps, not this).
    The padded program's rounding differs from the unpadded one's as such a change does; a padding error (a moving
    padded column, a wrong count in the norm) changes the path at the solver's tolerance or more."""
    red = p.reduced
    dG = np.asarray(G) - np.asarray(red.G0)[None]
    np.testing.assert_allclose(tr.v[:-1], v[:-1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(tr.dG[:-1], dG[:-1], rtol=1e-12, atol=1e-12)
    spread = [0.0, 0.0]
    for e in (2.0**-52, -(2.0**-52)):
        v_e, G_e, *_ = ft_flow.solve_reduced(red.s, red.Uty, jnp.asarray(V0) * (1 + e), red.G0, jnp.asarray(times),
                                             rtol=1e-8, atol=1e-10, max_steps=100_000)  # fmt: skip
        spread[0] = max(spread[0], float(np.max(np.abs(np.asarray(v_e[-1]) - np.asarray(v[-1])))))
        spread[1] = max(spread[1], float(np.max(np.abs(np.asarray(G_e[-1]) - np.asarray(G[-1])))))
    tol = rounding_tol(p, tr)
    for got, want, sp in [(np.asarray(tr.v[-1]), np.asarray(v[-1]), spread[0]),
                          (np.asarray(tr.dG[-1]), dG[-1], spread[1])]:  # fmt: skip
        bound = max(tol * np.max(np.abs(want)), 4 * sp)
        assert np.max(np.abs(got - want)) <= bound, (np.max(np.abs(got - want)), tol, sp)


def test_buckets_cover_every_r_within_a_factor_of_one_and_a_quarter():
    for r in range(1, 5000):
        b = padded.bucket(r)
        assert b >= r and (b == 8 or b <= 1.25 * r), (r, b)
    rs = (1, 8, 9, 11, 13, 15, 17, 33, 100, 129)
    assert [padded.bucket(r) for r in rs] == [8, 8, 10, 12, 14, 16, 20, 40, 112, 160]


def test_padded_columns_do_not_move():
    """The field at a padded state is the padded field: zero velocity in every added column (s = Uᵀy = G0 = 0),
    also with L2-SP and two learning rates; the columns that were there are unchanged to rounding."""
    rng = np.random.default_rng(0)
    r = 5
    y = (jnp.asarray(rng.standard_normal(K)), jnp.asarray(rng.standard_normal((K, r))))
    for params in [(1.0, 1.0, 0.0, 0.0), (2.0, 0.3, 0.1, 0.4)]:
        args = (jnp.asarray(rng.uniform(0.5, 2, r)), jnp.asarray(rng.standard_normal(r)),
                jnp.asarray(rng.standard_normal((K, r))), jnp.asarray(params))  # fmt: skip
        yp, argsp = ft_flow.pad(y, args, padded.bucket)
        assert yp[1].shape == (K, 8) and argsp[0].shape == (8,)
        f = ft_flow.general_field(0.0, y, args)
        fp = ft_flow.general_field(0.0, yp, argsp)
        np.testing.assert_allclose(fp[0], f[0], rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(fp[1][:, :r], f[1], rtol=1e-14, atol=1e-14)
        assert np.all(np.asarray(fp[1][:, r:]) == 0)


@pytest.mark.parametrize("d,n", [(150, 41), (90, 47)])
def test_a_new_shape_in_a_bucket_compiles_no_new_integration_and_matches_the_unpadded_solve(d, n):
    """First a shape in the bucket of r = 48 is compiled; then another (n, d) with r in the same bucket runs with no
    new integration program (jax's cache count). Its path equals the unpadded integration of the same flow
    (`ft_flow.solve_reduced`: the same solver and tolerances on the (k, r) state, no padding) with the same number
    of steps (the count-aware norm makes the padded controller take the same decisions): to 1e-12 relative at the
    finite times, and at t = ∞ to rounding (`rounding_tol`): the padded program sums over more columns, so its
    rounding differs, the controller's step sizes follow at about 1e-8 relative, and the steady-state test stops
    at a slightly different point."""
    first = linnet.subspace_shift(jax.random.PRNGKey(3), d=200, k=K, n=44, eps=0.2)
    linnet.fine_tune(first, V0, TIMES)
    before = padded._integrate._cache_size()
    p = linnet.subspace_shift(jax.random.PRNGKey(4), d=d, k=K, n=n, eps=0.2)
    tr = linnet.fine_tune(p, V0, TIMES)
    assert padded._integrate._cache_size() == before
    red = p.reduced
    v, G, result, steps, _ = ft_flow.solve_reduced(
        red.s, red.Uty, jnp.asarray(V0), red.G0, jnp.asarray(TIMES), rtol=1e-8, atol=1e-10, max_steps=100_000
    )
    assert bool(linnet.is_okay(result)) and int(steps) == int(tr.num_steps)
    _assert_same_solve(p, tr, v, G)


@pytest.mark.slow  # three unpadded reference integrations, each compiled (about 9 s)
def test_another_number_of_times_compiles_no_new_integration_and_keeps_the_values():
    """The times are padded to 4, 8, 16, … by repeating the last save (0 when there is none): after a run at 4
    times, runs at 1, 2 and 3 times (t = ∞ alone included) add no integration program, and each equals the
    unpadded integration at its own times (`ft_flow.solve_reduced`) to 1e-12 (t = ∞ to rounding, as above), with
    the same step count (a
    repeated save is stepped to once). Against the 4-time run, whose extra save is stepped to and so changes its
    steps, their predictors agree to the solver's tolerance: 1e-7 in norm, relative (10 × rtol; see
    tests/test_accuracy.py)."""
    p = linnet.subspace_shift(jax.random.PRNGKey(5), d=70, k=K, n=30, eps=0.2)
    full = linnet.fine_tune(p, V0, [0.0, 0.3, 2.0, np.inf])
    before = padded._integrate._cache_size()
    red = p.reduced
    for times, rows in [([np.inf], [3]), ([0.3, np.inf], [1, 3]), ([0.0, 2.0, np.inf], [0, 2, 3])]:
        tr = linnet.fine_tune(p, V0, times)
        v, G, result, steps, _ = ft_flow.solve_reduced(
            red.s, red.Uty, jnp.asarray(V0), red.G0, jnp.asarray(times), rtol=1e-8, atol=1e-10, max_steps=100_000
        )
        assert bool(linnet.is_okay(result)) and tr.v.shape == (len(times), K), times
        assert int(tr.num_steps) == int(steps), times
        _assert_same_solve(p, tr, v, G, times)
        want = np.asarray(full.predictor)[rows]
        assert np.all(np.linalg.norm(tr.predictor - want, axis=1) <= 1e-7 * np.linalg.norm(want, axis=1)), times
    assert padded._integrate._cache_size() == before
    assert [padded.time_bucket(t) for t in (1, 2, 3, 4, 5, 8, 9, 17)] == [4, 4, 4, 4, 8, 8, 16, 32]
