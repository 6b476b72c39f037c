"""Every read of diffrax's internals, in one module, with the check that the installed diffrax still lays them
out as read.

diffrax's implicit Runge–Kutta stages solve fᵢ − f(tᵢ, yᵢ + a_ii Δt fᵢ) = 0 for fᵢ with a root finder that
receives the relation's arguments `(stage, a_ii, f, prod, tᵢ, yᵢ, args, Δt)` (a private layout). `StructuredChord`
reads the linearisation point θ = yᵢ + a_ii Δt fᵢ and γ = a_ii Δt from it, so that a method's own Newton solve
(`AbstractNewton`) can factor I − γ J in its structured form inside diffrax's own solvers. `traced_layout_check`
traces one such solve on a toy flow: `layout_ok()` runs it once per process on every diffrax version (never
decided from a version string), and a solver built on the layout is refused when it fails.
"""

from __future__ import annotations

import functools
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optimistix as optx

from .newton import AbstractNewton, _SymmetricNewtonSolver


class FactoredSolver(_SymmetricNewtonSolver):
    """lineax solver that applies a Newton factorisation made elsewhere: `init(operator, options)` takes it from
    `options["factor"]` (put there by `StructuredChord`), and `compute` calls `newton.solve`. Without it, `init`
    returns None (the placeholder `StructuredChord` replaces)."""

    newton: AbstractNewton

    def init(self, operator, options: dict[str, Any]):
        del operator
        return options.get("factor")

    def compute(self, state, vector, options: dict[str, Any]):
        del options
        x = self.newton.solve(state, vector)
        # a diverging Newton iteration feeds inf/NaN: report failure so that the step is rejected and shrunk
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(x)]))
        result = lx.RESULTS.where(finite, lx.RESULTS.successful, lx.RESULTS.singular)
        return jax.tree_util.tree_map(lambda a: jnp.where(finite, a, 0.0), x), result, {}


class SafeChord(dfx.VeryChord):
    """diffrax's `VeryChord`, except that a failed root is returned as 0 (see `postprocess`): what the default
    solver uses, so that `jax.grad` through a solve with rejected steps stays finite."""

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        # A stage whose Newton iteration failed (its step is then rejected and shrunk) may end at inf/NaN or far
        # out. Its value is discarded, but `jax.grad` still differentiates it: optimistix takes the root's implicit
        # derivative with a throwing dense solve of the relation's Jacobian there, and a non-finite one raised
        # (measured: grad of FT at t = ∞ on d = 500, k = 5, n = 100 failed with diffrax's own VeryChord). Report
        # the failure as before, but return fᵢ = 0 (the stage at yᵢ), where everything is finite.
        y, aux, stats = super().postprocess(fn, y, aux, args, options, state, tags, result)
        ok = result == optx.RESULTS.successful
        return jax.tree_util.tree_map(lambda a: jnp.where(ok, a, jnp.zeros_like(a)), y), aux, stats


class StructuredChord(SafeChord):
    """diffrax's `VeryChord` whose Newton matrix is factored by a method's own `AbstractNewton` at the
    linearisation point, instead of from operator products: `StructuredChord(linear_solver=FactoredSolver(newton))`.

    The root finder receives diffrax's implicit-stage arguments `(stage, a_ii, f, prod, tᵢ, yᵢ, args, Δt)`; the
    Jacobian is taken at θ = yᵢ + a_ii Δt fᵢ with γ = a_ii Δt. If that layout changes, `init` raises a `TypeError`
    naming it rather than solve a wrong system (and `layout_ok()` turns false)."""

    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        state = super().init(fn, y, args, options, f_struct, aux_struct, tags)
        if "init_state" in options:
            return state
        linear = self.linear_solver  # pyright: ignore[reportAttributeAccessIssue]
        if not isinstance(linear, FactoredSolver):
            raise TypeError(f"StructuredChord needs linear_solver=FactoredSolver(newton), got {type(linear).__name__}")
        if not (isinstance(args, tuple) and len(args) == 8):
            raise TypeError(
                "StructuredChord expects diffrax's implicit-stage arguments (stage, diagonal, vf, prod, t, y_partial,"
                f" args, control); got {type(args).__name__} of length {len(args) if isinstance(args, tuple) else '?'}"
                " (a diffrax change?). Use ArrowheadSolver through diffrax.VeryChord instead."
            )
        _, diagonal, vf, prod, t, y_partial, ode_args, control = args
        theta = jax.tree_util.tree_map(lambda a, b: a + diagonal * b, y_partial, prod(y, control))
        gamma = diagonal * control
        factor = linear.newton.factor(vf, t, theta, gamma, ode_args)
        factor = jax.lax.stop_gradient(factor)  # as diffrax does for the linear solver's state
        return eqx.tree_at(lambda st: st.linear_state[1], state, factor, is_leaf=lambda x: x is None)


def structured_kvaerno5(newton: AbstractNewton) -> dfx.Kvaerno5:
    """diffrax's own Kvaerno5 whose Newton systems are solved by `newton` (through `StructuredChord`); no check."""
    root_finder = dfx.with_stepsize_controller_tols(StructuredChord)(linear_solver=FactoredSolver(newton))
    return dfx.Kvaerno5(root_finder=root_finder)


class _DecayNewton(AbstractNewton):
    """(1 + γ)⁻¹: the Newton solve of y' = −y, written from γ alone (the layout check's probe)."""

    label = "decay"
    uses_field = False

    def factor(self, vf, t, y, gamma, args):
        del vf, t, y, args
        return 1.0 + gamma

    def solve(self, factor, vector):
        return vector / factor


def traced_layout_check() -> bool:
    """Solve y' = −y, y(0) = 1 to t = 1 with `structured_kvaerno5` and compare with e⁻¹ (to 1e-6): false if
    `StructuredChord` cannot read the installed diffrax's stage arguments or reads the wrong γ (about 1 s)."""
    solve = functools.partial(
        dfx.diffeqsolve, dfx.ODETerm(lambda t, y, a: -y), structured_kvaerno5(_DecayNewton()), 0.0, 1.0, 0.1,
        stepsize_controller=dfx.PIDController(rtol=1e-9, atol=1e-9), throw=False,
    )  # fmt: skip
    try:
        sol = solve(jnp.ones(()))  # the default float dtype
    except TypeError:
        return False
    ys = sol.ys
    assert ys is not None
    return bool(sol.result == dfx.RESULTS.successful) and abs(float(ys[-1]) - float(jnp.exp(-1.0))) < 1e-5


@functools.cache
def layout_ok() -> bool:
    """Whether `structured_kvaerno5` works with the installed diffrax: `traced_layout_check()` once per process,
    on every diffrax version."""
    return traced_layout_check()


def structured_solver(newton: AbstractNewton) -> dfx.Kvaerno5:
    """diffrax's Kvaerno5 with `newton`'s Newton solve inside its own stage and chord loops; a `RuntimeError` if
    `layout_ok()` fails on the installed diffrax."""
    if not layout_ok():
        raise RuntimeError(
            f"a structured solver inside diffrax's Kvaerno5 reads diffrax's layout of an implicit stage's arguments, "
            f"and diffrax {dfx.__version__} does not pass them as it expects; use "
            "linnet._methods.ft_flow.arrowhead_solver() (the same method through operator products) or the default "
            "solver instead"
        )
    return structured_kvaerno5(newton)


__all__ = ["FactoredSolver", "SafeChord", "StructuredChord", "layout_ok", "structured_solver"]
