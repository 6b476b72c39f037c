"""Classification: LP, FT and LP-FT under the logistic loss L̂ = Σ_i log(1 + exp(−y_i vᵀBx_i)), declared in the
registry as the `loss="logistic"` variants of "lp", "ft" and "lpft" (`docs/theory.md`, "Classification").

Reduced coordinates. The loss depends on (v, B) only through the predictions f = X Bᵀ v, so ∇_B L̂ = v (Xᵀq)ᵀ
with q = ∂L̂/∂f has rows in S = rowspace(X), exactly as for the squared loss: B(t) = B0 + ΔG(t) Vᵀ, and the flow
lives on (v, G = B V) with f = (XV) Gᵀ v,

    q = −y ⊙ σ(−y ⊙ f),   h = (XV)ᵀ q,   dv/dt = −η_v G h,   dG/dt = −η_B v hᵀ

(σ the logistic function; η_B = 0 is LP). Facts 1 and 2 (features frozen on S⊥, v vᵀ − B Bᵀ conserved for
η_v = η_B) follow as before.

Log time. On separable data L̂ has no minimiser: ‖w‖ grows like log t and only the direction converges, in log t.
The flow is therefore integrated in τ = log(1 + t), dθ/dτ = (1 + t) · dθ/dt (`linnet._solver.integrate.integrate`'s
`log_time`), so a run to t = 10^m costs steps roughly linear in m. The Jacobian is not arrowhead-shaped here (the
curvature weights σ'(f_i) couple every column of G), so the stiff solver (`linnet._methods.ft_flow.dense_solver`:
Rodas5P with a dense LU of the Newton matrix, the flow in τ being non-autonomous) factors it densely; the state is
k (r + 1), small for the sizes classification experiments use.

t = ∞ exists only for LP on data that are not separable in the pretrained features X B0ᵀ (then LP is logistic
regression on k features, strictly convex on span(F)); `times` ending in `inf` is refused otherwise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._problem import Problem
from .._registry import REQUIRED, FlowMethod, Param, register
from .._solver.integrate import integrate
from .._trajectory import RESULTS
from .ft_flow import dense_solver


def logistic_field(t, state, args):
    """−(η_v ∇_v L̂, η_B ∇_G L̂) of the logistic loss in reduced coordinates; `state = (v (k,), G (k, r))`,
    `args = (XV (n, r), y (n,), (η_v, η_B))`."""
    del t
    v, G = state
    XV, y, eta = args
    f = XV @ (G.T @ v)
    h = XV.T @ (-y * jax.nn.sigmoid(-y * f))
    return (-eta[0] * (G @ h), -eta[1] * jnp.outer(v, h))


def lp_steady_state(rtol, atol):
    """Steady state of logistic LP (head only): the Newton step ‖H⁻¹∇‖ ≤ ‖∇_v L̂‖ / λ_min(H) is below
    atol + rtol ‖v‖, with H = Fᵀ diag(σ'(f)) F the Hessian on span(F), F = XV G0ᵀ. On separable data H → 0 as
    fast as the gradient, so the test does not fire at any practical time (the flow has no limit there)."""

    def cond_fn(t, state, args, **kwargs):
        v, G = state
        XV, y, _ = args
        F = XV @ G.T  # (n, k)
        f = F @ v
        sig = jax.nn.sigmoid(-y * f)
        grad = F.T @ (-y * sig)
        H = (F * (sig * (1.0 - sig))[:, None]).T @ F
        lam = jnp.linalg.eigvalsh((H + H.T) / 2)
        # directions of v that F does not see have zero curvature and zero gradient: use the smallest eigenvalue
        # on span(F) (those above k · eps · λ_max)
        floor = lam.shape[0] * jnp.finfo(lam.dtype).eps * jnp.max(jnp.abs(lam))
        lam_min = jnp.min(jnp.where(lam > floor, lam, jnp.inf))
        tol = atol + rtol * jnp.linalg.norm(v)
        return jnp.isfinite(lam_min) & (jnp.linalg.norm(grad) <= lam_min * tol)

    return cond_fn


def never_steady(rtol, atol):
    """FT under the logistic loss has no steady state on the (always separable, n ≤ dim S) training data."""
    del rtol, atol
    return None


def _args(problem: Problem, eta_B: float, dtype):
    """The field's arguments (XV (n, r), y, (η_v = 1, η_B)); XV = U diag(s), its masked columns zero."""
    red = problem.reduced
    return (problem.X @ red.V) * (red.s > 0), problem.y, jnp.asarray([1.0, eta_B], dtype)


def lp_init(problem: Problem, v0, p, key):
    del p, key
    return (v0, problem.reduced.G0), _args(problem, 0.0, v0.dtype), None


def ft_init(problem: Problem, v0, p, key):
    del p, key
    return (v0, problem.reduced.G0), _args(problem, 1.0, v0.dtype), None


def lpft_init(problem: Problem, v0, p, key):
    """LP for `lp_time` (logistic LP flow, same solver and tolerances), then FT from (v_lp(T_lp), B0)."""
    del key
    red = problem.reduced
    lp_args = _args(problem, 0.0, v0.dtype)
    times = jnp.reshape(p["lp_time"], (1,)).astype(v0.dtype)
    ys, result, steps, _ = integrate(
        logistic_field, (v0, red.G0), lp_args, times, steady=lp_steady_state(p["_rtol"], p["_atol"]),
        solver=dense_solver(), rtol=p["_rtol"], atol=p["_atol"], max_steps=p["_max_steps"], log_time=True,
    )  # fmt: skip
    v_lp = ys[0][-1]
    # t = 0 is allowed: the LP phase is then empty
    v_lp = jnp.where(p["lp_time"] > 0, v_lp, v0)
    result = RESULTS.where(p["lp_time"] > 0, result, RESULTS.successful)
    ft_args = (*lp_args[:2], jnp.ones(2, v0.dtype))
    return (v_lp, red.G0), ft_args, {"result": result, "num_steps": steps}


def decode(problem: Problem, ys, args, aux, p):
    del args, aux, p
    v, G = ys
    red = problem.reduced
    return v, G - red.G0, red.V


def _flow(name, summary, init, steady, params=(), **kw) -> FlowMethod:
    return FlowMethod(
        name=name,
        summary=summary,
        loss="logistic",
        log_time=True,
        params=params,
        init=init,
        field=logistic_field,
        steady=steady,
        decode=decode,
        solver=dense_solver,
        **kw,
    )


def _no_limit(problem, p):
    del problem, p
    return (
        "FT under the logistic loss has no t = inf limit: the training data (n <= dim S points) are linearly "
        "separable, so ‖w‖ grows like log t and only the direction converges; pass large finite times instead"
    )


def _lp_no_limit(problem, p):
    """LP has a finite limit only when the labels are not separable in the pretrained features X B0ᵀ."""
    import numpy as np

    from .._classification import is_separable

    del p
    if is_separable(np.asarray(problem.X @ problem.B0.T), np.asarray(problem.y)):
        return (
            "LP under the logistic loss has no t = inf limit here: the labels are linearly separable in the "
            "pretrained features X B0ᵀ (linnet.is_separable), so the head grows like log t and only its direction "
            "converges (to the max-margin separator in those features); pass large finite times instead"
        )
    return None


LP_TIME = Param("lp_time", REQUIRED, doc="duration T_lp of the LP phase (logistic LP has no limit on separable data)")

register(_flow("lp", "linear probing under the logistic loss (log-time gradient flow on v)", lp_init,
               lp_steady_state, no_limit=_lp_no_limit))  # fmt: skip
register(_flow("ft", "fine-tuning under the logistic loss (log-time gradient flow on (v, B))", ft_init,
               never_steady, no_limit=_no_limit))  # fmt: skip
register(_flow("lpft", "logistic LP for lp_time, then logistic FT from (v_lp(T_lp), B0)", lpft_init, never_steady,
               params=(LP_TIME,), no_limit=_no_limit))  # fmt: skip
