"""The numbers behind the classification figures (logistic loss, sign labels): `data_<name>(quick, seed) -> dict`.

The setting: a subspace shift with inputs in S (the default generator), ε = 0.1, labels y = sign(w⋆ᵀx), Σ_ood = I,
small random heads v0 ~ N(0, 0.1² I), several seeds. The errors are the exact 0-1 errors against sign(w⋆ᵀx)
(`linnet.zero_one_error`). Every run goes through the registry (`sweep`, `fine_tune`, `lp_ft` with
`loss="logistic"`); the references (max-margin separators, separability) come from `linnet._classification`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._classification import is_separable, max_margin, zero_one_error
from .._generators import subspace_shift
from .._methods.paper import fine_tune, lp_ft
from .._problem import Problem
from .._run.sweep import sweep

EPS = 0.1
HEAD_SCALE = 0.1
LP_TIME = 100.0  # the LP phase of LP-FT in the error-vs-time figure


def _setting(quick: bool, seed: int):
    shape = dict(d=30, k=3, n=12) if quick else dict(d=60, k=3, n=20)
    seeds = 2 if quick else 4
    key = jax.random.PRNGKey(seed)
    keys = jax.random.split(key, seeds)
    probs = [subspace_shift(kk, eps=EPS, labels="sign", d=shape["d"], k=shape["k"], n=shape["n"]) for kk in keys]
    heads = HEAD_SCALE * jax.random.normal(jax.random.fold_in(key, 1), (seeds, shape["k"]))
    params = dict(seed=seed, eps=EPS, head_scale=HEAD_SCALE, seeds=seeds, **shape)
    return shape, probs, heads, params


def _stack(probs: list[Problem]) -> Problem:
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *probs)


def _references(p: Problem) -> dict:
    """OOD 0-1 errors of the limits the theory predicts: the data's max-margin separator (FT's direction), and for
    LP the max-margin separator in the features X B0ᵀ when the labels are separable there (else None)."""
    X, y, B0 = np.asarray(p.X), np.asarray(p.y), np.asarray(p.B0)
    data_mm = max_margin(X, y)
    F = X @ B0.T
    sep = is_separable(F, y)
    lp_mm = B0.T @ max_margin(F, y) if sep else None
    return dict(
        data_max_margin_ood=float(zero_one_error(p, jnp.asarray(data_mm))),
        separable_in_features=bool(sep),
        features_max_margin_ood=None if lp_mm is None else float(zero_one_error(p, jnp.asarray(lp_mm))),
        data_max_margin=data_mm,
    )


def data_cls_error_vs_time(quick: bool = False, seed: int = 0) -> dict:
    """OOD and ID 0-1 errors of LP, FT and LP-FT (T_lp = 100) against t from 0.1 to 10¹² (per seed), with the OOD
    error of the data's max-margin separator (the predicted direction of FT) and, where the labels are separable
    in the pretrained features, of the max-margin separator in those features (LP's predicted direction)."""
    _, probs, heads, params = _setting(quick, seed)
    times = np.logspace(-1, 12, 14 if quick else 27)
    methods = ("lp", "ft", {"name": "lpft", "lp_time": LP_TIME})
    res = sweep(_stack(probs), heads, times, methods=methods, loss="logistic", progress=False)
    names = ("LP", "FT", "LP-FT")
    refs = [_references(p) for p in probs]
    return dict(
        times=times,
        ood_error={n: np.asarray(res.ood_error[i, 0]) for i, n in enumerate(names)},  # (seeds, T)
        id_error={n: np.asarray(res.id_error[i, 0]) for i, n in enumerate(names)},
        data_max_margin_ood=np.asarray([r["data_max_margin_ood"] for r in refs]),
        separable_in_features=[r["separable_in_features"] for r in refs],
        features_max_margin_ood=[r["features_max_margin_ood"] for r in refs],
        lp_time=LP_TIME,
        params=params,
    )


def perp_fraction(p: Problem, w) -> np.ndarray:
    """‖P_S⊥ w‖ / ‖w‖ for predictors `w` (..., d): the share of the predictor outside the training span."""
    w = np.asarray(w)
    V = np.asarray(p.id_basis)
    perp = w - (w @ V) @ V.T
    return np.linalg.norm(perp, axis=-1) / np.linalg.norm(w, axis=-1)


def fit_log_rate(times, frac, t_min: float = 1e3) -> float:
    """The exponent b in ‖P_S⊥ w‖/‖w‖ ≈ a (log t)^b, fitted by least squares on log-log(t) for t ≥ `t_min`."""
    t = np.asarray(times)
    keep = t >= t_min
    return float(np.polyfit(np.log(np.log(t[keep])), np.log(np.asarray(frac)[keep]), 1)[0])


def data_cls_perp_fraction(quick: bool = False, seed: int = 0) -> dict:
    """FT under the logistic loss: the S⊥ share ‖P_S⊥ w‖/‖w‖ of the predictor w(t) = B(t)ᵀv(t), with its fitted
    exponent against log t (the balancedness heuristic predicts −½: ‖w‖ grows like log t while the frozen S⊥ part
    P_S⊥ B0ᵀ v grows like ‖v‖ ~ ‖w‖^½), and the direction's distance 1 − cos(w, u_mm) to the data's max-margin
    separator u_mm; per seed."""
    _, probs, heads, params = _setting(quick, seed)
    times = np.logspace(0, 12, 13 if quick else 25)
    fracs, gaps, norms, rates = [], [], [], []
    for p, v0 in zip(probs, heads, strict=True):
        tr = fine_tune(p, v0, times, loss="logistic")
        w = np.asarray(tr.predictor)
        u = _references(p)["data_max_margin"]
        frac = perp_fraction(p, w)
        fracs.append(frac)
        norms.append(np.linalg.norm(w, axis=-1))
        gaps.append(1.0 - (w @ u) / (np.linalg.norm(w, axis=-1) * np.linalg.norm(u)))
        rates.append(fit_log_rate(times, frac))
    return dict(
        times=times,
        perp_fraction=np.asarray(fracs),
        predictor_norm=np.asarray(norms),
        max_margin_gap=np.asarray(gaps),
        fitted_exponent=np.asarray(rates),
        t_min_fit=1e3,
        params=params,
    )


def data_cls_lp_time(quick: bool = False, seed: int = 0) -> dict:
    """LP-FT under the logistic loss: the OOD 0-1 error at FT times t ∈ {10², 10⁶, 10¹²} against the LP phase's
    length T_lp (T_lp = 0 is FT), with the head norm ‖v_lp(T_lp)‖ the FT phase starts from; per seed."""
    _, probs, heads, params = _setting(quick, seed)
    t_lps = np.concatenate([[0.0], np.logspace(-1, 6, 4 if quick else 8)])
    times = np.asarray([1e2, 1e6, 1e12])
    ood = np.zeros((len(probs), len(t_lps), len(times)))
    head_norm = np.zeros((len(probs), len(t_lps)))
    for i, (p, v0) in enumerate(zip(probs, heads, strict=True)):
        for j, T in enumerate(t_lps):
            tr = lp_ft(p, v0, np.concatenate([[0.0], times]), loss="logistic", lp_time=float(T))
            ood[i, j] = np.asarray(tr.ood_error[1:])
            head_norm[i, j] = float(jnp.linalg.norm(tr.v[0]))
    return dict(lp_times=t_lps, times=times, ood_error=ood, head_norm=head_norm, params=params)
