"""The numbers behind the paper's theory figures: one function per figure, `data_<name>(quick, seed) -> dict`.

Nothing here draws. Every number comes from the library (generators, `linear_probe` / `fine_tune` / `lp_ft`,
the batched sweeps, `linnet.theory`, `linnet.stress`); nothing re-derives a formula. The dicts hold everything
their drawing needs, and are what `<name>.json` stores, so a figure shows exactly its saved numbers.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import stress as _stress
from .. import theory as th
from .._config import light_compile
from .._errors import id_error_of_predictor
from .._generators import figure2_ood_point, figure2_toy, random_head, subspace_shift, subspace_shifts
from .._methods.paper import fine_tune, linear_probe, lp_ft
from .._run.predictors import batched_predictors
from ._io import _shape, _slope

PAPER_METHODS = (("LP", "lp"), ("FT", "ft"), ("LP-FT", "lpft"))


def eps_sweep(quick: bool, seed: int = 0) -> dict:
    """Limits of LP, FT and LP-FT (random head v0 ~ N(0, I)) over an ε grid × seeds, isotropic Gaussian inputs.

    Returns, per method, the ID part ‖P_S e‖² and the S⊥ part ‖P_S⊥ e‖² of the limiting error e = Bᵀv − w⋆
    (shape (len(eps), seeds)); L_ood under Σ = (1 − u) P_S + u P_S⊥ is (1 − u)·ID + u·S⊥, and Σ = I is their sum.
    Cached, so that `reproduce` computes it once for its figures.
    """
    shape = _shape(quick)
    return _limits(shape["d"], shape["k"], shape["n"], quick, seed)


def _eps_grid(quick: bool) -> np.ndarray:
    return np.logspace(-4, 0, 5 if quick else 9)


@functools.lru_cache(maxsize=16)
def _limits(d: int, k: int, n: int, quick: bool, seed: int) -> dict:
    """`eps_sweep` at the shape (d, k, n)."""
    # Each shape's batch (144 instances) is compiled light where it runs briefly. Measured on 2 cores at d = 200,
    # k = 3 (light against default, s): n = 10, 20, 40: 4.5/5.9, 3.0/4.0, 4.0/5.1; n = 70: 5.8/5.2; n = 100, 140,
    # where the near-square inputs make the solves long and stiff: 7.8/6.1, 19.6/10.8
    with light_compile(n <= 40):
        return _limits_at(d, k, n, quick, seed)


def _limits_at(d: int, k: int, n: int, quick: bool, seed: int) -> dict:
    shape = dict(d=d, k=k, n=n)
    eps_grid = _eps_grid(quick)
    seeds = 4 if quick else 16
    key = jax.random.PRNGKey(seed)
    keys = jnp.tile(jax.random.split(key, seeds), (eps_grid.size, 1))
    eps = jnp.repeat(jnp.asarray(eps_grid), seeds)
    probs = subspace_shifts(keys, eps, inputs="isotropic", d=d, k=k, n=n)
    heads = jax.random.normal(jax.random.fold_in(key, 1), (eps.shape[0], k))
    out = {"eps": eps_grid, "seeds": seeds, "shape": shape, "seed": seed}
    for method, code in PAPER_METHODS:
        _, w = batched_predictors(probs, heads, [np.inf], method=code)
        e = w[:, -1] - probs.w_star
        id_part = jax.vmap(id_error_of_predictor)(probs, w[:, -1])
        perp = jnp.sum(e**2, -1) - id_part
        out[method] = {
            "id": np.asarray(id_part).reshape(eps_grid.size, seeds),
            "perp": np.maximum(np.asarray(perp), 0.0).reshape(eps_grid.size, seeds),
        }
    return out


def _ratio_maps(eps: np.ndarray, L: np.ndarray) -> dict:
    """From L (LP / FT / LP-FT, len(eps), columns) of mean OOD errors: the maps log10(L_FT/L_LP) and
    log10(L_LP-FT/L_LP) and Theorem 3.2's predicted crossover per column. Errors at 0 are floored at the smallest
    positive float so that the logarithms stay finite."""
    tiny = np.finfo(np.float64).tiny
    lp, ft, lpft = (np.maximum(L[i], tiny) for i in range(3))
    return dict(
        log10_ft_over_lp=np.log10(ft / lp),
        log10_lpft_over_lp=np.log10(lpft / lp),
        predicted_crossover_eps=_predicted_crossover(eps, lp, ft),
    )


def _predicted_crossover(eps: np.ndarray, lp: np.ndarray, ft: np.ndarray) -> np.ndarray:
    """Theorem 3.2's prediction of where LP starts to beat FT, per column: LP's error fitted as C ε² (least squares
    in log space over the smallest half of the ε grid, where the ε² law is asymptotic) against FT's error at the
    smallest ε (FT's error does not vanish with ε): ε* = √(L_FT/C). `lp`, `ft`: (len(eps), columns), positive."""
    low = eps <= np.median(eps)
    log_c = np.mean(np.log(lp[low]) - 2 * np.log(eps[low])[:, None], axis=0)
    return np.sqrt(ft[0] / np.exp(log_c))


def _times(quick: bool) -> np.ndarray:
    return np.concatenate([np.logspace(-4, 2, 16 if quick else 40), [np.inf]])


def data_toy(quick: bool = False, seed: int = 0) -> dict:
    """Figure 2 of the paper from a simulation: d = 2, k = 1, one training point x_id, zero head (no randomness:
    `quick` and `seed` are accepted for a uniform signature and ignored)."""
    p = figure2_toy()
    x_ood = np.asarray(figure2_ood_point(p))
    v0 = jnp.asarray([0.0])
    lp = linear_probe(p, v0, [np.inf])
    ft = fine_tune(p, v0, [np.inf])
    w_star = np.asarray(p.w_star)
    w_lp = np.asarray(lp.predictor[-1])
    w_ft = np.asarray(ft.predictor[-1])
    return dict(
        x_id=np.asarray(p.X[0]),
        x_ood=x_ood,
        w_star=w_star,
        B0=np.asarray(p.B0[0]),
        B_ft=np.asarray(ft.B[-1, 0]),
        w_lp=w_lp,
        w_ft=w_ft,
        v_lp=lp.v[-1],
        v_ft=ft.v[-1],
        ood_sq_error_on_x_ood=dict(LP=float((w_lp - w_star) @ x_ood) ** 2, FT=float((w_ft - w_star) @ x_ood) ** 2),
        eps=float(th.feature_error(p)),
        params=dict(v0=0.0),
    )


def data_error_vs_time(quick: bool = False, seed: int = 0) -> dict:
    """√L_ood and √L_id over time for FT (zero and random head), LP and LP-FT, ε = 0.01, with Theorem 3.1's
    bound (submission form, Section 3.1's ε) for both heads and whether its hypotheses hold."""
    shape = _shape(quick)
    eps = 0.01
    key = jax.random.PRNGKey(seed)
    p = subspace_shift(key, eps=eps, inputs="isotropic", **shape)
    v_rand = random_head(jax.random.fold_in(key, 1), shape["k"], 1.0)
    v_zero = jnp.zeros(shape["k"])
    times = _times(quick)
    trajs = {
        "FT (zero head)": fine_tune(p, v_zero, times),
        "FT": fine_tune(p, v_rand, times),
        "LP": linear_probe(p, v_rand, times),
        "LP-FT": lp_ft(p, v_rand, times),
    }
    return dict(
        times=times,
        params=dict(eps=eps, seed=seed, **shape),
        bounds={
            "FT (zero head)": float(th.ft_ood_lower_bound(p, v_zero)),
            "FT": float(th.ft_ood_lower_bound(p, v_rand)),
        },
        hypotheses_hold=th.check_assumptions(p, v_rand).holds["theorem_3_1"],
        sqrt_ood={n: np.sqrt(np.asarray(t.ood_error)) for n, t in trajs.items()},
        sqrt_id={n: np.sqrt(np.maximum(np.asarray(t.id_error), 0)) for n, t in trajs.items()},
    )


def data_ood_vs_eps(quick: bool = False, seed: int = 0) -> dict:
    """Limiting L_ood (Σ_ood = I) against ε for LP, FT and LP-FT: mean, 10 % and 90 % quantiles over seeds, and
    the fitted log–log slope of the mean (Theorem 3.2: LP's error vanishes with ε, FT's does not)."""
    sw = eps_sweep(quick, seed)
    eps = sw["eps"]
    data: dict[str, Any] = dict(
        eps=eps, params=dict(seeds=sw["seeds"], seed=seed, head="random N(0, I)", **sw["shape"])
    )
    for m, _ in PAPER_METHODS:
        L = sw[m]["id"] + sw[m]["perp"]
        mean = L.mean(1)
        data[m] = dict(mean=mean, q10=np.quantile(L, 0.1, 1), q90=np.quantile(L, 0.9, 1), slope=_slope(eps, mean))
    return data


def data_id_vs_ood(quick: bool = False, seed: int = 0) -> dict:
    """Mean ID-subspace error and mean OOD error at the limit, per method and ε (Proposition 3.1, Theorem 3.2)."""
    sw = eps_sweep(quick, seed)
    data = dict(eps=sw["eps"], params=dict(seeds=sw["seeds"], seed=seed, **sw["shape"]))
    for m, _ in PAPER_METHODS:
        data[m] = dict(id_error=sw[m]["id"].mean(1), ood_error=(sw[m]["id"] + sw[m]["perp"]).mean(1))
    return data


def data_feature_change(quick: bool = False, seed: int = 0) -> dict:
    """‖B(t) − B0‖_F split into its part in S (the training span) and in S⊥, for FT and LP-FT (random head,
    ε = 0.1); fact 1 says the S⊥ part is zero."""
    shape = _shape(quick)
    key = jax.random.PRNGKey(seed)
    p = subspace_shift(key, eps=0.1, inputs="isotropic", **shape)
    v0 = random_head(jax.random.fold_in(key, 1), shape["k"], 1.0)
    times = _times(quick)
    PS = np.asarray(p.sigma_id)
    data: dict[str, Any] = dict(times=times, params=dict(eps=0.1, seed=seed, **shape))
    for name, tr in (("FT", fine_tune(p, v0, times)), ("LP-FT", lp_ft(p, v0, times))):
        dB = np.asarray(tr.B) - np.asarray(p.B0)
        perp = np.linalg.norm(dB - dB @ PS, axis=(1, 2))
        data[name] = dict(in_S=np.linalg.norm(dB @ PS, axis=(1, 2)), in_S_perp=perp, max_in_S_perp=float(perp.max()))
    return data


def data_stress_slack(quick: bool = False, seed: int = 0, progress: bool = False) -> dict:
    """Theorem 3.1's slack min_t √L_ood(t) − bound over `linnet.stress.random_search`'s instances."""
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
    return dict(
        params=dict(instances=n_inst, seed=seed, shapes=shapes),
        slacks=s,
        violations=int(np.sum(s <= 0)),
        min_slack=float(s.min()),
        worst=r.worst,
    )


def data_phase(quick: bool = False, seed: int = 0) -> dict:
    """Mean L_ood at t = ∞ of LP, FT and LP-FT over feature error ε × OOD shift strength u, where
    Σ_ood = (1 − u) P_S + u P_S⊥: the best method at each grid point, the continuous maps log10(L_FT/L_LP) and
    log10(L_LP-FT/L_LP), and Theorem 3.2's prediction for where LP starts to win: LP's error fitted as C(u) ε² (the
    rate the theorem's ratio → 0 implies and the tests measure) against FT's error at the smallest ε (FT's error
    does not vanish with ε), crossing at ε*(u) = √(L_FT(u)/C(u))."""
    sw = eps_sweep(quick, seed)
    eps = np.asarray(sw["eps"])
    u = np.linspace(0, 1, 11 if quick else 41)
    methods = tuple(m for m, _ in PAPER_METHODS)
    L = np.stack(
        [
            ((1 - u)[None, :] * sw[m]["id"].mean(1)[:, None] + u[None, :] * sw[m]["perp"].mean(1)[:, None])
            for m in methods
        ]
    )  # (method, ε, u)
    return dict(
        eps=eps,
        u=u,
        methods=methods,
        best=np.argmin(L, axis=0),
        L=L,
        **_ratio_maps(eps, L),
        params=dict(seed=seed, **sw["shape"]),
    )


def _n_grid(quick: bool) -> list[int]:
    # n/d from well below to well above the eps_sweep shape's (d = 60, n = 15 quick; d = 200, n = 40). Not closer to
    # n = d: near-square Gaussian X is very stiff (n = 180 of 200 took over 8 minutes, against 42 s at n = 140)
    # quick: two columns, the eps_sweep shape's n (its sweep is shared with the other figures) and one below it
    return [8, 15] if quick else [10, 20, 40, 70, 100, 140]


def data_phase_nd(quick: bool = False, seed: int = 0) -> dict:
    """Mean L_ood at t = ∞ (Σ_ood = I) of LP, FT and LP-FT over feature error ε × n/d, the training set's share of
    the input dimension, at the d and k of `eps_sweep` (isotropic Gaussian inputs, random heads, the same seeds):
    the continuous maps log10(L_FT/L_LP) and log10(L_LP-FT/L_LP), and Theorem 3.2's predicted crossover ε*(n/d)
    where LP starts to beat FT (as in `data_phase`). FT moves the features only in the n-dimensional span of the
    data (fact 1), so the S⊥ share of its error, and its disadvantage, shrink as n/d grows."""
    shape = _shape(quick)
    d, k = shape["d"], shape["k"]
    ns = _n_grid(quick)
    eps = _eps_grid(quick)
    methods = tuple(m for m, _ in PAPER_METHODS)
    limits = [_limits(d, k, n, quick, seed) for n in ns]
    L = np.stack(
        [np.stack([(lim[m]["id"] + lim[m]["perp"]).mean(1) for lim in limits], axis=1) for m in methods]
    )  # (method, ε, n)
    return dict(
        eps=eps,
        n=np.asarray(ns),
        n_over_d=np.asarray(ns) / d,
        methods=methods,
        L=L,
        **_ratio_maps(eps, L),
        params=dict(seed=seed, d=d, k=k, seeds=limits[0]["seeds"]),
    )
