"""The statements that compare methods along their trajectories: each simulates (`fine_tune`, `lp_ft`) and
returns both sides, so a test or `linnet.stress` decides whether the statement holds."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import id_error_of_predictor
from .._methods.paper import fine_tune, lp_ft
from .._problem import Problem
from ._assumptions import w_star_in_rowspace
from ._quantities import lp_limit, lp_ood_error


def lp_ft_ood_ratio(problem: Problem, v0: jax.Array, times) -> jax.Array:
    """Theorem 3.2 (submission numbering; camera-ready number unverified): L_ood(v_lp^∞, B0) / L_ood(v_ft(t),
    B_ft(t)) at each t.

    The theorem says this ratio → 0 in probability as ε → 0, for Gaussian ID inputs and every t (the FT limit
    included). **Returns:** (T,) ratios.
    """
    ft = fine_tune(problem, v0, times)
    return lp_ood_error(problem, v0) / ft.ood_error


@dataclasses.dataclass(frozen=True)
class IdComparison:
    """Proposition 3.1 (submission numbering; camera-ready number unverified): ID-subspace errors at the FT and LP
    limits."""

    ft_id_error: float
    lp_id_error: float
    w_star_in_rowspace_B0: bool

    @property
    def ft_better(self) -> bool:
        return self.ft_id_error < self.lp_id_error


def id_comparison(problem: Problem, v0: jax.Array) -> IdComparison:
    """Proposition 3.1: if w⋆ ∉ rowspace(B0) and FT converges to a global minimum, then
    L_id:subspace(FT limit) < L_id:subspace(LP limit). Computes both sides (FT by `fine_tune` to t = ∞, LP exactly)
    and the hypothesis."""
    ft = fine_tune(problem, v0, [jnp.inf])
    lp_err = id_error_of_predictor(problem, problem.B0.T @ lp_limit(problem, v0))
    return IdComparison(float(ft.id_error[-1]), float(lp_err), w_star_in_rowspace(problem))


@dataclasses.dataclass(frozen=True)
class LpFtComparison:
    """Proposition 3.2 (submission numbering; camera-ready Proposition 3.7): OOD errors of LP-FT and FT along time."""

    times: np.ndarray
    lpft_ood: np.ndarray
    ft_ood: np.ndarray


def lp_ft_statement(problem: Problem, v0: jax.Array, times) -> LpFtComparison:
    """Proposition 3.2: if B0 = U B⋆ (ε = 0), cos θ_k(R, S) ≠ 0 and cos θ_k(R, S⊥) ≠ 0, then FT from v0 ~ N(0, σ²I)
    has L_ood > 0 for all t (almost surely) while LP-FT has L_ood = 0 for all t. Returns both error curves."""
    a = lp_ft(problem, v0, times)
    b = fine_tune(problem, v0, times)
    return LpFtComparison(np.asarray(a.times), np.asarray(a.ood_error), np.asarray(b.ood_error))
