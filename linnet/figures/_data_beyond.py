"""The numbers behind the figures of methods beyond the paper: `data_<name>(quick, seed) -> dict`.

The standard setting: a subspace shift with Gaussian inputs, ε = 0.1, Σ_ood = I, random heads v0 ~ N(0, I),
averaged over seeds where a curve is a mean. Every method runs through the registry (`simulate`, `sweep` or their
wrappers); nothing here draws.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._generators import subspace_shifts
from .._interpolate import early_stopping, wise_ft, with_label_noise
from .._methods.gd import gd_stability_step, gradient_descent
from .._methods.general_flows import deep_fine_tune, lora
from .._methods.paper import fine_tune, linear_probe, lp_ft
from .._run.simulate import simulate
from .._run.sweep import sweep
from .._trajectory import DivergenceError
from ._io import _slope


def _beyond(quick: bool, seed: int):
    shape: dict[str, int] = dict(d=24, k=2, n=8) if quick else dict(d=60, k=3, n=15)
    seeds = 2 if quick else 6
    key = jax.random.PRNGKey(seed)
    keys = jax.random.split(key, seeds)
    probs = subspace_shifts(keys, jnp.full(seeds, 0.1), inputs="isotropic", d=shape["d"], k=shape["k"], n=shape["n"])
    heads = jax.random.normal(jax.random.fold_in(key, 1), (seeds, shape["k"]))
    return shape, probs, heads


def _instance(probs, i):
    return jax.tree_util.tree_map(lambda a: a[i], probs)


def _paper_methods_limits(probs, heads) -> dict:
    res = sweep(probs, heads, [np.inf], methods=("lp", "ft", "lpft"), progress=False)
    return {name: res.get(code) for name, code in (("LP", "lp"), ("FT", "ft"), ("LP-FT", "lpft"))}


def data_two_lr(quick: bool = False, seed: int = 0) -> dict:
    """L_ood of two-learning-rate fine-tuning at t = 1 and t = ∞ against η_B/η_v (per seed), with the limits of
    LP, FT and LP-FT as references."""
    shape, probs, heads = _beyond(quick, seed)
    ratios = np.logspace(-1, 0, 2) if quick else np.logspace(-3, 1, 9)
    res = sweep(probs, heads, [1.0, np.inf], methods=[{"name": "two_lr", "eta_B": r} for r in ratios], progress=False)
    ood_inf = np.asarray(res.ood_error[:, 0, :, -1])  # (ratios, seeds)
    mean = ood_inf.mean(1)
    return dict(
        ratios=ratios,
        ood_inf=ood_inf,
        ood_t1=np.asarray(res.ood_error[:, 0, :, 0]),
        reference={n: r["ood_error"][:, -1] for n, r in _paper_methods_limits(probs, heads).items()},
        limit_monotone_in_ratio=bool(np.all(np.diff(mean) >= 0) or np.all(np.diff(mean) <= 0)),
        params=dict(seed=seed, eps=0.1, seeds=probs.X.shape[0], **shape),
    )


def data_wise_ft(quick: bool = False, seed: int = 0) -> dict:
    """L_ood along the WiSE-FT interpolations LP → FT and LP → LP-FT on one instance, with the exact OOD-optimal
    weight α* and the quartic L_ood(α)."""
    shape, probs, heads = _beyond(quick, seed)
    p, v0 = _instance(probs, 0), heads[0]
    theta_lp = (linear_probe(p, v0, [np.inf]).v[-1], p.B0)
    ends = {"FT": fine_tune(p, v0, [np.inf]).at(-1), "LP-FT": lp_ft(p, v0, [np.inf]).at(-1)}
    alphas = np.linspace(0, 1, 101)
    data: dict[str, Any] = dict(alphas=alphas, params=dict(seed=seed, eps=0.1, **shape))
    for name, theta in ends.items():
        fam = wise_ft(p, theta_lp, theta)
        a_star, e_star = fam.optimal_alpha()
        data[name] = dict(
            ood_error=np.asarray(fam.error(alphas)), alpha_star=a_star, ood_at_alpha_star=e_star, quartic=fam.quartic()
        )
    return data


def data_l2_sp(quick: bool = False, seed: int = 0) -> dict:
    """Limiting ID and OOD errors of L2-SP over λ_B (λ_v = 1e-3), per seed, with LP, FT and LP-FT."""
    shape, probs, heads = _beyond(quick, seed)
    lams = np.logspace(-2, 1, 2) if quick else np.logspace(-3, 2, 8)
    methods = [{"name": "l2_sp", "lam_B": x, "lam_v": 1e-3} for x in lams]
    res = sweep(probs, heads, [np.inf], methods=methods, progress=False)
    ref = _paper_methods_limits(probs, heads)
    return dict(
        lam_B=lams,
        lam_v=1e-3,
        id_error=np.asarray(res.id_error[:, 0, :, -1]),
        ood_error=np.asarray(res.ood_error[:, 0, :, -1]),
        params=dict(seed=seed, eps=0.1, **shape),
        reference={n: {"id": r["id_error"][:, -1], "ood": r["ood_error"][:, -1]} for n, r in ref.items()},
    )


def data_gd(quick: bool = False, seed: int = 0) -> dict:
    """Discrete GD against the flow on one instance: ‖w_GD(∞) − w_flow(∞)‖ and L_ood at GD's limit against the
    step (as a fraction of 2/λ_max at the start), the fitted order, and whether 3× that step diverges."""
    shape, probs, heads = _beyond(quick, seed)
    p, v0 = _instance(probs, 0), heads[0]
    flow = fine_tune(p, v0, [np.inf], rtol=1e-11, atol=1e-13)
    h = gd_stability_step(p, v0)
    fracs = 2.0 ** (-np.arange(2, 5) if quick else -np.arange(1, 9))
    dist, ood = [], []
    for f in fracs:
        tr = gradient_descent(p, v0, [np.inf], lr=f * h, rtol=1e-12)
        dist.append(float(jnp.linalg.norm(tr.predictor[-1] - flow.predictor[-1])))
        ood.append(float(tr.ood_error[-1]))
    try:
        gradient_descent(p, v0, [np.inf], lr=3 * h)
        diverges = False
    except DivergenceError:
        diverges = True
    dist = np.asarray(dist)
    return dict(
        step_fraction=fracs,
        stable_step=h,
        distance_to_flow=dist,
        ood_error=np.asarray(ood),
        order=_slope(fracs, dist),
        flow_ood=float(flow.ood_error[-1]),
        diverges_at_3x=diverges,
        params=dict(seed=seed, eps=0.1, **shape),
    )


def _s_perp_change(p, tr) -> float:
    """‖(B(∞) − B0) P_S⊥‖_F: the feature change outside the training span."""
    dB = np.asarray(tr.B[-1] - p.B0)
    V = np.asarray(p.id_basis)
    return float(np.linalg.norm(dB - (dB @ V) @ V.T))


def data_lora(quick: bool = False, seed: int = 0) -> dict:
    """LoRA's limiting L_ood and S⊥ feature change (scale × rank × seed), with LP, FT and LP-FT."""
    shape, probs, heads = _beyond(quick, seed)
    ranks = [1] if quick else [1, 2, 3]
    scales = [1.0] if quick else [0.1, 1.0, 3.0]
    n_inst = probs.X.shape[0]
    ood = np.zeros((len(scales), len(ranks), n_inst))
    perp = np.zeros_like(ood)
    for a, sc in enumerate(scales):
        for b, r in enumerate(ranks):
            for i in range(n_inst):
                p = _instance(probs, i)
                tr = lora(p, heads[i], [np.inf], rank=r, key=jax.random.PRNGKey(100 + i), init_scale=sc)
                ood[a, b, i], perp[a, b, i] = float(tr.ood_error[-1]), _s_perp_change(p, tr)
    return dict(
        ranks=ranks,
        scales=scales,
        ood_error=ood,
        s_perp_change=perp,
        params=dict(seed=seed, eps=0.1, **shape),
        reference={n: r["ood_error"][:, -1] for n, r in _paper_methods_limits(probs, heads).items()},
    )


def data_deep(quick: bool = False, seed: int = 0) -> dict:
    """Deeper extractors B = W_L ⋯ W_1: limiting L_ood and S⊥ feature change (depth × seed) for FT and LP-FT, and
    LP's mean limit."""
    shape, probs, heads = _beyond(quick, seed)
    depths = [1, 2] if quick else [1, 2, 3, 4]
    n_inst = probs.X.shape[0]
    res = {
        m: {"ood_error": np.zeros((len(depths), n_inst)), "s_perp_change": np.zeros((len(depths), n_inst))}
        for m in ("FT", "LP-FT")
    }
    for a, L in enumerate(depths):
        for i in range(n_inst):
            p = _instance(probs, i)
            for m in ("FT", "LP-FT"):
                tr = deep_fine_tune(p, heads[i], [np.inf], depth=L, lp_head=m == "LP-FT")
                res[m]["ood_error"][a, i] = float(tr.ood_error[-1])
                res[m]["s_perp_change"][a, i] = _s_perp_change(p, tr)
    return dict(
        depths=depths,
        params=dict(seed=seed, eps=0.1, **shape),
        LP_ood=_paper_methods_limits(probs, heads)["LP"]["ood_error"][:, -1].mean(),
        **res,
    )


def _all_methods(p, v0) -> dict:
    """Limits (or oracle early stops) of every method on one instance: {label: (L_id, L_ood)}; each method runs
    through the registry (`linnet.simulate`)."""
    t_dense = np.concatenate([np.logspace(-3, 3, 40), [np.inf]])
    runs = {  # label: (registered name, parameters, times)
        "LP": ("lp", {}, [np.inf]),
        "FT": ("ft", {}, t_dense),
        "LP-FT": ("lpft", {}, [np.inf]),
        "two LR (η_B/η_v = 0.1)": ("two_lr", {"eta_B": 0.1}, [np.inf]),
        "L2-SP (λ = 0.1)": ("l2_sp", {"lam_B": 0.1}, [np.inf]),
        "features only (LP head)": ("lp_features_only", {}, [np.inf]),
        "features only (v0 head)": ("features_only", {}, [np.inf]),
        "GD (step = stable/4)": ("gd", {"lr": gd_stability_step(p, v0) / 4}, [np.inf]),
        "LoRA (rank 1)": ("lora", {"rank": 1, "key": jax.random.PRNGKey(7)}, [np.inf]),
        "deep FT (L = 2)": ("deep", {"depth": 2}, [np.inf]),
        "deep LP-FT (L = 2)": ("deep", {"depth": 2, "lp_head": True}, [np.inf]),
    }
    trajs = {label: simulate(name, p, v0, times, **kw) for label, (name, kw, times) in runs.items()}
    ft, lp = trajs["FT"], trajs["LP"]
    es = early_stopping(ft)
    fam = wise_ft(p, (lp.v[-1], p.B0), ft.at(-1))
    a_star, _ = fam.optimal_alpha()
    out = {n: (float(t.id_error[-1]), float(t.ood_error[-1])) for n, t in trajs.items()}
    out["FT early-stopped (oracle)"] = (float(ft.id_error[es.index]), es.value)
    out["WiSE-FT (α*)"] = (float(fam.error(a_star, "id_error")), float(fam.error(a_star)))
    return out


def data_methods(quick: bool = False, seed: int = 0) -> dict:
    """Every method's limiting (L_id, L_ood) per seed and their ranking by mean L_ood; and under label noise σ
    (y = X w⋆ + ξ), the ID and OOD limits of LP, FT and LP-FT."""
    shape, probs, heads = _beyond(quick, seed)
    n_inst = probs.X.shape[0]
    per = [_all_methods(_instance(probs, i), heads[i]) for i in range(n_inst)]
    names = list(per[0])
    ood = np.array([[r[n][1] for r in per] for n in names])
    idm = np.array([[r[n][0] for r in per] for n in names])
    noise = np.array([0.0, 0.3]) if quick else np.array([0.0, 0.03, 0.1, 0.3, 1.0])
    noisy = {
        m: {"id": np.zeros((noise.size, n_inst)), "ood": np.zeros((noise.size, n_inst))} for m in ("LP", "FT", "LP-FT")
    }
    for a, s in enumerate(noise):
        for i in range(n_inst):
            p = with_label_noise(_instance(probs, i), jax.random.PRNGKey(1000 + i), float(s))
            for m, fn in (("LP", linear_probe), ("FT", fine_tune), ("LP-FT", lp_ft)):
                tr = fn(p, heads[i], [np.inf])
                noisy[m]["id"][a, i], noisy[m]["ood"][a, i] = float(tr.id_error[-1]), float(tr.ood_error[-1])
    return dict(
        methods=names,
        ood_error=ood,
        id_error=idm,
        ranking=[names[i] for i in np.argsort(ood.mean(1))],
        noise=noise,
        label_noise=noisy,
        params=dict(seed=seed, eps=0.1, seeds=n_inst, **shape),
    )
