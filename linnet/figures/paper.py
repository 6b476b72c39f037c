"""The paper's theory figures (toy, errors over time and ε, ID vs OOD, feature change, Theorem 3.1 slack, phase)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .. import stress as _stress
from .. import theory as th
from .._errors import id_error_of_predictor
from .._generators import figure2_ood_point, figure2_toy, random_head, subspace_shift, subspace_shifts
from .._methods import fine_tune, linear_probe, lp_ft
from .._sweep import batched_predictors
from ._io import COLORS, _save, _shape, _slope, _style, _styled

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
