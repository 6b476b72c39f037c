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


def test_sweep_equals_single_calls_for_every_method_and_head(batch):
    probs, heads = batch
    times = [0.0, 0.7, np.inf]
    methods = (
        "lp",
        "ft",
        "lpft",
        "lp_features_only",
        {"name": "two_lr", "eta_B": 0.3},
        {"name": "l2_sp", "lam_B": 0.2},
    )
    res = linnet.sweep(probs, heads, times, methods=methods, batch_size=3, progress=False)
    assert res.ood_error.shape == (6, 2, 5, 3) and res.methods[4] == "two_lr(eta_B=0.3)"
    singles = {
        "lp": lambda p, v: linnet.linear_probe(p, v, times),
        "ft": lambda p, v: linnet.fine_tune(p, v, times),
        "lpft": lambda p, v: linnet.lp_ft(p, v, times),
        "lp_features_only": lambda p, v: linnet.features_only(p, v, times, lp_head=True),
        "two_lr(eta_B=0.3)": lambda p, v: linnet.two_learning_rates(p, v, times, eta_B=0.3),
        "l2_sp(lam_B=0.2)": lambda p, v: linnet.l2_sp(p, v, times, lam_B=0.2),
    }
    for i in (4,):
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


def test_sweep_runs_gd_lora_and_deep_like_single_calls():
    """The general flows inside the compiled sweep equal the single-call functions (LoRA's W0 from
    fold_in(PRNGKey(seed), instance index), GD's step lr_fraction · gd_stability_step)."""
    N = 2
    probs = linnet.subspace_shifts(jax.random.split(jax.random.PRNGKey(5), N), 0.2, d=16, k=2, n=5, inputs="isotropic")
    heads = jax.random.normal(jax.random.PRNGKey(6), (N, 2))
    times = [0.5, np.inf]
    methods = (
        {"name": "gd", "lr_fraction": 0.25},
        {"name": "lora", "rank": 2, "seed": 3},
        {"name": "deep", "depth": 3},
    )
    res = linnet.sweep(probs, heads, times, methods=methods, batch_size=2, progress=False)
    for i in range(N):
        p = jax.tree_util.tree_map(lambda a, i=i: a[i], probs)
        v = heads[i]
        ref = {
            res.methods[0]: linnet.gradient_descent(p, v, times, lr=0.25 * linnet.gd_stability_step(p, v)),
            res.methods[1]: linnet.lora(p, v, times, rank=2, key=jax.random.fold_in(jax.random.PRNGKey(3), i)),
            res.methods[2]: linnet.deep_fine_tune(p, v, times, depth=3),
        }
        for name, tr in ref.items():
            np.testing.assert_allclose(res.get(name)["ood_error"][i], tr.ood_error, rtol=1e-8, atol=1e-14)
            np.testing.assert_allclose(res.get(name)["train_loss"][i], tr.train_loss, rtol=1e-6, atol=1e-14)
