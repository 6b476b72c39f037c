"""The independent reference simulator behind `linnet.testing.reference()`.

Inside the context every `linnet.simulate` call (and so `fine_tune`, `linear_probe`, `lp_ft`, any statement built
on them) is answered here, with nothing of linnet's solver: fine-tuning by scipy's Radau on the full state
θ = (v, vec B) (`radau_fine_tune`, rtol 1e-10), linear probing by its exact solution written in NumPy/SciPy
(least squares and a matrix exponential), and LP-FT as the two in sequence. The inputs must be concrete."""

from __future__ import annotations

import contextlib

import jax.numpy as jnp
import numpy as np

from .._context import REFERENCE
from .._trajectory import RESULTS, make_trajectory
from .._validate import check_times, is_traced
from ._radau import radau_fine_tune

RTOL, ATOL = 1e-10, 1e-12  # the reference's tolerances (Radau on the full state; steady state at ‖f‖ ≤ ATOL (1 + ‖θ‖))
METHODS = ("lp", "ft", "lpft")


def lp_reference(X, y, B0, v0, times):
    """LP's exact solution in NumPy: v(t) = v∞ + expm(−2 FᵀF t)(v0 − v∞), F = X B0ᵀ, v∞ = v0's null(F) part plus
    lstsq(F, y). **Returns:** v (T, k)."""
    from scipy.linalg import expm

    F = X @ B0.T
    sol, *_ = np.linalg.lstsq(F, y, rcond=None)
    _, s, vt = np.linalg.svd(F, full_matrices=True)
    rank = int(np.sum(s > max(F.shape) * np.finfo(float).eps * (s[0] if s.size else 0.0)))
    null = vt[rank:]
    v_inf = sol + null.T @ (null @ v0)
    A = F.T @ F
    return np.stack([v_inf if np.isinf(t) else v_inf + expm(-2.0 * A * t) @ (v0 - v_inf) for t in times])


def simulate_reference(m, problem, v0, times, params, *, lp_head=False, key=None):
    """`simulate`'s answer inside `reference()`: a `Trajectory` from the reference integration (see the module)."""
    del key
    if m.name not in METHODS or m.loss != "squared":
        raise NotImplementedError(
            f"linnet.testing.reference() has an independent reference for {METHODS} (squared loss) only, not "
            f"{m.name!r}; evaluate statements on other methods with the simulator"
        )
    if params:
        raise NotImplementedError(f"the reference takes no method parameters, got {sorted(params)}")
    if is_traced(problem, v0, times):
        raise TypeError("linnet.testing.reference() needs concrete inputs (it runs scipy): call the statement eagerly")
    t = check_times(times)
    X, y, B0 = (np.asarray(a, np.float64) for a in (problem.X, problem.y, problem.B0))
    v0 = np.asarray(v0, np.float64)
    if m.name == "lp":
        v = lp_reference(X, y, B0, v0, t)
        B = np.broadcast_to(B0, (len(t), *B0.shape))
    else:
        start = lp_reference(X, y, B0, v0, [np.inf])[0] if (m.name == "lpft" or lp_head) else v0
        v, B = radau_fine_tune(X, y, B0, start, t, rtol=RTOL, atol=ATOL)
    dtype = problem.X.dtype
    d = B0.shape[1]
    return make_trajectory(
        problem, jnp.asarray(t, dtype), jnp.asarray(v, dtype), jnp.asarray(B - B0, dtype), jnp.eye(d, dtype=dtype),
        num_steps=0, result=RESULTS.successful, t_stop=float(t[np.isfinite(t)].max(initial=0.0)), method=m.name,
        solver="scipy Radau (full state)" if m.name != "lp" else "NumPy exact", loss="squared",
    )  # fmt: skip


@contextlib.contextmanager
def reference():
    """Route every simulation inside the `with` block to the independent reference (scipy Radau on the full state
    for FT and LP-FT, NumPy's exact solution for LP), e.g. `with linnet.testing.reference(): statement(p, v0)`.
    Statements must then be called eagerly, on concrete inputs."""
    token = REFERENCE.set(simulate_reference)
    try:
        yield
    finally:
        REFERENCE.reset(token)
