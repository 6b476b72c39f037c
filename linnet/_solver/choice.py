"""The solver choice that depends on the data, not on the method: an explicit solver where the flow is not stiff,
and the labels that `Trajectory.solver` records.

The gradient flows here relax at rates that span cond(X)² (near a fit, the residual in the j-th singular direction
of X decays at a rate ∝ s_j²). When cond(X)² ≤ `STIFF_COND2` an explicit method's step is not limited by the
fastest rate, and Tsit5 is cheaper than any implicit method (no Newton systems); otherwise an implicit method is
needed. The explicit attempt gets `EXPLICIT_STEPS` steps before the caller falls back to the method's implicit
solver. Timings of both choices are in `benchmarks/RESULTS.md`.
"""

from __future__ import annotations

import diffrax as dfx
import numpy as np

from .diffrax_internals import FactoredSolver
from .fused import FusedKvaerno5
from .newton import ArrowheadSolver
from .rosenbrock import Rodas5P

EXPLICIT_STEPS = 2_000  # step budget of the explicit attempt before falling back to the implicit method
STIFF_COND2 = 100.0  # cond(X)² above which the flow counts as stiff (explicit steps would be rate-limited)


def explicit_is_enough(s):
    """Whether plain fine-tuning on data with singular values `s` (concrete, (r,) or batched (..., r)) is non-stiff
    enough for Tsit5: the relaxation rates near a fit span s_min² … s_max² (times ‖v‖²-like factors), so cond(X)²
    bounds the ratio. Only in float64. **Returns:** a bool for (r,), a NumPy bool array (...) for a batch."""
    s = np.asarray(s)
    if np.finfo(s.dtype).eps > 1e-10:
        # float32: near the limit Tsit5's error estimates are rounding noise, its steps jitter the state, and the
        # steady-state test is never met (measured); the implicit method stops cleanly
        return False if s.ndim == 1 else np.zeros(s.shape[:-1], bool)
    pos = s > 0
    s_max = np.max(s, axis=-1)
    s_min = np.min(np.where(pos, s, np.inf), axis=-1)
    ok = np.any(pos, axis=-1) & ((s_max / np.where(np.isfinite(s_min), s_min, 1.0)) ** 2 <= STIFF_COND2)
    return bool(ok) if s.ndim == 1 else ok


def is_implicit(solver) -> bool:
    """Whether `solver` is built for stiff flows (an implicit or linearly implicit method), so that its first step
    is left to diffrax's heuristic; an explicit method starts from a stable step instead."""
    return isinstance(solver, (dfx.AbstractImplicitSolver, Rodas5P))


def explicit_solver():
    """Tsit5: the cheapest accurate choice when the flow is not stiff (no Newton systems)."""
    return dfx.Tsit5()


def solver_name(solver) -> str:
    """A short label for a diffrax solver, as recorded in `Trajectory.solver`: the class name, and for an implicit
    solver with a structured or fused Newton solve "+" its label (e.g. "FusedKvaerno5+ShermanMorrison")."""
    name = type(solver).__name__
    if isinstance(solver, (FusedKvaerno5, Rodas5P)):
        return f"{name}+{solver.newton.label}"
    root = getattr(solver, "root_finder", None)
    linear = getattr(root, "linear_solver", None) if root is not None else None
    if isinstance(linear, ArrowheadSolver):
        name += "+Arrowhead"
    elif isinstance(linear, FactoredSolver):
        name += "+" + linear.newton.label
    return name
