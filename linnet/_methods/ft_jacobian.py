"""The generalised FT flow's Newton solve in closed form (Sherman–Morrison), the method's side of
`linnet._solver.newton.AbstractNewton`.

`ArrowheadSolver` sees the operator only through products, so it must probe 2k of them and invert r dense k × k
blocks: O(r k³) time and O(r k²) memory per factorisation. The blocks of M = I − γ J for the generalised flow of
`_flow.general_field` are known in closed form at the point θ = (ṽ, G̃) (scaled coordinates, v = √η_v ṽ,
G = √η_B G̃, g = s ⊙ ρ, ρ = s ⊙ (Gᵀv) − Uᵀy):

    M_vv = (1 + 2γη_vλ_v) I + 2γη_v G diag(s²) Gᵀ,
    C_q  = c (g_q I + s_q² v G_qᵀ),                      c = 2γ √(η_v η_B)          (G_q-row, v-column)
    D_q  = α I + β_q v vᵀ,                               α = 1 + 2γη_Bλ_B,  β_q = 2γη_B s_q².

So D_q⁻¹ = (I − κ_q v vᵀ)/α with κ_q = β_q/(α + β_q‖v‖²) (Sherman–Morrison), and the Schur complement
    S = M_vv − Σ_q C_qᵀ D_q⁻¹ C_q
      = M_vv − (c²/α) [ (Σ g_q²) I − (Σ κ_q g_q²) v vᵀ + v hᵀ + h vᵀ + ‖v‖² G diag(s⁴ ⊙ μ) Gᵀ ],
with μ_q = α/(α + β_q‖v‖²) = 1 − κ_q‖v‖² and h = G (g ⊙ s² ⊙ μ). Forming S costs O(r k²) (two products
G diag(·) Gᵀ) and factoring it O(k³); a solve is O(r k + k²); beyond the state only O(r) vectors are kept.
γ > 0 makes α ≥ 1 and β_q ≥ 0, so no D_q is near-singular and Sherman–Morrison is backward stable for them.



Cost: O(r k² + k³) per factorisation and O(r k + k²) per solve, O(r) memory beyond the state; backward stable to
cond(M) ~ 5e8 (tests), with trajectories and derivatives equal to the arrowhead solve's. `Rodas5P`, the
FT flow's default solver, and `FusedKvaerno5` call it directly (vmapped over a stack of instances: it does not
evaluate the field), and diffrax's own Kvaerno5 reaches it through `linnet._solver.diffrax_internals.StructuredChord`.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp

from .._problem import residual
from .._solver.newton import AbstractNewton, lu_factor, lu_solve


class FTNewton(AbstractNewton):
    """(I − γ J)⁻¹ for the generalised FT flow (`linnet._methods.ft_flow.general_field`), state θ = (ṽ (k,),
    G̃ (k, r)) and `args = (s, Uᵀy, G0, (η_v, η_B, λ_v, λ_B))`, factored in closed form from the flow's arguments
    (the field is not evaluated)."""

    unrolled: bool = eqx.field(static=True, default=False)

    label: ClassVar[str] = "ShermanMorrison"
    uses_field: ClassVar[bool] = False

    def factor(self, vf, t, y, gamma, args):
        del vf, t
        return sherman_morrison_factor(y, gamma, args, self.unrolled)

    def solve(self, factor, vector):
        return sherman_morrison_solve(factor, vector)


def sherman_morrison_solve(factor, vector):
    """x = M⁻¹ b for b = (b_v (k,), b_G (k, r)), from `sherman_morrison_factor`'s `factor`: O(r k + k²)."""
    v, G, g, s2, alpha, u, inv_par, c, lu = factor
    b_v, b_G = vector

    def apply_Dinv(B):
        # columns D_q⁻¹ B_q = P_⊥ B_q / α + P_∥ B_q / (α + β_q‖v‖²), P_∥ = u uᵀ, u = v/‖v‖. Written with the
        # two projections apart, not as (B − κ v vᵀB)/α: that form subtracts nearly equal numbers along v when
        # β‖v‖² ≫ α, losing the parallel part (measured for k = 1: backward error 1.4e5 ε at γ = 10⁶)
        t = u @ B
        return (B - jnp.outer(u, t)) / alpha + jnp.outer(u, t * inv_par)

    Y = apply_Dinv(b_G)
    x_v = lu_solve(lu, b_v - c * (Y @ g + G @ (s2 * (v @ Y))))
    # X = Y − c D⁻¹ C x_v, with column q of C x_v equal to g_q x_v + w_q v (w = s² ⊙ Gᵀx_v): its projections are
    # g_q P_⊥ x_v and (g_q uᵀx_v + w_q ‖v‖) u, so D⁻¹ C x_v is two outer products, not a second pass of apply_Dinv
    t = u @ x_v
    x_perp = x_v - t * u
    w = s2 * (x_v @ G)
    X = Y - c * (jnp.outer(x_perp, g / alpha) + jnp.outer(u, inv_par * (t * g + (u @ v) * w)))
    return x_v, X


def sherman_morrison_factor(theta, gamma, args, unrolled: bool = False):
    """The factorisation `ShermanMorrisonSolver` solves with: (v, G, g, s², α, v/‖v‖, 1/(α + β‖v‖²), c, LU of S)
    at θ, as derived
    above. **Arguments:** `theta = (ṽ (k,), G̃ (k, r))`, `gamma` > 0, `args = (s, Uᵀy, G0, params)`."""

    vt, Gt = theta
    s, a, _, params = args
    eta_v, eta_B, lam_v, lam_B = params[0], params[1], params[2], params[3]
    v, G = jnp.sqrt(eta_v) * vt, jnp.sqrt(eta_B) * Gt
    k = v.shape[0]
    g = s * residual(s, a, v, G)
    s2 = s**2
    vv = v @ v
    alpha = 1.0 + 2.0 * gamma * eta_B * lam_B
    beta = 2.0 * gamma * eta_B * s2
    den = alpha + beta * vv
    mu, inv_par = alpha / den, 1.0 / den
    norm_v = jnp.sqrt(vv)
    u = v / jnp.where(norm_v > 0, norm_v, 1.0)  # v = 0: D_q = α I, and u = 0 gives that
    c = 2.0 * gamma * jnp.sqrt(eta_v * eta_B)
    eye = jnp.eye(k, dtype=v.dtype)
    M_vv = (1.0 + 2.0 * gamma * eta_v * lam_v) * eye + (2.0 * gamma * eta_v) * (G * s2) @ G.T
    h = G @ (g * s2 * mu)
    # (Σ g²) I − (Σ κ g²) v vᵀ with the projections apart (κ‖v‖² = 1 − μ), for the reason given in `compute`
    P_par = jnp.outer(u, u)
    coupling = (g @ g) * (eye - P_par) + (mu @ g**2) * P_par + jnp.outer(v, h) + jnp.outer(h, v)
    coupling = coupling + vv * (G * (s2**2 * mu)) @ G.T
    S = M_vv - (c**2 / alpha) * coupling
    return (v, G, g, s2, alpha, u, inv_par, c, lu_factor(S, unrolled))
