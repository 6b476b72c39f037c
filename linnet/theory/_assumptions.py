"""Which hypotheses of each result hold on one instance (`check_assumptions`), so that no bound is read outside
its hypotheses without being told."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from .._geometry import has_orthonormal_rows
from .._problem import Problem
from ._quantities import cos_theta_k, feature_error, head_alignment_error, row_basis


def w_star_in_rowspace(problem: Problem, rtol: float = 1e-8) -> bool:
    E = row_basis(problem.B0)
    w = problem.w_star
    resid = w - E @ (E.T @ w)
    return bool(jnp.linalg.norm(resid) <= rtol * jnp.linalg.norm(w))


@dataclasses.dataclass(frozen=True)
class Assumptions:
    """Which hypotheses hold for one instance. `holds[result]` is True when every hypothesis of that result
    holds; `details[result]` maps each hypothesis (in words) to a bool."""

    details: dict[str, dict[str, bool]]

    @property
    def holds(self) -> dict[str, bool]:
        return {r: all(h.values()) for r, h in self.details.items()}

    def failing(self, result: str) -> list[str]:
        return [h for h, ok in self.details[result].items() if not ok]

    def __str__(self) -> str:
        lines = []
        for r, hs in self.details.items():
            lines.append(f"{r}: {'holds' if all(hs.values()) else 'NOT satisfied'}")
            lines += [f"  [{'x' if ok else ' '}] {h}" for h, ok in hs.items()]
        return "\n".join(lines)


def check_assumptions(problem: Problem, v0: jax.Array | None = None, *, atol: float | None = None) -> Assumptions:
    """Report which hypotheses of each result hold for `problem` (and head `v0`, where a result needs one), so a
    bound is never read outside its hypotheses without being told.

    Results: "theorem_3_1", "theorem_3_2", "proposition_3_1", "proposition_3_2" (submission numbering).
    `atol` is the tolerance of every structural test (orthonormal rows, ε = 0, a cosine ≠ 0); default
    max(1e-8, 10³ · d · eps) of the problem's dtype, so that a float32 instance is judged at its own precision.
    """
    if atol is None:
        atol = max(1e-8, 1e3 * problem.d * float(jnp.finfo(problem.X.dtype).eps))
    n, d, k = problem.n, problem.d, problem.k
    ortho = has_orthonormal_rows(problem.B0, atol) and has_orthonormal_rows(problem.B_star, atol)
    regime = {"1 <= k < n < d": 1 <= k < n < d, "k < d - n": k < d - n}
    cos_perp = float(cos_theta_k(problem, "complement"))
    cos_id = float(cos_theta_k(problem, "id"))
    eps = float(feature_error(problem))
    sig_ood_is_identity = problem.default_sigma_ood or bool(
        jnp.allclose(problem.sigma_ood, jnp.eye(d, dtype=problem.X.dtype), atol=atol)
    )
    details = {
        "theorem_3_1": {
            **regime,
            "B0, B_star have orthonormal rows": ortho,
            "cos θ_k(R, S⊥) > 0": cos_perp > atol,
            "Σ_ood = I (else use camera_ready=True)": sig_ood_is_identity,
        },
        "theorem_3_2": {
            **regime,
            "B0, B_star have orthonormal rows": ortho,
            "ID inputs Gaussian N(0, I) (not checkable on one instance; subspace_shift draws them in S)": True,
        },
        "proposition_3_1": {
            "w* not in rowspace(B0)": not w_star_in_rowspace(problem),
            "y = X w* (noiseless, so FT's global minimum fits)": bool(
                jnp.allclose(problem.y, problem.X @ problem.w_star, atol=atol * (1 + jnp.abs(problem.y).max()))
            ),
        },
        "proposition_3_2": {
            **regime,
            "B0 = U B* (ε = 0)": eps <= atol,
            "cos θ_k(R, S) ≠ 0": cos_id > atol,
            "cos θ_k(R, S⊥) ≠ 0": cos_perp > atol,
        },
    }
    if v0 is not None:
        phi = float(head_alignment_error(jnp.asarray(v0), problem.v_star))
        details["theorem_3_1"]["φ > 0"] = phi > atol
    return Assumptions(details)
