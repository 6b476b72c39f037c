"""Kvaerno5 as one fused step, so that a step costs close to its arithmetic.

diffrax's `Kvaerno5` runs its seven stages in a checkpointed while loop, and each implicit stage's chord-Newton
iteration in another while loop (optimistix's `root_find`). On CPU every loop iteration and every small kernel
between them costs microseconds, which on small flows is as much as the arithmetic. `FusedKvaerno5` is the same
method with less control flow: the six implicit stages run as one `lax.scan` whose body, one stage with its chord
iterations written out (no loop, no convergence branch), XLA fuses into a few kernels.

What it shares with diffrax's `Kvaerno5` + `VeryChord`, decision for decision:

- the tableau, read from `diffrax.Kvaerno5.tableau` (ESDIRK, explicit first stage, first-same-as-last), its
  error estimate Δt Σⱼ bᵉⱼ fⱼ and its dense output (cubic Hermite between the step's ends);
- each implicit stage solves fᵢ = f(tᵢ, yᵢ + γ Δt fᵢ), γ = a_ii, for fᵢ by the chord iteration from diffrax's
  predictor Σⱼ âᵢⱼ fⱼ, with the Newton matrix I − γ Δt J taken once per step at the second stage's predictor
  (diffrax's `CalculateJacobian.second_stage`) and factored by the `newton` it is given (`AbstractNewton`);
- the convergence test of `VeryChord`: increments of size δ = ‖Δf / (atol + rtol |f|)‖ in the step controller's
  norm; after at least two iterations a stage has converged when δ is at rounding level or δ θ/(1 − θ) < κ
  (θ the contraction rate, κ = 10⁻²), and fails when θ > 2 or a linear solve is not finite;
- a failed stage fails the step: its error estimate is infinite, so the PID controller rejects and shrinks it,
  and the stage returns fᵢ = 0, as `SafeChord` does, so that gradients stay finite.

One difference, on purpose: the number of iterations. `VeryChord` in diffrax 0.7.2 reports failure at its second
iteration whenever its convergence test is not met yet, and optimistix's loop stops on a failure, so every stage
gets exactly two iterations and a stage that needed a third rejects the whole step (a known defect, fixed upstream
after that release: diffrax pull request #754, mirroring optimistix #230 for optimistix issue #221). With at most
three iterations (`root_find_max_steps`, default 3) far fewer steps are rejected; with `root_find_max_steps=2`
this solver takes diffrax's steps exactly, which is how the tests check that it is diffrax's algorithm. A fixed
count is written out, not looped: the verdict is frozen at the first iteration that decides (later iterates of a
converged stage are rounding noise, whose contraction rate means nothing), and a loop for further iterations cost
more compilation (a checkpointed loop, for reverse mode) than the few steps it saved. Timings against diffrax's
own Kvaerno5 are in `benchmarks/RESULTS.md`.

It uses only diffrax's public solver interface. The Newton solve is the method's: `DenseNewton()` (default) for
any flow; the FT flow supplies its closed form (`linnet._methods.ft_jacobian.FTNewton`). Reverse-mode
derivatives go through the unrolled iterations with the factor held constant, so they converge to the implicit
derivative of each stage as its iteration converges.
"""

from __future__ import annotations

from typing import Any, ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from .newton import AbstractNewton, DenseNewton, check_newton

_TABLEAU = dfx.Kvaerno5.tableau
_STAGES = _TABLEAU.num_stages
_ITERATIONS = 3  # chord iterations per stage, written out (see the module docstring)


def _coefficients():
    """The tableau as arrays over the stage buffer (f₀ … f₆): rows of a_ij and of the predictor âᵢⱼ for the six
    implicit stages (zero from column i on), their nodes cᵢ, and the solution and error weights."""
    a_lower, predictor, diagonal = _TABLEAU.a_lower, _TABLEAU.a_predictor, _TABLEAU.a_diagonal
    assert predictor is not None and diagonal is not None  # an implicit tableau has both
    A = np.zeros((_STAGES - 1, _STAGES))
    P = np.zeros((_STAGES - 1, _STAGES))
    for i in range(1, _STAGES):
        A[i - 1, :i] = a_lower[i - 1]
        P[i - 1, :i] = predictor[i - 1]
    return A, P, np.asarray(_TABLEAU.c), np.asarray(_TABLEAU.b_sol), np.asarray(_TABLEAU.b_error)


_COEFFS = _coefficients()
_GAMMA = float(np.asarray(_TABLEAU.a_diagonal)[1])  # the diagonal a_ii = γ, the same for every implicit stage


def _tmap(f, *trees):
    return jax.tree_util.tree_map(f, *trees)


class _Chord(eqx.Module):
    """One stage's chord iteration state, as `VeryChord` keeps it."""

    f: Any
    diffsize: jax.Array
    diffsize_prev: jax.Array
    failed: jax.Array  # a linear solve failed
    steps: jax.Array


class FusedKvaerno5(dfx.AbstractImplicitSolver, dfx.AbstractAdaptiveSolver):
    """Kvaerno5 (5th order, L-stable ESDIRK), its stages one scan with their chord iterations written out, and its
    Newton systems solved by `newton` (see the module docstring). With the FT flow's closed-form solve it is the
    default implicit solver of `fine_tune` (`linnet._methods.ft_flow.default_solver`).

    **Arguments:**

    - `root_finder`: a `diffrax.VeryChord`, read only for its `rtol`, `atol`, `norm` and `kappa`; by default they
      are the step-size controller's (`diffrax.with_stepsize_controller_tols`), as for diffrax's own solvers.
    - `root_find_max_steps` (static): chord iterations per stage, at least 2 (default 3; 2 is diffrax's effective
      count).
    - `newton`: the Newton solve, an `AbstractNewton` (default `DenseNewton()`, a dense LU of I − γΔt J with J
      by forward mode: any flow). A method whose Jacobian has structure supplies its own.
    - `batched` (static): the ODE is a stack of instances (`linnet._run.stacked`): every leaf of the state and of `args`
      has a leading axis, each member's Newton block is factored and solved on its own, and the controller's norm
      (the stack's) decides convergence for the whole stack."""

    def __check_init__(self):
        check_newton(self.newton, self.batched)
        if self.root_find_max_steps < 2:
            raise ValueError(f"`root_find_max_steps` must be at least 2 (the convergence test needs two), got "
                             f"{self.root_find_max_steps}")  # fmt: skip

    root_finder: optx.AbstractRootFinder = dfx.with_stepsize_controller_tols(dfx.VeryChord)()
    root_find_max_steps: int = eqx.field(static=True, default=_ITERATIONS)
    newton: AbstractNewton = DenseNewton()
    batched: bool = eqx.field(static=True, default=False)

    term_structure: ClassVar = dfx.AbstractTerm
    interpolation_cls: ClassVar = dfx.ThirdOrderHermitePolynomialInterpolation

    def order(self, terms):
        del terms
        return 5

    def init(self, terms, t0, t1, y0, args):
        del t1
        return terms.vf(t0, y0, args)  # first same as last: the state carries f(t0, y0)

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        dt = t1 - t0
        f0 = solver_state
        if made_jump is not False:
            f0 = jax.lax.cond(made_jump, lambda: terms.vf(t0, y0, args), lambda: f0)
        h = _GAMMA * dt
        dtype = jax.tree_util.tree_leaves(y0)[0].dtype
        A, P, C, b_sol, b_err = (jnp.asarray(x, dtype) for x in _COEFFS)
        factor_fn, solve_of = self.newton.factor, self.newton.solve
        t_jac = t0 + C[0] * dt  # the second stage's node: the Newton matrix is taken there

        def factor_of(y, a):
            return factor_fn(terms.vf, t_jac, y, h, a)

        if self.batched:
            factor_of, solve_of = jax.vmap(factor_of), jax.vmap(solve_of)

        def combine(row, buf):  # Σⱼ row[j] fⱼ over the stage buffer
            return _tmap(lambda x: jnp.tensordot(row, x, axes=1), buf)

        # the Newton matrix is taken once per step, at the second stage's predictor (the first implicit stage's)
        theta = _tmap(lambda a, f: a + dt * A[0, 0] * f + h * P[0, 0] * f, y0, f0)
        factor = jax.lax.stop_gradient(factor_of(theta, args))

        # the six implicit stages as one scan: its body (one stage, three chord iterations) is traced and compiled
        # once. Unrolling the stages too made programs, reverse-mode ones most, twice as slow to compile (measured:
        # tests/test_gradients.py 211 s against 104 s with the scan) for at most 10 % less time per step
        def stage(carry, xs):
            buf, failed = carry
            a_row, p_row, c_i, index = xs
            y_partial = _tmap(lambda y, inc: y + dt * inc, y0, combine(a_row, buf))
            f_i, ok = self._stage(terms, t0 + c_i * dt, y_partial, combine(p_row, buf), h, args, factor, solve_of)
            buf = _tmap(lambda b, f: b.at[index].set(f), buf, f_i)
            return (buf, failed | ~ok), None

        buf = _tmap(lambda f: jnp.zeros((_STAGES, *f.shape), f.dtype).at[0].set(f), f0)
        stages = (A, P, C, jnp.arange(1, _STAGES))
        (buf, failed), _ = jax.lax.scan(stage, (buf, jnp.asarray(False)), stages)
        y1 = _tmap(lambda y, inc: y + dt * inc, y0, combine(b_sol, buf))
        y_error = _tmap(lambda e: jnp.where(failed, jnp.inf, dt * e), combine(b_err, buf))  # rejected and shrunk
        f1 = _tmap(lambda b: b[-1], buf)
        dense_info = dict(y0=y0, y1=y1, k0=_tmap(lambda f: dt * f, f0), k1=_tmap(lambda f: dt * f, f1))
        return y1, y_error, dense_info, f1, dfx.RESULTS.successful

    def _stage(self, terms, t_i, y_partial, f_pred, h, args, factor, solve_of):
        """The chord iteration for fᵢ − f(tᵢ, y_partial + h fᵢ) = 0 from `f_pred`; **returns** (fᵢ, converged)."""
        root = self.root_finder
        rtol, atol, norm, kappa = root.rtol, root.atol, root.norm, root.kappa  # pyright: ignore[reportAttributeAccessIssue]

        def iterate(st: _Chord) -> _Chord:
            y = _tmap(lambda a, b: a + h * b, y_partial, st.f)
            residual = _tmap(jnp.subtract, st.f, terms.vf(t_i, y, args))
            diff = solve_of(factor, residual)
            new_f = _tmap(jnp.subtract, st.f, diff)
            scaled = _tmap(lambda d, f: d / (atol + rtol * jnp.abs(f)), diff, new_f)
            size = jnp.asarray(norm(scaled), st.diffsize.dtype)
            # a non-finite solve makes the norm non-finite (NaN or inf propagate through it), so testing the one
            # scalar replaces a pass over the state (measured on a stack of 32: a fifth of an iteration's time)
            finite = jnp.isfinite(size)
            return _Chord(new_f, size, st.diffsize, st.failed | ~finite, st.steps + 1)

        def verdict(st: _Chord):
            # VeryChord's test after at least two iterations: (terminate, converged)
            rate = st.diffsize / st.diffsize_prev
            small = st.diffsize < 10.0 ** (2 - jnp.finfo(st.diffsize.dtype).precision)
            diverged = ~jnp.isfinite(rate) | (rate > 2)
            left = st.diffsize * rate / (1 - rate)  # the error left, if the contraction rate stays
            converged = (left > 0) & (left < kappa)
            done = (st.steps >= 2) & (small | diverged | converged)
            return st.failed | done, ~st.failed & (small | converged)

        dtype = jax.tree_util.tree_leaves(f_pred)[0].dtype
        st = _Chord(f_pred, jnp.asarray(jnp.inf, dtype), jnp.asarray(1.0, dtype), jnp.asarray(False), jnp.asarray(0))
        done, ok = jnp.asarray(False), jnp.asarray(False)
        for i in range(self.root_find_max_steps):
            # the verdict is sticky: once an iterate has converged, later ones are rounding noise whose contraction
            # rate means nothing (a fixed count of four judged by its last rate failed most steps: measured), so
            # the iterate and verdict are frozen at the first decision. Convergence is decided from the second
            # iteration on, and a failure is final whatever follows, so freezing is needed from the third only
            new = iterate(st)
            st = _tmap(lambda a, b, done=done: jnp.where(done, a, b), st, new) if i >= 2 else new
            now_done, now_ok = verdict(st)
            ok = jnp.where(done, ok, now_ok)
            done = done | now_done
        f_i = _tmap(lambda x: jnp.where(ok, x, jnp.zeros_like(x)), st.f)  # as SafeChord: a failed stage returns 0
        return f_i, ok
