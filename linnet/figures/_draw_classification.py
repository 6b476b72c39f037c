"""Drawing the classification figures, from the dicts of `_data_classification` only."""

from __future__ import annotations

import numpy as np

from ._io import COLORS, _style

_NAMES = ("LP", "FT", "LP-FT")


def draw_cls_error_vs_time(data: dict):
    plt = _style()
    fig, ax = plt.subplots(figsize=(4.6, 2.8))
    t = np.asarray(data["times"])
    for name in _NAMES:
        o = np.asarray(data["ood_error"][name])
        label = f"LP-FT (T_lp = {data['lp_time']:g})" if name == "LP-FT" else name
        ax.semilogx(t, o.mean(0), color=COLORS[name], label=f"{label}, OOD")
        ax.semilogx(t, np.asarray(data["id_error"][name]).mean(0), color=COLORS[name], ls=":", label=f"{label}, ID")
    ax.axhline(np.mean(data["data_max_margin_ood"]), color="k", ls="--", lw=0.9,
               label="data max-margin separator, OOD (FT's predicted direction)")  # fmt: skip
    sh = data["params"]
    ax.set_xlabel("t (training time, log scale)")
    ax.set_ylabel("0-1 error (mean over seeds)")
    ax.set_title(f"Logistic loss: 0-1 errors, ε = {sh['eps']}, d={sh['d']} k={sh['k']} n={sh['n']}")
    # below the axes in three columns: to the right it took half the width
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    return fig


def draw_cls_perp_fraction(data: dict):
    plt = _style()
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.7))
    t = np.asarray(data["times"])
    frac = np.asarray(data["perp_fraction"])
    logt = np.log(t)
    for i, f in enumerate(frac):
        axes[0].loglog(logt[1:], f[1:], color=COLORS["FT"], alpha=0.4 + 0.6 / (i + 1),
                       label=f"FT, seed {i}: fitted exponent {data['fitted_exponent'][i]:.2f}")  # fmt: skip
    ref = frac[:, -1].mean() * (logt[1:] / logt[-1]) ** -0.5
    axes[0].loglog(logt[1:], ref, "k--", lw=0.9, label="(log t)^(−1/2), the balancedness heuristic")
    axes[0].set_xlabel("log t")
    axes[0].set_ylabel("‖P_S⊥ w‖ / ‖w‖")
    axes[0].set_title("FT: share of the predictor outside S")
    axes[0].legend(fontsize=5, loc="lower left")
    gap = np.asarray(data["max_margin_gap"])
    for i, g in enumerate(gap):
        axes[1].loglog(t, np.maximum(g, 1e-16), color=COLORS["FT"], alpha=0.4 + 0.6 / (i + 1), label=f"seed {i}")
    axes[1].set_xlabel("t")
    axes[1].set_ylabel("1 − cos(w, u_mm)")
    axes[1].set_title("FT: direction vs the data max-margin u_mm")
    axes[1].legend(fontsize=5, loc="lower left")
    return fig


def draw_cls_lp_time(data: dict):
    plt = _style()
    fig, ax = plt.subplots(figsize=(4.4, 2.7))
    T = np.asarray(data["lp_times"])
    x = np.where(T > 0, T, T[1] / 10)  # T_lp = 0 (plain FT) drawn one decade left of the first positive T_lp
    ood = np.asarray(data["ood_error"]).mean(0)  # (T_lp, times)
    for j, (t, ls) in enumerate(zip(data["times"], ("-", "--", ":"), strict=True)):
        ax.semilogx(
            x, ood[:, j], "o" + ls, ms=3, color=COLORS["LP-FT"], alpha=1.0 - 0.25 * j, label=f"FT time t = {t:.0e}"
        )
    ax.set_xlabel("T_lp (LP phase length; leftmost point: T_lp = 0, plain FT)")
    ax.set_ylabel("OOD 0-1 error (mean over seeds)")
    ax.set_title("Logistic LP-FT: OOD error against the LP phase")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
