"""Drawing the paper's theory figures: `draw_<name>(data) -> matplotlib.figure.Figure`, from the dicts of
`_data_paper` only (so a figure never shows a number its JSON does not hold). Nothing here computes a result."""

from __future__ import annotations

import numpy as np

from ._io import COLORS, _style

_METHODS = ("LP", "FT", "LP-FT")


def draw_toy(data: dict):
    plt = _style()
    fig, ax = plt.subplots(figsize=(3.4, 4.2))
    w_ft, w_star = np.asarray(data["w_ft"]), np.asarray(data["w_star"])
    arrows = [
        (data["x_id"], "x_id (training point)", "#999999", "-", 1.4),
        (data["x_ood"], "x_ood", "#CC79A7", "-", 1.4),
        (w_star, "w* (true predictor)", "#000000", "-", 1.4),
        # LP rescales B0 along its own direction, so the two arrows share a line: B0 is drawn wide and light
        # underneath, the LP predictor thin on top, so that both stay visible
        (data["B0"], "pretrained feature B0", "#56B4E9", "-", 4.5),
        (data["w_lp"], "LP predictor", COLORS["LP"], "-", 1.2),
        (data["B_ft"], "FT feature", COLORS["FT"], "--", 1.4),
        (w_ft, "FT predictor", COLORS["FT"], "-", 1.4),
    ]
    for vec, label, col, ls, lw in arrows:
        alpha = 0.45 if lw > 2 else 1.0
        ax.annotate("", xy=vec, xytext=(0, 0), arrowprops=dict(arrowstyle="->", color=col, ls=ls, lw=lw, alpha=alpha))
        ax.plot([], [], color=col, ls=ls, lw=lw, alpha=alpha, label=label)
    # each method's error on x_ood: the gap between its predictor and w* along x_ood (its square is the error)
    for key, vec in (("LP", np.asarray(data["w_lp"])), ("FT", w_ft)):
        err = data["ood_sq_error_on_x_ood"][key]
        ax.plot([vec[0], vec[0]], [vec[1], w_star[1]], color=COLORS[key], lw=3, alpha=0.35,
                label=f"{key} error on x_ood: {err:.3g}")  # fmt: skip
    pts = np.array([np.asarray(a[0]) for a in arrows] + [[0.0, 0.0]])
    lo, hi = pts.min(0) - 0.2, pts.max(0) + 0.2
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.set_xlabel("coordinate 1 (along x_id)")
    ax.set_ylabel("coordinate 2 (along x_ood)")
    ax.set_title("Fig. 2 toy: FT moves the feature only along x_id")
    # below the axes, so that it covers no arrow
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=6, frameon=False)
    return fig


def draw_error_vs_time(data: dict):
    plt = _style()
    fig, axes = plt.subplots(1, 2, figsize=(6.8, 3.1), sharex=True, layout="constrained")
    tf = np.asarray(data["times"])[:-1]
    for name, o in data["sqrt_ood"].items():
        axes[0].loglog(tf, np.asarray(o)[:-1], color=COLORS[name], label=name)
        axes[1].loglog(tf, np.maximum(np.asarray(data["sqrt_id"][name])[:-1], 1e-150), color=COLORS[name], label=name)
    for name, b in data["bounds"].items():
        if data["hypotheses_hold"] and b > 0:
            axes[0].axhline(b, color=COLORS[name], ls=":", lw=1, label=f"Thm 3.1 bound ({name})")
    axes[0].set_ylabel("√L_ood  (Σ_ood = I)")
    axes[1].set_ylabel("√L_id:subspace (floor ≈ solver tolerance)")
    for ax in axes:
        ax.set_xlabel("time t (gradient flow of ‖XBᵀv − y‖²)")
    sh = data["params"]
    axes[0].set_title(f"OOD error, ε = {sh['eps']}, d={sh['d']} k={sh['k']} n={sh['n']}")
    axes[1].set_title("ID-subspace error")
    # below both panels: inside, the six curves and two bounds leave no empty corner
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=6)
    return fig


def draw_ood_vs_eps(data: dict):
    plt = _style()
    fig, ax = plt.subplots()
    eps = np.asarray(data["eps"])
    # LP and LP-FT nearly coincide (their limits agree to O(ε²)): LP-FT is drawn dashed with hollow markers over
    # LP's solid line and filled markers, so that both stay visible where they overlap
    style = {"LP-FT": dict(ls="--", marker="o", mfc="none", ms=5)}
    for m in _METHODS:
        d = data[m]
        kw = style.get(m, dict(ls="-", marker="o", ms=3))
        ax.loglog(eps, d["mean"], color=COLORS[m], label=f"{m}: slope {d['slope']:.2f}", **kw)
        ax.fill_between(eps, np.maximum(d["q10"], 1e-300), d["q90"], color=COLORS[m], alpha=0.2)
    ax.set_xlabel("feature error ε = d(B0, B*)")
    ax.set_ylabel("L_ood at t = ∞  (mean, 10–90 %)")
    ax.set_title("Thm 3.2: LP's OOD error → 0 with ε, FT's does not")
    ax.legend(loc="best")
    return fig


def draw_id_vs_ood(data: dict, floor: float = 1e-30):
    plt = _style()
    fig, ax = plt.subplots()
    for m, marker in zip(_METHODS, "os^", strict=True):
        # FT's points bunch together (its OOD error hardly moves with ε), so they are hollow: each stays visible
        hollow = dict(mfc="none", ms=5) if m == "FT" else dict(ms=4)
        ax.loglog(data[m]["ood_error"], np.maximum(data[m]["id_error"], floor), marker + "-", color=COLORS[m],
                  label=m + (" (all ε bunched)" if m == "FT" else ""), **hollow)  # fmt: skip
    # every other ε labelled on LP (above its curve) and on LP-FT (below its curve)
    for m, off in (("LP", (3, 3)), ("LP-FT", (0, -9))):
        for i, e in enumerate(data["eps"]):
            if i % 2 == 0:
                xy = (data[m]["ood_error"][i], max(data[m]["id_error"][i], floor))
                ax.annotate(f"ε={e:.0e}", xy, fontsize=5, xytext=off, textcoords="offset points", color=COLORS[m])
    ax.set_xlabel("L_ood at t = ∞")
    ax.set_ylabel(f"L_id:subspace at t = ∞ (floored at {floor:g})")
    ax.set_title("ID vs OOD: FT fits S; LP-FT keeps OOD low")
    ax.legend(loc="best")
    return fig


def draw_feature_change(data: dict):
    plt = _style()
    fig, ax = plt.subplots()
    t = np.asarray(data["times"])
    for name in ("FT", "LP-FT"):
        in_S = np.asarray(data[name]["in_S"])
        ax.loglog(t[:-1], in_S[:-1], color=COLORS[name], label=f"{name}: part in S")
        ax.axhline(in_S[-1], color=COLORS[name], ls=":", lw=0.8)
    note = "S⊥ part: max {:.1e} (FT), {:.1e} (LP-FT) — fact 1"
    ax.text(
        0.02,
        0.02,
        note.format(data["FT"]["max_in_S_perp"], data["LP-FT"]["max_in_S_perp"]),
        transform=ax.transAxes,
        fontsize=6,
    )
    ax.set_xlabel("time t")
    ax.set_ylabel("‖B(t) − B0‖_F  (dotted: t = ∞)")
    ax.set_title("LP-FT changes features far less than FT")
    ax.legend(loc="best")
    return fig


def draw_stress_slack(data: dict):
    plt = _style()
    fig, ax = plt.subplots()
    s = np.asarray(data["slacks"])
    pos, neg = s[s > 0], s[s <= 0]
    bins = np.logspace(np.log10(max(pos.min(), 1e-8)), np.log10(pos.max()), 40) if pos.size else 10
    ax.hist(pos, bins=bins, color=COLORS["LP"], alpha=0.8, label=f"holds ({pos.size})")
    for j, x in enumerate(np.sort(-neg)[:20]):  # violations are rare: draw each one as a line
        label = f"violated ({neg.size}): |slack| of each" if j == 0 else None
        ax.axvline(max(x, 1e-8), color=COLORS["FT"], lw=1.5, ls="--", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("|min_t √L_ood(t) − Thm 3.1 bound|")
    ax.set_ylabel("instances")
    ax.set_title(f"Thm 3.1 slack over {s.size} random instances")
    ax.legend(loc="best")
    return fig


def draw_phase(data: dict):
    from matplotlib.colors import ListedColormap

    plt = _style()
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 2.9), layout="constrained")
    u, le = np.asarray(data["u"]), np.log10(np.asarray(data["eps"]))
    methods = tuple(data["methods"])
    best = np.asarray(data["best"])
    cmap = ListedColormap([COLORS[m] for m in methods])
    axes[0].pcolormesh(u, le, best, cmap=cmap, vmin=-0.5, vmax=2.5, shading="nearest")
    for i, m in enumerate(methods):
        axes[0].plot([], [], "s", color=COLORS[m], label=m + ("" if (best == i).any() else " (never best)"))
    axes[0].set_title("lowest OOD error at t = ∞")
    _ratio_maps(fig, axes[1:], u, le, data, exclude_columns=u < 0.01)  # u = 0: both errors at the rounding floor
    axes[1].plot(u, np.log10(data["predicted_crossover_eps"]), "k--", label="Thm 3.2: C(u) ε² = L_FT(u)")
    for ax in axes:
        ax.set_xlabel("OOD shift strength u")
        ax.set_ylabel("log10 ε")
        ax.set_ylim(le.min(), le.max())
    fig.suptitle(
        "Σ_ood = (1 − u) P_S + u P_S⊥: u = 0 tests inside the training span, u = 1 orthogonal to it", fontsize=7
    )
    _legend_below(fig, axes)
    return fig


_RATIO_MAPS = (
    ("log10_ft_over_lp", "log10 L_ood(FT) / L_ood(LP)"),
    ("log10_lpft_over_lp", "log10 L_ood(LP-FT) / L_ood(LP)"),
)


COLOUR_PERCENTILE = 98.0  # the colour limit of a ratio map: this percentile of |z| over the cells that count


def colour_limit(z, exclude_columns=None) -> tuple[float, float]:
    """(limit, share of all cells beyond it) for a map z of log10 ratios: the `COLOUR_PERCENTILE` percentile of |z|
    over the cells outside the excluded columns (at u ≈ 0 both errors sit at the rounding floor, ~1e-16, and their
    ratio spans ±15 decades of noise), at least 1e-3."""
    z = np.asarray(z, float)
    keep = np.ones(z.shape, bool) if exclude_columns is None else ~np.asarray(exclude_columns)[None, :]
    vals = np.abs(z[keep & np.isfinite(z)])
    lim = max(float(np.percentile(vals, COLOUR_PERCENTILE)) if vals.size else 1.0, 1e-3)
    return lim, float(np.mean(np.abs(z) > lim))


def _ratio_maps(fig, axes, x, le, data, exclude_columns=None):
    """The two continuous maps log10(L_FT/L_LP) and log10(L_LP-FT/L_LP) over (x, log10 ε), with their measured
    ratio = 1 contour; colours scaled to the data (`colour_limit`), the colour bar saying where it clips."""
    from matplotlib.colors import TwoSlopeNorm

    for ax, (key, title) in zip(axes, _RATIO_MAPS, strict=True):
        z = np.asarray(data[key])
        lim, clipped = colour_limit(z, exclude_columns)
        mesh = ax.pcolormesh(x, le, z, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim), shading="nearest")
        label = f"decades (clipped at ±{lim:.3g}, {clipped:.0%} of cells)" if clipped else "decades"
        fig.colorbar(mesh, ax=ax, shrink=0.9, extend="both" if clipped else "neither", label=label)
        if z.min() < 0 < z.max():
            ax.contour(x, le, z, levels=[0.0], colors="k", linewidths=1.0)
            ax.plot([], [], "k-", label="measured ratio = 1")
        ax.set_title(title)


def _legend_below(fig, axes):
    """One legend under the panels (every cell of the maps is data), each label once."""
    handles, labels = [], []
    for ax in axes:
        h, lab = ax.get_legend_handles_labels()
        for hh, ll in zip(h, lab, strict=True):
            if ll not in labels:
                handles.append(hh)
                labels.append(ll)
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=6)


def draw_phase_nd(data: dict):
    plt = _style()
    fig, axes = plt.subplots(1, 2, figsize=(6.8, 2.9), layout="constrained")
    x, le = np.asarray(data["n_over_d"]), np.log10(np.asarray(data["eps"]))
    _ratio_maps(fig, axes, x, le, data)
    axes[0].plot(x, np.log10(data["predicted_crossover_eps"]), "k--", label="Thm 3.2: C(n/d) ε² = L_FT(n/d)")
    for ax in axes:
        ax.set_xlabel(f"n / d (d = {data['params']['d']}, k = {data['params']['k']})")
        ax.set_ylabel("log10 ε")
        ax.set_ylim(le.min(), le.max())
    fig.suptitle("Σ_ood = I, isotropic Gaussian inputs: FT moves features only in the n-dimensional span", fontsize=7)
    _legend_below(fig, axes)
    return fig
