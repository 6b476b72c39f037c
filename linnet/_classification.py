"""Classification quantities of a linear predictor w = Bᵀv (`docs/theory.md`, "Classification"): the logistic
training loss, the exact 0-1 error under Gaussian inputs, the normalised margin, and — on the host, with scipy —
separability and the hard-margin (max-margin) separator.

Labels are y = sign(w⋆ᵀx) ∈ {±1} (`subspace_shift(..., labels="sign")`); the 0-1 errors here are measured against
the clean label sign(w⋆ᵀx). With labels flipped at rate p the error against the noisy label is p + (1 − 2p) · err.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._problem import Problem


def logistic_loss_of_predictor(problem: Problem, w: jax.Array) -> jax.Array:
    """L̂ = Σ_i log(1 + exp(−y_i wᵀx_i)) for predictors `w` (..., d) → (...). No 1/n (the time convention of
    `docs/theory.md`); computed stably as softplus(−y f)."""
    f = jnp.einsum("nd,...d->...n", problem.X, w)
    return jnp.sum(jax.nn.softplus(-problem.y * f), axis=-1)


def _safe_sqrt(sq):
    """√sq for sq ≥ 0 (rounding below 0 clipped), with a gradient that is finite (zero) at sq = 0."""
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def zero_one_error_of_predictor(problem: Problem, w: jax.Array, *, which: str = "ood") -> jax.Array:
    """P(sign(wᵀx) ≠ sign(w⋆ᵀx)) for x ~ N(0, Σ), Σ = Σ_ood (`which="ood"`) or Σ_id (`"id"`), in closed form:

        err(w) = arccos(⟨w, w⋆⟩_Σ / (‖w‖_Σ ‖w⋆‖_Σ)) / π,

    since (wᵀx, w⋆ᵀx) is a centred Gaussian pair and two half-planes through 0 disagree on the angle between
    them. A predictor with ‖w‖_Σ = 0 (e.g. w = 0) predicts sign(0) on every input and is given ½, the error of
    a fair coin; so is any w when ‖w⋆‖_Σ = 0. `w` (..., d) → (...)."""
    ws = problem.w_star

    def norm(a):  # ‖a‖_Σ
        return _safe_sqrt(problem.error_form(a, a, which=which))

    nw, ns = norm(w), norm(ws)
    ok = (nw > 0) & (ns > 0)
    a = w / jnp.where(ok, nw, 1.0)[..., None]
    b = ws / jnp.where(ok, ns, 1.0)[..., None]
    # the angle between unit vectors as 2 atan2(‖a − b‖, ‖a + b‖): accurate near 0 and π, where arccos of the
    # cosine loses half the digits (arccos(1 − 1e-16) ≈ 1.5e-8)
    angle = 2.0 * jnp.arctan2(norm(a - b), norm(a + b))
    return jnp.where(ok, angle / jnp.pi, 0.5)


def normalised_margin_of_predictor(problem: Problem, w: jax.Array) -> jax.Array:
    """γ(w) = min_i y_i wᵀx_i / ‖w‖ (Euclidean norm; 0 for w = 0), positive iff w separates the training data.
    `w` (..., d) → (...)."""
    f = jnp.einsum("nd,...d->...n", problem.X, w)
    nw = _safe_sqrt(jnp.sum(w**2, axis=-1))
    m = jnp.min(problem.y * f, axis=-1)
    return jnp.where(nw > 0, m / jnp.where(nw > 0, nw, 1.0), 0.0)


def _check_w(problem: Problem, w) -> jax.Array:
    """Predictors `w` as an array (..., d) of the problem's dtype, or a `ValueError` naming the shape expected."""
    w = jnp.asarray(w)
    if w.ndim < 1 or w.shape[-1] != problem.d:
        raise ValueError(f"`w` must have shape (..., {problem.d}) (d = problem.d), got {w.shape}")
    return w.astype(problem.X.dtype)


def zero_one_error(problem: Problem, w, *, which: str = "ood") -> jax.Array:
    """The exact 0-1 error of the linear classifier sign(wᵀx) against sign(w⋆ᵀx) under x ~ N(0, Σ_ood) (`which=
    "ood"`) or N(0, Σ_id) (`which="id"`): arccos(⟨w, w⋆⟩_Σ / (‖w‖_Σ ‖w⋆‖_Σ))/π (½ when either norm is 0).

    **Arguments:** `problem`; `w` (..., d) predictors, e.g. `Trajectory.predictor`; `which`.

    **Returns:** (...) errors in [0, 1]. Works under `jit`, `vmap` and `grad`."""
    if which not in ("ood", "id"):
        raise ValueError(f"`which` must be 'ood' or 'id', got {which!r}")
    return zero_one_error_of_predictor(problem, _check_w(problem, w), which=which)


def logistic_loss(problem: Problem, w) -> jax.Array:
    """The logistic training loss L̂(w) = Σ_i log(1 + exp(−y_i wᵀx_i)) (no 1/n), `w` (..., d) → (...)."""
    return logistic_loss_of_predictor(problem, _check_w(problem, w))


def normalised_margin(problem: Problem, w) -> jax.Array:
    """The normalised training margin min_i y_i wᵀx_i / ‖w‖, `w` (..., d) → (...) (0 for w = 0)."""
    return normalised_margin_of_predictor(problem, _check_w(problem, w))


# ------------------------------------------------------------------------------------------------------
# Host-side: separability and the hard-margin separator (scipy), for concrete data
# ------------------------------------------------------------------------------------------------------


def _points(F, y) -> np.ndarray:
    F = np.asarray(F, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if F.ndim != 2 or y.shape != (F.shape[0],):
        raise ValueError(f"`F` must be (n, p) and `y` (n,), got {F.shape} and {y.shape}")
    if not np.all(np.isin(y, (-1.0, 1.0))):
        raise ValueError("`y` must hold labels in {-1, +1} (use subspace_shift(..., labels='sign'))")
    return y[:, None] * F


def is_separable(F, y) -> bool:
    """Whether some u satisfies y_i uᵀF_i > 0 for every row F_i of `F` (n, p): a linear program (scipy HiGHS) for
    y_i uᵀF_i ≥ 1, which is feasible exactly when the data are strictly separable through the origin."""
    from scipy.optimize import linprog

    Z = _points(F, y)
    n, p = Z.shape
    res = linprog(np.zeros(p), A_ub=-Z, b_ub=-np.ones(n), bounds=[(None, None)] * p, method="highs")
    if res.status not in (0, 2):
        raise RuntimeError(f"is_separable: the linear program did not finish ({res.message})")
    return res.status == 0


def max_margin(F, y, *, tol: float = 1e-12) -> np.ndarray:
    """The hard-margin separator through the origin: u = argmin ‖u‖ s.t. y_i uᵀF_i ≥ 1 (so u/‖u‖ is the L2
    max-margin direction and 1/‖u‖ the margin), for concrete `F` (n, p), `y` (n,) ∈ {±1}.

    Solved by its dual, max_α Σα − ½‖Σ α_i y_i F_i‖² over α ≥ 0 (L-BFGS-B), then polished exactly on the active
    set (the support vectors satisfy y_i uᵀF_i = 1, a linear system). Raises `ValueError` when the data are not
    separable (`is_separable`), since then no separator exists.

    **Returns:** u, shape (p,), float64."""
    from scipy.optimize import minimize

    Z = _points(F, y)
    if not is_separable(F, y):
        raise ValueError("`F`, `y` are not linearly separable through the origin: no max-margin separator exists")
    K = Z @ Z.T
    n = K.shape[0]

    def f(a):
        Ka = K @ a
        return 0.5 * a @ Ka - a.sum(), Ka - 1.0

    res = minimize(f, np.full(n, 1.0 / max(np.trace(K), 1e-300)), jac=True, method="L-BFGS-B",
                   bounds=[(0.0, None)] * n, options=dict(maxiter=10_000, ftol=1e-15, gtol=1e-12))  # fmt: skip
    alpha = res.x
    u = Z.T @ alpha
    # active-set polish: support vectors are the points at margin 1; solve Z_S Z_Sᵀ α_S = 1 there
    for _ in range(20):
        margins = Z @ u
        active = (alpha > 1e-9 * max(alpha.max(), 1e-300)) | (margins < 1 + 1e-8)
        ZS = Z[active]
        aS, *_ = np.linalg.lstsq(ZS @ ZS.T, np.ones(ZS.shape[0]), rcond=None)
        if np.all(aS >= -tol * max(1.0, np.abs(aS).max())):
            cand = ZS.T @ np.maximum(aS, 0.0)
            if np.all(Z @ cand >= 1 - 1e-9):
                return cand
        alpha = np.zeros(n)
        alpha[active] = np.maximum(aS, 0.0)
        u = Z.T @ alpha
    raise RuntimeError("max_margin: the active-set polish did not settle; the dual solution is ill-conditioned")
