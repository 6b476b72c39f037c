"""Scale-safe elementary numerics shared by the stopping tests and closed forms.

A stopping test that squares a velocity of size 1e-200 gets 0 (underflow) and declares a steady state at the start;
one that squares 1e200 gets inf. The norms here scale by the largest entry first, so they are exact to rounding
wherever the norm itself is representable."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def safe_norm(tree) -> jax.Array:
    """‖tree‖₂, the Euclidean norm of all entries of a pytree of arrays, computed as m ‖tree / m‖₂ with m the
    largest |entry|, so that no intermediate underflows or overflows. 0 for an all-zero tree; NaN propagates."""
    leaves = [jnp.ravel(x) for x in jax.tree_util.tree_leaves(tree)]
    if not leaves:
        return jnp.asarray(0.0)
    x = jnp.concatenate(leaves)
    m = jnp.max(jnp.abs(x), initial=0.0)
    # m = inf (an overflowed entry) must give inf, not inf/inf = NaN
    m_safe = jnp.where((m > 0) & jnp.isfinite(m), m, 1.0)
    return jnp.where(jnp.isfinite(m), m_safe * jnp.sqrt(jnp.sum((x / m_safe) ** 2)), m)


def scale_range(dtype) -> tuple[float, float]:
    """The range of the scale c = max s (the largest singular value of X) over which a solved flow is computed
    without underflow or overflow: (tiny^{1/4} · 10³, max^{1/4} / 10³) of `dtype`, about (1e-74, 1e74) in float64
    and (3e-7, 4e6) in float32.

    The flows' rates go as s² ‖v‖², their Jacobians and the solver's error norms as s⁴; past these bounds FT was
    measured to stop at the initial state or run out of steps (float64 at 1e±100) or, in float32 at 1e-9, to
    return a wrong limit. A factor c of X (and y) changes no limit and rescales time by c², so a problem outside
    the range loses nothing by being rescaled."""
    info = jnp.finfo(dtype)
    return float(info.tiny) ** 0.25 * 1e3, float(info.max) ** 0.25 / 1e3


def scale_out_of_range(s, dtype):
    """Whether the scale max s of singular values `s` (..., r) is outside `scale_range(dtype)`: a bool per instance
    (NumPy for concrete `s`, a traced array otherwise). An all-zero X (c = 0) counts as in range."""
    lo, hi = scale_range(dtype)
    xp = np if isinstance(s, np.ndarray) else jnp
    c = xp.max(s, axis=-1, initial=0.0)
    return (c > 0) & ((c < lo) | (c > hi))


def residual_at_rounding_floor(s, a, rho) -> jax.Array:
    """Whether the training residual ρ = s ⊙ z − Uᵀy (z = Bᵀv in the right singular basis, `a` = Uᵀy) is down to
    its rounding floor 4 eps s_max (s_max ‖z‖ + ‖a‖): the data are fitted as well as the dtype can tell, and a
    gradient 2 Jᵀρ is then rounding noise. The stopping tests of the general flows and of GD use it, so that float32
    stops on stiff data; in float64 it is far below what their tolerance test needs."""
    z = jnp.where(s > 0, (rho + a) / jnp.where(s > 0, s, 1.0), 0.0)
    s_max = jnp.max(s)
    return safe_norm(rho) <= 4.0 * jnp.finfo(s.dtype).eps * s_max * (s_max * safe_norm(z) + safe_norm(a))
