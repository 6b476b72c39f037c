"""Fine-tuning methods beyond the paper on the generalised FT flow and its exact special cases: two learning
rates, L2-SP and features-only tuning. Each is a registry declaration plus its public function; each states its
prediction in its docstring, and the tests check it against an independent reference. The flows keep the paper's
loss L̂ = ‖X Bᵀ v − y‖² and time unit."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax.typing import ArrayLike

from .._closed_forms import features_only_path
from .._problem import Problem
from .._registry import ClosedFormMethod, register
from .._run.simulate import simulate
from .._trajectory import Trajectory
from .._validate import is_traced
from .paper import ETA, LAM, ft_flow


def _two_lr_delegate(p):
    """η_B = 0 is LP with time scaled by η_v; η_v = 0 is features-only with time scaled by η_B (concrete only)."""
    eta_v, eta_B = float(p["eta_v"]), float(p["eta_B"])
    if eta_B == 0:
        return "lp", {}, eta_v
    if eta_v == 0:
        return "features_only", {}, eta_B
    return None


def _two_lr_checks(p, times):
    del times
    checks = [((p["eta_v"] == 0) & (p["eta_B"] == 0), "`eta_v` and `eta_B` cannot both be 0 (nothing would train)")]
    if is_traced(p["eta_v"], p["eta_B"]):  # a zero rate is another method, which a traced value cannot select
        checks.append(((p["eta_v"] <= 0) | (p["eta_B"] <= 0), "traced `eta_v`, `eta_B` must be > 0"))
    return checks


register(
    ft_flow(
        "two_lr",
        "fine-tuning with a learning rate per layer, η_v for v and η_B for B",
        params=tuple(dataclasses.replace(q, positive=False) for q in ETA),
        checks=_two_lr_checks,
        delegate=_two_lr_delegate,
    )
)


def _l2_sp_checks(p, times):
    lam_v = p["lam_v"] if p["lam_v"] is not None else p["lam_B"]
    no_limit = jnp.isinf(jnp.asarray(times)[-1]) & (lam_v == 0) & (p["lam_B"] > 0)
    return [
        (
            no_limit,
            "`lam_v` = 0 with `lam_B` > 0 has no t = inf limit (the head grows without bound while "
            "B − B0 → 0); pass lam_v > 0 or finite times",
        )
    ]


register(ft_flow("l2_sp", "L2-SP: FT on L̂ + λ_B ‖B − B0‖² + λ_v ‖v‖²", params=LAM, checks=_l2_sp_checks))
register(ClosedFormMethod("features_only", "features tuned, head frozen at v0: exact", path=features_only_path))
register(
    ClosedFormMethod(
        "lp_features_only",
        "features tuned, head frozen at v_lp^∞: exact",
        lp_head=True,
        path=features_only_path,
    )
)


def two_learning_rates(
    problem: Problem,
    v0: ArrayLike,
    times,
    *,
    eta_v=1.0,
    eta_B=1.0,
    rtol=1e-8,
    atol=1e-10,
    max_steps=100_000,
    throw: bool = True,
) -> Trajectory:
    """Fine-tuning with a learning rate per layer: ∂_t v = −η_v ∇_v L̂, ∂_t B = −η_B ∇_B L̂, from (v0, B0).

    η_B = 0 is LP (time scaled by η_v) and η_v = 0 is `features_only` (time scaled by η_B); η_v = η_B = 1 is FT.
    Integrated in the scaled coordinates (v/√η_v, B/√η_B), where it is again a gradient flow
    (`docs/theory.md`, "Methods beyond the paper").

    **Prediction:** v vᵀ/η_v − B Bᵀ/η_B is conserved and B is unchanged on S⊥ (∇_B L̂ has rows in S). For k = 1
    this fixes the limit in closed form (`linnet.theory.ft_limit_k1(..., lr_ratio=η_v/η_B)`), and as
    η_B/η_v → 0 the *limit* does not tend to LP's: B keeps its norm and rotates inside S until the data are fitted,
    so v∞ → ‖P_S w⋆‖/‖P_S b0‖ (see paper_repro.md, "Beyond the paper").

    **Arguments:** as `fine_tune`, plus `eta_v`, `eta_B` ≥ 0 (differentiable). **Returns:** a `Trajectory`
    (method "two_lr").
    """
    return simulate(
        "two_lr", problem, v0, times, eta_v=eta_v, eta_B=eta_B, rtol=rtol, atol=atol, max_steps=max_steps, throw=throw
    )


def l2_sp(
    problem: Problem,
    v0: ArrayLike,
    times,
    *,
    lam_B,
    lam_v=None,
    lp_head: bool = False,
    rtol=1e-8,
    atol=1e-10,
    max_steps=100_000,
    throw: bool = True,
) -> Trajectory:
    """L2-SP: gradient flow on L̂(v, B) + λ_B ‖B − B0‖²_F + λ_v ‖v‖² from (v0, B0) (from (v_lp^∞, B0) if `lp_head`).

    **Prediction:** the regulariser's gradient 2 λ_B (B − B0) has rows in S whenever B − B0 does, so B is still
    unchanged on S⊥; the limit is a stationary point: ∇_v L̂ + 2 λ_v v = 0 and ∇_B L̂ + 2 λ_B (B − B0) = 0.
    λ_B = 0 is FT; λ_B → ∞ freezes B (LP).

    `lam_v` defaults to `lam_B`. With λ_v = 0 < λ_B the objective has no minimiser unless B0 already fits the
    data: scaling v up by c and the needed feature change down by 1/c drives the penalty to 0, so v → ∞ slowly
    and t = ∞ is refused (a `ValueError`); finite times are fine.

    **Returns:** a `Trajectory` (method "l2_sp").
    """
    return simulate(
        "l2_sp",
        problem,
        v0,
        times,
        lam_B=lam_B,
        lam_v=lam_v,
        lp_head=lp_head,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        throw=throw,
    )


def features_only(problem: Problem, v0: ArrayLike, times, *, lp_head: bool = False, throw: bool = True) -> Trajectory:
    """Partial tuning of the features: head frozen at v0 (or at the LP head v_lp^∞ if `lp_head`), ∂_t B = −∇_B L̂.

    Solved exactly (no ODE): with v fixed the flow of z = (BV)ᵀ v is linear (`_closed_forms.features_only_path`).
    **Predictions:** B moves only along v ⊗ S (rank one, rows in S); the limit fits the data whenever v ≠ 0; with
    the LP head and ε = 0 (B0 = U B⋆) the data are already fitted and the features do not move at all.

    **Returns:** a `Trajectory` (method "features_only", or "lp_features_only" with `lp_head`); head-only tuning
    is `linear_probe`.
    """
    return simulate("lp_features_only" if lp_head else "features_only", problem, v0, times, throw=throw)


__all__ = ["features_only", "l2_sp", "two_learning_rates"]
