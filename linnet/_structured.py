"""A linear solver for the Newton systems of implicit methods on the fine-tuning flow, exploiting their structure.

In reduced coordinates θ = (v, G) (see `_flow`), the Jacobian of f = −∇L̂ is arrowhead-shaped: with columns
G_q of G (q = 1…r), ∂(dG_q)/∂G_p = 0 for p ≠ q, because dG_q/dt = −2 v g_q and g_q depends on G only through
z_q = G_qᵀ v. So any operator M = I − γ J_f that an implicit Runge–Kutta stage needs is

    M = [[M_vv, C_1ᵀ … C_rᵀ], [C_1, D_1, 0 …], …, [C_r, 0 …, D_r]],      all blocks k × k,

(symmetric, since J_f = −∇²L̂ is a Hessian). It is recovered from 2k operator products (the k unit vectors in v,
and k "coloured" vectors that set a whole row of G at once, which the block-diagonal part separates) and solved by
block elimination: X_q = D_q⁻¹ (b_q − C_q x_v), (M_vv − Σ C_qᵀ D_q⁻¹ C_q) x_v = b_v − Σ C_qᵀ D_q⁻¹ b_q.
The k × k inverses are formed once per factorisation and applied as batched matrix products: on CPU this halved
the time of a whole solve against batched LU solves (measured d = 500, k = 5, n = 100: 0.42 s → 0.23 s), and
the chord-Newton iteration that consumes these solves corrects their rounding. The diagonal blocks D_q are SPD
(see `_inverse_spd_blocks`), so for small k they are inverted by batched elimination without pivoting.
Cost per factorisation O(r k³ + k² r) time and O(r k²) memory, against O((k r)³) and O((k r)²) for the dense LU
that diffrax would otherwise use, so the implicit method stays usable at the paper's scale.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import lineax as lx

_UNROLLED_MAX_K = 10


class ArrowheadSolver(lx.AbstractLinearSolver):
    """lineax solver for operators on (v (k,), G (k, r)) with the arrowhead structure described above."""

    def init(self, operator, options: dict[str, Any]):
        del options
        _, G_struct = operator.in_structure()
        k, r = G_struct.shape
        dtype = G_struct.dtype
        eye = jnp.eye(k, dtype=dtype)
        zeros_G = jnp.zeros((k, r), dtype)
        out_v, out_vG = jax.vmap(lambda e: operator.mv((e, zeros_G)))(eye)  # responses to unit v-vectors
        _, out_GG = jax.vmap(lambda e: operator.mv((jnp.zeros(k, dtype), jnp.outer(e, jnp.ones(r, dtype)))))(eye)
        M_vv = out_v.T
        C = jnp.transpose(out_vG, (2, 1, 0))  # C[q][:, i] = response of G_q to e_i in v
        D = jnp.transpose(out_GG, (2, 1, 0))  # D[q][:, i] = response of G_q to e_i in G_q
        # elimination unrolled over k beats r LAPACK calls for small k only (measured warm solves to t = ∞:
        # k = 5: 0.151 → 0.111 s, k = 10: 0.98 → 0.76 s; k = 20, r = 1000: 16.8 → 20.0 s, so LAPACK there)
        Dinv = _inverse_spd_blocks(D) if k <= _UNROLLED_MAX_K else jnp.linalg.inv(D)
        Dinv_C = Dinv @ C
        S = M_vv - jnp.einsum("qji,qjl->il", C, Dinv_C)
        return (C, Dinv, Dinv_C, jnp.linalg.inv(S))

    def compute(self, state, vector, options: dict[str, Any]):
        del options
        C, Dinv, Dinv_C, S_inv = state
        b_v, b_G = vector
        Dinv_b = jnp.einsum("qij,jq->qi", Dinv, b_G)  # (r, k)
        x_v = S_inv @ (b_v - jnp.einsum("qji,qj->i", C, Dinv_b))
        X = Dinv_b - jnp.einsum("qij,j->qi", Dinv_C, x_v)
        # a diverging Newton iteration feeds inf/NaN right-hand sides: report failure (as lineax's own solvers do)
        # so that the step is rejected and shrunk, instead of NaN silently poisoning the step-size controller
        finite = jnp.all(jnp.isfinite(x_v)) & jnp.all(jnp.isfinite(X))
        result = lx.RESULTS.where(finite, lx.RESULTS.successful, lx.RESULTS.singular)
        x_v = jnp.where(finite, x_v, 0.0)
        X = jnp.where(finite, X, 0.0)
        return (x_v, X.T), result, {}

    def transpose(self, state, options: dict[str, Any]):
        return state, options  # M is symmetric

    def conj(self, state, options: dict[str, Any]):
        return state, options  # real

    def assume_full_rank(self):
        return True

    def allow_dependent_columns(self, operator):
        return False

    def allow_dependent_rows(self, operator):
        return False


def _inverse_spd_blocks(D):
    """Inverses of a batch (r, k, k) of symmetric positive definite blocks, by Gauss–Jordan elimination without
    pivoting, vectorised over the batch.

    The diagonal blocks of M = I − γ J here are D_q = I + 2 γ η_B (s_q² v vᵀ + λ_B I) (γ > 0, from
    ∂(dG_q)/∂G_q = −2 η_B (s_q² v vᵀ + λ_B I) in the scaled coordinates): SPD with eigenvalues ≥ 1, for which
    elimination without pivoting is backward stable. On CPU this replaces r separate LAPACK calls by k batched
    updates (measured at r = 100, k = 5: 16 µs against 105 µs for `jnp.linalg.inv`). Unrolled: for small k."""
    k = D.shape[-1]
    M = jnp.concatenate([D, jnp.broadcast_to(jnp.eye(k, dtype=D.dtype), D.shape)], axis=-1)

    for i in range(k):
        row = M[..., i : i + 1, :] / M[..., i : i + 1, i : i + 1]
        M = (M - M[..., :, i : i + 1] * row).at[..., i : i + 1, :].set(row)
    return M[..., k:]
