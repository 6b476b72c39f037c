"""Post-processing beyond the paper: oracle early stopping, WiSE-FT weight interpolation (an exact quartic family
of predictors) and label noise. None of them runs a flow of its own."""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import bilinear_error
from ._problem import Problem
from ._trajectory import Trajectory
from ._validate import as_float_array


def _check_rate(x, name: str) -> float:
    x = float(x)
    if not np.isfinite(x) or x < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {x}")
    return x


# ------------------------------------------------------------------------------------------------------
# 5. Early stopping
# ------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EarlyStop:
    """The best value of a metric along a trajectory: `time`, `value`, `index` into `trajectory.times`."""

    time: float
    value: float
    index: int


def early_stopping(trajectory: Trajectory, metric: str = "ood_error") -> EarlyStop:
    """The oracle early stop: the saved time at which `metric` ("ood_error", "id_error" or "train_loss") is
    smallest. It is only as fine as the saved times: pass a dense `times` grid to the method."""
    if metric not in ("ood_error", "id_error", "train_loss"):
        raise ValueError(f"`metric` must be 'ood_error', 'id_error' or 'train_loss', got {metric!r}")
    vals = np.asarray(getattr(trajectory, metric))
    i = int(np.argmin(vals))
    return EarlyStop(time=float(trajectory.times[i]), value=float(vals[i]), index=i)


# ------------------------------------------------------------------------------------------------------
# 2. WiSE-FT: weight-space interpolation, a quadratic family of predictors
# ------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Interpolation:
    """WiSE-FT between θ_a = (v_a, B_a) and θ_b = (v_b, B_b): θ_α = (1 − α) θ_a + α θ_b.

    The predictor is quadratic in α: w(α) = w0 + α w1 + α² w2 with w0 = B_aᵀ v_a, w1 = B_aᵀ Δv + ΔBᵀ v_a,
    w2 = ΔBᵀ Δv (Δ = b − a), so every error (w(α) − w⋆)ᵀ Σ (w(α) − w⋆) is a quartic in α.
    """

    problem: Problem
    w0: jax.Array
    w1: jax.Array
    w2: jax.Array

    def predictor(self, alpha) -> jax.Array:
        """w(α), shape alpha.shape + (d,)."""
        a = jnp.asarray(alpha, self.w0.dtype)[..., None]
        return self.w0 + a * self.w1 + a**2 * self.w2

    def quartic(self, metric: str = "ood_error") -> np.ndarray:
        """Coefficients (c0, …, c4) of the error as a polynomial in α (lowest degree first)."""
        which = _which(metric)
        e0 = self.w0 - self.problem.w_star
        B = partial(bilinear_error, self.problem, which=which)
        c = [B(e0, e0), 2 * B(e0, self.w1), B(self.w1, self.w1) + 2 * B(e0, self.w2), 2 * B(self.w1, self.w2)]
        c.append(B(self.w2, self.w2))
        return np.asarray([float(x) for x in c])

    def error(self, alpha, metric: str = "ood_error") -> jax.Array:
        """The error at α (evaluated directly from w(α), not from the quartic)."""
        e = self.predictor(alpha) - self.problem.w_star
        return bilinear_error(self.problem, e, e, which=_which(metric))

    def optimal_alpha(self, metric: str = "ood_error", bounds=(0.0, 1.0)) -> tuple[float, float]:
        """(α*, error(α*)): the exact minimiser over `bounds` of the quartic, from the real roots of its cubic
        derivative and the end points."""
        try:
            lo, hi = (float(b) for b in bounds)
        except (TypeError, ValueError):
            raise ValueError(f"`bounds` must be a pair (lo, hi) of finite numbers, got {bounds!r}") from None
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            raise ValueError(f"`bounds` must be (lo, hi), finite, with lo <= hi (the quartic grows without bound), "
                             f"got {bounds!r}")  # fmt: skip
        c = self.quartic(metric)
        deriv = np.polynomial.polynomial.polyder(c)
        roots = np.polynomial.polynomial.polyroots(deriv) if np.any(deriv) else np.array([])
        cand = [lo, hi] + [r.real for r in np.atleast_1d(roots) if abs(r.imag) < 1e-9 and lo <= r.real <= hi]
        vals = [float(self.error(a, metric)) for a in cand]
        i = int(np.argmin(vals))
        return float(cand[i]), vals[i]


def _which(metric: str) -> str:
    if metric not in ("ood_error", "id_error"):
        raise ValueError(f"`metric` must be 'ood_error' or 'id_error', got {metric!r}")
    return metric[:-6]


def wise_ft(problem: Problem, theta_a, theta_b) -> Interpolation:
    """WiSE-FT interpolation family between θ_a = (v_a (k,), B_a (k, d)) and θ_b (e.g. the LP solution
    (v_lp^∞, B0) and the FT or LP-FT limit `traj.at(-1)`).

    **Prediction:** the OOD error is a quartic in α whose minimiser α* is found exactly (`optimal_alpha`); it
    recovers at least the better end point's error, and any interior α* with a lower error than both ends is a
    gain from interpolation.
    """
    for theta, n in ((theta_a, "theta_a"), (theta_b, "theta_b")):
        if not isinstance(theta, tuple | list) or len(theta) != 2:
            got = (
                f"a {type(theta).__name__} of length {len(theta)}"
                if isinstance(theta, tuple | list)
                else repr(type(theta))
            )
            raise ValueError(f"`{n}` must be a pair (v (k,), B (k, d)), e.g. traj.at(-1); got {got}")
    (va, Ba), (vb, Bb) = theta_a, theta_b
    k, d = problem.k, problem.d
    va, vb = (as_float_array(x, n, 1) for x, n in ((va, "theta_a[0]"), (vb, "theta_b[0]")))
    Ba, Bb = (as_float_array(x, n, 2) for x, n in ((Ba, "theta_a[1]"), (Bb, "theta_b[1]")))
    for x, n, shp in (
        (va, "theta_a[0]", (k,)),
        (vb, "theta_b[0]", (k,)),
        (Ba, "theta_a[1]", (k, d)),
        (Bb, "theta_b[1]", (k, d)),
    ):
        if x.shape != shp:
            raise ValueError(f"`{n}` must have shape {shp}, got {x.shape}")
    dv, dB = vb - va, Bb - Ba
    return Interpolation(problem, Ba.T @ va, Ba.T @ dv + dB.T @ va, dB.T @ dv)


# ------------------------------------------------------------------------------------------------------
# 9. Label noise
# ------------------------------------------------------------------------------------------------------


def with_label_noise(problem: Problem, key, noise: float) -> Problem:
    """The problem with noisy labels y = X w⋆ + ξ, ξ ~ N(0, noise² I_n) (errors are still measured against w⋆).

    Every method then fits ξ differently: FT and LP-FT interpolate the noisy labels (n < d), LP fits them by least
    squares in the k pretrained features, so noise enters L_id and L_ood through different maps.
    """
    noise = _check_rate(noise, "noise")
    xi = jax.random.normal(key, (problem.n,), problem.X.dtype)
    return problem.replace(y=problem.X @ problem.w_star + noise * xi)
