"""The theory figures. One function per figure; each writes `<name>.png`, `<name>.pdf` and `<name>.json` (the
plotted numbers, parameters, seeds and package versions) into `out`, and returns the data dict.

Every number comes from the library (problem generators, `linear_probe` / `fine_tune` / `lp_ft`, the batched
sweeps and `linnet.theory`); nothing here re-derives a formula. `quick=True` shrinks sweeps for the tests.
"""

from __future__ import annotations

import functools
import json
import math
import platform
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from . import stress as _stress
from . import theory as th
from ._errors import id_error_of_predictor
from ._gd import gd_stability_step, gradient_descent
from ._general_flows import deep_fine_tune, lora
from ._interpolate import early_stopping, wise_ft, with_label_noise
from ._methods import fine_tune, linear_probe, lp_ft
from ._problem import figure2_ood_point, figure2_toy, random_head, subspace_shift, subspace_shifts
from ._simulate import simulate
from ._sweep import batched_predictors, sweep
from ._trajectory import DivergenceError

# Okabe–Ito colour-blind-safe palette, one colour per method everywhere
COLORS = {"LP": "#0072B2", "FT": "#D55E00", "LP-FT": "#009E73", "FT (zero head)": "#E69F00", "bound": "#000000"}
FIGURES = (
    "toy",
    "error_vs_time",
    "ood_vs_eps",
    "id_vs_ood",
    "feature_change",
    "stress_slack",
    "phase",
    "two_lr",
    "wise_ft",
    "l2_sp",
    "gd",
    "lora",
    "deep",
    "methods",
)


STYLE = {
    "figure.figsize": (3.4, 2.6),
    "figure.dpi": 150,
    "savefig.dpi": 200,
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "lines.linewidth": 1.3,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,
    "figure.constrained_layout.use": True,
}


class _Canvas:
    """What the figure functions need of pyplot, without pyplot: `subplots` makes a `matplotlib.figure.Figure`
    (no backend is selected and no global figure manager holds it), drawn under `STYLE` by `_styled`."""

    @staticmethod
    def subplots(*args, figsize=None, layout=None, **kwargs):
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, layout=layout)
        return fig, fig.subplots(*args, **kwargs)


def _styled(fn):
    """Run a figure function under `matplotlib.rc_context(STYLE)`: the style applies to its figure only, and the
    caller's rcParams and backend are left as they were."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def _style():
    return _Canvas


def _versions():
    import diffrax
    import matplotlib
    import scipy

    from . import __version__

    return {
        "linnet": __version__,
        "jax": jax.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "diffrax": diffrax.__version__,
        "matplotlib": matplotlib.__version__,
        "python": platform.python_version(),
    }


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, jax.Array | np.ndarray):
        return _jsonable(np.asarray(x).tolist())
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else str(float(x))
    if isinstance(x, np.integer):
        return int(x)
    return x


def _save(fig, name: str, out, data: dict) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{name}.png")
    fig.savefig(out / f"{name}.pdf", metadata={"CreationDate": None})  # reproducible bytes
    data = dict(data, figure=name, versions=_versions())
    (out / f"{name}.json").write_text(json.dumps(_jsonable(data), indent=1))
    return data


def _shape(quick: bool) -> dict:
    return dict(d=60, k=2, n=15) if quick else dict(d=200, k=3, n=40)


# ------------------------------------------------------------------------------------------------------
# shared sweep over ε (used by three figures; cached so `reproduce` computes it once)
# ------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def eps_sweep(quick: bool, seed: int = 0) -> dict:
    """Limits of LP, FT and LP-FT (random head v0 ~ N(0, I)) over an ε grid × seeds, isotropic Gaussian inputs.

    Returns, per method, the ID part ‖P_S e‖² and the S⊥ part ‖P_S⊥ e‖² of the limiting error e = Bᵀv − w⋆
    (shape (len(eps), seeds)); L_ood under Σ = (1 − u) P_S + u P_S⊥ is (1 − u)·ID + u·S⊥, and Σ = I is their sum.
    """
    shape = _shape(quick)
    eps_grid = np.logspace(-4, 0, 5 if quick else 9)
    seeds = 4 if quick else 16
    key = jax.random.PRNGKey(seed)
    keys = jnp.tile(jax.random.split(key, seeds), (eps_grid.size, 1))
    eps = jnp.repeat(jnp.asarray(eps_grid), seeds)
    probs = subspace_shifts(keys, eps, inputs="isotropic", **shape)
    heads = jax.random.normal(jax.random.fold_in(key, 1), (eps.shape[0], shape["k"]))
    out = {"eps": eps_grid, "seeds": seeds, "shape": shape, "seed": seed}
    for method, code in (("LP", "lp"), ("FT", "ft"), ("LP-FT", "lpft")):
        _, w = batched_predictors(probs, heads, [np.inf], method=code)
        e = w[:, -1] - probs.w_star
        id_part = jax.vmap(id_error_of_predictor)(probs, w[:, -1])
        perp = jnp.sum(e**2, -1) - id_part
        out[method] = {
            "id": np.asarray(id_part).reshape(eps_grid.size, seeds),
            "perp": np.maximum(np.asarray(perp), 0.0).reshape(eps_grid.size, seeds),
        }
    return out


def _slope(x, y) -> float:
    good = (y > 0) & np.isfinite(y)
    return float(np.polyfit(np.log(x[good]), np.log(y[good]), 1)[0])


# ------------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------------


@_styled
def fig_toy(out="figures", quick: bool = False) -> dict:
    """Figure 2 of the paper from a simulation: d = 2, k = 1, one training point x_id."""
    plt = _style()
    p = figure2_toy()
    x_ood = np.asarray(figure2_ood_point(p))
    v0 = jnp.asarray([0.0])
    lp = linear_probe(p, v0, [np.inf])
    ft = fine_tune(p, v0, [np.inf])
    w_star = np.asarray(p.w_star)
    b0 = np.asarray(p.B0[0])
    b_ft = np.asarray(ft.B[-1, 0])
    w_lp = np.asarray(lp.predictor[-1])
    w_ft = np.asarray(ft.predictor[-1])
    x_id = np.asarray(p.X[0])
    err_ood_ft = float((w_ft - w_star) @ x_ood) ** 2
    err_ood_lp = float((w_lp - w_star) @ x_ood) ** 2
    fig, ax = plt.subplots(figsize=(3.4, 4.2))
    arrows = [
        (x_id, "x_id (training point)", "#999999", "-"),
        (x_ood, "x_ood", "#CC79A7", "-"),
        (w_star, "w* (true predictor)", "#000000", "-"),
        (b0, "pretrained feature B0", "#56B4E9", "--"),
        (w_lp, "LP predictor", COLORS["LP"], "-"),
        (b_ft, "FT feature", COLORS["FT"], "--"),
        (w_ft, "FT predictor", COLORS["FT"], "-"),
    ]
    for vec, label, col, ls in arrows:
        ax.annotate("", xy=vec, xytext=(0, 0), arrowprops=dict(arrowstyle="->", color=col, ls=ls, lw=1.4))
        ax.plot([], [], color=col, ls=ls, label=label)
    ax.plot(
        [w_ft[0], w_ft[0]],
        [w_ft[1], w_star[1]],
        color=COLORS["FT"],
        lw=3,
        alpha=0.35,
        label=f"FT error on x_ood: {err_ood_ft:.3f}",
    )
    pts = np.array([a[0] for a in arrows] + [[0.0, 0.0]])
    lo, hi = pts.min(0) - 0.2, pts.max(0) + 0.2
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.set_xlabel("coordinate 1 (along x_id)")
    ax.set_ylabel("coordinate 2 (along x_ood)")
    ax.set_title("Fig. 2 toy: FT moves the feature only along x_id")
    ax.legend(loc="upper left", fontsize=6, framealpha=0.9)
    data = dict(
        x_id=x_id,
        x_ood=x_ood,
        w_star=w_star,
        B0=b0,
        B_ft=b_ft,
        w_lp=w_lp,
        w_ft=w_ft,
        v_lp=lp.v[-1],
        v_ft=ft.v[-1],
        ood_sq_error_on_x_ood=dict(LP=err_ood_lp, FT=err_ood_ft),
        eps=float(th.feature_error(p)),
        params=dict(v0=0.0),
    )
    return _save(fig, "toy", out, data)


@_styled
def fig_error_vs_time(out="figures", quick: bool = False, seed: int = 0) -> dict:
    """√L_ood and √L_id against time for FT (zero and random head), LP and LP-FT, with Theorem 3.1's bound."""
    plt = _style()
    shape = _shape(quick)
    eps = 0.01
    key = jax.random.PRNGKey(seed)
    p = subspace_shift(key, eps=eps, inputs="isotropic", **shape)
    v_rand = random_head(jax.random.fold_in(key, 1), shape["k"], 1.0)
    v_zero = jnp.zeros(shape["k"])
    times = np.concatenate([np.logspace(-4, 2, 16 if quick else 40), [np.inf]])
    trajs = {
        "FT (zero head)": fine_tune(p, v_zero, times),
        "FT": fine_tune(p, v_rand, times),
        "LP": linear_probe(p, v_rand, times),
        "LP-FT": lp_ft(p, v_rand, times),
    }
    bounds = {"FT (zero head)": float(th.ft_ood_lower_bound(p, v_zero)), "FT": float(th.ft_ood_lower_bound(p, v_rand))}
    hyp = th.check_assumptions(p, v_rand).holds["theorem_3_1"]
    fig, axes = plt.subplots(1, 2, figsize=(6.8, 2.6), sharex=True, layout="constrained")
    tf = times[:-1]
    for name, tr in trajs.items():
        axes[0].loglog(tf, np.sqrt(np.asarray(tr.ood_error[:-1])), color=COLORS[name], label=name)
        axes[1].loglog(tf, np.sqrt(np.maximum(np.asarray(tr.id_error[:-1]), 1e-300)), color=COLORS[name], label=name)
    for name, b in bounds.items():
        if hyp and b > 0:
            axes[0].axhline(b, color=COLORS[name], ls=":", lw=1, label=f"Thm 3.1 bound ({name})")
    axes[0].set_ylabel("√L_ood  (Σ_ood = I)")
    axes[1].set_ylabel("√L_id:subspace (floor ≈ solver tolerance)")
    for ax in axes:
        ax.set_xlabel("time t (loss ‖XBᵀv − y‖²)")
    axes[0].set_title(f"OOD error, ε = {eps}, d={shape['d']} k={shape['k']} n={shape['n']}")
    axes[1].set_title("ID-subspace error")
    axes[0].legend(fontsize=6)
    data = dict(
        times=times,
        params=dict(eps=eps, seed=seed, **shape),
        bounds=bounds,
        hypotheses_hold=hyp,
        sqrt_ood={n: np.sqrt(np.asarray(t.ood_error)) for n, t in trajs.items()},
        sqrt_id={n: np.sqrt(np.maximum(np.asarray(t.id_error), 0)) for n, t in trajs.items()},
    )
    return _save(fig, "error_vs_time", out, data)


@_styled
def fig_ood_vs_eps(out="figures", quick: bool = False, seed: int = 0) -> dict:
    """Limiting OOD error against ε (log–log, four decades) for LP, FT and LP-FT, with fitted slopes (Thm 3.2)."""
    plt = _style()
    sw = eps_sweep(quick, seed)
    eps = sw["eps"]
    fig, ax = plt.subplots()
    data = dict(eps=eps, params=dict(seeds=sw["seeds"], seed=seed, head="random N(0, I)", **sw["shape"]))
    for m in ("LP", "FT", "LP-FT"):
        L = sw[m]["id"] + sw[m]["perp"]
        mean = L.mean(1)
        lo, hi = np.quantile(L, 0.1, 1), np.quantile(L, 0.9, 1)
        slope = _slope(eps, mean)
        ax.loglog(eps, mean, "o-", ms=3, color=COLORS[m], label=f"{m}: slope {slope:.2f}")
        ax.fill_between(eps, np.maximum(lo, 1e-300), hi, color=COLORS[m], alpha=0.2)
        data[m] = dict(mean=mean, q10=lo, q90=hi, slope=slope)
    ax.set_xlabel("feature error ε = d(B0, B*)")
    ax.set_ylabel("L_ood at t = ∞  (mean, 10–90 %)")
    ax.set_title("Thm 3.2: LP's OOD error → 0 with ε, FT's does not")
    ax.legend()
    return _save(fig, "ood_vs_eps", out, data)


@_styled
def fig_id_vs_ood(out="figures", quick: bool = False, seed: int = 0) -> dict:
    """ID-subspace error against OOD error at the limit, for the three methods across ε (Prop. 3.1, Thm 3.2)."""
    plt = _style()
    sw = eps_sweep(quick, seed)
    fig, ax = plt.subplots()
    data = dict(eps=sw["eps"], params=dict(seeds=sw["seeds"], seed=seed, **sw["shape"]))
    floor = 1e-30
    for m, marker in (("LP", "o"), ("FT", "s"), ("LP-FT", "^")):
        idm = np.maximum(sw[m]["id"].mean(1), floor)
        ood = (sw[m]["id"] + sw[m]["perp"]).mean(1)
        ax.loglog(ood, idm, marker + "-", ms=4, color=COLORS[m], label=m)
        data[m] = dict(id_error=sw[m]["id"].mean(1), ood_error=ood)
    for i, e in enumerate(sw["eps"]):
        if i % 2 == 0:
            ax.annotate(
                f"ε={e:.0e}",
                (data["LP"]["ood_error"][i], max(data["LP"]["id_error"][i], floor)),
                fontsize=5,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.set_xlabel("L_ood at t = ∞")
    ax.set_ylabel(f"L_id:subspace at t = ∞ (floored at {floor:g})")
    ax.set_title("ID vs OOD: FT fits S exactly, LP-FT also keeps OOD low")
    ax.legend()
    return _save(fig, "id_vs_ood", out, data)


@_styled
def fig_feature_change(out="figures", quick: bool = False, seed: int = 0) -> dict:
    """‖B(t) − B0‖ split into its ID-subspace (S) and S⊥ parts, for FT and LP-FT (random head, ε = 0.1)."""
    plt = _style()
    shape = _shape(quick)
    key = jax.random.PRNGKey(seed)
    p = subspace_shift(key, eps=0.1, inputs="isotropic", **shape)
    v0 = random_head(jax.random.fold_in(key, 1), shape["k"], 1.0)
    times = np.concatenate([np.logspace(-4, 2, 16 if quick else 40), [np.inf]])
    PS = np.asarray(p.sigma_id)
    fig, ax = plt.subplots()
    data = dict(times=times, params=dict(eps=0.1, seed=seed, **shape))
    for name, tr in (("FT", fine_tune(p, v0, times)), ("LP-FT", lp_ft(p, v0, times))):
        dB = np.asarray(tr.B) - np.asarray(p.B0)
        in_S = np.linalg.norm(dB @ PS, axis=(1, 2))
        perp = np.linalg.norm(dB - dB @ PS, axis=(1, 2))
        ax.loglog(times[:-1], in_S[:-1], color=COLORS[name], label=f"{name}: part in S")
        ax.axhline(in_S[-1], color=COLORS[name], ls=":", lw=0.8)
        data[name] = dict(in_S=in_S, in_S_perp=perp, max_in_S_perp=float(perp.max()))
    ax.text(
        0.02,
        0.02,
        "S⊥ part: max {:.1e} (FT), {:.1e} (LP-FT) — fact 1".format(
            data["FT"]["max_in_S_perp"], data["LP-FT"]["max_in_S_perp"]
        ),
        transform=ax.transAxes,
        fontsize=6,
    )
    ax.set_xlabel("time t")
    ax.set_ylabel("‖B(t) − B0‖_F  (dotted: t = ∞)")
    ax.set_title("LP-FT changes features far less than FT")
    ax.legend()
    return _save(fig, "feature_change", out, data)


@_styled
def fig_stress_slack(out="figures", quick: bool = False, seed: int = 0, progress: bool = False) -> dict:
    """Distribution of Theorem 3.1's slack min_t √L_ood(t) − bound over the random counterexample search."""
    plt = _style()
    n_inst = 120 if quick else 3000
    shapes = _stress.DEFAULT_SHAPES[:1] if quick else _stress.DEFAULT_SHAPES
    reports = _stress.random_search(
        jax.random.PRNGKey(seed),
        instances=n_inst,
        batch=120 if quick else 250,
        shapes=shapes,
        progress=progress,
        collect=True,
    )
    r = reports["theorem_3_1"]
    s = np.asarray(r.slacks)
    fig, ax = plt.subplots()
    pos = s[s > 0]
    bins = np.logspace(np.log10(max(pos.min(), 1e-8)), np.log10(pos.max()), 40) if pos.size else 10
    ax.hist(pos, bins=bins, color=COLORS["LP"], alpha=0.8, label=f"holds ({pos.size})")
    neg = s[s <= 0]
    for j, x in enumerate(np.sort(-neg)[:20]):  # violations are rare: draw each one as a line
        ax.axvline(
            max(x, 1e-8),
            color=COLORS["FT"],
            lw=1.5,
            ls="--",
            label=f"violated ({neg.size}): |slack| of each" if j == 0 else None,
        )
    ax.set_xscale("log")
    ax.set_xlabel("|min_t √L_ood(t) − Thm 3.1 bound|")
    ax.set_ylabel("instances")
    ax.set_title(f"Thm 3.1 slack over {s.size} random instances")
    ax.legend()
    data = dict(
        params=dict(instances=n_inst, seed=seed, shapes=shapes),
        slacks=s,
        violations=int(neg.size),
        min_slack=float(s.min()),
        worst=r.worst,
    )
    return _save(fig, "stress_slack", out, data)


@_styled
def fig_phase(out="figures", quick: bool = False, seed: int = 0) -> dict:
    """Which method has the lowest OOD error at t = ∞ over feature error ε × OOD shift strength u, where
    Σ_ood = (1 − u) P_S + u P_S⊥ (u = 0: test inputs in the training span; u = 1: orthogonal to it)."""
    plt = _style()
    sw = eps_sweep(quick, seed)
    u = np.linspace(0, 1, 11 if quick else 41)
    methods = ("LP", "FT", "LP-FT")
    L = np.stack(
        [
            ((1 - u)[None, :] * sw[m]["id"].mean(1)[:, None] + u[None, :] * sw[m]["perp"].mean(1)[:, None])
            for m in methods
        ]
    )
    best = np.argmin(L, axis=0)
    from matplotlib.colors import ListedColormap

    fig, ax = plt.subplots()
    cmap = ListedColormap([COLORS[m] for m in methods])
    ax.pcolormesh(u, np.log10(sw["eps"]), best, cmap=cmap, vmin=-0.5, vmax=2.5, shading="nearest")
    for i, m in enumerate(methods):
        ax.plot([], [], "s", color=COLORS[m], label=m + ("" if (best == i).any() else " (never best)"))
    ax.set_xlabel("OOD shift strength u  (Σ_ood = (1−u) P_S + u P_S⊥)")
    ax.set_ylabel("log10 ε")
    ax.set_title("Lowest OOD error at t = ∞")
    ax.legend(fontsize=6, loc="upper right")
    data = dict(eps=sw["eps"], u=u, methods=methods, best=best, L=L, params=dict(seed=seed, **sw["shape"]))
    return _save(fig, "phase", out, data)


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


REGISTRY = {
    "toy": fig_toy,
    "error_vs_time": fig_error_vs_time,
    "ood_vs_eps": fig_ood_vs_eps,
    "id_vs_ood": fig_id_vs_ood,
    "feature_change": fig_feature_change,
    "stress_slack": fig_stress_slack,
    "phase": fig_phase,
    "two_lr": fig_two_lr,
    "wise_ft": fig_wise_ft,
    "l2_sp": fig_l2_sp,
    "gd": fig_gd,
    "lora": fig_lora,
    "deep": fig_deep,
    "methods": fig_methods,
}


def headline(name: str, data: dict) -> list[tuple[str, str]]:
    """The numbers `linnet reproduce` prints for one figure (read from the figure's own data)."""
    f = "{:.3g}".format
    if name == "toy":
        e = data["ood_sq_error_on_x_ood"]
        return [("toy: squared error on x_ood, LP / FT", f"{f(e['LP'])} / {f(e['FT'])}")]
    if name == "error_vs_time":
        o = data["sqrt_ood"]
        return [
            (
                "√L_ood at t=∞, FT(zero) / FT / LP / LP-FT",
                " / ".join(f(o[m][-1]) for m in ("FT (zero head)", "FT", "LP", "LP-FT")),
            ),
            ("Thm 3.1 bound (random head)", f(data["bounds"]["FT"])),
        ]
    if name == "ood_vs_eps":
        return [
            (
                "slope of L_ood(t=∞) vs ε, LP / FT / LP-FT",
                " / ".join(f(data[m]["slope"]) for m in ("LP", "FT", "LP-FT")),
            )
        ]
    if name == "id_vs_ood":
        i = len(data["eps"]) // 2
        return [
            (
                f"L_id at t=∞, ε={data['eps'][i]:.0e}, LP / FT / LP-FT",
                " / ".join(f(data[m]["id_error"][i]) for m in ("LP", "FT", "LP-FT")),
            )
        ]
    if name == "feature_change":
        return [
            ("‖B(∞) − B0‖_F, FT / LP-FT", f"{f(data['FT']['in_S'][-1])} / {f(data['LP-FT']['in_S'][-1])}"),
            ("max S⊥ feature change", f(max(data["FT"]["max_in_S_perp"], data["LP-FT"]["max_in_S_perp"]))),
        ]
    if name == "stress_slack":
        return [
            (
                "Thm 3.1 random search: violations / instances, min slack",
                f"{data['violations']} / {len(data['slacks'])}, {f(data['min_slack'])}",
            )
        ]
    if name == "two_lr":
        r = data["ratios"]
        o = np.asarray(data["ood_inf"]).mean(1)
        return [(f"two LR: mean L_ood(∞) at η_B/η_v = {r[0]:.0e} / {r[-1]:.0e}", f"{f(o[0])} / {f(o[-1])}")]
    if name == "wise_ft":
        return [
            (f"WiSE-FT LP→{m}: α*, L_ood(α*)", f"{data[m]['alpha_star']:.3f}, {f(data[m]['ood_at_alpha_star'])}")
            for m in ("FT", "LP-FT")
        ]
    if name == "gd":
        return [("GD: order of limit → flow limit", f"{data['order']:.2f}")]
    if name == "lora":
        o = np.asarray(data["ood_error"]).mean(-1)
        return [("LoRA: mean L_ood(∞), smallest / largest scale, top rank", f"{f(o[0, -1])} / {f(o[-1, -1])}")]
    if name == "deep":
        return [
            (
                f"deep: mean L_ood(∞) at L = {data['depths'][-1]}, FT / LP-FT",
                f"{f(np.mean(data['FT']['ood_error'][-1]))} / {f(np.mean(data['LP-FT']['ood_error'][-1]))}",
            )
        ]
    if name == "methods":
        return [("methods: lowest mean OOD error", data["ranking"][0])]
    if name == "l2_sp":
        o = np.asarray(data["ood_error"]).mean(1)
        return [("L2-SP: mean L_ood(∞), smallest / largest λ_B", f"{f(o[0])} / {f(o[-1])}")]
    if name == "phase":
        best = np.asarray(data["best"])
        return [
            ("phase grid share where best, LP / FT / LP-FT", " / ".join(f"{np.mean(best == i):.0%}" for i in range(3)))
        ]
    return []
