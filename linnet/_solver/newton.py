"""Newton solves for implicit Runge–Kutta stages: the interface a method implements, and the solves that need no
knowledge of the flow.

An implicit stage of an ESDIRK method solves fᵢ − f(tᵢ, yᵢ + γ fᵢ) = 0 by chord-Newton iterations with the matrix
M = I − γ J, J = ∂f/∂y at one point per step. `AbstractNewton` is what the solver asks of a method: `factor` at
(t, y, γ) and `solve` with that factorisation. The solver layer never looks inside the flow's arguments: a method
whose Jacobian has structure supplies its own (the generalised FT flow's closed form is
`linnet._methods.ft_jacobian.FTNewton`); any other flow uses `DenseNewton`.

`ArrowheadSolver` is a lineax solver for operators on (v (k,), G (k, r)) whose Jacobian is arrowhead-shaped, i.e.
∂(dG_q)/∂G_p = 0 for p ≠ q (columns G_q of G), so that

    M = [[M_vv, C_1ᵀ … C_rᵀ], [C_1, D_1, 0 …], …, [C_r, 0 …, D_r]],      all blocks k × k,

symmetric (J is a Hessian). It knows only that shape: the blocks are recovered from 2k operator products (the k
unit vectors in v, and k "coloured" vectors that set a whole row of G at once, which the block-diagonal part
separates) and eliminated by blocks: X_q = D_q⁻¹ (b_q − C_q x_v), (M_vv − Σ C_qᵀ D_q⁻¹ C_q) x_v = b_v − Σ C_qᵀ
D_q⁻¹ b_q, the k × k inverses formed once per factorisation and applied as batched products (the chord iteration
that consumes these solves corrects their rounding). Cost O(r k³ + k² r) time and O(r k²) memory per
factorisation, against O((k r)³) and O((k r)²) for a dense LU. It reads nothing of diffrax's internals.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jax.flatten_util import ravel_pytree

_UNROLLED_MAX_K = 10


class AbstractNewton(eqx.Module):
    """The Newton solve of an implicit stage: x = (I − γ J)⁻¹ b with J = ∂f/∂y taken at (t, y).

    - `factor(vf, t, y, gamma, args)`: whatever `solve` needs, from the vector field `vf(t, y, args)`, the point
      and γ > 0 (diffrax's a_ii Δt). Called once per step; its result is not differentiated.
    - `solve(factor, vector)`: x for a right-hand side `vector` with the state's pytree structure.
    - `label`: the name recorded in `Trajectory.solver` (e.g. "LU").
    - `uses_field`: whether `factor` evaluates `vf`. A solve that does not (a closed form in the flow's
      arguments) can be applied member by member to a stack of instances (`FusedKvaerno5(batched=True)`)."""

    label: ClassVar[str]
    uses_field: ClassVar[bool] = True

    @abc.abstractmethod
    def factor(self, vf, t, y, gamma, args) -> Any:
        """The factorisation of I − γ J(t, y)."""

    @abc.abstractmethod
    def solve(self, factor, vector) -> Any:
        """(I − γ J)⁻¹ `vector` from `factor`."""


def check_newton(newton, batched: bool) -> None:
    """The checks a solver that takes a Newton solve makes at construction: `newton` is an `AbstractNewton`, and a
    stack of instances (`batched`) needs one that does not evaluate the field (each member's block is factored on
    its own from its arguments)."""
    if not isinstance(newton, AbstractNewton):
        raise TypeError(f"`newton` must be an AbstractNewton (e.g. DenseNewton()), got {type(newton).__name__}")
    if batched and newton.uses_field:
        raise ValueError(
            f"`batched=True` needs a Newton solve that does not evaluate the field (each member's block is "
            f"factored on its own from its arguments); {type(newton).__name__} does"
        )


class DenseNewton(AbstractNewton):
    """LU of I − γ J on the flattened state, J by forward mode (as lineax materialises diffrax's Jacobian
    operator): any flow, O(m³) per factorisation for a state of m numbers."""

    label: ClassVar[str] = "LU"

    def factor(self, vf, t, y, gamma, args):
        flat, unflatten = ravel_pytree(y)
        jac = jax.jacfwd(lambda z: ravel_pytree(vf(t, unflatten(z), args))[0])(flat)
        return jax.scipy.linalg.lu_factor(jnp.eye(flat.size, dtype=flat.dtype) - gamma * jac)

    def solve(self, factor, vector):
        flat, unflatten = ravel_pytree(vector)
        return unflatten(jax.scipy.linalg.lu_solve(factor, flat))


class _SymmetricNewtonSolver(lx.AbstractLinearSolver):
    """What the structured solvers share: M = I − γJ is real, symmetric (J is a Hessian) and taken as nonsingular."""

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


class ArrowheadSolver(_SymmetricNewtonSolver):
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


class LU(eqx.Module):
    """An LU factorisation P A = L U of a k × k matrix: `lu` holds L (unit lower, below the diagonal) and U,
    `perm` the row permutation (A[perm] = L U), `unrolled` (static) which substitution `lu_solve` uses."""

    lu: jax.Array
    perm: jax.Array
    unrolled: bool = eqx.field(static=True)


def lu_factor(A, unrolled: bool = True) -> LU:
    """LU with partial pivoting of a k × k matrix (S is symmetric but may be indefinite away from a minimum).

    Two programs for one algorithm (LAPACK's unblocked getrf, so the same backward stability):
    - `unrolled=True` and k ≤ `_UNROLLED_MAX_K`: unrolled over k and written with elementwise operations, so that
      under `vmap` (a stack of instances, `linnet._run.stacked`) it is one vectorised computation instead of one
      LAPACK call per instance (measured at N = 256, k = 5: 1.8 ms per batched factorisation with LAPACK);
    - otherwise LAPACK's (`jax.lax.linalg.lu`): one call, and a far smaller program to compile and to
      differentiate (measured for one Rodas5P step at k = 5: 0.41 s against 0.71 s to compile, its gradient
      1.2 s against 2.2 s), which is what a single solve pays first.

    **Returns:** an `LU`."""
    k = A.shape[-1]
    if not unrolled or k > _UNROLLED_MAX_K:
        lu, _, perm = jax.lax.linalg.lu(A)
        return LU(lu, perm, False)
    idx = jnp.arange(k)
    perm = idx
    for i in range(k):
        p = jnp.argmax(jnp.where(idx >= i, jnp.abs(A[:, i]), -1.0))
        hit = idx == p
        row_p, p_p = A[p], perm[p]
        A = jnp.where(hit[:, None], A[i][None, :], A).at[i].set(row_p)
        perm = jnp.where(hit, perm[i], perm).at[i].set(p_p)
        lower = jnp.where(idx > i, A[:, i] / A[i, i], 0.0)
        A = A - jnp.outer(lower, jnp.where(idx > i, A[i], 0.0))
        A = A.at[:, i].set(jnp.where(idx > i, lower, A[:, i]))
    return LU(A, perm, True)


def lu_solve(factor: LU, b):
    """A⁻¹ b from `lu_factor(A)`: forward and back substitution, unrolled or by LAPACK as the factor was made."""
    lu, perm = factor.lu, factor.perm
    y = b[perm]
    if not factor.unrolled:
        y = jax.scipy.linalg.solve_triangular(lu, y, lower=True, unit_diagonal=True)
        return jax.scipy.linalg.solve_triangular(lu, y, lower=False)
    k = lu.shape[-1]
    for i in range(1, k):
        y = y.at[i].add(-(lu[i, :i] @ y[:i]))
    for i in reversed(range(k)):
        y = y.at[i].set((y[i] - lu[i, i + 1 :] @ y[i + 1 :]) / lu[i, i])
    return y
