"""Input checks shared by the public API. Each error names the argument and what was expected."""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer


class OverparameterisationWarning(UserWarning):
    """Raised when a problem is outside the paper's regime 1 <= k < n < d."""


def is_traced(*xs) -> bool:
    """True when any argument is a JAX tracer (inside jit/vmap/grad), where value checks are skipped."""
    return any(isinstance(x, Tracer) for x in jax.tree_util.tree_leaves(xs))


def check_value(x, bad, message: str):
    """Reject a value-dependent condition: raise `ValueError(message)` now when `bad` is concrete and true;
    when it is traced (inside `jit`, `vmap` or `grad`), attach `eqx.error_if` to the pytree `x`, so the same
    message is raised at run time. Returns `x`."""
    if not is_traced(bad):
        if bool(np.any(np.asarray(bad))):
            raise ValueError(message)
        return x
    return eqx.error_if(x, bad, message)


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
    if is_traced(x):
        x = check_value(x, ~jnp.all(jnp.isfinite(x)), f"`{name}` contains NaN or inf; every entry must be finite")
    return x


def check_head(problem, v0, name: str = "v0") -> jax.Array:
    """The head `v0` as an array of the problem's dtype, shape (k,), finite (eagerly, or via `error_if` when
    traced); `problem` is a `linnet.Problem` (only its k and dtype are read)."""
    v0 = as_float_array(v0, name, 1)
    check_shape(v0, name, (problem.k,), "one entry per feature, k = problem.k")
    v0 = v0.astype(problem.X.dtype)
    message = f"`{name}` contains NaN or inf; every entry must be finite"
    if not is_traced(v0):  # on the host: the cast may have overflowed (float64 → float32)
        return check_value(v0, ~np.all(np.isfinite(np.asarray(v0))), message)
    return check_value(v0, ~jnp.all(jnp.isfinite(v0)), message)


def check_real(x, name: str, *, lower: float | None = None, strict: bool = False) -> float:
    """A concrete real scalar argument, finite and (when `lower` is given) >= `lower` (> when `strict`), as a
    Python float; otherwise a `ValueError` naming `name` and the range."""
    try:
        val = float(x)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a real number, got {x!r}") from None
    bound = "" if lower is None else f" {'>' if strict else '>='} {lower:g}"
    if not np.isfinite(val) or (lower is not None and (val <= lower if strict else val < lower)):
        raise ValueError(f"`{name}` must be a finite number{bound}, got {x!r}")
    return val


def check_shape(x: jax.Array, name: str, shape: tuple[int, ...], meaning: str) -> None:
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"`{name}` must have shape {shape} ({meaning}), got {tuple(x.shape)}")


def check_psd(sigma: jax.Array, name: str, d: int) -> jax.Array:
    """A second-moment matrix must be (d, d), symmetric and positive semidefinite, to 10³ · d · eps · max|Σ|
    (the rounding of a computed second moment, relative to Σ's own scale, so that a small negative Σ is caught
    whatever its size; 1e-10 · max|Σ| at d ≈ 500 in float64). Eager on concrete input, through `eqx.error_if`
    when traced. Returns `sigma`."""
    check_shape(sigma, name, (d, d), "a d x d second-moment matrix")
    eps = float(jnp.finfo(sigma.dtype).eps)
    if is_traced(sigma):
        scale = jnp.max(jnp.abs(sigma))
        tol = 1e3 * d * eps * scale
        asym = jnp.max(jnp.abs(sigma - sigma.T)) > tol
        neg = jnp.min(jnp.linalg.eigvalsh((sigma + sigma.T) / 2)) < -tol
        return check_value(sigma, asym | neg, f"`{name}` must be symmetric positive semidefinite")
    s = np.asarray(sigma, dtype=np.float64)
    scale = np.abs(s).max()
    tol = 1e3 * d * eps * scale
    if not np.allclose(s, s.T, atol=tol, rtol=0):
        raise ValueError(f"`{name}` must be symmetric; max |S - S^T| = {np.abs(s - s.T).max():.3g}")
    lam_min = np.linalg.eigvalsh((s + s.T) / 2).min()
    if lam_min < -tol:
        raise ValueError(f"`{name}` must be positive semidefinite; its smallest eigenvalue is {lam_min:.3g}")
    return sigma


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


def check_times(times):
    """Validate a time grid: 1-D, non-empty, >= 0, strictly increasing; `inf` (the limit) only as the last entry.

    Shapes are checked eagerly. Values are checked eagerly when `times` is concrete, and through `eqx.error_if`
    when it is traced, with the same message. Strict increase is tested as t[i+1] > t[i], which rejects NaN
    and a repeated `inf` (inf − inf is NaN, so a test on differences would let [0, inf, inf] through).

    **Returns:** the times as an array (NumPy float64 when concrete, the traced array otherwise).
    """
    traced = is_traced(times)
    if traced:
        t = jnp.asarray(times)
    else:
        try:
            t = np.asarray(times, dtype=np.float64)
        except (TypeError, ValueError):
            msg = f"`times` must be an array of numbers (an increasing grid, inf last), got {times!r}"
            raise TypeError(msg) from None
    if t.ndim != 1 or t.shape[0] == 0:
        raise ValueError(f"`times` must be a non-empty 1-D array, got shape {t.shape}")
    if traced:
        bad = jnp.any(jnp.isnan(t)) | jnp.any(t < 0) | jnp.any(t[1:] <= t[:-1])
        return check_value(t, bad, TIMES_MESSAGE)
    if np.any(np.isnan(t)):
        raise ValueError("`times` contains NaN")
    if np.any(t < 0):
        raise ValueError(f"`times` must be >= 0 (time counts from the start of training), got min {t.min()}")
    if not np.all(t[1:] > t[:-1]):
        raise ValueError("`times` must be strictly increasing (inf, the limit, at most once and last)")
    return t


TIMES_MESSAGE = "`times` must be >= 0 and strictly increasing, with inf (the limit) at most once and last; no NaN"


def warn_tolerance(rtol: float, atol: float, dtype) -> None:
    """Warn (once per call site) when `rtol` is below what `dtype` can deliver on a stiff flow.

    The velocity of a stiff flow is computed from a residual whose rounding error is about eps · cond(X)² in
    relative terms; below about 100 eps (1.2e-5 in float32) the controller and the steady-state test chase
    rounding noise. 1e-4 is what holds in float32 (benchmarks/RESULTS.md)."""
    eps = float(jnp.finfo(dtype).eps)
    if rtol < 100 * eps:
        warnings.warn(
            f"rtol = {rtol:g} is below what {jnp.dtype(dtype).name} can meet (about 100 eps = {100 * eps:.1g}); "
            f"the flow's rounding noise sets the accuracy instead. In {jnp.dtype(dtype).name} use "
            f"rtol = atol ≈ {max(1e-4, 1000 * eps):.0e}, or build the Problem from float64 arrays "
            "(with jax.config.update('jax_enable_x64', True)).",
            UserWarning,
            stacklevel=4,
        )


def limit_floor(s) -> jax.Array:
    """eps · (s_max / s_min)² over the nonzero singular values `s` of X: the relative accuracy below which the
    FT-family flows cannot resolve their t = ∞ state (see `warn_unresolved_limit`). Traceable; a NumPy input is
    computed in NumPy (the eager warning may run inside an outer `jit`, where JAX operations would be staged)."""
    xp = np if isinstance(s, np.ndarray) else jnp
    s_min = xp.min(xp.where(s > 0, s, xp.inf))
    return xp.finfo(s.dtype).eps * (xp.max(s) / s_min) ** 2


def warn_unresolved_limit(s, rtol: float, dtype) -> None:
    """Warn when a flow's limit t = ∞ cannot be resolved to `rtol`: the slowest mode of the FT-family flows
    relaxes at a rate ∝ s_min² while the velocity carries rounding noise ∝ eps s_max², so once
    eps (s_max / s_min)² > rtol (s the nonzero singular values of X) the steady-state test stops on the noise with
    the slowest modes unconverged: the limit is accurate only to about eps cond(X)² in relative terms, and the
    search of `linnet.testing` found Proposition 3.1 "violated" on such instances (paper_repro.md)."""
    s = np.asarray(s, dtype=dtype)
    if not np.any(s > 0):
        return
    floor = float(limit_floor(s))
    s = s[s > 0]
    if floor > rtol:
        warnings.warn(
            f"cond(X)² · eps = {floor:.1e} exceeds rtol = {rtol:g}: the slowest modes of the flow (singular value "
            f"{s.min():.2e} of X against {s.max():.2e}) move below the rounding noise of its velocity, so the state "
            "returned for t = inf may be off in those modes by about that relative amount. Drop X's tiny singular "
            "directions (they carry almost no data), or use float64 / a looser rtol knowingly.",
            UserWarning,
            stacklevel=4,
        )


def check_tolerance(x: float, name: str) -> float:
    x = float(x)
    if not (np.isfinite(x) and x > 0):
        raise ValueError(f"`{name}` must be a positive finite number, got {x}")
    return x
