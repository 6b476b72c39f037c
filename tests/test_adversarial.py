"""Hostile inputs: every case here once returned a plausible wrong number or an unhelpful failure. Each test pins
the right number (against an independent reference: a NumPy loop, NumPy least squares, the scale-1 problem) or
the one-line error naming the argument."""

from __future__ import annotations

import json
import re
import warnings

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linnet
import linnet.theory as th
from linnet import cli

D, K, N = 20, 2, 6


@pytest.fixture(scope="module")
def prob():
    return linnet.subspace_shift(jax.random.PRNGKey(0), d=D, k=K, n=N, eps=0.1)


@pytest.fixture(scope="module")
def head():
    return np.asarray(linnet.random_head(jax.random.PRNGKey(1), K, 1.0))


def _numpy_gd(p, v0, lr, iters):
    """Reference: plain gradient descent on the full (v, B) of L̂ = ‖X Bᵀv − y‖² in NumPy, float64."""
    X, y = np.asarray(p.X), np.asarray(p.y)
    v, B = np.array(v0, float), np.array(p.B0, float)
    for _ in range(iters):
        r = X @ (B.T @ v) - y
        g = X.T @ r
        v, B = v - lr * 2.0 * (B @ g), B - lr * 2.0 * np.outer(v, g)
    e = B.T @ v - np.asarray(p.w_star)
    return float(e @ e)


# ---------------------------------------------------------------------------------------------------------------
# gradient descent's budget counts for finite times as for t = ∞
# ---------------------------------------------------------------------------------------------------------------


def test_gd_to_a_finite_time_matches_a_numpy_loop(prob, head):
    """1 000 iterations of lr = 1e-3 are t = 1; reference: the NumPy loop on the full (v, B), to 1e-10 relative
    (the reduced coordinates change only the rounding)."""
    tr = linnet.gradient_descent(prob, head, [0.0, 1.0], lr=1e-3, max_iter=1000)
    want = _numpy_gd(prob, head, 1e-3, 1000)
    assert abs(float(tr.ood_error[-1]) - want) <= 1e-10 * want
    assert int(tr.num_steps) == 1000 and float(tr.t_stop) == pytest.approx(1.0)


def test_gd_budget_short_of_a_finite_time_is_an_error(prob, head):
    """t = 1 needs 1 000 iterations; with max_iter = 100 it once returned the state after 100 (OOD 1.3755, right:
    1.0629) labelled t = 1 and successful."""
    with pytest.raises(linnet.ConvergenceError, match=r"did not reach t = 1 .*ended at t = 0\.1\b.*`max_iter`"):
        linnet.gradient_descent(prob, head, [0.0, 1.0], lr=1e-3, max_iter=100)
    tr = linnet.gradient_descent(prob, head, [0.0, 0.05, 1.0], lr=1e-3, max_iter=100, throw=False)
    assert tr.result == linnet.RESULTS.max_steps_reached
    assert float(tr.t_stop) == pytest.approx(0.1)
    # the times reached keep their values (t = 0.05 is 50 iterations: the NumPy loop); the time not reached is NaN
    assert float(tr.ood_error[1]) == pytest.approx(_numpy_gd(prob, head, 1e-3, 50), rel=1e-10)
    assert np.isnan(float(tr.ood_error[2]))


def test_gd_time_beyond_every_integer_is_not_reached(prob, head):
    """t = 1e30 at lr = 1e-3 is 1e33 iterations (beyond int64): it was labelled t = 1e30 after 1 000."""
    tr = linnet.gradient_descent(prob, head, [0.0, 1.0, 1e30], lr=1e-3, max_iter=1000, throw=False)
    assert not bool(linnet.is_okay(tr.result))
    assert np.isfinite(float(tr.ood_error[1])) and np.isnan(float(tr.ood_error[2]))


def test_gd_budget_under_jit_and_in_a_sweep(prob, head):
    """The same under `jit` (result code and NaN) and in `sweep` (an error naming GD's own budget)."""
    run = jax.jit(lambda v: linnet.gradient_descent(prob, v, [0.0, 1.0], lr=1e-3, max_iter=100, throw=False))
    tr = run(jnp.asarray(head))
    assert tr.result == linnet.RESULTS.max_steps_reached and np.isnan(float(tr.ood_error[-1]))
    with pytest.raises(Exception, match="did not succeed"):
        jax.jit(lambda v: linnet.gradient_descent(prob, v, [0.0, 1.0], lr=1e-3, max_iter=100).ood_error)(head)
    probs = linnet.subspace_shifts(jax.random.split(jax.random.PRNGKey(2), 2), 0.1, d=D, k=K, n=N)
    with pytest.raises(linnet.ConvergenceError, match="'max_iter' \\(now 10\\)"):
        linnet.sweep(probs, head, [0.0, 1.0], methods=[{"name": "gd", "max_iter": 10}], progress=False)


# ---------------------------------------------------------------------------------------------------------------
# extreme scales of X: exact where the closed form allows, refused where a solve cannot represent the flow
# ---------------------------------------------------------------------------------------------------------------


def _lstsq_lp_limit(p, v0):
    """Reference LP limit: v0's null(F) part plus NumPy's least-squares F⁺ y, F = X B0ᵀ (float64)."""
    F = np.asarray(p.X) @ np.asarray(p.B0).T
    sol, *_ = np.linalg.lstsq(F, np.asarray(p.y), rcond=None)
    _, s, vt = np.linalg.svd(F)
    null = vt[np.sum(s > 1e-12 * s[0]) :]
    return sol + null.T @ (null @ v0)


@pytest.mark.parametrize("c", [1e-170, 1e-100, 1.0, 1e100, 1e160])
def test_linear_probe_limit_is_scale_free(prob, head, c):
    """LP's limit does not depend on the scale of X; it returned v0 at 1e-170 X and NaN at 1e160 X (s² under- and
    overflowed). Reference: least squares at scale 1, to 1e-10 relative (the SVD of c X is exact to rounding)."""
    p = prob.replace(X=c * prob.X)
    w = np.asarray(prob.B0).T @ _lstsq_lp_limit(prob, head)
    got = linnet.linear_probe(p, head, [np.inf])
    np.testing.assert_allclose(np.asarray(got.predictor[-1]), w, rtol=1e-10, atol=1e-10 * np.abs(w).max())


@pytest.mark.parametrize("c", [1e-150, 1e150])
def test_closed_forms_rescale_time_by_c_squared(prob, head, c):
    """X → cX is time t → t/c²: LP and features-only at scale c and time t/c² equal scale 1 at t, to 1e-12."""
    p = prob.replace(X=c * prob.X)
    t = np.array([0.0, 0.3, 2.0])
    for fn in (linnet.linear_probe, linnet.features_only):
        a, b = fn(prob, head, t), fn(p, head, t / c**2)
        np.testing.assert_allclose(np.asarray(b.predictor), np.asarray(a.predictor), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("c", [1e-50, 1e20])
def test_fine_tune_limit_is_scale_free_inside_the_range(prob, head, c):
    """Inside the representable range FT's limit is that of scale 1, to 1e-6 relative (two solves, each within
    its steady-state tolerance, rtol 1e-8, of a limit on the manifold of minimisers reached along one path)."""
    a = linnet.fine_tune(prob, head, [np.inf])
    b = linnet.fine_tune(prob.replace(X=c * prob.X), head, [np.inf])
    np.testing.assert_allclose(np.asarray(b.predictor), np.asarray(a.predictor), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("c", [1e-100, 1e100])
@pytest.mark.parametrize("method", ["ft", "gd", "lora"])
def test_solved_methods_refuse_scales_they_cannot_represent(prob, head, c, method):
    """FT at 1e-100 X returned the initial state as 'the limit' after 0 steps; at 1e100 it advised more steps.
    Outside `scale_range` every solved or iterated method refuses, naming X and the remedy."""
    kw = {"lr": 1e-3} if method == "gd" else {"rank": 1, "key": jax.random.PRNGKey(0)} if method == "lora" else {}
    with pytest.raises(ValueError, match=r"scale of `problem.X`.*rescale X and y"):
        linnet.simulate(method, prob.replace(X=c * prob.X), head, [np.inf], **kw)


def test_scale_refusal_under_jit_and_in_a_sweep(prob, head):
    p = prob.replace(X=1e-100 * prob.X)
    with pytest.raises(Exception, match="rescale X and y"):
        jax.jit(lambda q: linnet.fine_tune(q, head, [np.inf], throw=False).ood_error)(p)
    big = [prob.replace(X=1e80 * prob.X), prob]
    probs = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *big)  # a batch of two, the first out of range
    with pytest.raises(ValueError, match="outside"):
        linnet.sweep(probs, head, [np.inf], methods=["ft"], progress=False)
    # the closed forms are exact at any scale, so LP alone is not refused
    res = linnet.sweep(probs, head, [np.inf], methods=["lp"], progress=False)
    assert np.all(np.isfinite(res.ood_error))


# ---------------------------------------------------------------------------------------------------------------
# structural checks relative to the dtype and to the matrix's own scale
# ---------------------------------------------------------------------------------------------------------------


def test_negative_second_moments_are_refused_at_any_scale(prob):
    """−1e-12 I (float64) and −0.01 I (float32) were accepted (the tolerance had an absolute floor of 1)."""
    with pytest.raises(ValueError, match="`sigma_ood` must be positive semidefinite"):
        prob.replace(sigma_ood=-1e-12 * jnp.eye(D))
    f32 = {a: getattr(prob, a).astype(jnp.float32) for a in ("X", "B0", "B_star", "v_star")}
    with pytest.raises(ValueError, match="`sigma_ood` must be positive semidefinite"):
        linnet.Problem(
            f32["X"], f32["B0"], f32["B_star"], f32["v_star"], sigma_ood=-0.01 * jnp.eye(D, dtype=np.float32)
        )
    # a tiny PSD matrix is fine, and so is a computed one whose eigenvalues round slightly below 0
    prob.replace(sigma_ood=1e-12 * jnp.eye(D))
    A = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (D, 3)))
    prob.replace(sigma_ood=1e-30 * (A @ A.T))


@settings(max_examples=25, deadline=None)
@given(st.floats(-200, 200), st.integers(0, 2**31 - 1))
def test_psd_check_is_scale_relative(log_c, seed):
    """Property: for any scale c, c·(a rank-3 PSD matrix) is accepted and −c·I is refused."""
    c = 10.0**log_c
    A = np.random.default_rng(seed).normal(size=(D, 3))
    X = np.random.default_rng(seed + 1).normal(size=(N, D))
    B = np.linalg.qr(np.random.default_rng(seed + 2).normal(size=(D, K)))[0].T
    p = linnet.Problem(X, B, B, np.ones(K), sigma_ood=c * (A @ A.T))
    assert p.d == D
    with pytest.raises(ValueError, match="positive semidefinite"):
        linnet.Problem(X, B, B, np.ones(K), sigma_ood=-c * np.eye(D))


# ---------------------------------------------------------------------------------------------------------------
# theory functions: domain checks instead of impossible values
# ---------------------------------------------------------------------------------------------------------------


def test_probability_arguments_are_checked(prob):
    with pytest.raises(ValueError, match="`scale` must be a finite number >= 0"):
        th.prob_head_alignment_below(0.5, prob.v_star, scale=-1)
    with pytest.raises(ValueError, match="`delta` must be a finite number >= 0"):
        th.prob_head_alignment_below(-1, prob.v_star, scale=1.0)
    # reference: Monte Carlo of φ² = |(v0ᵀv⋆)² − ‖v⋆‖⁴| < δ, v0 ~ N(0, I), 4e5 draws (3σ ≈ 2e-3)
    vs = np.asarray(prob.v_star)
    z = np.random.default_rng(0).normal(size=(400_000, K)) @ vs
    mc = np.mean(np.abs(z**2 - (vs @ vs) ** 2) < 0.5)
    assert abs(th.prob_head_alignment_below(0.5, vs, scale=1.0) - mc) < 3e-3
    assert th.prob_head_alignment_below(0.5, np.zeros(K), scale=1.0) == 1.0  # v⋆ = 0: φ = 0 always


def test_ft_limit_k1_sign_must_be_a_sign():
    """sign = 0 gave v∞ = 0 and B∞ = ±inf; sign = 5 a v∞ five times too large."""
    p1 = linnet.subspace_shift(jax.random.PRNGKey(4), d=D, k=1, n=N, eps=0.1)
    for bad in (0, 5, 0.5):
        with pytest.raises(ValueError, match="`sign`"):
            th.ft_limit_k1(p1, [1.0], sign=bad)
    vp, _ = th.ft_limit_k1(p1, [1.0], sign=1)
    vm, _ = th.ft_limit_k1(p1, [1.0], sign=-1)
    assert float(vm[0]) == -float(vp[0]) and float(vp[0]) > 0


def test_theory_functions_check_the_head(prob):
    for fn in (th.theorem_3_1_rhs0, th.ft_ood_lower_bound, th.lp_limit, th.lp_ood_error, th.theorem_3_1_corrected):
        with pytest.raises(ValueError, match="`v0` must have shape"):
            fn(prob, np.ones(K + 1))
        with pytest.raises(ValueError, match="`v0` contains NaN"):
            fn(prob, np.array([np.nan, 1.0]))
    with pytest.raises(ValueError, match="shape of `v_star`"):
        th.head_alignment_error(np.ones(3), np.ones(2))


def test_wise_ft_arguments(prob, head):
    lp = linnet.linear_probe(prob, head, [np.inf])
    ft = linnet.fine_tune(prob, head, [np.inf])
    fam = linnet.wise_ft(prob, lp.at(-1), ft.at(-1))
    with pytest.raises(ValueError, match=r"`bounds`.*finite"):
        fam.optimal_alpha(bounds=(0, np.inf))
    with pytest.raises(ValueError, match="`theta_a` must be a pair"):
        linnet.wise_ft(prob, (*lp.at(-1), 1.0), ft.at(-1))
    # the minimiser over a wider finite interval: reference, a dense grid of the quartic's values
    _, e = fam.optimal_alpha(bounds=(-2.0, 3.0))
    grid = np.linspace(-2.0, 3.0, 20_001)
    assert e <= float(np.min(np.asarray(fam.error(grid)))) + 1e-12


# ---------------------------------------------------------------------------------------------------------------
# generators: the batched one checks what the single one checks
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [1.9, -0.5, 3.0, [0.1, 1.5]])
def test_batched_generator_checks_eps(eps):
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    with pytest.raises(ValueError, match="`eps` must be in \\[0, sqrt\\(2\\)\\]"):
        linnet.subspace_shifts(keys, eps, d=D, k=K, n=N)


def test_batched_generator_checks_lengths_and_scales():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    with pytest.raises(ValueError, match="`eps` must be one number or one per key"):
        linnet.subspace_shifts(keys, [0.1, 0.2], d=D, k=K, n=N)
    with pytest.raises(ValueError, match="`v_star_scale`"):
        linnet.subspace_shifts(keys, 0.1, d=D, k=K, n=N, v_star_scale=-1.0)
    with pytest.raises(ValueError, match="`k` must satisfy 2k <= d"):
        linnet.subspace_shifts(keys, 0.1, d=D, k=11, n=N)
    # what is built has exactly the ε asked (reference: NumPy's orthogonal Procrustes, U = P Qᵀ from the SVD
    # B0 B⋆ᵀ = P Σ Qᵀ, and ε = ‖B0 − U B⋆‖₂)
    probs = linnet.subspace_shifts(keys, [0.0, 0.7, 1.4], d=D, k=K, n=N)
    for i, want in enumerate([0.0, 0.7, 1.4]):
        B0, Bs = np.asarray(probs.B0[i]), np.asarray(probs.B_star[i])
        P, _, Qt = np.linalg.svd(B0 @ Bs.T)
        assert np.linalg.norm(B0 - P @ Qt @ Bs, ord=2) == pytest.approx(want, abs=1e-12)


def test_single_generator_refuses_unused_and_impossible_options():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="`shift` applies to ood='mixture' only"):
        linnet.subspace_shift(key, d=D, k=K, n=N, eps=0.1, shift=0.5)
    with pytest.raises(ValueError, match="`v_star_scale`"):
        linnet.subspace_shift(key, d=D, k=K, n=N, eps=0.1, v_star_scale=float("nan"))
    linnet.subspace_shift(key, d=D, k=K, n=N, eps=0.1, ood="mixture", shift=0.5)


# ---------------------------------------------------------------------------------------------------------------
# unreached times with throw=False
# ---------------------------------------------------------------------------------------------------------------


def test_failed_solve_marks_unreached_times_nan(prob, head):
    """A solve out of steps filled t = 1 and t = ∞ with its last state (plausible numbers); now they are NaN, as
    diffrax marks unfilled saves, while t = 0 keeps its value."""
    tr = linnet.fine_tune(prob, head, [0.0, 1.0, np.inf], max_steps=5, throw=False)
    assert tr.result == dfx.RESULTS.max_steps_reached
    assert np.isfinite(float(tr.ood_error[0])) and np.all(np.isnan(np.asarray(tr.ood_error[1:])))
    assert np.all(np.isnan(np.asarray(tr.v[1:])))
    # a successful stop at the steady state still fills the times after it with the limit
    ok = linnet.fine_tune(prob, head, [0.0, 1e12, np.inf])
    assert float(ok.ood_error[1]) == float(ok.ood_error[2])
    # and the status says so in words (a steady-state stop is the normal end, not diffrax's "event" message)
    assert tr.status.startswith("failed at t = ") and "hold NaN" in tr.status
    assert ok.status.startswith("reached t = inf (steady state at t = ")
    assert linnet.linear_probe(prob, head, [np.inf]).status == "reached t = inf (closed form)"


# ---------------------------------------------------------------------------------------------------------------
# float32
# ---------------------------------------------------------------------------------------------------------------


def _f32(p):
    return linnet.Problem(*(getattr(p, a).astype(jnp.float32) for a in ("X", "B0", "B_star", "v_star")))


def test_exact_methods_do_not_warn_about_tolerances(prob, head):
    p32 = _f32(prob)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        linnet.linear_probe(p32, head.astype(np.float32), [1.0, np.inf])
        linnet.features_only(p32, head.astype(np.float32), [1.0, np.inf])


@pytest.mark.slow
def test_float32_general_flows_reach_the_limit_on_stiff_data():
    """LoRA ran out of 10⁵ steps in float32 at rtol = atol = 1e-4 on stiff data (cond(X)² ≈ 10⁵: its stopping test
    had no rounding floor). LoRA, deep and GD now stop at a limit that fits the data; deep's and GD's agree with
    float64's to 1 % of ‖w‖ (measured for deep: 3e-4; float32 resolves about cond(X)² eps ≈ 1e-2 relative)."""
    p = linnet.subspace_shift(jax.random.PRNGKey(2), d=50, k=3, n=12, eps=0.1)
    s = np.asarray(p.reduced.s)
    assert (s.max() / s[s > 0].min()) ** 2 > 5e4  # stiff, as in the failure
    v0 = linnet.random_head(jax.random.PRNGKey(102), 3, 1.0)
    p32, h32 = _f32(p), v0.astype(jnp.float32)
    lr = 0.5 * linnet.gd_stability_step(p, v0)
    for name, kw in [("lora", dict(rank=2, key=jax.random.PRNGKey(3))), ("deep", {}), ("gd", dict(lr=lr))]:
        a = linnet.simulate(name, p, v0, [np.inf], **kw)
        b = linnet.simulate(name, p32, h32, [np.inf], rtol=1e-4, atol=1e-4, **kw)
        wa, wb = np.asarray(a.predictor[-1]), np.asarray(b.predictor[-1], np.float64)
        # the limit fits the data (n < d), to what float32 resolves: ‖X w − y‖ ≤ 1e-3 ‖y‖ (cond(X) eps ≈ 4e-5)
        X, y = np.asarray(p.X), np.asarray(p.y)
        assert np.linalg.norm(X @ wb - y) <= 1e-3 * np.linalg.norm(y), name
        if name != "lora":  # LoRA's W0 is drawn in the problem's dtype, so its two limits are of different draws
            assert np.linalg.norm(wb - wa) <= 1e-2 * np.linalg.norm(wa), name


# ---------------------------------------------------------------------------------------------------------------
# unhelpful failures: each now a one-line error naming the argument
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape_X", "shape_B"), [((3, 5), (0, 5)), ((0, 5), (1, 5)), ((3, 0), (1, 0))])
def test_empty_problems_are_refused(shape_X, shape_B):
    with pytest.raises(ValueError, match="needs at least one of each"):
        linnet.Problem(np.ones(shape_X), np.ones(shape_B), np.ones(shape_B), np.ones(shape_B[0]))


def test_simulate_argument_errors(prob, head):
    with pytest.raises(TypeError, match="`solver` must be a diffrax solver"):
        linnet.fine_tune(prob, head, [1.0], solver="bogus")
    with pytest.raises(TypeError, match="`times` must be an array of numbers"):
        linnet.fine_tune(prob, head, "abc")
    with pytest.raises(ValueError, match="η · `times` leaves the range"):
        linnet.two_learning_rates(prob, head, [0.0, 1e10], eta_B=0.0, eta_v=1e300)


def test_sweep_argument_errors(prob, head):
    probs = linnet.subspace_shifts(jax.random.split(jax.random.PRNGKey(2), 2), 0.1, d=D, k=K, n=N)
    t = [0.0, np.inf]
    for kw, pattern in [
        (dict(devices=[]), "`devices` is empty"),
        (dict(chunk=-3), "`chunk` must be a positive integer"),
        (dict(chunk=0), "`chunk` must be a positive integer"),
        (dict(methods=()), "`methods` is empty"),
        (dict(methods=[{"name": "lora", "rank": 1}]), "give it a 'seed' entry"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            linnet.sweep(probs, head, t, progress=False, **kw)
    with pytest.raises(ValueError, match="`heads` is empty"):
        linnet.sweep(probs, {}, t, progress=False)


def test_figure_data_errors(tmp_path):
    with pytest.raises(ValueError, match="lacks the entry"):
        linnet.figures.draw("toy", {})
    (tmp_path / "toy.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"toy\.json is not valid JSON"):
        linnet.figures.load("toy", tmp_path)
    (tmp_path / "toy.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="does not hold a figure's data"):
        linnet.figures.load("toy", tmp_path)


SMALL = ["--d", "20", "--n", "6", "--k", "2", "--no-cache"]


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["run", "--method", "ft", "--eta-B", "0.3"], "--eta-B does not apply to --method ft"),
        (["run", "--method", "ft", "--lam-B", "0.3"], "--lam-B does not apply"),
        (["run", "--method", "ft", "--rank", "2"], "--rank does not apply"),
        (["run", "--method", "lpft", "--lp-time", "3"], "--lp-time does not apply"),
        (["run", "--method", "ft", "--flip", "0.1"], "--flip .* applies to --loss logistic only"),
        (["run", "--method", "ft", "--save", "/nonexistent/dir/x.json"], "folder /nonexistent/dir does not exist"),
        (["run", "--method", "ft", "--seed", str(2**70)], "--seed: expected an integer in \\[0, 2\\*\\*32 - 1\\]"),
    ],
)
def test_cli_refuses_before_running(argv, pattern, capsys):
    """Options the method does not use were accepted silently; a bad --save lost the run to a traceback."""
    assert _cli(["--no-cache", *argv, *SMALL[:-1]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("linnet: error:")
    assert re.search(pattern, err), err


def _cli(argv) -> int:
    """`linnet ARGV`'s exit status (argparse's own errors exit through SystemExit)."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return int(e.code or 0)


def test_cli_reproduce_to_an_unwritable_place(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    rc = _cli(["--no-cache", "reproduce", "--quick", "--only", "toy", "--out", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot create that folder" in err and err.count("\n") == 1


def test_cli_method_defaults_come_from_the_declarations(capsys):
    """`run --method two_lr` defaulted to η_B = 0.1 and `l2_sp` to λ_B = 0.1 while the declarations say 1.0 and
    0.0: with no option given, the CLI's run is the library's default call."""
    assert _cli(["--no-cache", "run", "--method", "two_lr", *SMALL[:-1], "--num-times", "2"]) == 0
    out = capsys.readouterr().out
    p = linnet.subspace_shift(jax.random.split(jax.random.PRNGKey(0))[0], d=20, k=2, n=6, eps=0.1)
    v0 = np.asarray(linnet.random_head(jax.random.split(jax.random.PRNGKey(0))[1], 2, 1.0))
    ft = linnet.fine_tune(p, v0, [np.inf])  # two_lr with its declared η_v = η_B = 1 is FT
    last = out.strip().splitlines()[-1].split()
    assert last[0] == "inf" and float(last[-1]) == pytest.approx(float(ft.ood_error[-1]), rel=1e-3)


_FLOAT32_SCRIPT = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import linnet
d, k, n, seed = (int(a) for a in sys.argv[1:5])
p = linnet.subspace_shift(jax.random.PRNGKey(seed), d=d, k=k, n=n, eps=0.1)
v0 = linnet.random_head(jax.random.PRNGKey(100 + seed), k, 1.0)
a = linnet.fine_tune(p, v0, [1.0, np.inf])
p32 = linnet.Problem(*(getattr(p, f).astype(jnp.float32) for f in ("X", "B0", "B_star", "v_star")))
b = linnet.fine_tune(p32, v0.astype(jnp.float32), [1.0, np.inf], rtol=1e-4, atol=1e-4)
s = np.asarray(p.reduced.s)
wa, wb = np.asarray(a.predictor), np.asarray(b.predictor, np.float64)
err = np.linalg.norm(wb - wa, axis=-1) / np.linalg.norm(wa, axis=-1)
print(json.dumps(dict(err=err.tolist(), cond2=float((s.max() / s[s > 0].min()) ** 2))))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("shape", "seed"), [((200, 3, 40), 3), ((50, 3, 12), 2)])
def test_float32_accuracy_is_what_the_readme_says(shape, seed):
    """The README's float32 statement, on two instances where the measured ratio was large (2.8 and 1.7 when it
    was written): FT at rtol = atol = 1e-4 agrees with float64 to 1e-4 relative at t = 1 and to 4 cond(X)² eps at
    the limit (the README's 'a few cond(X)² eps'). The README once said cond(X)² · 6e-8, which these instances
    exceed by 5×.

    Run in a fresh process with XLA's default optimisation, as users run it, not the suite's level 0: in float32
    at rtol 1e-4 the stiff flows' error estimates sit at rounding level, so the steps (and where the limit stops)
    follow the rounding of the compiled program; at level 0 the limit's error reached 10.5 cond(X)² eps on one of
    12 instances (5.5 on the first case here), at the default level at most 2.8 on the same 12."""
    import os
    import subprocess
    import sys

    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "optimization_level" not in f)
    proc = subprocess.run([sys.executable, "-c", _FLOAT32_SCRIPT, *map(str, shape), str(seed)], capture_output=True,
                          text=True, env={**os.environ, "XLA_FLAGS": flags}, check=True)  # fmt: skip
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    err, cond2 = out["err"], out["cond2"]
    assert err[0] <= 1e-4
    assert err[1] <= 4 * cond2 * float(np.finfo(np.float32).eps), err[1] / (cond2 * np.finfo(np.float32).eps)


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["run", "--method", "ft", "--n", "500", "--d", "100"], r"--n = 500 > --d = 100"),
        (["run", "--method", "lora", "--rank", "10"], r"--rank 10 exceeds k = 2"),
        (["run", "--method", "lora"], r"needs --rank"),
        (["run", "--method", "gd", "--lr", "10"], r"diverged.*--max-iter"),
    ],
)
def test_cli_errors_name_the_flag(argv, pattern, capsys):
    """The library's messages reach the command line in its words: `n` becomes --n, `max_iter` --max-iter."""
    small = [a for pair in (("--d", "20"), ("--n", "6"), ("--k", "2")) if pair[0] not in argv for a in pair]
    rc = _cli(["--no-cache", *argv, *small])
    err = capsys.readouterr().err
    assert rc in (1, 2) and err.count("\n") == 1 and re.search(pattern, err), err
    # no message points to an option the command line does not have (the library's `m`, dim S, is not one)
    assert not re.search(r"\bm <=|--m\b|`m`", err), err
