"""Fine-tuning gradient flow in the coordinates where it lives.

Design note. With the thin SVD X = U diag(s) Vᵀ (V of shape (d, r)), the gradient
∇_B L̂ = 2 v (Xᵀ r)ᵀ has rows in S = rowspace(X) = span(V). So B(t) = B0 + ΔG(t) Vᵀ with ΔG ∈ R^{k×r}, and the
flow of docs/theory.md is, exactly, the flow of (v, G = B V) ∈ R^k × R^{k×r}:

    z = Gᵀ v,   g = s ⊙ (s ⊙ z − Uᵀ y),   dv/dt = −2 G g,   dG/dt = −2 v gᵀ.

The state has k (r + 1) entries whatever d is; B is rebuilt as B0 + ΔG Vᵀ only when asked.

The flow is stiff: near a fit, the residual in eigen-direction j decays at a rate ≈ 2 s_j² (‖v‖² + …), so the
rates span cond(X)², and for the default square-Gaussian inputs in S cond(X)² is 10⁴–10⁶. An explicit solver
(Tsit5) is step-limited by the fastest rate and needs 10⁵+ steps to reach t = ∞ (measured: 188 909 steps on the
benchmark's small problem, d = 500, k = 5, n = 100, against 488 implicit ones). We therefore use L-stable
methods with an adaptive PID controller: the step grows with the slowest rate, and t = ∞ is reached in a few
hundred steps. The Jacobian of this flow is arrowhead-shaped in (v, columns of G), so each
step's Newton systems (I − γ J) can be solved by `ArrowheadSolver` (`_structured.py`) in O(r k³) instead of the
O((k r)³) of the dense LU diffrax would use (measured at d = 2000, k = 10, n = 400: 1.8 s to t = ∞ against 278 s
with the dense LU, same 262 steps). Each block is a scaled identity plus a rank-one term, so they are factored in
closed form in O(r k² + k³) (`FTNewton`, `ft_jacobian.py`). The default (`default_solver`) is `Rodas5P`
(`linnet._solver.rosenbrock`): a Rosenbrock–Wanner method that factors that Newton matrix once per step at the
exact Jacobian and takes eight linear solves, with no Newton iterations; `kvaerno5_solver()` is Kvaerno5 with the
same closed-form solve, fused into one step (`linnet._solver.fused`). When
cond(X)² ≤ 100 (e.g. Gaussian inputs with n ≪ d) the flow is not stiff and `fine_tune` uses Tsit5 instead,
10–30× cheaper there (see benchmarks/RESULTS.md). `solver=` accepts any diffrax solver.

Steady state (t = ∞). The solve stops when the distance left to the limit, estimated to first order, is below
atol + rtol ‖θ‖. Two estimates are used, and the smaller wins (both are upper bounds near a fit):
‖f‖ / (2 s_min² ‖v‖²), since the slowest relaxation rate near a fit is at least 2 s_min² ‖v‖² (the Gauss–Newton
operator is (‖v‖² I + GᵀG) diag(s²)); and, when there is no L2-SP term (so the limit fits the data),
‖ρ / s‖ / ‖v‖ with ρ = s ⊙ z − Uᵀy, the length of the least-norm correction that closes the residual, which the
gradient flow of a nearly linear least-squares problem travels. The first weighs every mode by the slowest rate,
so the tolerance-sized jitter of an explicit method's fast modes made Tsit5 miss it for 2 000 steps on 2 of 12
Gaussian-input instances (measured); the second does not weigh them so. `tests/test_fine_tune.py` checks the
promise by integrating on from the stop. If `max_steps` runs out first, the caller raises.
"""

from __future__ import annotations

from functools import partial

import diffrax as dfx
import jax
import jax.numpy as jnp

from .._config import jit
from .._numerics import safe_norm
from .._problem import Reduced, residual
from .._solver import diffrax_internals
from .._solver.choice import is_implicit
from .._solver.diffrax_internals import SafeChord
from .._solver.fused import FusedKvaerno5
from .._solver.integrate import integrate
from .._solver.newton import ArrowheadSolver, DenseNewton
from .._solver.rosenbrock import Rodas5P
from .ft_jacobian import FTNewton


def ft_vector_field(t, state, args):
    """−∇ L̂ in reduced coordinates; `state = (v (k,), G (k, r))`, `args = (s (r,), Uᵀy (r,))`."""
    del t
    v, G = state
    s, a = args
    g = s * residual(s, a, v, G)
    return (-2.0 * (G @ g), -2.0 * jnp.outer(v, g))


# Generalised flow: η_v, η_B (learning rates of head and features) and λ_v, λ_B (L2-SP strengths) in
#     dv/dt = −η_v (∇_v L̂ + 2 λ_v v),   dB/dt = −η_B (∇_B L̂ + 2 λ_B (B − B0)).
# The regulariser's gradient 2 λ_B (B − B0) has rows in S when B − B0 does, so the flow still lives on (v, G).
# It is integrated in the scaled coordinates ṽ = v/√η_v, G̃ = G/√η_B, where it is again a gradient flow (of the
# objective composed with the scaling): its Jacobian is a symmetric Hessian with the same arrowhead shape, so
# the arrowhead solvers apply unchanged. With η = 1, λ = 0 the field is `ft_vector_field` exactly.
FT_PARAMS = (1.0, 1.0, 0.0, 0.0)


def general_field(t, state, args):
    del t
    vt, Gt = state
    s, a, G0, params = args
    eta_v, eta_B, lam_v, lam_B = params[0], params[1], params[2], params[3]
    rv, rB = jnp.sqrt(eta_v), jnp.sqrt(eta_B)
    v, G = rv * vt, rB * Gt
    g = s * residual(s, a, v, G)
    return (-2.0 * rv * (G @ g + lam_v * v), -2.0 * rB * (jnp.outer(v, g) + lam_B * (G - G0)))


def steady_state(rtol, atol):
    def cond_fn(t, state, args, **kwargs):
        s, _, _, params = args
        eta_v, eta_B, lam_v, lam_B = params[0], params[1], params[2], params[3]
        rv, rB = jnp.sqrt(eta_v), jnp.sqrt(eta_B)
        v = rv * state[0]
        s2 = jnp.where(s > 0, s**2, jnp.inf)
        # slowest relaxation rate near the limit: the residual decays at ≥ 2 η_B s_min² ‖v‖² (Gauss–Newton operator
        # η_B ‖v‖² I + η_v GᵀG), and with L2-SP the directions that do not touch the residual decay at 2 η λ
        rate = 2.0 * eta_B * (jnp.min(s2) * jnp.sum(v**2) + lam_B)
        rate = jnp.where(lam_B > 0, jnp.minimum(rate, 2.0 * eta_B * lam_B), rate)
        rate = jnp.where(lam_v > 0, jnp.minimum(rate, 2.0 * eta_v * lam_v), rate)
        fv, fG = general_field(t, state, args)
        f_orig = (rv * fv, rB * fG)  # the velocity of (v, G) in the original coordinates
        G = rB * state[1]
        theta = (v, G)
        # rounding floor: f is computed from the residual s ⊙ (s ⊙ z − a), whose rounding error is about
        # eps · s_max (s_max ‖z‖ + ‖a‖); below that the velocity is noise, and waiting for it (float32 with
        # cond(X)² eps > rtol) would never end. In float64 the floor is far below the tolerance.
        eps = jnp.finfo(v.dtype).eps
        s_max = jnp.max(s)
        noise = 4.0 * eps * s_max * (s_max * safe_norm(G.T @ v) + safe_norm(args[1]))
        noise = noise * (jnp.sqrt(eta_v) * safe_norm(G) + jnp.sqrt(eta_B) * safe_norm(v))
        tol = atol + rtol * safe_norm(theta)
        # distance left, bound 1: ‖f‖ / (slowest rate). Valid for every flow here, but it weighs each mode's
        # velocity by the slowest rate, so a fast mode carrying a tolerance-sized error (explicit steps jitter at
        # that level) overstates the distance by up to cond(X)².
        by_rate = safe_norm(f_orig) <= jnp.maximum(rate * tol, noise)
        # bound 2 (no L2-SP term, so the limit fits the data): the flow converges to θ + Δ with J Δ = −ρ to first
        # order, ρ = s ⊙ z − Uᵀy, J = ∂ρ/∂θ; the gradient flow moves by the least-norm Δ in the scaled coordinates,
        # and J Jᵀ ⪰ η_B ‖v‖² diag(s²) there, so ‖Δ‖ ≤ max(1, √(η_v/η_B)) ‖ρ / s‖ / ‖v‖ in (v, G)
        rho = residual(s, args[1], v, G)
        rho_s = safe_norm(jnp.where(s > 0, rho / jnp.where(s > 0, s, 1.0), 0.0))
        scale = jnp.maximum(1.0, jnp.sqrt(eta_v / eta_B)) / jnp.maximum(safe_norm(v), jnp.finfo(v.dtype).tiny)
        by_residual = (lam_v == 0) & (lam_B == 0) & (scale * rho_s <= tol)
        return by_rate | by_residual

    return cond_fn


def _lipschitz_bound(s, a, v, G, params):
    """An upper bound on ‖∂f/∂θ‖ at θ = (v, G) for the generalised flow (in its scaled coordinates).

    f = −2 Jᵀρ (+ L2-SP terms) with ρ = s ⊙ (Gᵀv) − a and J = ∂ρ/∂(v, G), so ‖∂f/∂θ‖ ≤ 2 (‖J‖² + s_max ‖ρ‖)
    + 2 max λ with ‖J‖ ≤ s_max (‖G‖₂ + ‖v‖); the rescaling by √η multiplies it by at most max η."""
    s_max = jnp.max(s)
    rho = residual(s, a, v, G)
    jac = 2.0 * (s_max**2 * (jnp.linalg.norm(G) + jnp.linalg.norm(v)) ** 2 + s_max * jnp.linalg.norm(rho))
    bound = jnp.maximum(params[0], params[1]) * (jac + 2.0 * jnp.maximum(params[2], params[3]))
    return jnp.maximum(bound, jnp.finfo(v.dtype).tiny)


# The closed-form Newton solve (used by the default `FusedKvaerno5` and by `structured_solver`) serves every k: a
# factorisation costs
# O(r k² + k³) against the arrowhead's O(r k³), and for small k its unrolled, elementwise elimination has less
# overhead than the arrowhead's 2k operator probes (measured warm to t = ∞: small problem, d = 500, k = 5, n = 100,
# 0.054 s against 0.156 s; medium, d = 5 000, k = 20, n = 1 000, 2.8 s against 22.6 s; the same steps, 488 and 606,
# and the same OOD error at the limit to 1e-15 relative). The arrowhead solve remains the fallback when the
# installed diffrax's stage layout is not the one `StructuredChord` reads.


def default_solver(k: int | None = None):
    """The stiff solver of the FT flow with k features (`k` is accepted for the `Method.solver` protocol):
    `Rodas5P`, a Rosenbrock–Wanner method (L-stable, 5th order, `linnet._solver.rosenbrock`) whose one Newton
    matrix per step is factored in closed form (`FTNewton`, exact, as the method's order needs). Against Kvaerno5
    with the same closed-form solve (`kvaerno5_solver()`, the default before; FT to t = ∞ on 2 CPU cores, one
    benchmark run, `benchmarks/RESULTS.md`): the small stiff problem (d = 500, k = 5, n = 100) warm in 17 ms and
    189 steps against 29 ms and 195, the medium one (d = 5 000, k = 20, n = 1 000) in 0.50 s against 1.03 s; in
    interleaved runs its program compiled in 2.2–2.6 s against 2.9–3.5 s, the gradient's in 6.0–7.1 s against
    8.0–9.4 s."""
    del k
    return _DEFAULT_SOLVER


_DEFAULT_SOLVER = Rodas5P(newton=FTNewton())  # one instance (immutable): built once, not on every call


def stacked_solver():
    """`Rodas5P` with the closed-form Newton solve applied member by member over a stack of instances (every leaf of
    the state and arguments with a leading axis; `linnet._run.stacked`), its k × k LU unrolled so that the stack's
    factorisations are one vectorised computation."""
    return Rodas5P(newton=FTNewton(unrolled=True), batched=True)


def batch_solver():
    """The default solver with the k × k LU of its Newton matrix unrolled into elementwise operations
    (`FTNewton(unrolled=True)`): the same method and the same closed-form solve, for the members of a sweep's batch,
    which are vmapped 8 at a time. Vmapped, LAPACK's LU and triangular solves run one call per member; the unrolled
    ones are one vectorised computation over the members (a sweep of 1 000 small stiff problems, d = 500, k = 5,
    n = 100, 2 CPU cores: 240–262 trajectories/s against 226–243 in alternating runs). A single solve keeps
    LAPACK's, whose program compiles faster (`linnet._solver.newton.lu_factor`)."""
    return _BATCH_SOLVER


_BATCH_SOLVER = Rodas5P(newton=FTNewton(unrolled=True))


def batch_order(problems, v0s):
    """The key by which a sweep's batch groups its members (`Method.batch_order`): s_min ‖v0‖ per member, the root
    of the slowest relaxation rate 2 s_min² ‖v‖² near a fit (the steady-state rule's rate; the batch's η and λ are
    the same for every member). On 1 000 small stiff problems (d = 500, k = 5, n = 100, v0 ~ N(0, I)) the log of
    this key correlates with the steps to t = ∞ at −0.70; chunks of 8 in its order waste 9 % of their member-steps
    on members already done, against 15 % in the instances' order, and the sweep ran 254–282 trajectories/s
    against 236–250 (alternating runs, 2 CPU cores). **Arguments:** a batched `Problem` (N instances), `v0s`
    (N, k). **Returns:** (N,)."""
    s = problems.reduced.s
    s_min = jnp.min(jnp.where(s > 0, s, jnp.inf), axis=-1)
    return s_min * jnp.linalg.norm(v0s, axis=-1)


def kvaerno5_solver():
    """`FusedKvaerno5`: Kvaerno5 (L-stable ESDIRK, 5th order) with its stages as one scan and its chord iterations
    written out, its Newton systems factored in closed form (`linnet._solver.fused`). It uses only diffrax's public
    solver interface. The same method through diffrax's own `Kvaerno5` is `structured_solver()` (closed-form
    solve) or `arrowhead_solver()` (operator products only)."""
    return FusedKvaerno5(newton=FTNewton(unrolled=True))


def arrowhead_solver():
    """diffrax's Kvaerno5 inside `SafeChord` with `ArrowheadSolver`, which sees the Newton matrix only through
    operator products (so it reads nothing of diffrax's internals), O(r k³) per factorisation: the structured solve
    for operators of the arrowhead shape that are not the generalised FT flow's."""
    root_finder = dfx.with_stepsize_controller_tols(SafeChord)(linear_solver=ArrowheadSolver())
    return dfx.Kvaerno5(root_finder=root_finder)


def dense_solver(k: int | None = None):
    """`Rodas5P(newton=DenseNewton())`, Rodas5P with a dense LU of the Newton matrix (J by forward mode, exact),
    whatever `k`: the default of the flows whose Jacobians have no structure linnet uses (the logistic loss, LoRA,
    deep extractors). Against the fused Kvaerno5 with the same dense solve (`FusedKvaerno5(newton=DenseNewton())`,
    the default before; d = 30, k = 3, n = 12, 2 CPU cores): logistic FT to t = 10¹² compiled and run in 2.1 s
    against 2.6 s, warm 10.0 ms against 12.2 ms (164 steps against 122), OOD error within 2e-11 of an rtol-1e-11
    reference against 3e-10; LoRA to t = ∞ 2.5 s against 3.1 s, warm 11.6 ms against 14.9 ms."""
    del k
    return Rodas5P(newton=DenseNewton())


def structured_solver():
    """diffrax's Kvaerno5 whose Newton systems are factored in closed form by `FTNewton` (through
    `linnet._solver.diffrax_internals.StructuredChord`): the default's method and linear algebra inside diffrax's
    own stage and Newton loops, so its steps are diffrax's (the default, `FusedKvaerno5`, allows one more chord
    iteration per stage). It reads diffrax's internal layout of an implicit stage's arguments, so on a diffrax
    release where `linnet._solver.diffrax_internals.layout_ok()` fails it raises a `RuntimeError`."""
    return diffrax_internals.structured_solver(FTNewton())


def initial_state(reduced, v0, params):
    """(y0, args) of the generalised FT flow from (v0, G0) in the scaled coordinates (v/√η_v, G/√η_B);
    `params` = (η_v, η_B, λ_v, λ_B)."""
    rv, rB = jnp.sqrt(params[0]), jnp.sqrt(params[1])
    return (v0 / rv, reduced.G0 / rB), (reduced.s, reduced.Uty, reduced.G0, params)


def pad(y0, args, bucket):
    """(y0, args) with r padded to bucket(r) by columns with s = 0, Uᵀy = 0, G = G0 = 0: their residual and
    velocity are zero (dG_q = −2 v g_q with g_q = s_q (…) = 0, and the L2-SP pull G_q − G0_q = 0), and so are their
    Newton blocks' couplings, so the padded flow is the flow, column for column."""
    vt, Gt = y0
    s, a, G0, params = args
    extra = bucket(s.shape[0]) - s.shape[0]

    def columns(x):
        return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, extra)])

    return (vt, columns(Gt)), (columns(s), columns(a), columns(G0), params)


def unscale(ys, args):
    """The path (v (T, k), G (T, k, r)) in the original coordinates from the scaled one."""
    params = args[3]
    return jnp.sqrt(params[0]) * ys[0], jnp.sqrt(params[1]) * ys[1]


def explicit_dt0(y0, args):
    """1 / (a Lipschitz bound of f) at the start: a stable first step for an explicit method. diffrax's initial-step
    heuristic can overshoot the stability limit by 5× at large k (measured at d = 2000, k = 100, n = 1000); the
    cubic field then overflows within one step and every later step is rejected."""
    s, a, _, params = args
    v, G = unscale(jax.tree_util.tree_map(lambda x: x[None], y0), args)
    return 1.0 / _lipschitz_bound(s, a, v[0], G[0], params)


@partial(jit, static_argnames=("max_steps", "solver"))
def solve_reduced(s, a, v0, G0, times, *, rtol, atol, max_steps: int, solver=None, params=None):
    """Plain or generalised FT from (v0, G0) on (s, Uᵀy) by the one driver (`linnet._solver.integrate.integrate`); for
    tests and benchmarks that restart the flow from an arbitrary state. **Returns:** `(v (T, k), G (T, k, r),
    result, num_steps, t_stop)`."""
    solver = default_solver() if solver is None else solver
    params = jnp.asarray(FT_PARAMS if params is None else params, v0.dtype)
    reduced = Reduced(s=s, V=jnp.zeros((0, s.shape[0]), v0.dtype), Uty=a, G0=G0)
    y0, args = initial_state(reduced, v0, params)
    dt0 = None if is_implicit(solver) else explicit_dt0(y0, args)
    ys, result, steps, t_stop = integrate(
        general_field, y0, args, times, steady=steady_state(rtol, atol), solver=solver, rtol=rtol, atol=atol,
        max_steps=max_steps, dt0=dt0,
    )  # fmt: skip
    v, G = unscale(ys, args)
    return v, G, result, steps, t_stop
