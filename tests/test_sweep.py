"""`linnet.sweep`: instances × methods × heads in compiled batches, metrics only; checked against single calls."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import linnet


@pytest.fixture(scope="module")
def batch():
    N = 5
    probs = linnet.subspace_shifts(
        jax.random.split(jax.random.PRNGKey(0), N), jnp.linspace(0.05, 0.4, N), d=20, k=2, n=6
    )
    heads = {"zero": jnp.zeros(2), "random": jax.random.normal(jax.random.PRNGKey(1), (N, 2))}
    return probs, heads


def test_subspace_shifts_equal_single_generator_calls(batch):
    probs, _ = batch
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    one = linnet.subspace_shift(keys[3], d=20, k=2, n=6, eps=float(jnp.linspace(0.05, 0.4, 5)[3]))
    np.testing.assert_allclose(probs.X[3], one.X, atol=1e-13)
    np.testing.assert_allclose(probs.B0[3], one.B0, atol=1e-13)
    np.testing.assert_allclose(linnet.feature_distance(probs.B0[3], probs.B_star[3]), 0.05 + 3 * 0.35 / 4, atol=1e-10)


def test_sweep_labels_and_layout_match_the_public_wrappers(batch):
    """Several methods and heads in one call: the (M, H, N, T) layout, the spec labels, a padded last batch
    (5 instances in batches of 3), and agreement with the public wrappers (`linear_probe`,
    `two_learning_rates`) to 1e-9. Every registered method is compared with `simulate` at 1e-10, for both head
    kinds, in `test_composable.test_sweep_equals_individual_calls`."""
    probs, heads = batch
    times = [0.0, 0.7, np.inf]
    methods = ("lp", {"name": "two_lr", "eta_B": 0.3})
    res = linnet.sweep(probs, heads, times, methods=methods, batch_size=3, progress=False)
    assert res.ood_error.shape == (2, 2, 5, 3) and res.methods == ("lp", "two_lr(eta_B=0.3)")
    assert res.heads == ("zero", "random")
    singles = {
        "lp": lambda p, v: linnet.linear_probe(p, v, times),
        "two_lr(eta_B=0.3)": lambda p, v: linnet.two_learning_rates(p, v, times, eta_B=0.3),
    }
    for i in (0, 4):  # first batch and the padded last one
        p = jax.tree_util.tree_map(lambda a, i=i: a[i], probs)
        for head, h in heads.items():
            v = h if h.ndim == 1 else h[i]
            for name, fn in singles.items():
                tr = fn(p, v)
                got = res.get(name, head)
                for metric in ("train_loss", "id_error", "ood_error"):
                    np.testing.assert_allclose(got[metric][i], getattr(tr, metric), rtol=1e-9, atol=1e-14)


def test_sweep_rejects_bad_arguments(batch):
    probs, heads = batch
    with pytest.raises(ValueError, match="unknown method"):
        linnet.sweep(probs, heads, [1.0], methods=("sgd",), progress=False)
    with pytest.raises(ValueError, match="head 'h'"):
        linnet.sweep(probs, {"h": jnp.zeros((3, 2))}, [1.0], progress=False)
    with pytest.raises(ValueError, match="batched Problem"):
        linnet.sweep(linnet.subspace_shift(jax.random.PRNGKey(0), d=20, k=2, n=6, eps=0.1), heads, [1.0])
    with pytest.raises(KeyError, match="not in this sweep"):
        linnet.sweep(probs, heads, [1.0], methods=("lp",), progress=False).get("ft")


def test_run_in_parts_runs_each_part_on_its_own_thread_and_keeps_the_order():
    """`run_in_parts` cuts the batch axis into equal parts (7 members into 3 parts of 3 with `min_part=2`, the last
    padded by repeating member 6), calls the function once per part on distinct host threads, and puts the outputs
    back in order without the padding; replicated arguments reach every part whole. With one worker, or fewer
    than two parts' worth of members (7 < 2 · 4, the default `min_part`), it is one call."""
    import threading

    from linnet._run.plan import run_in_parts

    seen = []

    def fn(x, scale):
        seen.append((threading.get_ident(), x.shape))
        return {"y": x * scale, "first": x[:, 0]}

    x = jnp.arange(14.0).reshape(7, 2)
    out = run_in_parts(fn, (x, jnp.asarray(10.0)), (True, False), 3, min_part=2)
    np.testing.assert_array_equal(out["y"], np.arange(14.0).reshape(7, 2) * 10)
    np.testing.assert_array_equal(out["first"], np.arange(0.0, 14.0, 2))
    assert len(seen) == 3 and {s for _, s in seen} == {(3, 2)}
    assert len({t for t, _ in seen}) == 3
    for workers, min_part in ((1, 1), (3, 4)):
        seen.clear()
        assert run_in_parts(fn, (x, 1.0), (True, False), workers, min_part=min_part)["y"].shape == (7, 2)
        assert [s for _, s in seen] == [(7, 2)]


def test_a_batch_of_rows_is_cut_from_the_whole_arrays_and_padding_only_parts_are_not_run():
    """`take_rows` against NumPy indexing (rows 3..8 of 10, and 7..10 padded to 5 by repeating row 9), on a pytree
    of leaves of different shapes. `run_in_parts(..., rows=(start, stop, size))`: the batch is rows start..stop of
    the whole arrays padded to `size`; each part takes its rows from the whole arrays; a part that would hold
    padding only is not called; the output has `size` rows, of which those of the batch's members are the function's
    (what the padding rows hold is not specified: the caller drops them)."""
    from linnet._run.plan import run_in_parts, take_rows

    a = np.arange(40.0).reshape(10, 4)
    tree = {"a": jnp.asarray(a), "b": jnp.arange(10)}
    got = take_rows(tree, 3, 8, 5)
    np.testing.assert_array_equal(got["a"], a[3:8])
    np.testing.assert_array_equal(got["b"], np.arange(3, 8))
    assert take_rows(tree, 0, 10, 10) is tree  # every row: the tree itself, not a copy
    got = take_rows(tree, 7, 10, 5)
    np.testing.assert_array_equal(got["a"], a[[7, 8, 9, 9, 9]])
    np.testing.assert_array_equal(got["b"], [7, 8, 9, 9, 9])

    seen = []

    def fn(x, scale):
        seen.append((None, np.asarray(x[:, 0]).tolist()))
        return x * scale

    # the last batch of a sweep of 10 in batches of 8: rows 8, 9, padded to 8; 4 parts of 2 → parts 1–3 are padding
    out = run_in_parts(fn, (jnp.asarray(a), 2.0), (True, False), 4, min_part=2, rows=(8, 10, 8))
    assert out.shape == (8, 4)
    np.testing.assert_array_equal(out[:2], 2 * a[8:10])
    assert [s for _, s in seen] == [[32.0, 36.0]]
    # a full batch (rows 0..8) in 4 parts of 2 (threads: the test above)
    seen.clear()
    out = run_in_parts(fn, (jnp.asarray(a), 1.0), (True, False), 4, min_part=2, rows=(0, 8, 8))
    np.testing.assert_array_equal(out, a[:8])
    assert sorted(s for _, s in seen) == [[0.0, 4.0], [8.0, 12.0], [16.0, 20.0], [24.0, 28.0]]
    # one part (one worker): the batch's rows in one call
    seen.clear()
    out = run_in_parts(fn, (jnp.asarray(a), 1.0), (True, False), 1, rows=(6, 10, 5))
    np.testing.assert_array_equal(out[:4], a[6:10])
    assert len(seen) == 1


def test_sweep_workers_do_not_change_the_numbers():
    """FT (t = ∞ included) and LP-FT with 1 worker and with 2 (9 instances: parts of 5, the last padded): the members
    are independent solves, each part's program another compilation of the same per-member solve, so the metrics
    agree to rounding; 1e-9 relative is the bound used above for a sweep against single calls (at t = ∞ the
    steady-state stop follows the rounding of the step sizes). Bad `workers` values are refused by name."""
    probs = linnet.subspace_shifts(jax.random.split(jax.random.PRNGKey(5), 9), jnp.linspace(0.05, 0.4, 9), d=20, k=2,
                                   n=6)  # fmt: skip
    heads = jax.random.normal(jax.random.PRNGKey(6), (9, 2))
    times = [0.0, 0.7, np.inf]
    kw = dict(methods=("ft", "lpft"), batch_size=9, progress=False)
    one = linnet.sweep(probs, heads, times, workers=1, **kw)
    two = linnet.sweep(probs, heads, times, workers=2, **kw)
    for metric in ("train_loss", "id_error", "ood_error"):
        np.testing.assert_allclose(getattr(two, metric), getattr(one, metric), rtol=1e-9, atol=1e-14)
    for bad in (0, 1.5, True, -2):
        with pytest.raises(ValueError, match="`workers` must be a positive integer"):
            linnet.sweep(probs, heads, times, workers=bad, **kw)


def test_stiff_ft_batches_vmap_eight_members_by_default_and_agree_with_one_at_a_time(monkeypatch):
    """Without `chunk`, a batch of an FT-flow method whose members all take the implicit solver (stiff inputs) is
    vmapped 8 members at a time (`plan.AUTO_CHUNK`); LP (a closed form) keeps chunk 1, and a given `chunk` is
    used as given. Reference: the same sweep with `chunk=1` (one member at a time). The members are the same
    solves, batched, so at finite times the metrics agree to rounding (1e-9 relative, as above). At t = ∞ the two
    compiled programs' rounding moves where the steady-state test stops (measured: 1.2e-8 relative in L_ood on 4
    of 10 members), each stop within the steady-state tolerance of the limit: compared to linnet's limit promise,
    1e-6 relative (as `sweep` against `simulate` in tests/test_composable.py)."""
    from linnet._run import plan
    from linnet._run import sweep as _sweep
    from linnet._solver.choice import explicit_is_enough

    assert plan.batch_chunk(None, True, "default") == plan.AUTO_CHUNK == 8
    assert plan.batch_chunk(None, True, "mixed") == plan.batch_chunk(None, True, "explicit") == 1
    assert plan.batch_chunk(None, False, "default") == 1 and plan.batch_chunk(3, True, "default") == 3
    N = 10
    probs = linnet.subspace_shifts(jax.random.split(jax.random.PRNGKey(7), N), 0.2, d=80, k=2, n=30)
    assert not np.any(np.asarray(explicit_is_enough(np.asarray(probs.reduced.s))))  # stiff: all implicit
    heads = jax.random.normal(jax.random.PRNGKey(8), (N, 2))
    times = [0.0, 0.5, np.inf]
    seen = []
    batched = _sweep._batched

    def spy(name, opts, rtol, atol, max_steps, chunk, devices, mode, loss="squared"):
        seen.append((getattr(name, "name", name), chunk, mode))
        return batched(name, opts, rtol, atol, max_steps, chunk, devices, mode, loss)

    monkeypatch.setattr(_sweep, "_batched", spy)
    kw = dict(methods=("ft", "lp"), batch_size=N, progress=False, workers=1)
    auto = linnet.sweep(probs, heads, times, **kw)
    assert ("ft", 8, "default") in seen and all(c == 1 for n, c, _ in seen if n == "lp"), seen
    seen.clear()
    one = linnet.sweep(probs, heads, times, chunk=1, **kw)
    assert {c for _, c, _ in seen} == {1}, seen
    for metric in ("train_loss", "id_error", "ood_error"):
        got, want = np.asarray(getattr(auto, metric)), np.asarray(getattr(one, metric))
        np.testing.assert_allclose(got[..., :-1], want[..., :-1], rtol=1e-9, atol=1e-14, err_msg=metric)
        np.testing.assert_allclose(got[..., -1], want[..., -1], rtol=1e-6, atol=1e-14, err_msg=metric)


def test_stiff_ft_batches_take_the_methods_batch_solver(monkeypatch):
    """Where every member of a batch takes the implicit solver, its members run the method's `batch_solver` (for
    the FT flow, Rodas5P with the k × k LU unrolled: `FTNewton(unrolled=True)`), seen by a spy on the solver
    `simulate` is given while the batch is traced; a batch on the explicit solver is given none. The members are
    vmapped 8 at a time in the order of the method's `batch_order` (here not the instances' order) and their
    results put back in place. Reference: each member's `fine_tune` with that solver, to rounding at finite times
    (1e-9 relative, as the chunks above) and within the steady-state tolerance at t = ∞ (1e-6, linnet's limit
    promise)."""
    from linnet._methods.ft_jacobian import FTNewton
    from linnet._run import sweep as _sweep

    solver = linnet.get_method("ft").batch_solver()
    assert isinstance(solver.newton, FTNewton) and solver.newton.unrolled
    given = []
    real = _sweep.simulate

    def spy(*args, **kwargs):
        given.append(kwargs.get("solver"))
        return real(*args, **kwargs)

    monkeypatch.setattr(_sweep, "simulate", spy)
    _sweep._batched.cache_clear()  # traced afresh, so the spy sees the calls
    N = 11  # one chunk of 8 and a remainder of 3
    probs = linnet.subspace_shifts(jax.random.split(jax.random.PRNGKey(3), N), 0.2, d=60, k=2, n=20)
    heads = jax.random.normal(jax.random.PRNGKey(4), (N, 2))
    times = [0.0, 0.3, np.inf]
    order = np.argsort(np.asarray(linnet.get_method("ft").batch_order(probs, heads)))
    assert not np.array_equal(order, np.arange(N))  # the batch is reordered
    res = linnet.sweep(probs, heads, times, methods=("ft",), batch_size=N, progress=False, workers=1)
    assert given and all(g is solver for g in given), given
    for i in range(N):
        p = jax.tree_util.tree_map(lambda a, i=i: a[i], probs)
        ref = linnet.fine_tune(p, heads[i], times, solver=solver)
        got = np.asarray(res.ood_error[0, 0, i])
        np.testing.assert_allclose(got[:-1], ref.ood_error[:-1], rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(got[-1], ref.ood_error[-1], rtol=1e-6)
    given.clear()
    gauss = linnet.subspace_shifts(jax.random.split(jax.random.PRNGKey(5), 2), 0.2, d=60, k=2, n=5, inputs="isotropic")
    linnet.sweep(gauss, jnp.ones(2), times, methods=("ft",), progress=False, workers=1)
    assert given and all(g is None or not isinstance(getattr(g, "newton", None), FTNewton) for g in given), given
    _sweep._batched.cache_clear()  # the spy's programs are not left for other tests


def test_a_mixed_batch_runs_each_members_solver_and_falls_back(monkeypatch):
    """A batch whose members choose different solvers runs in one program that holds one explicit and one implicit
    solve, chosen per member by `lax.cond`. The explicit choices are forced here (members 0, 1 explicit; 2, 3 not):
    member 1 is stiff, so its Tsit5 attempt runs out of its step budget and must fall back; member 3 is well
    conditioned but told to take the implicit solver. Reference: each member's single `simulate` with the solver it
    should end on (Tsit5 for member 0, Rodas5P for the others), and with the other solver. The two solvers' paths
    differ at the tolerance level (measured 9e-10 to 1e-8), a solver's batched and single paths only by rounding
    (measured ≤ 3e-16): at the finite times t > 0 each member must be within `rounding_tol` of its own solver's
    path and 10× closer to it than to the other's, which says which solver it ended on; t = ∞ to the 1e-6 limit
    promise (the stop follows rounding)."""
    from helpers import rounding_tol

    from linnet._run import predictors
    from linnet._solver import choice

    iso = linnet.subspace_shifts(jax.random.split(jax.random.PRNGKey(11), 2), 0.2, d=80, k=2, n=30, inputs="isotropic")
    stiff = linnet.subspace_shifts(jax.random.split(jax.random.PRNGKey(12), 2), 0.2, d=80, k=2, n=30)
    probs = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[:1], b, a[1:]]), iso, stiff)
    assert list(np.asarray(choice.explicit_is_enough(np.asarray(probs.reduced.s)))) == [True, False, False, True]
    forced = np.array([True, True, False, False])
    monkeypatch.setattr(predictors, "explicit_is_enough", lambda s: forced)
    heads = jax.random.normal(jax.random.PRNGKey(13), (4, 2))
    times = [0.0, 0.5, 3.0, np.inf]
    _, w = predictors.batched_predictors(probs, heads, times, workers=1)
    tsit5, rodas = choice.explicit_solver(), linnet.get_method("ft").solver(2)

    def rel(a, b):
        a, b = np.asarray(a), np.asarray(b)
        return np.abs(a - b).max(-1) / np.abs(b).max(-1)

    for i, (own, other) in enumerate([(tsit5, rodas), (rodas, tsit5), (rodas, tsit5), (rodas, tsit5)]):
        p = jax.tree_util.tree_map(lambda a, i=i: a[i], probs)
        mine = linnet.simulate("ft", p, heads[i], times, solver=own)
        theirs = linnet.simulate("ft", p, heads[i], times[:3], solver=other)
        err, apart = rel(w[i], mine.predictor), rel(w[i, :3], theirs.predictor)
        assert np.all(err[1:3] <= rounding_tol(p, mine)), (i, err, rounding_tol(p, mine))
        assert np.all(err[1:3] <= 0.1 * apart[1:3]), (i, err, apart)
        assert err[-1] <= 1e-6, (i, err)


def test_ft_batch_order_is_s_min_times_the_head_norm():
    """The FT flow's `batch_order` key: s_min ‖v0‖ per member, against NumPy's singular values of each X and norms
    of each head (1e-12 relative; the zero singular values a batch pads with are not the minimum)."""
    N = 4
    probs = linnet.subspace_shifts(jax.random.split(jax.random.PRNGKey(9), N), 0.1, d=30, k=2, n=10)
    heads = jax.random.normal(jax.random.PRNGKey(10), (N, 2))
    want = [np.linalg.svd(np.asarray(probs.X[i]), compute_uv=False).min() * np.linalg.norm(heads[i]) for i in range(N)]
    got = linnet.get_method("ft").batch_order(probs, heads)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)


def test_sweep_batches_run_the_unpadded_flow(monkeypatch):
    """A sweep's batch program (and `batched_predictors`') is compiled per shape, so padding the reduced dimension
    to a bucket would buy no reuse: its members run the unpadded core, while a single `fine_tune` of the same member
    takes the padded route (one integration program per bucket). Seen by a spy on `padded_core`; the two agree to
    rounding at finite times (1e-9 relative) and within the steady-state tolerance at t = ∞ (1e-6), as above."""
    from linnet._run import predictors
    from linnet._run import simulate as _simulate
    from linnet._run import sweep as _sweep

    calls = []
    real = _simulate.padded_core

    def spy(*args, **kwargs):
        calls.append(kwargs["name"])
        return real(*args, **kwargs)

    monkeypatch.setattr(_simulate, "padded_core", spy)
    _sweep._batched.cache_clear()  # traced afresh, so the spy sees the calls
    N = 4
    probs = linnet.subspace_shifts(jax.random.split(jax.random.PRNGKey(6), N), 0.2, d=50, k=2, n=13)  # r 13 → 14
    heads = jax.random.normal(jax.random.PRNGKey(7), (N, 2))
    times = [0.0, 0.5, np.inf]
    res = linnet.sweep(probs, heads, times, methods=("ft", "lpft"), progress=False, workers=1)
    predictors._predictor_batch.cache_clear()
    _, w = predictors.batched_predictors(probs, heads, times, workers=1)
    assert calls == [], calls
    for i in range(N):
        p = jax.tree_util.tree_map(lambda a, i=i: a[i], probs)
        for j, method in enumerate(("ft", "lpft")):
            ref = linnet.simulate(method, p, heads[i], times, solver=linnet.get_method("ft").batch_solver())
            got = np.asarray(res.ood_error[j, 0, i])
            np.testing.assert_allclose(got[:-1], ref.ood_error[:-1], rtol=1e-9, atol=1e-14)
            np.testing.assert_allclose(got[-1], ref.ood_error[-1], rtol=1e-6)
            if method == "ft":
                np.testing.assert_allclose(w[i, :-1], ref.predictor[:-1], rtol=1e-9, atol=1e-14)
                np.testing.assert_allclose(w[i, -1], ref.predictor[-1], rtol=1e-6, atol=1e-12)
    assert calls and set(calls) == {"ft"}, calls  # the single calls padded (LP-FT runs FT's program)
    _sweep._batched.cache_clear()
    predictors._predictor_batch.cache_clear()
