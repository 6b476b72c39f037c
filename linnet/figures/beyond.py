"""Figures of the methods beyond the paper (two learning rates, WiSE-FT, L2-SP, GD, LoRA, deep, all methods)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._gd import gd_stability_step, gradient_descent
from .._general_flows import deep_fine_tune, lora
from .._generators import subspace_shifts
from .._interpolate import early_stopping, wise_ft, with_label_noise
from .._methods import fine_tune, linear_probe, lp_ft
from .._simulate import simulate
from .._sweep import sweep
from .._trajectory import DivergenceError
from ._io import COLORS, _save, _slope, _style, _styled

# ------------------------------------------------------------------------------------------------------
# beyond the paper (issue #6): the standard setting is a subspace shift with Gaussian inputs, ε = 0.1, Σ_ood = I,
# random heads v0 ~ N(0, I), averaged over seeds where a curve is a mean
# ------------------------------------------------------------------------------------------------------


def _beyond(quick: bool, seed: int):
    shape = dict(d=24, k=2, n=8) if quick else dict(d=60, k=3, n=15)
    seeds = 2 if quick else 6
    key = jax.random.PRNGKey(seed)
    keys = jax.random.split(key, seeds)
    probs = subspace_shifts(keys, jnp.full(seeds, 0.1), inputs="isotropic", **shape)
    heads = jax.random.normal(jax.random.fold_in(key, 1), (seeds, shape["k"]))
    return shape, probs, heads


def _instance(probs, i):
    return jax.tree_util.tree_map(lambda a: a[i], probs)


def _paper_methods_limits(probs, heads):
    res = sweep(probs, heads, [np.inf], methods=("lp", "ft", "lpft"), progress=False)
    return {name: res.get(code) for name, code in (("LP", "lp"), ("FT", "ft"), ("LP-FT", "lpft"))}


@_styled
def fig_two_lr(out="figures", quick: bool = False, seed: int = 0) -> dict:
    """Limiting OOD error of two-learning-rate fine-tuning against η_B/η_v (mean over seeds), with LP, FT, LP-FT."""
    plt = _style()
    shape, probs, heads = _beyond(quick, seed)
    ratios = np.logspace(-1, 0, 2) if quick else np.logspace(-3, 1, 9)
    res = sweep(probs, heads, [1.0, np.inf], methods=[{"name": "two_lr", "eta_B": r} for r in ratios], progress=False)
    ood_inf = np.asarray(res.ood_error[:, 0, :, -1])  # (ratios, seeds)
    ood_t1 = np.asarray(res.ood_error[:, 0, :, 0])
    ref = _paper_methods_limits(probs, heads)
    fig, ax = plt.subplots()
    ax.loglog(ratios, ood_inf.mean(1), "o-", color=COLORS["FT"], label="two LR, t = ∞")
    ax.loglog(ratios, ood_t1.mean(1), "s--", color="#CC79A7", label="two LR, t = 1")
    for name in ("LP", "FT", "LP-FT"):
        ax.axhline(ref[name]["ood_error"][:, -1].mean(), color=COLORS[name], ls=":", label=f"{name} (t = ∞)")
    ax.set_xlabel("η_B / η_v (feature / head learning rate)")
    ax.set_ylabel("L_ood (mean over seeds)")
    ax.set_title(f"Two learning rates, ε = 0.1, d={shape['d']} k={shape['k']} n={shape['n']}")
    ax.legend(fontsize=6)
    monotone = bool(np.all(np.diff(ood_inf.mean(1)) >= 0) or np.all(np.diff(ood_inf.mean(1)) <= 0))
    data = dict(
        ratios=ratios,
        ood_inf=ood_inf,
        ood_t1=ood_t1,
        reference={n: r["ood_error"][:, -1] for n, r in ref.items()},
        limit_monotone_in_ratio=monotone,
        params=dict(seed=seed, eps=0.1, seeds=probs.X.shape[0], **shape),
    )
    return _save(fig, "two_lr", out, data)


@_styled
def fig_wise_ft(out="figures", quick: bool = False, seed: int = 0) -> dict:
    """OOD error along WiSE-FT interpolations LP → FT and LP → LP-FT (one instance), with the exact α*."""
    plt = _style()
    shape, probs, heads = _beyond(quick, seed)
    p, v0 = _instance(probs, 0), heads[0]
    lp = linear_probe(p, v0, [np.inf])
    theta_lp = (lp.v[-1], p.B0)
    ends = {"FT": fine_tune(p, v0, [np.inf]).at(-1), "LP-FT": lp_ft(p, v0, [np.inf]).at(-1)}
    alphas = np.linspace(0, 1, 101)
    fig, ax = plt.subplots()
    data = dict(alphas=alphas, params=dict(seed=seed, eps=0.1, **shape))
    for name, theta in ends.items():
        fam = wise_ft(p, theta_lp, theta)
        err = np.asarray(fam.error(alphas))
        a_star, e_star = fam.optimal_alpha()
        ax.plot(alphas, err, color=COLORS[name], label=f"LP → {name}")
        ax.plot([a_star], [e_star], "o", color=COLORS[name], ms=4)
        data[name] = dict(ood_error=err, alpha_star=a_star, ood_at_alpha_star=e_star, quartic=fam.quartic())
    ax.set_yscale("log")
    ax.set_xlabel("interpolation weight α  (θ_α = (1 − α) θ_LP + α θ_end)")
    ax.set_ylabel("L_ood")
    ax.set_title("WiSE-FT (dots: exact OOD-optimal α*)")
    ax.legend(fontsize=6)
    return _save(fig, "wise_ft", out, data)


@_styled
def fig_l2_sp(out="figures", quick: bool = False, seed: int = 0) -> dict:
    """ID/OOD trade-off of L2-SP over λ_B (λ_v = 1e-3) against LP, FT and LP-FT (means over seeds)."""
    plt = _style()
    shape, probs, heads = _beyond(quick, seed)
    lams = np.logspace(-2, 1, 2) if quick else np.logspace(-3, 2, 8)
    res = sweep(
        probs, heads, [np.inf], methods=[{"name": "l2_sp", "lam_B": x, "lam_v": 1e-3} for x in lams], progress=False
    )
    idm, oodm = np.asarray(res.id_error[:, 0, :, -1]), np.asarray(res.ood_error[:, 0, :, -1])
    ref = _paper_methods_limits(probs, heads)
    fig, ax = plt.subplots()
    ax.loglog(np.maximum(idm.mean(1), 1e-300), oodm.mean(1), "o-", color="#CC79A7", label="L2-SP (λ_B ↑ along curve)")
    for name in ("LP", "FT", "LP-FT"):
        ax.loglog(
            max(ref[name]["id_error"][:, -1].mean(), 1e-300),
            ref[name]["ood_error"][:, -1].mean(),
            "s",
            color=COLORS[name],
            label=name,
        )
    ax.set_xlabel("L_id:subspace at t = ∞ (mean)")
    ax.set_ylabel("L_ood at t = ∞ (mean)")
    ax.set_title("L2-SP trade-off, λ_v = 1e-3")
    ax.legend(fontsize=6)
    data = dict(
        lam_B=lams,
        lam_v=1e-3,
        id_error=idm,
        ood_error=oodm,
        params=dict(seed=seed, eps=0.1, **shape),
        reference={n: {"id": r["id_error"][:, -1], "ood": r["ood_error"][:, -1]} for n, r in ref.items()},
    )
    return _save(fig, "l2_sp", out, data)


@_styled
def fig_gd(out="figures", quick: bool = False, seed: int = 0) -> dict:
    """Discrete GD against the flow: distance of the limits and OOD error against the step (one instance)."""
    plt = _style()
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
    dist, ood = np.asarray(dist), np.asarray(ood)
    order = _slope(fracs, dist)
    fig, axes = plt.subplots(1, 2, figsize=(6.8, 2.6))
    axes[0].loglog(fracs, dist, "o-", color=COLORS["FT"])
    axes[0].set_xlabel("step / (2/λ_max at start)")
    axes[0].set_ylabel("‖w_GD(∞) − w_flow(∞)‖")
    axes[0].set_title(f"GD limit → flow limit, order {order:.2f}")
    axes[1].semilogx(fracs, ood, "o-", color=COLORS["FT"], label="GD limit")
    axes[1].axhline(float(flow.ood_error[-1]), color="k", ls=":", label="gradient flow")
    axes[1].set_xlabel("step / (2/λ_max at start)")
    axes[1].set_ylabel("L_ood at the limit")
    axes[1].set_title("implicit bias of the step (3× step: diverges)" if diverges else "OOD error vs step")
    axes[1].legend(fontsize=6)
    data = dict(
        step_fraction=fracs,
        stable_step=h,
        distance_to_flow=dist,
        ood_error=ood,
        order=order,
        flow_ood=float(flow.ood_error[-1]),
        diverges_at_3x=diverges,
        params=dict(seed=seed, eps=0.1, **shape),
    )
    return _save(fig, "gd", out, data)


def _s_perp_change(p, tr) -> float:
    """‖(B(∞) − B0) P_S⊥‖_F: the feature change outside the training span."""
    dB = np.asarray(tr.B[-1] - p.B0)
    V = np.asarray(p.id_basis)
    return float(np.linalg.norm(dB - (dB @ V) @ V.T))


@_styled
def fig_lora(out="figures", quick: bool = False, seed: int = 0) -> dict:
    """LoRA: limiting OOD error and S⊥ feature change against rank, for several W-init scales (mean over seeds)."""
    plt = _style()
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
    ref = _paper_methods_limits(probs, heads)
    fig, axes = plt.subplots(1, 2, figsize=(6.8, 2.6))
    for a, sc in enumerate(scales):
        axes[0].semilogy(ranks, ood[a].mean(1), "o-", label=f"LoRA, W-init scale {sc:g}")
        axes[1].semilogy(ranks, np.maximum(perp[a].mean(1), 1e-300), "o-", label=f"scale {sc:g}")
    for name in ("FT", "LP-FT", "LP"):
        axes[0].axhline(ref[name]["ood_error"][:, -1].mean(), color=COLORS[name], ls=":", label=name)
    for ax in axes:
        ax.set_xticks(ranks)
    axes[0].set_xlabel("LoRA rank")
    axes[0].set_ylabel("L_ood at t = ∞ (mean)")
    axes[1].set_xlabel("LoRA rank")
    axes[1].set_ylabel("‖(B(∞) − B0) P_S⊥‖_F (FT: 0)")
    axes[0].legend(fontsize=5)
    axes[1].legend(fontsize=6)
    data = dict(
        ranks=ranks,
        scales=scales,
        ood_error=ood,
        s_perp_change=perp,
        params=dict(seed=seed, eps=0.1, **shape),
        reference={n: r["ood_error"][:, -1] for n, r in ref.items()},
    )
    return _save(fig, "lora", out, data)


@_styled
def fig_deep(out="figures", quick: bool = False, seed: int = 0) -> dict:
    """Deeper extractors B = W_L ⋯ W_1: OOD error and S⊥ feature change against depth, FT vs LP-FT (means)."""
    plt = _style()
    shape, probs, heads = _beyond(quick, seed)
    depths = [1, 2] if quick else [1, 2, 3, 4]
    n_inst = probs.X.shape[0]
    res = {
        m: {"ood": np.zeros((len(depths), n_inst)), "perp": np.zeros((len(depths), n_inst))} for m in ("FT", "LP-FT")
    }
    for a, L in enumerate(depths):
        for i in range(n_inst):
            p = _instance(probs, i)
            for m in ("FT", "LP-FT"):
                tr = deep_fine_tune(p, heads[i], [np.inf], depth=L, lp_head=m == "LP-FT")
                res[m]["ood"][a, i], res[m]["perp"][a, i] = float(tr.ood_error[-1]), _s_perp_change(p, tr)
    lp = _paper_methods_limits(probs, heads)["LP"]["ood_error"][:, -1].mean()
    fig, axes = plt.subplots(1, 2, figsize=(6.8, 2.6))
    for m in ("FT", "LP-FT"):
        axes[0].semilogy(depths, res[m]["ood"].mean(1), "o-", color=COLORS[m], label=m)
        axes[1].semilogy(depths, np.maximum(res[m]["perp"].mean(1), 1e-17), "o-", color=COLORS[m], label=m)
    axes[0].axhline(lp, color=COLORS["LP"], ls=":", label="LP")
    for ax in axes:
        ax.set_xticks(depths)
    axes[0].set_xlabel("depth L of the feature extractor")
    axes[0].set_ylabel("L_ood at t = ∞ (mean)")
    axes[1].set_xlabel("depth L")
    axes[1].set_ylabel("‖(B(∞) − B0) P_S⊥‖_F (mean; floor 1e-17)")
    axes[0].legend(fontsize=6)
    data = dict(
        depths=depths,
        params=dict(seed=seed, eps=0.1, **shape),
        LP_ood=lp,
        **{m: {"ood_error": r["ood"], "s_perp_change": r["perp"]} for m, r in res.items()},
    )
    return _save(fig, "deep", out, data)


def _all_methods(p, v0) -> dict:
    """Limits (or oracle early stops) of every method on one instance: {name: (L_id, L_ood)}; each method runs
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


@_styled
def fig_methods(out="figures", quick: bool = False, seed: int = 0) -> dict:
    """Every method ranked by its limiting OOD error (mean ± std over seeds), with its ID error, on the standard
    subspace shift; and label noise: ID/OOD error of LP, FT, LP-FT against the noise level."""
    plt = _style()
    shape, probs, heads = _beyond(quick, seed)
    n_inst = probs.X.shape[0]
    per = [_all_methods(_instance(probs, i), heads[i]) for i in range(n_inst)]
    names = list(per[0])
    ood = np.array([[r[n][1] for r in per] for n in names])
    idm = np.array([[r[n][0] for r in per] for n in names])
    order = np.argsort(ood.mean(1))
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
    fig, axes = plt.subplots(1, 2, figsize=(7.4, 3.0))
    y = np.arange(len(names))
    axes[0].errorbar(ood.mean(1)[order], y, xerr=ood.std(1)[order], fmt="o", color="#0072B2", ms=3, label="L_ood")
    axes[0].plot(np.maximum(idm.mean(1)[order], 1e-16), y, "k|", ms=7, label="L_id:subspace (floor 1e-16)")
    axes[0].set_yticks(y, [names[i] for i in order], fontsize=6)
    axes[0].set_xscale("log")
    axes[0].invert_yaxis()
    axes[0].set_xlabel("error at t = ∞ (mean ± std over seeds)")
    axes[0].set_title("methods ranked by OOD error")
    axes[0].legend(fontsize=6)
    for m in ("LP", "FT", "LP-FT"):
        axes[1].loglog(noise[1:], noisy[m]["ood"][1:].mean(1), "o-", color=COLORS[m], label=f"{m} OOD")
        axes[1].loglog(
            noise[1:], np.maximum(noisy[m]["id"][1:].mean(1), 1e-300), "s--", color=COLORS[m], label=f"{m} ID"
        )
    axes[1].set_xlabel("label noise σ (y = X w⋆ + ξ, ξ ~ N(0, σ² I))")
    axes[1].set_ylabel("error at t = ∞ (mean)")
    axes[1].set_title("label noise (FT and LP-FT ID coincide: both interpolate)")
    axes[1].legend(fontsize=5, ncol=2)
    data = dict(
        methods=names,
        ood_error=ood,
        id_error=idm,
        ranking=[names[i] for i in order],
        noise=noise,
        label_noise=noisy,
        params=dict(seed=seed, eps=0.1, seeds=n_inst, **shape),
    )
    return _save(fig, "methods", out, data)
