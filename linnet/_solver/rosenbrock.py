"""Rodas5P, a linearly implicit (Rosenbrock–Wanner) method: one factorisation and eight linear solves per step, no
Newton iterations.

An ESDIRK method (Kvaerno5, `linnet._solver.fused`) solves a nonlinear system per implicit stage by chord
iterations, each a field evaluation and a linear solve, and tests their convergence. A Rosenbrock method solves one
linear system per stage with the exact Jacobian J = ∂f/∂y at the step's start, in the form of Hairer & Wanner
(Solving ODEs II, §IV.7, eq. (7.25)): with W = I/(γΔt) − J,

    W uᵢ = f(t₀ + αᵢΔt, y₀ + Σⱼ<ᵢ aᵢⱼ uⱼ) + Σⱼ<ᵢ (cᵢⱼ/Δt) uⱼ + dᵢ Δt ∂f/∂t,      y₁ = y₀ + Σᵢ mᵢ uᵢ.

So a step has a fixed operation count: one factorisation, eight field evaluations and eight solves, against one
factorisation and eighteen of each for Kvaerno5 with three chord iterations per stage; no convergence test, no
rejected step for a stage that did not converge. The price is that the method's order needs the exact Jacobian:
the Newton solve (`linnet._solver.newton.AbstractNewton`) must factor I − γΔt J exactly (the FT flow's closed
form does; `DenseNewton` takes J by forward mode), and reverse mode differentiates through the factorisation.

Coefficients: Rodas5P (G. Steinebach, "Construction of Rosenbrock–Wanner method Rodas5P and numerical benchmarks
within the Julia Differential Equations package", BIT Numer. Math. 63, 27, 2023), order 5 with an embedded order-4
solution, stiffly accurate and L-stable. Its last three stages are the stiffly accurate construction: stage 6 is
evaluated at ŷ = y₀ + Σⱼ≤₅ a₆ⱼuⱼ (already a solution at t₁), stages 7 and 8 at ŷ + u₆ and ŷ + u₆ + u₇; the
order-4 solution is ŷ + u₆ + u₇ and the order-5 one y₁ = ŷ + u₆ + u₇ + u₈ (m = (a₆₁ … a₆₅, 1, 1, 1)), so the error
estimate is u₈. `tests/test_rosenbrock.py` checks the order against a tight reference, the stability function
against exp(z) and the coefficients' stiffly accurate structure.
"""

from __future__ import annotations

from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .newton import AbstractNewton, DenseNewton, check_newton

_GAMMA = 0.21193756319429014
# aᵢⱼ of stages 2 … 6 (rows; stage 1 is at y₀); stages 7 and 8 continue from stage 6's point (see the docstring)
_A = (
    (3.0,),
    (2.849394379747939, 0.45842242204463923),
    (-6.954028509809101, 2.489845061869568, -10.358996098473584),
    (2.8029986275628964, 0.5072464736228206, -0.3988312541770524, -0.04721187230404641),
    (-7.502846399306121, 2.561846144803919, -11.627539656261098, -0.18268767659942256, 0.030198172008377946),
)
# cᵢⱼ of stages 2 … 8
_C = (
    (-14.155112264123755,),
    (-17.97296035885952, -2.859693295451294),
    (147.12150275711716, -1.41221402718213, 71.68940251302358),
    (165.43517024871676, -0.4592823456491126, 42.90938336958603, -5.961986721573306),
    (24.854864614690072, -3.0009227002832186, 47.4931110020768, 5.5814197821558125, -0.6610691825249471),
    (30.91273214028599, -3.1208243349937974, 77.79954646070892, 34.28646028294783, -19.097331116725623,
     -28.087943162872662),
    (37.80277123390563, -3.2571969029072276, 112.26918849496327, 66.9347231244047, -40.06618937091002,
     -54.66780262877968, -9.48861652309627),
)  # fmt: skip
# nodes αᵢ of stages 1 … 8 and the time-derivative weights dᵢ (zero from stage 6 on)
_ALPHA = (0.0, 0.6358126895828704, 0.4095798393397535, 0.9769306725060716, 0.4288403609558664, 1.0, 1.0, 1.0)
_D = (0.21193756319429014, -0.42387512638858027, -0.3384627126235924, 1.8046452872882734, 2.325825639765069, 0, 0, 0)
_STAGES = 8


def tableau():
    """Rodas5P in the form y₁ = y₀ + Σ mᵢ uᵢ: (γ, a (8, 8), c (8, 8), α (8,), d (8,), m (8,), m̂ (8,)), NumPy
    float64, a and c strictly lower triangular, m̂ the embedded (order 4) weights. For the tests' order
    conditions; the step uses the same numbers."""
    a = np.zeros((_STAGES, _STAGES))
    c = np.zeros((_STAGES, _STAGES))
    for i, row in enumerate(_A, start=1):
        a[i, : len(row)] = row
    a[6, :6] = [*_A[-1], 1.0]
    a[7, :7] = [*_A[-1], 1.0, 1.0]
    for i, row in enumerate(_C, start=1):
        c[i, : len(row)] = row
    m = np.array([*_A[-1], 1.0, 1.0, 1.0])
    m_hat = np.array([*_A[-1], 1.0, 1.0, 0.0])
    return _GAMMA, a, c, np.array(_ALPHA), np.array(_D, float), m, m_hat


_TABLEAU = tableau()


def _tmap(f, *trees):
    return jax.tree_util.tree_map(f, *trees)


class Rodas5P(dfx.AbstractAdaptiveSolver):
    """Rodas5P (Rosenbrock–Wanner, 5th order, embedded 4th, stiffly accurate, L-stable) with the exact Jacobian's
    Newton matrix I − γΔt J factored once per step by `newton` (see the module docstring).

    **Arguments:**

    - `newton`: an `AbstractNewton` whose factorisation is exact (default `DenseNewton()`: J by forward mode, any
      flow). The FT family's closed form is `linnet._methods.ft_jacobian.FTNewton`.
    - `batched` (static): the ODE is a stack of instances (`linnet._run.stacked`): every leaf of the state and of
      `args` has a leading axis and each member's Newton block is factored and solved on its own."""

    newton: AbstractNewton = DenseNewton()
    batched: bool = eqx.field(static=True, default=False)

    term_structure: ClassVar = dfx.AbstractTerm
    # saved times are stepped to (`linnet._solver.integrate`) and the steady-state event is boolean (it stops at a
    # step's end), so the dense output is never read between steps: linear interpolation saves a field evaluation
    interpolation_cls: ClassVar = dfx.LocalLinearInterpolation

    def __check_init__(self):
        check_newton(self.newton, self.batched)

    def order(self, terms):
        del terms
        return 5

    def init(self, terms, t0, t1, y0, args):
        del terms, t0, t1, y0, args
        return None

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        dt = t1 - t0
        dtype = jax.tree_util.tree_leaves(y0)[0].dtype
        h = _GAMMA * dt  # W = (I − h J)/h
        # 1/Δt with a zero step allowed: under `vmap` a member that has reached t1 still runs (masked) steps of length
        # 0, and reverse mode multiplies their zero cotangents by the partial derivatives of cᵢⱼ uⱼ/Δt: both the
        # value and its derivative must stay finite there (a NaN times zero is NaN)
        nonzero = dt != 0
        inv_dt = jnp.where(nonzero, 1.0 / jnp.where(nonzero, dt, 1.0), 0.0)
        factor_of, solve_of = self.newton.factor, self.newton.solve

        def factor_one(y, a):
            return factor_of(terms.vf, t0, y, h, a)

        if self.batched:
            factor_one, solve_of = jax.vmap(factor_one), jax.vmap(solve_of)
        factor = factor_one(y0, args)
        # ∂f/∂t at (t₀, y₀), by forward mode in t: zero for the autonomous flows here, and XLA removes it then
        _, f_t = jax.jvp(lambda t: terms.vf(t, y0, args), (t0,), (jnp.ones_like(t0),))

        _, a, c, alpha, d, m, _ = (jnp.asarray(x, dtype) for x in _TABLEAU)

        def combine(row, buf):  # Σⱼ row[j] uⱼ over the stage buffer
            # an elementwise sum of its eight slices, not a dot over the stage axis: under vmap the buffer is
            # (members, 8, …) and the dot transposed it every stage (a vmapped solve over 32 heads: 0.43 → 0.27 s)
            return _tmap(lambda x: sum(row[j] * x[j] for j in range(_STAGES)), buf)

        # the eight stages as one scan: its body (one field evaluation, one solve) is traced and compiled once
        def stage(buf, xs):
            a_row, c_row, alpha_i, d_i, index = xs
            point = _tmap(jnp.add, y0, combine(a_row, buf))
            f = terms.vf(t0 + alpha_i * dt, point, args)
            rhs = _tmap(lambda fi, cu, ft: h * (fi + cu * inv_dt + d_i * dt * ft), f, combine(c_row, buf), f_t)
            u = solve_of(factor, rhs)
            return _tmap(lambda b, x: b.at[index].set(x), buf, u), None

        buf = _tmap(lambda y: jnp.zeros((_STAGES, *y.shape), y.dtype), y0)
        buf, _ = jax.lax.scan(stage, buf, (a, c, alpha, d, jnp.arange(_STAGES)))
        y1 = _tmap(jnp.add, y0, combine(m, buf))
        # a step that blew up (a non-finite stage) gets an infinite error estimate, so that the controller rejects
        # it and shrinks the step, as for a failed implicit stage; a NaN estimate would not shrink it
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(y1)]))
        y_error = _tmap(lambda b: jnp.where(finite, b[-1], jnp.inf), buf)
        dense_info = dict(y0=y0, y1=y1)
        return y1, y_error, dense_info, None, dfx.RESULTS.successful
