"""Drawing the figures of methods beyond the paper, from the dicts of `_data_beyond` only."""

from __future__ import annotations

import numpy as np

from ._io import COLORS, _style

_PAPER = ("LP", "FT", "LP-FT")


def _mean(x):
    return np.asarray(x).mean(-1)


def draw_two_lr(data: dict):
    plt = _style()
    fig, ax = plt.subplots()
    r = data["ratios"]
    # t = 1 hollow and larger: where the flow has converged by t = 1 the two markers coincide, and both stay visible
    ax.loglog(r, _mean(data["ood_inf"]), "o-", color=COLORS["FT"], ms=3.5, label="two LR, t = ∞")
    ax.loglog(r, _mean(data["ood_t1"]), "s--", color="#CC79A7", ms=7, mfc="none", label="two LR, t = 1")
    for name in _PAPER:
        ax.axhline(_mean(data["reference"][name]), color=COLORS[name], ls=":", label=f"{name} (t = ∞)")
    sh = data["params"]
    ax.set_xlabel("η_B / η_v (feature / head learning rate)")
    ax.set_ylabel("L_ood (mean over seeds)")
    ax.set_title(f"Two learning rates, ε = 0.1, d={sh['d']} k={sh['k']} n={sh['n']}")
    ax.legend(fontsize=6, loc="best")
    return fig


def draw_wise_ft(data: dict):
    plt = _style()
    fig, ax = plt.subplots()
    for name in ("FT", "LP-FT"):
        d = data[name]
        ax.plot(data["alphas"], d["ood_error"], color=COLORS[name], label=f"LP → {name}")
        ax.plot([d["alpha_star"]], [d["ood_at_alpha_star"]], "o", color=COLORS[name], ms=4)
    ax.set_yscale("log")
    ax.set_xlabel("interpolation weight α  (θ_α = (1 − α) θ_LP + α θ_end)")
    ax.set_ylabel("L_ood")
    ax.set_title("WiSE-FT (dots: exact OOD-optimal α*)")
    ax.legend(fontsize=6, loc="best")
    return fig


def draw_l2_sp(data: dict):
    plt = _style()
    fig, ax = plt.subplots()
    ax.loglog(
        np.maximum(_mean(data["id_error"]), 1e-300),
        _mean(data["ood_error"]),
        "o-",
        color="#CC79A7",
        label="L2-SP (labels: λ_B)",
    )
    # each point labelled with its λ_B, so that the best trade-off can be read off
    x, y = np.maximum(_mean(data["id_error"]), 1e-300), _mean(data["ood_error"])
    last = len(x) - 1
    for i, (lam, xi, yi) in enumerate(zip(data["lam_B"], x, y, strict=True)):
        # the last label to the upper left, clear of the LP marker at the right edge
        off, ha = ((-2, 9), "right") if i == last else ((4, 3), "left")
        text = f"{lam:.2g}" if lam < 10 else f"{lam:.0f}"
        ax.annotate(text, (xi, yi), textcoords="offset points", xytext=off, ha=ha, fontsize=5.5, color="#7a3b63")
    for name in _PAPER:
        ref = data["reference"][name]
        ax.loglog(max(_mean(ref["id"]), 1e-300), _mean(ref["ood"]), "s", color=COLORS[name], label=name)
    ax.set_xlabel("L_id:subspace at t = ∞ (mean)")
    ax.set_ylabel("L_ood at t = ∞ (mean)")
    ax.set_title(f"L2-SP trade-off, λ_v = {data['lam_v']:g}")
    ax.legend(fontsize=6, loc="best")
    return fig


def draw_gd(data: dict):
    plt = _style()
    fig, axes = plt.subplots(1, 2, figsize=(6.8, 2.6))
    fr = data["step_fraction"]
    axes[0].loglog(fr, data["distance_to_flow"], "o-", color=COLORS["FT"])
    axes[0].set_xlabel("step / (2/λ_max at start)")
    axes[0].set_ylabel("‖w_GD(∞) − w_flow(∞)‖")
    axes[0].set_title(f"GD limit → flow limit, order {data['order']:.2f}")
    axes[1].semilogx(fr, data["ood_error"], "o-", color=COLORS["FT"], label="GD limit")
    axes[1].axhline(data["flow_ood"], color="k", ls=":", label="gradient flow")
    axes[1].set_xlabel("step / (2/λ_max at start)")
    axes[1].set_ylabel("L_ood at the limit")
    title = "implicit bias of the step (3× step: diverges)" if data["diverges_at_3x"] else "OOD error vs step"
    axes[1].set_title(title)
    axes[1].legend(fontsize=6, loc="best")
    return fig


def draw_lora(data: dict):
    plt = _style()
    fig, axes = plt.subplots(1, 2, figsize=(6.8, 2.6))
    ranks = data["ranks"]
    # a sequential palette of its own for the W-init scales, none of it the methods' colours (FT orange, LP blue,
    # LP-FT green), so that a LoRA curve is never read as a method's reference line
    shades = ["#4b2991", "#a52c8e", "#e0587a", "#f79c63", "#c7c730"]
    for a, sc in enumerate(data["scales"]):
        col = shades[a % len(shades)]
        axes[0].semilogy(ranks, _mean(data["ood_error"][a]), "o-", color=col, label=f"LoRA, W-init scale {sc:g}")
        axes[1].semilogy(ranks, np.maximum(_mean(data["s_perp_change"][a]), 1e-300), "o-", color=col,
                         label=f"scale {sc:g}")  # fmt: skip
    for name in ("FT", "LP-FT", "LP"):
        axes[0].axhline(_mean(data["reference"][name]), color=COLORS[name], ls=":", label=name)
    for ax in axes:
        ax.set_xticks(ranks)
        ax.set_xlabel("LoRA rank")
    axes[0].set_ylabel("L_ood at t = ∞ (mean)")
    axes[1].set_ylabel("‖(B(∞) − B0) P_S⊥‖_F (FT: 0)")
    # below the panel: six entries inside it would cover the curves
    axes[0].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    axes[1].legend(fontsize=7, loc="best")
    return fig


def draw_deep(data: dict):
    plt = _style()
    fig, axes = plt.subplots(1, 2, figsize=(6.8, 2.6))
    depths = data["depths"]
    for m in ("FT", "LP-FT"):
        axes[0].semilogy(depths, _mean(data[m]["ood_error"]), "o-", color=COLORS[m], label=m)
        axes[1].semilogy(depths, np.maximum(_mean(data[m]["s_perp_change"]), 1e-17), "o-", color=COLORS[m], label=m)
    axes[0].axhline(data["LP_ood"], color=COLORS["LP"], ls=":", label="LP")
    for ax in axes:
        ax.set_xticks(depths)
    axes[0].set_xlabel("depth L of the feature extractor")
    axes[0].set_ylabel("L_ood at t = ∞ (mean)")
    axes[1].set_xlabel("depth L")
    axes[1].set_ylabel("‖(B(∞) − B0) P_S⊥‖_F (mean; floor 1e-17)")
    axes[0].legend(fontsize=6, loc="best")
    axes[1].legend(fontsize=6, loc="best")
    return fig


def draw_methods(data: dict):
    plt = _style()
    names = list(data["methods"])
    ood, idm = np.asarray(data["ood_error"]), np.asarray(data["id_error"])
    order = [names.index(n) for n in data["ranking"]]
    fig, axes = plt.subplots(1, 2, figsize=(7.4, 3.0))
    y = np.arange(len(names))
    # L_ood on its own axis (bottom), so that the ranking (errors within a factor of ~50) is not squeezed by L_id's
    # rounding-level values; L_id on a second log axis (top), in black
    axes[0].errorbar(ood.mean(1)[order], y, xerr=ood.std(1)[order], fmt="o", color="#0072B2", ms=3, label="L_ood")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("L_ood at t = ∞ (mean ± std over seeds)", color="#0072B2")
    top = axes[0].twiny()
    top.plot(np.maximum(idm.mean(1)[order], 1e-16), y, "k|", ms=7, label="L_id:subspace (floor 1e-16)")
    top.set_xscale("log")
    top.set_xlabel("L_id:subspace at t = ∞ (floor 1e-16)", fontsize=7)
    axes[0].set_yticks(y, data["ranking"], fontsize=6)
    axes[0].set_ylabel("method")
    axes[0].invert_yaxis()
    axes[0].set_title("methods ranked by OOD error", fontsize=8, pad=22)
    noise = np.asarray(data["noise"])
    # σ = 0 sits at the left end of a symmetric-log axis (linear below σ = 0.01) instead of falling off a log axis
    for m in _PAPER:
        d = data["label_noise"][m]
        axes[1].plot(noise, _mean(d["ood"]), "o-", color=COLORS[m], label=f"{m} OOD")
        axes[1].plot(noise, np.maximum(_mean(d["id"]), 1e-300), "s--", color=COLORS[m], label=f"{m} ID")
    axes[1].set_xscale("symlog", linthresh=0.01)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("label noise σ of y = X w⋆ + σ g (symlog axis)")
    axes[1].set_ylabel("error at t = ∞ (mean)")
    axes[1].set_title("label noise (FT, LP-FT ID coincide: both fit)")
    axes[1].legend(fontsize=5, ncol=2, loc="best")
    return fig
