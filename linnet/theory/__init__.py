"""The paper's results as executable predictions.

One function per quantity or statement of docs/theory.md. Numbering is the submission's (the OpenReview version:
Theorem 3.1, Theorem 3.2, Proposition 3.1, Proposition 3.2). Of the camera-ready's numbers only one is confirmed:
the LP-FT result (submission Proposition 3.2) is camera-ready Proposition 3.7; every other camera-ready number or
form is unverified and marked so. Every bound is implemented exactly as printed, with the slips listed in
docs/theory.md corrected and said so in the docstring (or offered as a reading, such as the theorem's squared ε);
whether it holds is a question for the tests and for `linnet.stress`, never assumed here.

The layout follows that split:

- `_quantities`: functions of the problem and the initial head only, pure `jax.numpy` (jit-, vmap- and
  grad-safe): φ, ε, cos θ_k, Theorem 3.1's right side, the LP limit, the k = 1 FT limit;
- `_statements`: the comparisons that need trajectories (they call `fine_tune` / `lp_ft`) and return both sides;
- `_assumptions`: which hypotheses of each result hold on one instance.
"""

from __future__ import annotations

from .._geometry import principal_cosines
from ._assumptions import Assumptions, check_assumptions
from ._quantities import (
    C_STAR_K1,
    EPS_FORMS,
    cos_theta_k,
    feature_error,
    ft_limit_k1,
    ft_ood_lower_bound,
    head_alignment_error,
    head_alignment_sq,
    lp_limit,
    lp_ood_error,
    prob_head_alignment_below,
    theorem_3_1_corrected,
    theorem_3_1_eps,
    theorem_3_1_ratio_k1,
    theorem_3_1_rhs0,
)
from ._statements import IdComparison, LpFtComparison, id_comparison, lp_ft_ood_ratio, lp_ft_statement

__all__ = [
    "C_STAR_K1",
    "EPS_FORMS",
    "Assumptions",
    "IdComparison",
    "LpFtComparison",
    "check_assumptions",
    "cos_theta_k",
    "feature_error",
    "ft_limit_k1",
    "ft_ood_lower_bound",
    "head_alignment_error",
    "head_alignment_sq",
    "id_comparison",
    "lp_ft_ood_ratio",
    "lp_ft_statement",
    "lp_limit",
    "lp_ood_error",
    "principal_cosines",
    "prob_head_alignment_below",
    "theorem_3_1_corrected",
    "theorem_3_1_eps",
    "theorem_3_1_ratio_k1",
    "theorem_3_1_rhs0",
]
