"""Exact solutions of the linear flows: linear probing and features-only tuning.

Both are linear ODEs once one layer is frozen, so they are evaluated at any time, t = ∞ included, without a
solver (`docs/theory.md`, "Methods" and "Methods beyond the paper")."""

from __future__ import annotations

import jax.numpy as jnp

from ._problem import Problem


def _scale(s):
    """c = max s (1 where s = 0): the closed forms below work with s / c, so that s² never underflows or
    overflows (a factor c of X only rescales time, by c², and leaves the limits unchanged)."""
    c = jnp.max(s, initial=0.0)
    return jnp.where(c > 0, c, 1.0)


def _scaled_time(times, c):
    """c² t, formed as c (c t) (t = inf → 0, masked by the callers), so that neither c² nor c t need be finite."""
    tt = jnp.where(jnp.isinf(times), 0.0, times)
    return c * (c * tt)


def lp_spectral(problem: Problem, v0):
    """Eigen-solution of LP: with F = X B0ᵀ, FᵀF = Q diag(λ) Qᵀ, v(t) = v∞ + Q e^{−2λt} Qᵀ (v0 − v∞).

    v∞ keeps v0's component in null(F) and adds the minimum-norm least-squares solution F⁺ y. In the reduced
    coordinates F = U diag(s) G0ᵀ, so FᵀF = G0 diag(s²) G0ᵀ and Fᵀy = G0 (s ⊙ Uᵀy): O(k² r) work. It is formed
    with ŝ = s / c, c = max s (λ = c² λ̂), so that any representable scale of X works.

    **Returns:** `(Q (k, k), λ̂ (k,) the eigenvalues of FᵀF / c², mask of λ > 0, c0 = Qᵀv0, c∞ = Qᵀv∞, c)`.
    """
    red = problem.reduced
    c = _scale(red.s)
    sh = red.s / c
    M = (red.G0 * sh**2) @ red.G0.T
    lam, Q = jnp.linalg.eigh((M + M.T) / 2)
    # λ below k · eps · λ_max is rounding noise of a zero eigenvalue (a direction of B0 outside what X sees)
    pos = lam > lam.shape[0] * jnp.finfo(lam.dtype).eps * jnp.max(jnp.abs(lam), initial=0.0)
    Fty = red.G0 @ (sh * (red.Uty / c))  # Fᵀy / c²
    c0 = Q.T @ v0
    c_inf = jnp.where(pos, (Q.T @ Fty) / jnp.where(pos, lam, 1.0), c0)
    return Q, lam, pos, c0, c_inf, c


def lp_limit_head(problem: Problem, v0):
    """v_lp^∞: the limit of linear probing from v0 (null(F)-component of v0 plus F⁺ y), shape (k,)."""
    Q, _, _, _, c_inf, _ = lp_spectral(problem, v0)
    return Q @ c_inf


def lp_heads(problem: Problem, v0, times):
    """v(t) of linear probing at `times` (T,), shape (T, k); t = inf gives v_lp^∞ exactly."""
    Q, lam, pos, c0, c_inf, c = lp_spectral(problem, v0)
    # exp(−2λt) with t = inf is 0 on λ > 0; null directions have c0 = c∞ exactly, so their factor is irrelevant
    rate = jnp.where(pos, lam, 0.0)
    tt = _scaled_time(times, c)
    decay = jnp.where(pos[None, :] & ~jnp.isinf(times)[:, None], jnp.exp(-2.0 * jnp.outer(tt, rate)), 0.0)
    return (c_inf + decay * (c0 - c_inf)) @ Q.T


def lp_path(problem: Problem, v0, times, p):
    """The registry's closed form for LP: (v (T, k), ΔG = 0, basis V)."""
    del p
    v = lp_heads(problem, v0, times)
    red = problem.reduced
    return v, jnp.zeros((times.shape[0], *red.G0.shape), v.dtype), red.V


def features_only_path(problem: Problem, v0, times, p):
    """Exact features-only flow (head frozen at v0). With v fixed, z = Gᵀv obeys ż_q = −2‖v‖² s_q (s_q z_q − a_q),
    a linear ODE: z_q(t) = a_q/s_q + (z_q(0) − a_q/s_q) e^{−2‖v‖² s_q² t}; and Ġ = −2 v gᵀ = v żᵀ/‖v‖², so
    G(t) = G0 + v (z(t) − z(0))ᵀ / ‖v‖². **Returns:** (v (T, k), ΔG (T, k, r), basis V)."""
    del p
    red = problem.reduced
    s, a, v = red.s, red.Uty, v0
    z0 = red.G0.T @ v
    vv = jnp.sum(v**2)
    pos = s > 0
    z_fit = jnp.where(pos, a / jnp.where(pos, s, 1.0), z0)
    c = _scale(s)
    rate = 2.0 * vv * (s / c) ** 2  # the rates / c², so that s² cannot underflow or overflow
    inf = jnp.isinf(times)[:, None]
    decay = jnp.where(inf, jnp.where(rate > 0, 0.0, 1.0), jnp.exp(-jnp.outer(_scaled_time(times, c), rate)))
    dz = (z_fit - z0) * (1.0 - decay)  # (T, r)
    dG = jnp.where(vv > 0, jnp.einsum("k,tr->tkr", v, dz) / jnp.where(vv > 0, vv, 1.0), 0.0)
    return jnp.broadcast_to(v, (times.shape[0], v.shape[0])), dG, red.V
