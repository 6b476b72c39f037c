"""Training methods of the paper: linear probing (LP), fine-tuning (FT) and LP-FT, each giving a Trajectory."""

from __future__ import annotations

import dataclasses
from functools import partial

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np

from . import _flow
from ._errors import id_error_of_predictor, ood_error_of_predictor, train_loss_of_predictor
from ._problem import Problem
from ._validate import as_float_array, check_shape, check_times, check_tolerance, is_traced


class ConvergenceError(RuntimeError):
    """The ODE solver stopped before reaching the requested time (step budget spent or a failed step)."""


@partial(
    jax.tree_util.register_dataclass,
    data_fields=["times", "v", "train_loss", "id_error", "ood_error", "B0", "basis", "dG", "num_steps"],
    meta_fields=["method"],
)
@dataclasses.dataclass(frozen=True)
class Trajectory:
    """A training trajectory sampled at `times` (an immutable pytree).

    **Fields:**

    - `times` (T,): the requested times; `inf` stands for the limit t → ∞.
    - `v` (T, k): the head.
    - `B` (T, k, d): the features — a property, rebuilt on access as B0 + ΔG Vᵀ (features only move inside
      S = rowspace(X), so only the (T, k, r) coefficients `dG` on the eigenbasis `basis` (d, r) are stored).
      Methods whose features also move outside S (LoRA, deeper extractors) extend `basis` by orthonormal
      directions of S⊥ (then r > rank X).
    - `train_loss`, `id_error`, `ood_error` (T,): L̂, L_id and L_ood at each time.
    - `num_steps`: ODE steps taken (0 for the closed-form LP).
    - `method`: "lp", "ft", "lpft", or a method beyond the paper ("two_lr", "l2_sp", "features_only", "gd",
      "lora", "deep").
    """

    times: jax.Array
    v: jax.Array
    train_loss: jax.Array
    id_error: jax.Array
    ood_error: jax.Array
    B0: jax.Array
    basis: jax.Array
    dG: jax.Array
    num_steps: jax.Array
    method: str = "ft"

    @property
    def B(self) -> jax.Array:
        """Features B(t) = B0 + ΔG(t) Vᵀ, shape (T, k, d)."""
        return self.B0 + jnp.einsum("tkr,dr->tkd", self.dG, self.basis)

    @property
    def predictor(self) -> jax.Array:
        """w(t) = B(t)ᵀ v(t), shape (T, d), computed without forming B."""
        return _predictor(self.B0, self.basis, self.v, self.dG)

    @property
    def feature_change(self) -> jax.Array:
        """‖B(t) − B0‖_F, shape (T,) (all of it lies in S)."""
        return jnp.sqrt(jnp.sum(self.dG**2, axis=(1, 2)))

    def at(self, i: int) -> tuple[jax.Array, jax.Array]:
        """(v, B) at saved index `i`."""
        return self.v[i], self.B0 + self.dG[i] @ self.basis.T

    def __repr__(self) -> str:
        T, k = self.v.shape
        return f"Trajectory(method={self.method!r}, T={T}, k={k}, d={self.B0.shape[1]})"


def _predictor(B0, V, v, dG):
    return v @ B0 + jnp.einsum("tkr,tk,dr->td", dG, v, V)


def _make_trajectory(problem: Problem, times, v, dG, num_steps, method, basis=None) -> Trajectory:
    basis = problem._V if basis is None else basis
    w = _predictor(problem.B0, basis, v, dG)
    return Trajectory(
        times=jnp.asarray(times, dtype=v.dtype),
        v=v,
        train_loss=train_loss_of_predictor(problem, w),
        id_error=id_error_of_predictor(problem, w),
        ood_error=ood_error_of_predictor(problem, w),
        B0=problem.B0,
        basis=basis,
        dG=dG,
        num_steps=jnp.asarray(num_steps),
        method=method,
    )


def _check_head(problem: Problem, v0) -> jax.Array:
    v0 = as_float_array(v0, "v0", 1)
    check_shape(v0, "v0", (problem.k,), "one entry per feature, k = problem.k")
    return v0.astype(problem.X.dtype)


# ------------------------------------------------------------------------------------------------------
# Linear probing: an exact solution of a linear ODE
# ------------------------------------------------------------------------------------------------------


def _lp_spectral(problem: Problem, v0):
    """Eigen-solution of LP: with F = X B0ᵀ, FᵀF = Q diag(λ) Qᵀ, v(t) = v∞ + Q e^{−2λt} Qᵀ (v0 − v∞).

    v∞ keeps v0's component in null(F) and adds the minimum-norm least-squares solution F⁺ y (THEORY.md fact 3).
    Returns (Q, λ, mask of λ > 0, v∞).
    """
    G0 = problem.B0 @ problem._V  # F = U diag(s) G0ᵀ, so FᵀF = G0 diag(s²) G0ᵀ and Fᵀy = G0 (s ⊙ Uᵀy)
    M = (G0 * problem._s**2) @ G0.T
    lam, Q = jnp.linalg.eigh((M + M.T) / 2)
    pos = lam > lam.shape[0] * jnp.finfo(lam.dtype).eps * jnp.max(jnp.abs(lam), initial=0.0)
    Fty = G0 @ (problem._s * problem._Uty)
    c0 = Q.T @ v0
    c_inf = jnp.where(pos, (Q.T @ Fty) / jnp.where(pos, lam, 1.0), c0)
    return Q, lam, pos, c0, c_inf


def lp_limit_head(problem: Problem, v0: jax.Array) -> jax.Array:
    """v_lp^∞: the limit of linear probing from v0 (null(F)-component of v0 plus F⁺ y)."""
    Q, _, _, _, c_inf = _lp_spectral(problem, v0)
    return Q @ c_inf


@jax.jit
def _lp_heads(problem: Problem, v0, times):
    Q, lam, pos, c0, c_inf = _lp_spectral(problem, v0)
    # t = inf gives exp(-inf) = 0 on the positive eigenvalues; null directions have c0 = c_inf exactly
    decay = jnp.where(pos[None, :], jnp.exp(-2.0 * jnp.outer(times, jnp.where(pos, lam, 0.0))), 0.0)
    return (c_inf + decay * (c0 - c_inf)) @ Q.T


def linear_probe(problem: Problem, v0: jax.Array, times) -> Trajectory:
    """Linear probing: B frozen at B0, head by gradient flow ∂_t v = −∇_v L̂(v, B0), solved exactly.

    The flow is linear, ∂_t v = −2 Fᵀ(F v − y) with F = X B0ᵀ, so v(t) = v∞ + exp(−2FᵀF t)(v0 − v∞) with v∞
    as in THEORY.md fact 3; it is evaluated by an eigendecomposition of the k × k matrix FᵀF (no ODE solver).

    **Arguments:**

    - `problem`: a `Problem`.
    - `v0`: (k,) initial head.
    - `times`: (T,) strictly increasing times ≥ 0, in the paper's units (loss ‖XBᵀv − y‖²); `inf` as the last
      entry gives the limit v_lp^∞ exactly.

    **Returns:** a `Trajectory` with B(t) = B0.
    """
    v0 = _check_head(problem, v0)
    check_times(times)
    t = jnp.asarray(np.asarray(times, dtype=np.float64), dtype=v0.dtype)
    v = _lp_heads(problem, v0, t)
    dG = jnp.zeros((t.shape[0], problem.k, problem._V.shape[1]), v0.dtype)
    return _make_trajectory(problem, t, v, dG, 0, "lp")


# ------------------------------------------------------------------------------------------------------
# Fine-tuning: gradient flow on (v, B) in the ID eigenbasis
# ------------------------------------------------------------------------------------------------------


def _fine_tune(problem: Problem, v0, times, *, rtol, atol, max_steps, solver, method, params=None) -> Trajectory:
    finite, to_inf = check_times(times)
    rtol = check_tolerance(rtol, "rtol")
    atol = check_tolerance(atol, "atol")
    if int(max_steps) != max_steps or max_steps < 1:
        raise ValueError(f"`max_steps` must be a positive integer, got {max_steps}")
    dtype = v0.dtype
    G0 = problem.B0 @ problem._V

    def solve(solver, max_steps=int(max_steps)):
        return _flow.solve_reduced(
            problem._s,
            problem._Uty,
            v0,
            G0,
            jnp.asarray(finite, dtype),
            to_inf=to_inf,
            rtol=rtol,
            atol=atol,
            max_steps=max_steps,
            solver=solver,
            params=None if params is None else jnp.asarray(params, dtype),
        )

    ok = (dfx.RESULTS.successful, dfx.RESULTS.event_occurred)
    done = False
    if solver is None and params is None and not is_traced(problem._s) and _flow.explicit_is_enough(problem._s):
        # not stiff: the explicit method is far cheaper per step (~100 steps to t = ∞ on Gaussian inputs). It gets
        # a small step budget before the implicit method takes over, so that a misjudged case costs little.
        v, G, result, num_steps, t_stop = solve(_flow.explicit_solver(), min(int(max_steps), _flow.EXPLICIT_STEPS))
        done = result in ok
    if not done:
        v, G, result, num_steps, t_stop = solve(solver)
    if result not in ok:
        target = "a steady state (t = inf)" if to_inf else f"t = {finite[-1]:g}"
        reached = (
            f"the last requested time reached was t = {float(t_stop):.6g}"
            if np.isfinite(t_stop)
            else ("no requested time was reached")
        )
        raise ConvergenceError(
            f"{method} gradient flow did not reach {target} within {int(num_steps)} steps ({result}); {reached}. "
            f"Increase `max_steps` (now {max_steps}) or loosen `rtol`/`atol`."
        )
    return _make_trajectory(problem, np.asarray(times, dtype=np.float64), v, G - G0, num_steps, method)


def fine_tune(
    problem: Problem,
    v0: jax.Array,
    times,
    *,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
    solver: dfx.AbstractSolver | None = None,
) -> Trajectory:
    """Fine-tuning: gradient flow ∂_t v = −∇_v L̂, ∂_t B = −∇_B L̂ from (v0, B0), L̂ = ‖XBᵀv − y‖².

    Any head is a fixed head here: zeros, a user vector, or `random_head(key, k, scale)`. The flow is
    integrated exactly in the coordinates where it moves (B − B0 has rows in S = rowspace(X)) with an adaptive
    PID step: diffrax's Kvaerno5 when the flow is stiff, Tsit5 when it is not (see `linnet._flow`).

    **Arguments:**

    - `problem`: a `Problem`.
    - `v0`: (k,) initial head.
    - `times`: (T,) strictly increasing times ≥ 0 in the paper's units. A last entry `inf` is the limit: the
      solve runs until the steady state is reached to tolerance, i.e. the remaining distance to the limit
      (estimated to first order, see `linnet._flow`) is below `atol + rtol ‖θ‖`, θ = (v, B). Finite times after
      that stop get the steady state.
    - `rtol`, `atol`: tolerances of the step controller and of the steady-state test. In float32 use about
      1e-4 for both: tighter values sit below the rounding noise of stiff problems, and the accuracy of the limit
      is then about cond(X)² · 6e-8 (measured in `benchmarks/RESULTS.md`).
    - `max_steps`: step budget; `ConvergenceError` is raised (never a silent result) if it runs out.
    - `solver`: any diffrax ODE solver. Default (None): when the flow is not stiff (cond(X)² ≤ 100, e.g. Gaussian
      inputs with n ≪ d) the explicit `diffrax.Tsit5()`, which is 10–30× cheaper per solve there, falling back to
      the implicit method if it runs out of steps; otherwise diffrax's Kvaerno5 with `ArrowheadSolver`.

    **Returns:** a `Trajectory`.
    """
    v0 = _check_head(problem, v0)
    return _fine_tune(problem, v0, times, rtol=rtol, atol=atol, max_steps=max_steps, solver=solver, method="ft")


def lp_ft(
    problem: Problem,
    v0: jax.Array,
    times,
    *,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
    solver: dfx.AbstractSolver | None = None,
) -> Trajectory:
    """LP-FT: linear probing from v0 to its limit v_lp^∞ (exact), then fine-tuning from (v_lp^∞, B0).

    `times` count from the start of the FT phase (time 0 is (v_lp^∞, B0)). Other arguments as `fine_tune`.
    """
    v0 = _check_head(problem, v0)
    v_lp = lp_limit_head(problem, v0)
    return _fine_tune(problem, v_lp, times, rtol=rtol, atol=atol, max_steps=max_steps, solver=solver, method="lpft")
