"""The composable core: every registered method under `jax.jit`, `jax.vmap` and `jax.grad`, the sweep as a
transform of the same function, `throw=False` result codes, and validation under tracing.

References are independent of the transform under test: eager calls and Python loops (for jit and vmap), and
central finite differences of eager calls (for grad)."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CASES, TIMES, V0, D, K, N, rounding_tol
from helpers import rel_err as _rel

import linnet


@pytest.fixture(scope="module")
def problem():
    return linnet.subspace_shift(jax.random.PRNGKey(8), d=D, k=K, n=N, eps=0.3)


EPS = float(np.finfo(np.float64).eps)


def test_every_registered_method_has_a_case():
    assert set(CASES) == set(linnet.methods())


def test_stiff_instance_takes_the_implicit_solver(problem):
    s = np.asarray(problem.reduced.s)
    assert (s.max() / s[s > 0].min()) ** 2 > 100
    assert linnet.fine_tune(problem, V0, TIMES).solver == "Rodas5P+ShermanMorrison"


@pytest.mark.parametrize("name", sorted(CASES))
def test_jit_of_vmap_over_problems_and_heads_equals_a_loop_of_eager_calls(name):
    """`jax.jit(jax.vmap(simulate))` over 3 problems of one shape (from `subspace_shifts`) and their heads equals a
    Python loop of eager calls to rounding (`_rounding_tol` of each member), relative to each metric's size: both
    transforms in one compiled program (jit alone is exercised by every `jit(jacrev)` in test_gradients.py, with
    the problem closed over). A traced problem always gets the implicit solver."""
    # seed 132: cond(X)² = 108, 151, 201, all stiff, so the loop's concrete calls take the implicit solver too
    keys = jax.random.split(jax.random.PRNGKey(132), 3)
    probs = linnet.subspace_shifts(keys, jnp.asarray([0.1, 0.3, 0.5]), d=D, k=K, n=N)
    heads = jax.random.normal(jax.random.PRNGKey(2), (3, K))
    kw = {a: b for a, b in CASES[name].items() if not callable(b)}
    if name == "gd":
        kw = {"lr_fraction": 0.25}  # a per-instance step, 0.25 · 2/λ_max
    batched = jax.jit(jax.vmap(lambda p, v: linnet.simulate(name, p, v, TIMES, **kw)))(probs, heads)
    assert batched.ood_error.shape == (3, len(TIMES))
    for i in range(3):
        p = jax.tree_util.tree_map(lambda a, i=i: a[i], probs)
        one = linnet.simulate(name, p, heads[i], TIMES, **kw)
        assert batched.method == one.method == name and batched.solver == one.solver
        tol = rounding_tol(p, one, batched)
        for metric in ("train_loss", "id_error", "ood_error"):
            ref = np.asarray(getattr(one, metric))
            err = np.max(np.abs(np.asarray(getattr(batched, metric)[i]) - ref)) / np.max(np.abs(ref))
            assert err <= tol, (metric, i, err, tol)


def test_explicit_path_with_its_fallback_composes():
    """On well-conditioned data plain FT picks Tsit5 from the concrete data; traced heads carry the implicit
    fallback through `lax.cond` (recorded in `solver`), and the results equal the eager call's."""
    p = linnet.subspace_shift(jax.random.PRNGKey(0), d=12, k=2, n=5, eps=0.3)
    eager = linnet.fine_tune(p, V0, TIMES)
    assert eager.solver == "Tsit5"
    jitted = jax.jit(lambda v: linnet.fine_tune(p, v, TIMES))(jnp.asarray(V0))
    assert jitted.solver == "Tsit5|Rodas5P+ShermanMorrison"
    assert _rel(jitted.ood_error, eager.ood_error) <= rounding_tol(p, eager, jitted)


def test_throw_false_under_vmap_reports_the_member_that_ran_out_of_steps(problem):
    """One member needs ≈ 2.5× the steps of the others; with a budget between the two, vmap with throw=False
    returns its failure code while the others succeed — and throw=True raises."""
    heads = jnp.asarray([V0, 30 * V0, [0.0, 1e-3]])
    steps = [int(linnet.fine_tune(problem, h, [np.inf]).num_steps) for h in heads]
    slow = int(np.argmax(steps))
    budget = (max(steps) + sorted(steps)[-2]) // 2
    out = jax.vmap(lambda v: linnet.fine_tune(problem, v, [np.inf], max_steps=budget, throw=False))(heads)
    ok = np.asarray(linnet.is_okay(out.result))
    assert not ok[slow] and ok.sum() == 2, (steps, ok)
    member = jax.tree_util.tree_map(lambda x: x[slow], out.result)
    assert bool(member == linnet.RESULTS.max_steps_reached)
    with pytest.raises(Exception, match="did not succeed"):
        jax.vmap(lambda v: linnet.fine_tune(problem, v, [np.inf], max_steps=budget))(heads)
    with pytest.raises(linnet.ConvergenceError, match="max_steps"):
        linnet.fine_tune(problem, heads[slow], [np.inf], max_steps=budget)


@pytest.mark.parametrize("bad", [[0.0, np.inf, np.inf], [1.0, 0.5], [-1.0, 1.0], [0.0, np.nan], [np.inf, 1.0]])
def test_bad_times_are_rejected_eagerly_and_under_jit(problem, bad):
    with pytest.raises(ValueError, match="times"):
        linnet.fine_tune(problem, V0, bad)
    with pytest.raises(Exception, match="times"):
        jax.block_until_ready(jax.jit(lambda t: linnet.linear_probe(problem, V0, t).ood_error)(jnp.asarray(bad)))


def test_traced_times_give_the_eager_trajectory(problem):
    got = jax.jit(lambda t: linnet.fine_tune(problem, V0, t))(jnp.asarray(TIMES))
    eager = linnet.fine_tune(problem, V0, TIMES)
    assert _rel(got.ood_error, eager.ood_error) <= rounding_tol(problem, eager, got)


def test_bad_values_are_rejected_under_tracing(problem):
    with pytest.raises(Exception, match="v0"):
        jax.block_until_ready(
            jax.jit(lambda v: linnet.fine_tune(problem, v, TIMES).ood_error)(jnp.asarray([np.nan, 1]))
        )
    with pytest.raises(Exception, match="lam_B"):
        f = jax.jit(lambda lam: linnet.l2_sp(problem, V0, [1.0], lam_B=lam).ood_error)
        jax.block_until_ready(f(-1.0))
    with pytest.raises(ValueError, match="lam_B"):
        linnet.l2_sp(problem, V0, [1.0], lam_B=-1.0)


# one method of each kind the sweep handles differently: closed forms (lp, features_only), the FT flow (two_lr,
# l2_sp and lpft run the same flow and the same sweep code with other parameters), GD's per-instance step, LoRA's
# per-instance key, the deep flow
@pytest.mark.parametrize("name", ["deep", "features_only", "ft", "gd", "lora", "lp"])
def test_sweep_equals_individual_calls(name):
    """`sweep` runs `simulate` inside its compiled batches, for a shared zero head and per-instance random heads,
    with a padded last batch (3 instances in batches of 2): to 1e-10 relative to each metric's size. (GD's step
    is `lr_fraction` · gd_stability_step, LoRA's key fold_in(PRNGKey(seed), instance index).)"""
    probs = linnet.subspace_shifts(jax.random.split(jax.random.PRNGKey(7), 3), 0.2, d=D, k=K, n=N)
    heads = {"zero": jnp.zeros(K), "random": jax.random.normal(jax.random.PRNGKey(8), (3, K))}
    spec = {"name": name, **{a: b for a, b in CASES[name].items() if a != "key" and not callable(b)}}
    if name == "gd":
        spec["lr_fraction"] = 0.25
    if name == "lora":
        spec["seed"] = 4
    res = linnet.sweep(probs, heads, TIMES, methods=(spec,), batch_size=2, progress=False)
    for j, (label, h) in enumerate(heads.items()):
        for i in range(3):
            p = jax.tree_util.tree_map(lambda a, i=i: a[i], probs)
            v = h if h.ndim == 1 else h[i]
            kw = {a: b for a, b in spec.items() if a not in ("name", "seed", "lr_fraction")}
            if name == "gd":
                kw["lr"] = 0.25 * linnet.gd_stability_step(p, v)
            if name == "lora":
                kw["key"] = jax.random.fold_in(jax.random.PRNGKey(4), i)
            one = linnet.simulate(name, p, v, TIMES, **kw)
            for metric in ("train_loss", "id_error", "ood_error"):
                ref = np.asarray(getattr(one, metric))
                got = np.asarray(getattr(res, metric)[0, j, i])
                assert np.max(np.abs(got - ref)) <= 1e-10 * np.max(np.abs(ref)), (metric, label, i)


IMPORT_SCRIPT = textwrap.dedent(
    """
    import jax, matplotlib
    backend, x64 = matplotlib.get_backend(), jax.config.jax_enable_x64
    rc = dict(matplotlib.rcParams)
    import linnet
    assert jax.config.jax_enable_x64 == x64 == False, jax.config.jax_enable_x64
    assert matplotlib.get_backend() == backend, (matplotlib.get_backend(), backend)
    import sys
    # drawing a figure (from its committed numbers) leaves the caller's style alone too
    linnet.figures.draw("toy", linnet.figures.load("toy", sys.argv[1])).savefig(sys.argv[2])
    assert dict(matplotlib.rcParams) == rc
    assert matplotlib.get_backend() == backend
    p = linnet.subspace_shift(jax.random.PRNGKey(0), d=12, k=2, n=5, eps=0.3)
    assert p.X.dtype == "float32", p.X.dtype  # computes in the caller's precision
    print("OK")
    """
)


def test_importing_linnet_changes_no_global_setting(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_ENABLE_X64", "MPLBACKEND")}
    figs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "figures")
    png = os.path.join(tmp_path, "toy.png")
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_SCRIPT, figs, png], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("OK")


def test_methods_on_the_ft_flow_share_one_compiled_program():
    """FT, LP-FT, two learning rates and L2-SP are one flow with other parameter values (`Method.program`): after
    FT has run on a shape, the others add no compiled core program (jax's own cache count), and each still gives
    its own result, labelled with its own name."""
    from linnet._run import padded

    def sizes():
        return [f._cache_size() for f in (padded._prepare, padded._integrate, padded._finish)]

    p = linnet.subspace_shift(jax.random.PRNGKey(21), d=D + 1, k=K, n=N, eps=0.3)  # a shape of its own
    ft = linnet.fine_tune(p, V0, TIMES)
    size = sizes()
    others = {
        "lpft": linnet.lp_ft(p, V0, TIMES),
        "two_lr": linnet.two_learning_rates(p, V0, TIMES, eta_B=0.3),
        "l2_sp": linnet.l2_sp(p, V0, TIMES, lam_B=0.2),
    }
    assert sizes() == size
    for name, tr in others.items():
        assert tr.method == name and tr.solver == ft.solver
        assert np.max(np.abs(np.asarray(tr.ood_error[1:]) - np.asarray(ft.ood_error[1:]))) > 1e-3, name


def test_sweeps_of_methods_on_the_ft_flow_share_one_compiled_batch():
    """In `sweep` too, FT, LP-FT (its LP head computed before the batch), two learning rates, L2-SP and FT from
    the LP head run FT's one compiled batch per shape and solver plan (counted by the batch cache), and each gives
    what its own `simulate` call gives, to rounding (`rounding_tol`: two compiled programs of one solve). Two
    learning rates with η_B = 0 is LP with time
    scaled by η_v (`Method.delegate`), decided on the host: the reference is `linear_probe` at η_v · t."""
    from linnet._run import sweep as _sweep

    probs = linnet.subspace_shifts(jax.random.split(jax.random.PRNGKey(23), 2), 0.2, d=D + 2, k=K, n=N)
    heads = jax.random.normal(jax.random.PRNGKey(24), (2, K))
    specs = [
        {"name": "two_lr", "eta_v": 0.5, "eta_B": 0.3},  # no explicit solver for it: the default plan
        {"name": "l2_sp", "lam_B": 0.2},
        {"name": "ft", "lp_head": True},
        {"name": "two_lr", "eta_v": 2.0, "eta_B": 0.0},
    ]
    before = _sweep.compiled_batches()
    res = linnet.sweep(probs, heads, TIMES, methods=specs, progress=False)
    assert _sweep.compiled_batches() - before == 2  # FT's program (default plan), and LP's, on this new shape
    for i in range(2):
        p = jax.tree_util.tree_map(lambda a, i=i: a[i], probs)
        refs = [
            linnet.two_learning_rates(p, heads[i], TIMES, eta_v=0.5, eta_B=0.3),
            linnet.l2_sp(p, heads[i], TIMES, lam_B=0.2),
            linnet.simulate("ft", p, heads[i], TIMES, lp_head=True),
            linnet.linear_probe(p, heads[i], 2.0 * TIMES),
        ]
        for j, ref in enumerate(refs):
            tol = rounding_tol(p, ref)
            finite = np.isfinite(np.asarray(TIMES))
            for metric in ("train_loss", "id_error", "ood_error"):
                want, got = np.asarray(getattr(ref, metric)), np.asarray(getattr(res, metric)[j, 0, i])
                scale = np.max(np.abs(want))
                assert np.max(np.abs(got - want)[finite]) <= tol * scale, (specs[j], metric, i, tol)
                # t = ∞: where the steady-state stop falls follows the rounding of the last, long steps, and on the
                # stiffest member (cond(X)² ≈ 1e6) the batch and the single program stop 56 steps apart at XLA's
                # optimisation level 0 (the suite's), 1.4e-7 apart in L_ood; both are within the rule's tolerance
                # of the limit, so the limit is compared to 1e-6 relative, linnet's accuracy promise for limits
                assert np.max(np.abs(got - want)[~finite]) <= max(tol, 1e-6) * scale, (specs[j], metric, i)


def test_batched_predictors_run_lp_ft_by_fts_compiled_batch():
    """`batched_predictors` plans a method as `sweep` does: LP-FT is FT's compiled batch started from the LP heads
    (computed first), so on one shape the two compile one batch (counted by its cache), and each member's predictor
    and head equal `simulate("lpft", ...)`'s to the rounding bound of two compiled programs."""
    from linnet._run import predictors

    probs = linnet.subspace_shifts(jax.random.split(jax.random.PRNGKey(26), 3), 0.3, d=D + 3, k=K, n=N)
    heads = jax.random.normal(jax.random.PRNGKey(27), (3, K))
    before = predictors._predictor_batch.cache_info().misses
    predictors.batched_predictors(probs, heads, TIMES, method="ft", workers=1)
    v, w = predictors.batched_predictors(probs, heads, TIMES, method="lpft", workers=1)
    assert predictors._predictor_batch.cache_info().misses - before == 1
    for i in range(3):
        p = jax.tree_util.tree_map(lambda a, i=i: a[i], probs)
        ref = linnet.simulate("lpft", p, heads[i], TIMES)
        tol = rounding_tol(p, ref)
        assert _rel(np.asarray(w[i]), np.asarray(ref.predictor)) <= tol
        assert _rel(np.asarray(v[i]), np.asarray(ref.v)) <= tol


def test_a_literal_zero_rate_under_jit_is_still_the_other_method():
    """A Python number passed as a parameter stays concrete inside a caller's `jit`, so the delegation it selects
    is taken there too: two learning rates with η_B = 0 under `jit` is LP at time η_v t (reference: eager
    `linear_probe`), to rounding; before, the staged constant was taken for a traced rate and rejected."""
    p = linnet.subspace_shift(jax.random.PRNGKey(25), d=D, k=K, n=N, eps=0.3)
    got = jax.jit(lambda v: linnet.two_learning_rates(p, v, TIMES, eta_v=2.0, eta_B=0.0).ood_error)(jnp.asarray(V0))
    # to rounding: one XLA program (under the caller's jit) and the eager call's own program fuse the closed form's
    # c (c t) λ̂ products differently (relative differences of 8e-16 measured)
    want = np.asarray(linnet.linear_probe(p, V0, 2.0 * TIMES).ood_error)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-14, atol=0)
