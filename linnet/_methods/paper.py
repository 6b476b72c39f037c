"""The paper's methods — linear probing (LP), fine-tuning (FT) and LP-FT — declared in the registry, and their
public functions. Each public function is `linnet.simulate` with the method's name."""

from __future__ import annotations

import diffrax as dfx
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from .._closed_forms import lp_limit_head, lp_path
from .._problem import Problem
from .._registry import ClosedFormMethod, FlowMethod, Param, register
from .._run.simulate import simulate
from .._trajectory import Trajectory
from .._validate import is_traced
from . import ft_flow as _flow

# ------------------------------------------------------------------------------------------------------
# The generalised FT flow (η_v, η_B, λ_v, λ_B) shared by ft, lpft, two_lr and l2_sp: one set of functions
# ------------------------------------------------------------------------------------------------------

ETA = (
    Param("eta_v", 1.0, positive=True, doc="head learning rate η_v"),
    Param("eta_B", 1.0, positive=True, doc="feature learning rate η_B"),
)
LAM = (
    Param("lam_B", 0.0, doc="L2-SP strength λ_B on ‖B − B0‖²_F"),
    Param("lam_v", None, doc="L2-SP strength λ_v on ‖v‖² (default λ_B)"),
)


def _ft_params(p, dtype):
    """(η_v, η_B, λ_v, λ_B) from the parameters `p` (defaults 1, 1, λ_B, 0) as one (4,) array of `dtype`."""
    lam_B = p.get("lam_B", 0.0)
    lam_v = p.get("lam_v") if p.get("lam_v") is not None else lam_B
    values = [p.get("eta_v", 1.0), p.get("eta_B", 1.0), lam_v, lam_B]
    if not is_traced(values):  # a host array: four eager device operations cost more than the solve's set-up
        return np.asarray([np.asarray(x) for x in values], dtype)
    return jnp.stack([jnp.asarray(x, dtype) for x in values])


def ft_program(p, dtype):
    """The generalised FT flow's shared program: FT's, with all four of (η_v, η_B, λ_v, λ_B) as reals."""
    eta_v, eta_B, lam_v, lam_B = _ft_params(p, dtype)
    return "ft", {"eta_v": eta_v, "eta_B": eta_B, "lam_v": lam_v, "lam_B": lam_B}


def ft_init(problem: Problem, v0, p, key):
    """Initial state of the generalised FT flow: (v0/√η_v, G0/√η_B) and its arguments (s, Uᵀy, G0, params)."""
    del key
    y0, args = _flow.initial_state(problem.reduced, v0, _ft_params(p, v0.dtype))
    return y0, args, None


def ft_decode(problem: Problem, ys, args, aux, p):
    """(v, ΔG = G − G0, basis V) from the scaled path."""
    del aux, p
    v, G = _flow.unscale(ys, args)
    red = problem.reduced
    return v, G - red.G0, red.V


def ft_flow(name: str, summary: str, params=(), **kw) -> FlowMethod:
    """A method on the generalised FT flow: its field, steady-state rule, closed-form Newton solve (the default
    solver's), stable first step, the program it shares, the stacked solver and the padding of r."""
    return FlowMethod(
        name=name,
        summary=summary,
        params=params,
        init=ft_init,
        field=_flow.general_field,
        steady=_flow.steady_state,
        decode=ft_decode,
        solver=_flow.default_solver,
        dt0=_flow.explicit_dt0,
        program=ft_program,
        stacked_solver=_flow.stacked_solver,
        batch_solver=_flow.batch_solver,
        batch_order=_flow.batch_order,
        pad=_flow.pad,
        **kw,
    )


register(ClosedFormMethod("lp", "linear probing: B frozen at B0, exact (eigendecomposition of FᵀF)", path=lp_path))
register(ft_flow("ft", "fine-tuning: gradient flow on (v, B)", explicit_ok=lambda p: True))
register(ft_flow("lpft", "LP to its limit, then FT from (v_lp^∞, B0)", lp_head=True, explicit_ok=lambda p: True))

# ------------------------------------------------------------------------------------------------------
# Public functions
# ------------------------------------------------------------------------------------------------------


def linear_probe(
    problem: Problem,
    v0: ArrayLike,
    times,
    *,
    loss: str = "squared",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
    throw: bool = True,
) -> Trajectory:
    """Linear probing: B frozen at B0, head by gradient flow ∂_t v = −∇_v L̂(v, B0).

    Squared loss (default): the flow is linear, ∂_t v = −2 Fᵀ(F v − y) with F = X B0ᵀ, so
    v(t) = v∞ + exp(−2FᵀF t)(v0 − v∞) with v∞ as in `docs/theory.md`, "Methods"; it is evaluated exactly by an
    eigendecomposition of the k × k matrix FᵀF (no ODE solver; `rtol`, `atol`, `max_steps` are unused).

    `loss="logistic"` (labels y ∈ {±1}): logistic regression on the k features F by gradient flow, integrated in
    log time. If the labels are separable in F (`linnet.is_separable(X @ B0.T, y)`), ‖v‖ grows like log t and
    v/‖v‖ converges to the max-margin separator in F (`linnet.max_margin`); otherwise v has a finite limit, and
    `inf` is allowed in `times` (refused, with this reason, when the data are separable).

    **Arguments:**

    - `problem`: a `Problem`.
    - `v0`: (k,) initial head.
    - `times`: (T,) strictly increasing times ≥ 0, in the paper's units (loss ‖XBᵀv − y‖²); `inf` as the last
      entry gives the limit v_lp^∞ exactly.

    **Returns:** a `Trajectory` with B(t) = B0.
    """
    return simulate("lp", problem, v0, times, loss=loss, rtol=rtol, atol=atol, max_steps=max_steps, throw=throw)


def fine_tune(
    problem: Problem,
    v0: ArrayLike,
    times,
    *,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
    solver: dfx.AbstractSolver | None = None,
    loss: str = "squared",
    throw: bool = True,
) -> Trajectory:
    """Fine-tuning: gradient flow ∂_t v = −∇_v L̂, ∂_t B = −∇_B L̂ from (v0, B0), L̂ = ‖XBᵀv − y‖².

    Any head is a fixed head here: zeros, a user vector, or `random_head(key, k, scale)`. The flow is
    integrated exactly in the coordinates where it moves (B − B0 has rows in S = rowspace(X); see
    `docs/theory.md`, "Reduced coordinates") with an adaptive PID step.

    **Arguments:**

    - `problem`: a `Problem`.
    - `v0`: (k,) initial head.
    - `times`: (T,) strictly increasing times ≥ 0 in the paper's units. A last entry `inf` is the limit: the
      solve runs until the steady state is reached to tolerance, i.e. the remaining distance to the limit
      (estimated to first order, see `linnet._methods.ft_flow`) is below `atol + rtol ‖θ‖`, θ = (v, B). Finite times
      after that stop get the steady state.
    - `rtol`, `atol`: tolerances of the step controller and of the steady-state test. In float32 use about
      1e-4 for both: tighter values sit below the rounding noise of stiff problems (a warning says so).
    - `max_steps`: step budget; with `throw=True` a `ConvergenceError` is raised if it runs out.
    - `solver`: any diffrax ODE solver. Default (None): when the flow is not stiff (cond(X)² ≤ 100, decided from
      the concrete data) the explicit `diffrax.Tsit5()`, falling back to the implicit method if it runs out of
      steps; otherwise `Rodas5P` (a Rosenbrock–Wanner method with a closed-form Newton matrix,
      `linnet._solver.rosenbrock`).
      `Trajectory.solver` records which.
    - `loss`: "squared" (default) or "logistic": L̂ = Σ_i log(1 + exp(−y_i vᵀBx_i)) on labels y ∈ {±1}
      (`subspace_shift(..., labels="sign")`), integrated in log time by Kvaerno5 with a dense Newton solve; the
      errors become 0-1 errors (`Trajectory`). There is no t = ∞ (the n ≤ dim S training points are separable):
      ask for large finite times, e.g. `jnp.logspace(0, 6, 13)`.
    - `throw`: raise on failure (default); `False` returns the trajectory with its `result` code.

    Works under `jax.jit`, `jax.vmap` and `jax.grad` (t = ∞ included; see `linnet._solver.integrate`).

    **Returns:** a `Trajectory`.
    """
    return simulate(
        "ft", problem, v0, times, rtol=rtol, atol=atol, max_steps=max_steps, solver=solver, loss=loss, throw=throw
    )


def lp_ft(
    problem: Problem,
    v0: ArrayLike,
    times,
    *,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
    solver: dfx.AbstractSolver | None = None,
    loss: str = "squared",
    lp_time: float | None = None,
    throw: bool = True,
) -> Trajectory:
    """LP-FT: linear probing from v0 to its limit v_lp^∞ (exact), then fine-tuning from (v_lp^∞, B0).

    `times` count from the start of the FT phase (time 0 is (v_lp^∞, B0)). Other arguments as `fine_tune`.

    `loss="logistic"`: LP may have no limit (separable features), so it runs for a finite `lp_time` = T_lp
    (required; 0 is plain FT), then FT from (v_lp(T_lp), B0), both in log time. `lp_time` applies only to the
    logistic loss.
    """
    if loss == "squared":
        if lp_time is not None:
            raise ValueError("`lp_time` applies to loss='logistic' only; squared-loss LP-FT starts from the LP limit")
        extra: dict[str, float] = {}
    else:
        if lp_time is None:
            raise TypeError("lp_ft(loss='logistic') needs `lp_time`, the LP phase's duration (LP may have no limit)")
        extra = {"lp_time": lp_time}
    return simulate(
        "lpft", problem, v0, times, rtol=rtol, atol=atol, max_steps=max_steps, solver=solver, loss=loss,
        throw=throw, **extra,  # pyright: ignore[reportArgumentType]  (lp_time is a method parameter)
    )  # fmt: skip


__all__ = ["fine_tune", "linear_probe", "lp_ft", "lp_limit_head"]
