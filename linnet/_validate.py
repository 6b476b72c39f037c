"""Input checks shared by the public API. Each error names the argument and what was expected."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np


class OverparameterisationWarning(UserWarning):
    """Raised when a problem is outside the paper's regime 1 <= k < n < d."""


def is_traced(*xs) -> bool:
    """True when any argument is a JAX tracer (inside jit/vmap/grad), where value checks are skipped."""
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(xs))


def as_float_array(x, name: str, ndim: int | None = None) -> jax.Array:
    """Convert to a floating JAX array, checking rank; NaN/inf are rejected for concrete inputs."""
    if x is None:
        raise ValueError(f"`{name}` is required, got None")
    if not is_traced(x):
        try:
            arr = np.asarray(x)
        except Exception as e:  # pragma: no cover - exotic inputs
            raise TypeError(f"`{name}` must be array-like, got {type(x).__name__}") from e
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise TypeError(f"`{name}` must be a numeric array, got dtype {arr.dtype}")
        if np.iscomplexobj(arr):
            raise TypeError(f"`{name}` must be real, got a complex array")
        if ndim is not None and arr.ndim != ndim:
            raise ValueError(f"`{name}` must be {ndim}-dimensional, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"`{name}` contains NaN or inf; every entry must be finite")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"`{name}` must be {ndim}-dimensional, got shape {x.shape}")
    return x


def check_shape(x: jax.Array, name: str, shape: tuple[int, ...], meaning: str) -> None:
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"`{name}` must have shape {shape} ({meaning}), got {tuple(x.shape)}")


def check_psd(sigma: jax.Array, name: str, d: int) -> None:
    """A second-moment matrix must be (d, d), symmetric and positive semidefinite."""
    check_shape(sigma, name, (d, d), "a d x d second-moment matrix")
    if is_traced(sigma):
        return
    s = np.asarray(sigma, dtype=np.float64)
    scale = max(np.abs(s).max(), 1.0)
    if not np.allclose(s, s.T, atol=1e-10 * scale, rtol=0):
        raise ValueError(f"`{name}` must be symmetric; max |S - S^T| = {np.abs(s - s.T).max():.3g}")
    lam_min = np.linalg.eigvalsh((s + s.T) / 2).min()
    if lam_min < -1e-10 * scale:
        raise ValueError(f"`{name}` must be positive semidefinite; its smallest eigenvalue is {lam_min:.3g}")


def warn_regime(n: int, d: int, k: int) -> None:
    """The paper's theorems assume 1 <= k < n < d and k < d - n; the simulator runs outside it but says so."""
    problems = []
    if not k < n:
        problems.append(f"k = {k} >= n = {n}")
    if not n < d:
        problems.append(f"n = {n} >= d = {d} (not overparameterised)")
    if n < d and not k < d - n:
        problems.append(f"k = {k} >= d - n = {d - n}")
    if problems:
        warnings.warn(
            "problem is outside the paper's regime 1 <= k < n < d, k < d - n: "
            + "; ".join(problems)
            + ". The simulator still runs; the theorems may not apply.",
            OverparameterisationWarning,
            stacklevel=3,
        )


def check_times(times) -> tuple[np.ndarray, bool]:
    """Validate a time grid: 1-D, >= 0, strictly increasing, inf allowed only as the last entry.

    Returns the finite times (numpy, float64) and whether the limit t = inf was asked for.
    """
    if is_traced(times):
        raise TypeError("`times` must be concrete (not traced): it fixes the shape of the trajectory")
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"`times` must be a non-empty 1-D array, got shape {t.shape}")
    if np.any(np.isnan(t)):
        raise ValueError("`times` contains NaN")
    if np.any(t < 0):
        raise ValueError(f"`times` must be >= 0 (time counts from the start of training), got min {t.min()}")
    if np.any(np.diff(t) <= 0):
        raise ValueError("`times` must be strictly increasing")
    if np.isneginf(t).any():  # pragma: no cover - excluded by t >= 0
        raise ValueError("`times` must be >= 0")
    to_inf = bool(np.isposinf(t[-1]))
    return t[:-1] if to_inf else t, to_inf


def check_tolerance(x: float, name: str) -> float:
    x = float(x)
    if not (np.isfinite(x) and x > 0):
        raise ValueError(f"`{name}` must be a positive finite number, got {x}")
    return x
