"""An independent reference for the fine-tuning flow: scipy's Radau on the full state θ = (v, vec B) ∈ R^{k + k d}.

It shares nothing with linnet's solver (no reduced coordinates, no diffrax): the vector field is written from
docs/theory.md's loss L̂ = ‖X Bᵀ v − y‖², r = X Bᵀ v − y, ∂v/∂t = −2 B Xᵀ r, ∂B/∂t = −2 v (Xᵀ r)ᵀ. It is used to
replay the instances a search reports as violations, at tight tolerance, so that no violation rests on linnet's
own integration alone.
"""

from __future__ import annotations

import numpy as np


class ReplayError(RuntimeError):
    """The reference integration failed or did not reach a steady state."""


def _rhs(X, y, k, d, loss="squared"):
    from scipy.special import expit

    def rhs(t, th):
        v, B = th[:k], th[k:].reshape(k, d)
        f = X @ (B.T @ v)
        # ∂L̂/∂f: 2 (f − y) for ‖f − y‖², and −y e^{−y f} / (1 + e^{−y f}) for Σ log(1 + e^{−y f})
        dL = 2.0 * (f - y) if loss == "squared" else -y * expit(-y * f)
        g = X.T @ dL
        return np.concatenate([-B @ g, -np.outer(v, g).ravel()])

    return rhs


def radau_fine_tune(
    X, y, B0, v0, times, *, rtol: float = 1e-10, atol: float = 1e-12, t_max: float = 1e10, loss: str = "squared"
):
    """Full-state fine-tuning from (v0, B0) with `scipy.integrate.solve_ivp(method="Radau")`.

    **Arguments:** `X` (n, d), `y` (n,), `B0` (k, d), `v0` (k,) as NumPy-convertible arrays; `times` (T,)
    increasing, a last `inf` for the limit, which is taken where the field's norm has fallen below
    `atol`·(1 + ‖θ‖) (integrating over decades up to `t_max`; `ReplayError` if it does not); `loss` "squared"
    or "logistic" (labels y ∈ {±1}; finite times only, in the ordinary time t).

    **Returns:** `(v (T, k), B (T, k, d))`.
    """
    from scipy.integrate import solve_ivp

    X, y, B0, v0 = (np.asarray(a, dtype=np.float64) for a in (X, y, B0, v0))
    k, d = B0.shape
    rhs = _rhs(X, y, k, d, loss)
    times = np.asarray(times, dtype=np.float64)
    finite = times[np.isfinite(times)]
    th0 = np.concatenate([v0, B0.ravel()])
    states = []
    if finite.size and finite[-1] == 0.0:  # only t = 0 (solve_ivp cannot take an empty interval)
        states = [th0.copy() for _ in finite]
    elif finite.size:
        sol = solve_ivp(rhs, (0.0, float(finite[-1])), th0, method="Radau", t_eval=finite, rtol=rtol, atol=atol)
        if sol.status != 0:
            raise ReplayError(f"Radau failed: {sol.message}")
        states = list(sol.y.T)
    if np.isinf(times[-1]):
        th, t = (states[-1] if states else th0), (float(finite[-1]) if finite.size else 0.0)
        while np.linalg.norm(rhs(t, th)) > atol * (1.0 + np.linalg.norm(th)):
            if t >= t_max:
                raise ReplayError(f"Radau did not reach a steady state by t = {t_max:g}")
            t_next = max(10.0 * t, 1.0)
            sol = solve_ivp(rhs, (t, t_next), th, method="Radau", rtol=rtol, atol=atol)
            if sol.status != 0:
                raise ReplayError(f"Radau failed: {sol.message}")
            th, t = sol.y[:, -1], t_next
        states.append(th)
    S = np.stack(states)
    return S[:, :k], S[:, k:].reshape(-1, k, d)
