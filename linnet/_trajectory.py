"""The result of every method: a `Trajectory` pytree, its result codes and the errors raised at the edge."""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import diffrax as dfx
import jax
import jax.numpy as jnp

from ._classification import (
    logistic_loss_of_predictor,
    normalised_margin_of_predictor,
    zero_one_error_of_predictor,
)
from ._config import jit
from ._errors import id_error_of_predictor, ood_error_of_predictor, train_loss_of_predictor
from ._problem import Problem

# diffrax's result codes, used as they are so that `traj.result == diffrax.RESULTS.successful` works. Discrete
# gradient descent reports a blow-up as `RESULTS.nonlinear_divergence`.
RESULTS = dfx.RESULTS


def is_okay(result) -> jax.Array:
    """Whether a result code means success (`successful`, or `event_occurred`: the t = ∞ steady-state stop)."""
    return (result == RESULTS.successful) | (result == RESULTS.event_occurred)


class ConvergenceError(RuntimeError):
    """The ODE solver stopped before reaching the requested time (step budget spent or a failed step)."""


class DivergenceError(ConvergenceError):
    """Gradient descent diverged (its step is beyond the problem's stability limit)."""


@partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "times",
        "v",
        "train_loss",
        "id_error",
        "ood_error",
        "margin",
        "B0",
        "basis",
        "dG",
        "num_steps",
        "result",
        "t_stop",
    ],
    meta_fields=["method", "solver", "loss"],
)
@dataclasses.dataclass(frozen=True)
class Trajectory:
    """A training trajectory sampled at `times` (an immutable pytree; batched under `jax.vmap`).

    **Fields:**

    - `times` (T,): the requested times; `inf` stands for the limit t → ∞.
    - `v` (T, k): the head.
    - `B` (T, k, d): the features — a property, rebuilt on access as B0 + ΔG Vᵀ (features only move inside
      S = rowspace(X), so only the (T, k, r) coefficients `dG` on the orthonormal `basis` (d, r) are stored).
      Methods whose features also move outside S (LoRA, deeper extractors) extend `basis` by orthonormal
      directions of S⊥ (then r > rank X).
    - `train_loss`, `id_error`, `ood_error` (T,): the training loss and the ID and OOD errors at each time.
      `loss="squared"`: L̂ = ‖X Bᵀv − y‖² and L_id, L_ood (Section 3.1). `loss="logistic"`: L̂ = Σ_i log(1 +
      exp(−y_i vᵀBx_i)) and the exact 0-1 errors of sign(wᵀx) against sign(w⋆ᵀx) under x ~ N(0, Σ_id) and
      N(0, Σ_ood) (`linnet.zero_one_error`).
    - `margin` (T,): the normalised training margin min_i y_i wᵀx_i / ‖w‖ (`linnet.normalised_margin`; it is
      meaningful for labels in {±1}).
    - `num_steps`: ODE steps taken (GD: iterations; 0 for closed forms).
    - `result`: a `linnet.RESULTS` code (= `diffrax.RESULTS`; GD's blow-up is `nonlinear_divergence`);
      `linnet.is_okay(traj.result)` tests it.
      With `throw=True` (the default) a failure raises instead, so a returned trajectory is always okay.
    - `t_stop`: the time the solve ended: the last finite time, or where the steady-state test stopped it for
      t = ∞ (0 for closed forms).
    - `method`: the registry name ("lp", "ft", "lpft", "two_lr", "l2_sp", "features_only", "lp_features_only",
      "gd", "lora", "deep"); `solver`: how it was obtained ("closed form", "iteration", or the ODE solver, e.g.
      "Tsit5", "Rodas5P+ShermanMorrison" (the stiff default of the FT flow), "Rodas5P+LU" (the flows with a
      dense Newton solve: logistic loss, LoRA, deep), "FusedKvaerno5+ShermanMorrison" (Kvaerno5 on the FT
      flow, `linnet._methods.ft_flow.kvaerno5_solver`), "Kvaerno5+ShermanMorrison" and
      "Kvaerno5+Arrowhead" (diffrax's own Kvaerno5, `linnet._methods.ft_flow.structured_solver` and `arrowhead_solver`),
      "Tsit5|Rodas5P+ShermanMorrison" when a traced call carries the implicit fallback);
      `loss`: "squared" or "logistic".
    """

    times: jax.Array
    v: jax.Array
    train_loss: jax.Array
    id_error: jax.Array
    ood_error: jax.Array
    margin: jax.Array
    B0: jax.Array
    basis: jax.Array
    dG: jax.Array
    num_steps: jax.Array
    result: RESULTS
    t_stop: jax.Array
    method: str = "ft"
    solver: str = "closed form"
    loss: str = "squared"

    @property
    def B(self) -> jax.Array:
        """Features B(t) = B0 + ΔG(t) Vᵀ, shape (T, k, d)."""
        return self.B0[..., None, :, :] + jnp.einsum("...tkr,...dr->...tkd", self.dG, self.basis)

    @property
    def predictor(self) -> jax.Array:
        """w(t) = B(t)ᵀ v(t), shape (T, d), computed without forming B."""
        return _predictor_path(self.B0, self.basis, self.v, self.dG)

    @property
    def feature_change(self) -> jax.Array:
        """‖B(t) − B0‖_F, shape (T,) (for FT all of it lies in S)."""
        return jnp.sqrt(jnp.sum(self.dG**2, axis=(-2, -1)))

    @property
    def status(self) -> str:
        """How the run ended, in words: e.g. "reached t = inf (steady state at t = 812.4, 195 steps)" or "failed at
        t = 0.0044: max steps reached; the times after it hold NaN". `result` is the code: diffrax's
        `event_occurred` is the normal end of a run to t = inf (the steady-state event), not a failure."""
        import numpy as np

        ok = np.asarray(is_okay(self.result))
        if ok.ndim:
            return f"{int(ok.sum())} of {ok.size} members reached their times"
        steps = int(self.num_steps)
        last = float(self.times[-1])
        if bool(ok):
            if self.solver == "closed form":
                return f"reached t = {last:g} (closed form)"
            if math.isinf(last):
                return f"reached t = inf (steady state at t = {float(self.t_stop):.4g}, {steps} steps)"
            return f"reached t = {last:g} ({steps} steps)"
        return f"failed at t = {float(self.t_stop):.4g}: {RESULTS[self.result]}; the times after it hold NaN"

    def at(self, i: int) -> tuple[jax.Array, jax.Array]:
        """(v, B) at saved index `i`."""
        return self.v[i], self.B0 + self.dG[i] @ self.basis.T

    def __repr__(self) -> str:
        T, k = self.v.shape[-2:]
        return f"Trajectory(method={self.method!r}, solver={self.solver!r}, T={T}, k={k}, d={self.B0.shape[-1]})"


def predictor_path(B0, basis, v, dG):
    """w(t) = (B0 + ΔG(t) basisᵀ)ᵀ v(t) for a path `v` (T, k), `dG` (T, k, r): shape (T, d)."""
    return v @ B0 + jnp.einsum("tkr,tk,dr->td", dG, v, basis)


# the property's form: one compiled program per shape, where eager calls would dispatch each operation (~0.5 ms)
_predictor_path = jit(predictor_path, setup=True)


def make_trajectory(
    problem: Problem, times, v, dG, basis, *, num_steps, result, t_stop, method, solver, loss="squared"
) -> Trajectory:
    """Assemble a `Trajectory` from a path (v (T, k), ΔG (T, k, r) on `basis` (d, r)): the metrics are the closed
    forms of `_errors` (squared loss) or `_classification` (logistic loss) evaluated on the predictor path."""
    w = predictor_path(problem.B0, basis, v, dG)
    if loss == "squared":
        metrics = (train_loss_of_predictor(problem, w), id_error_of_predictor(problem, w),
                   ood_error_of_predictor(problem, w))  # fmt: skip
    else:
        metrics = (logistic_loss_of_predictor(problem, w), zero_one_error_of_predictor(problem, w, which="id"),
                   zero_one_error_of_predictor(problem, w, which="ood"))  # fmt: skip
    return Trajectory(
        times=jnp.asarray(times, dtype=v.dtype),
        v=v,
        train_loss=metrics[0],
        id_error=metrics[1],
        ood_error=metrics[2],
        margin=normalised_margin_of_predictor(problem, w),
        B0=problem.B0,
        basis=basis,
        dG=dG,
        num_steps=jnp.asarray(num_steps),
        result=result,
        t_stop=jnp.asarray(t_stop, dtype=v.dtype),
        method=method,
        solver=solver,
        loss=loss,
    )
