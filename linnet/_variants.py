"""Fine-tuning methods beyond the paper, in the same exact setting (issue #6).

Each is a small change to the gradient flow of `_methods`, returns a `Trajectory` (WiSE-FT: a family of
predictors), and states its prediction in its docstring; the tests check each against an independent reference.
The flows keep the paper's loss L̂ = ‖X Bᵀ v − y‖² and time unit.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np

from ._errors import bilinear_error
from ._flow import residual
from ._methods import (
    ConvergenceError,
    Trajectory,
    _check_head,
    _fine_tune,
    _make_trajectory,
    linear_probe,
    lp_limit_head,
)
from ._problem import Problem
from ._validate import as_float_array, check_times, check_tolerance

# ------------------------------------------------------------------------------------------------------
# 1. Two learning rates   3. L2-SP   (both integrated by the generalised reduced flow of `_flow`)
# ------------------------------------------------------------------------------------------------------


def _check_rate(x, name: str, positive: bool = False) -> float:
    x = float(x)
    if not np.isfinite(x) or x < 0 or (positive and x == 0):
        raise ValueError(f"`{name}` must be a finite number {'> 0' if positive else '>= 0'}, got {x}")
    return x


def two_learning_rates(
    problem: Problem,
    v0: jax.Array,
    times,
    *,
    eta_v: float = 1.0,
    eta_B: float = 1.0,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
) -> Trajectory:
    """Fine-tuning with a learning rate per layer: ∂_t v = −η_v ∇_v L̂, ∂_t B = −η_B ∇_B L̂, from (v0, B0).

    η_B = 0 is LP (time scaled by η_v) and η_v = 0 is `features_only` (time scaled by η_B); η_v = η_B = 1 is FT.

    **Prediction:** v vᵀ/η_v − B Bᵀ/η_B is conserved and B is unchanged on S⊥ (∇_B L̂ has rows in S). For k = 1
    this fixes the limit in closed form (`linnet.theory.ft_limit_k1(..., lr_ratio=η_v/η_B)`), and as
    η_B/η_v → 0 the *limit* does not tend to LP's: B keeps its norm and rotates inside S until the data are fitted,
    so v∞ → ‖P_S w⋆‖/‖P_S b0‖ (see paper_repro.md, "Beyond the paper").

    **Arguments:** as `fine_tune`, plus `eta_v`, `eta_B` ≥ 0. **Returns:** a `Trajectory` (method "two_lr").
    """
    eta_v, eta_B = _check_rate(eta_v, "eta_v"), _check_rate(eta_B, "eta_B")
    v0 = _check_head(problem, v0)
    if eta_v == 0 and eta_B == 0:
        raise ValueError("`eta_v` and `eta_B` cannot both be 0 (nothing would train)")
    if eta_B == 0:
        traj = linear_probe(problem, v0, _scaled_times(times, eta_v))
        return dataclasses.replace(traj, times=jnp.asarray(np.asarray(times, np.float64), v0.dtype), method="two_lr")
    if eta_v == 0:
        traj = features_only(problem, v0, _scaled_times(times, eta_B))
        return dataclasses.replace(traj, times=jnp.asarray(np.asarray(times, np.float64), v0.dtype), method="two_lr")
    return _fine_tune(
        problem, v0, times, rtol=rtol, atol=atol, max_steps=max_steps, solver=None, method="two_lr",
        params=(eta_v, eta_B, 0.0, 0.0),
    )  # fmt: skip


def _scaled_times(times, c: float) -> np.ndarray:
    check_times(times)
    return c * np.asarray(times, dtype=np.float64)


def l2_sp(
    problem: Problem,
    v0: jax.Array,
    times,
    *,
    lam_B: float,
    lam_v: float | None = None,
    lp_head: bool = False,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
) -> Trajectory:
    """L2-SP: gradient flow on L̂(v, B) + λ_B ‖B − B0‖²_F + λ_v ‖v‖² from (v0, B0) (from (v_lp^∞, B0) if `lp_head`).

    **Prediction:** the regulariser's gradient 2 λ_B (B − B0) has rows in S whenever B − B0 does, so B is still
    unchanged on S⊥; the limit is a stationary point: ∇_v L̂ + 2 λ_v v = 0 and ∇_B L̂ + 2 λ_B (B − B0) = 0.
    λ_B = 0 is FT; λ_B → ∞ freezes B (LP).

    `lam_v` defaults to `lam_B`. With λ_v = 0 < λ_B the objective has no minimiser unless B0 already fits the
    data: scaling v up by c and the needed feature change down by 1/c drives the penalty to 0, so v → ∞ slowly
    and t = ∞ is refused (a `ValueError`); finite times are fine.

    **Returns:** a `Trajectory` (method "l2_sp").
    """
    lam_B = _check_rate(lam_B, "lam_B")
    lam_v = lam_B if lam_v is None else _check_rate(lam_v, "lam_v")
    if check_times(times)[1] and lam_v == 0 and lam_B > 0:
        raise ValueError(
            "`lam_v` = 0 with `lam_B` > 0 has no t = inf limit (the head grows without bound while B − B0 → 0); "
            "pass lam_v > 0 or finite times"
        )
    v0 = _check_head(problem, v0)
    if lp_head:
        v0 = lp_limit_head(problem, v0)
    return _fine_tune(
        problem, v0, times, rtol=rtol, atol=atol, max_steps=max_steps, solver=None, method="l2_sp",
        params=(1.0, 1.0, lam_v, lam_B),
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------------
# 4. Partial tuning: features only (the head frozen) — an exact solution
# ------------------------------------------------------------------------------------------------------


def _features_only_path(problem: Problem, v, times):
    """Exact features-only flow. With v fixed, z = Gᵀv obeys ż_q = −2‖v‖² s_q (s_q z_q − a_q), a linear ODE
    with solution z_q(t) = a_q/s_q + (z_q(0) − a_q/s_q) e^{−2‖v‖² s_q² t}, and Ġ = −2 v gᵀ = v żᵀ/‖v‖², so
    G(t) = G0 + v (z(t) − z(0))ᵀ / ‖v‖². Returns (v (T, k), ΔG (T, k, r))."""
    s, a = problem._s, problem._Uty
    G0 = problem.B0 @ problem._V
    z0 = G0.T @ v
    vv = jnp.sum(v**2)
    pos = s > 0
    z_fit = jnp.where(pos, a / jnp.where(pos, s, 1.0), z0)
    rate = 2.0 * vv * s**2
    decay = jnp.where(
        jnp.isinf(times)[:, None],
        jnp.where(rate > 0, 0.0, 1.0),
        jnp.exp(-jnp.outer(jnp.where(jnp.isinf(times), 0.0, times), rate)),
    )
    dz = (z_fit - z0) * (1.0 - decay)  # (T, r)
    dG = jnp.where(vv > 0, jnp.einsum("k,tr->tkr", v, dz) / jnp.where(vv > 0, vv, 1.0), 0.0)
    return jnp.broadcast_to(v, (times.shape[0], v.shape[0])), dG


def features_only(problem: Problem, v0: jax.Array, times, *, lp_head: bool = False) -> Trajectory:
    """Partial tuning of the features: head frozen at v0 (or at the LP head v_lp^∞ if `lp_head`), ∂_t B = −∇_B L̂.

    Solved exactly (no ODE): with v fixed the flow of z = (BV)ᵀ v is linear (see `_features_only_path`).
    **Predictions:** B moves only along v ⊗ S (rank one, rows in S); the limit fits the data whenever v ≠ 0; with
    the LP head and ε = 0 (B0 = U B⋆) the data are already fitted and the features do not move at all.

    **Returns:** a `Trajectory` (method "features_only"); head-only tuning is `linear_probe`.
    """
    v0 = _check_head(problem, v0)
    check_times(times)
    if lp_head:
        v0 = lp_limit_head(problem, v0)
    t = jnp.asarray(np.asarray(times, dtype=np.float64), v0.dtype)
    v, dG = _features_only_path(problem, v0, t)
    return _make_trajectory(problem, t, v, dG, 0, "features_only")


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
        lo, hi = float(bounds[0]), float(bounds[1])
        if not lo <= hi:
            raise ValueError(f"`bounds` must be (lo, hi) with lo <= hi, got {bounds}")
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
# 6. Discrete gradient descent
# ------------------------------------------------------------------------------------------------------


class DivergenceError(ConvergenceError):
    """Gradient descent diverged (its step is beyond the problem's stability limit)."""


def _gd_step(s, a, lr, state):
    v, G = state
    g = s * residual(s, a, v, G)
    return v - lr * 2.0 * (G @ g), G - lr * 2.0 * jnp.outer(v, g)


def _gd_loss(s, a, state):
    return _residual_loss(s, a, *state)


@partial(jax.jit, static_argnames=("max_iter",))
def _gd_segment(s, a, lr, state, n_iter, max_iter, rtol, atol, limit):
    """Run n_iter steps (or, if `limit`, until the steady-state test) from `state`; stops early on blow-up."""
    loss0 = _gd_loss(s, a, state)

    def cond(c):
        i, _, bad, done = c
        return (i < jnp.where(limit, max_iter, n_iter)) & ~bad & ~done

    def body(c):
        i, st, _, _ = c
        new = _gd_step(s, a, lr, st)
        loss = _gd_loss(s, a, new)
        bad = ~jnp.isfinite(loss) | (loss > 1e12 * (1.0 + loss0))
        v, G = new
        step = jnp.sqrt(jnp.sum((new[0] - st[0]) ** 2) + jnp.sum((new[1] - st[1]) ** 2))
        s2 = jnp.where(s > 0, s**2, jnp.inf)
        rate = 2.0 * lr * jnp.min(s2) * jnp.sum(v**2)  # per-step contraction of the slowest residual direction
        norm = jnp.sqrt(jnp.sum(v**2) + jnp.sum(G**2))
        done = limit & (step <= rate * (atol + rtol * norm))
        return i + 1, new, bad, done

    i, st, bad, done = jax.lax.while_loop(cond, body, (jnp.asarray(0), state, jnp.asarray(False), jnp.asarray(False)))
    return st, i, bad, done


def gradient_descent(
    problem: Problem,
    v0: jax.Array,
    times,
    *,
    lr: float,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_iter: int = 10_000_000,
) -> Trajectory:
    """Discrete gradient descent θ ← θ − lr ∇L̂(θ) on (v, B) from (v0, B0) — what people actually run.

    Iteration i is compared with the flow at time t = i · lr: a finite time t is sampled at iteration round(t/lr);
    `inf` runs until the steps are below the steady-state tolerance (as `fine_tune`). Like the flow, GD moves B
    only inside S (each step adds rows in S), so it runs in the same reduced coordinates.

    **Predictions:** its limit tends to the flow's as lr → 0 (first order in lr); beyond a problem-dependent step
    (about 2/λ_max(∇²L̂) near the path) it diverges — detected, raising `DivergenceError`, never a NaN result.

    **Returns:** a `Trajectory` (method "gd"; `num_steps` is the number of iterations).
    """
    lr = _check_rate(lr, "lr", positive=True)
    rtol = check_tolerance(rtol, "rtol")
    atol = check_tolerance(atol, "atol")
    v0 = _check_head(problem, v0)
    check_times(times)
    t_all = jnp.asarray(np.asarray(times, dtype=np.float64), v0.dtype)
    G0 = problem.B0 @ problem._V
    v, G, iters, bad, conv = _gd_path(problem._s, problem._Uty, v0, G0, t_all, lr, rtol, atol, int(max_iter))
    if bool(bad):
        raise DivergenceError(
            f"gradient descent diverged at iteration {int(iters)} with `lr` = {lr:g} (the loss blew up); "
            f"the step must stay below about 2/λ_max of the Hessian of L̂ along the path — see "
            f"`linnet.gd_stability_step(problem, v0)` (= {gd_stability_step(problem, v0):.4g} at the start)"
        )
    if not bool(conv):
        raise ConvergenceError(
            f"gradient descent did not reach a steady state within `max_iter` = {max_iter} iterations "
            f"(lr = {lr:g}); increase `max_iter` or `lr`"
        )
    return _make_trajectory(problem, t_all, v, G - G0, iters, "gd")


@partial(jax.jit, static_argnames=("max_iter",))
def _gd_path(s, a, v0, G0, t_all, lr, rtol, atol, max_iter):
    """GD sampled at iterations round(t/lr) for the (increasing) times `t_all`, `inf` = run to the steady state.
    Returns (v (T, k), G (T, k, r), iterations, diverged, every t = ∞ reached)."""

    def step(carry, t):
        state, done, bad, conv = carry
        limit = jnp.isinf(t) & ~bad
        target = jnp.where(jnp.isinf(t), 0, jnp.round(t / lr)).astype(done.dtype)
        n = jnp.where(bad, 0, jnp.maximum(target - done, 0))
        new, it, b, reached = _gd_segment(s, a, lr, state, n, max_iter, rtol, atol, limit)
        conv = conv & jnp.where(limit, reached, True)
        return (new, done + it, bad | b, conv), new

    init = ((v0, G0), jnp.asarray(0), jnp.asarray(False), jnp.asarray(True))
    (_, iters, bad, conv), (v, G) = jax.lax.scan(step, init, t_all)
    return v, G, iters, bad, conv


def gd_stability_step(problem: Problem, v0: jax.Array) -> float:
    """2/λ_max(∇²L̂(v0, B0)): the largest step for which GD is stable near the initial point (power iteration on
    Hessian-vector products of the reduced loss; 200 iterations)."""
    v0 = _check_head(problem, v0)
    s, a = problem._s, problem._Uty
    theta0 = (v0, problem.B0 @ problem._V)
    return float(2.0 / _hess_lmax(s, a, theta0))


@jax.jit
def _hess_lmax(s, a, theta0):
    def hvp(u):
        return jax.jvp(jax.grad(lambda th: _gd_loss(s, a, th)), (theta0,), (u,))[1]

    u0 = jax.tree_util.tree_map(lambda x: jnp.ones_like(x) / jnp.sqrt(x.size), theta0)

    def body(_, u):
        hu = hvp(u)
        n = jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(hu)))
        return jax.tree_util.tree_map(lambda x: x / n, hu)

    u = jax.lax.fori_loop(0, 200, body, u0)
    hu = hvp(u)
    return sum(jnp.sum(x * y) for x, y in zip(jax.tree_util.tree_leaves(u), jax.tree_util.tree_leaves(hu), strict=True))


# ------------------------------------------------------------------------------------------------------
# 7. LoRA   8. Deeper feature extractors   (general gradient flows on small reduced states)
# ------------------------------------------------------------------------------------------------------


def _complement_basis(problem: Problem, A: jax.Array) -> jax.Array:
    """Orthonormal basis (d, p) of P_S⊥ Aᵀ (the S⊥ parts of A's rows), p = A.shape[0]; zero columns if rank drops."""
    V = problem.id_basis
    R = A.T - V @ (V.T @ A.T)
    Q, r = jnp.linalg.qr(R)
    keep = jnp.abs(jnp.diag(r)) > 1e-12 * jnp.maximum(1.0, jnp.max(jnp.abs(r)))
    return Q * keep


def _solve_gradient_flow(loss, theta0, times, *, rtol, atol, max_steps, method):
    """Gradient flow θ̇ = −∇ loss(θ) on a small pytree θ (head first) with Kvaerno5 and dense Newton solves.

    t = ∞ uses the steady-state test of `fine_tune`, ‖θ̇‖ ≤ 2 s_min² ‖v‖² (atol + rtol ‖θ‖). For these
    parametrisations 2 s_min² ‖v‖² is a heuristic (not a bound) for the slowest relaxation rate; the tests check
    the limits against scipy at long times. **Returns:** (θ(t) stacked over times, num_steps).
    """
    finite, to_inf = check_times(times)
    rtol = check_tolerance(rtol, "rtol")
    atol = check_tolerance(atol, "atol")
    ys, result, steps = _gf_solve(loss, theta0, jnp.asarray(finite), to_inf, rtol, atol, int(max_steps))
    if result not in (dfx.RESULTS.successful, dfx.RESULTS.event_occurred):
        raise ConvergenceError(
            f"{method} gradient flow did not reach {'a steady state' if to_inf else f't = {finite[-1]:g}'} within "
            f"{int(steps)} steps ({result}); increase `max_steps` (now {max_steps}) or loosen `rtol`/`atol`."
        )
    return ys, steps


@partial(jax.jit, static_argnames=("loss", "to_inf", "max_steps"))
def _gf_solve(loss, theta0, ts, to_inf, rtol, atol, max_steps):
    def field(t, th, args):
        return jax.tree_util.tree_map(jnp.negative, jax.grad(loss)(th, args))

    def steady(t, th, args, **kw):
        f = field(t, th, args)
        fn = jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(f)))
        tn = jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(th)))
        s = args[0]
        rate = 2.0 * jnp.min(jnp.where(s > 0, s**2, jnp.inf)) * jnp.sum(th[0] ** 2)
        return fn <= rate * (atol + rtol * tn)

    dtype = jax.tree_util.tree_leaves(theta0)[0].dtype
    has_ts = ts.shape[0] > 0
    sol = dfx.diffeqsolve(
        dfx.ODETerm(field),
        dfx.Kvaerno5(),
        t0=jnp.asarray(0.0, dtype),
        t1=jnp.asarray(jnp.inf if to_inf else ts[-1], dtype),
        dt0=None,
        y0=theta0[0],
        args=theta0[1],
        saveat=dfx.SaveAt(ts=ts.astype(dtype) if has_ts else None, t1=True),
        stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol, pcoeff=0.3, icoeff=0.4),
        event=dfx.Event(steady),
        max_steps=max_steps,
        throw=False,
    )
    n_saved = jnp.sum(jnp.isfinite(sol.ts))
    reached = jnp.arange(sol.ts.shape[0]) < n_saved - 1

    def fill(y):
        return jnp.where(reached.reshape((-1,) + (1,) * (y.ndim - 1)), y, y[n_saved - 1])

    ys = jax.tree_util.tree_map(fill, sol.ys)
    if not to_inf:
        ys = jax.tree_util.tree_map(lambda y: y[:-1], ys)
    return ys, sol.result, sol.stats["num_steps"]


def _residual_loss(s, a, v, G):
    """L̂ − ‖(I − UUᵀ) y‖² = ‖s ⊙ (Gᵀ v) − Uᵀy‖² in the eigenbasis (the dropped constant has no gradient)."""
    return jnp.sum(residual(s, a, v, G) ** 2)


def _lora_loss(th, args):
    v, U, H = th
    s, a, G0 = args
    return _residual_loss(s, a, v, G0 + U @ H)


def _deep_loss(th, args):
    v, Ws, dG = th
    s, a, G0 = args
    return _residual_loss(s, a, v, _chain(Ws) @ (G0 + dG))


def _chain(Ws):
    """M = W_L ⋯ W_2 for stacked Ws (L − 1, k, k), W_2 first."""
    M = Ws[0]
    for j in range(1, Ws.shape[0]):
        M = Ws[j] @ M
    return M


def lora(
    problem: Problem,
    v0: jax.Array,
    times,
    *,
    rank: int,
    key,
    init_scale: float = 1.0,
    lp_head: bool = False,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
) -> Trajectory:
    """LoRA fine-tuning: B = B0 + U W with U (k, rank) = 0 and W (rank, d) ~ N(0, init_scale²/d) at the start;
    gradient flow on (v, U, W) with the paper's loss.

    **Prediction:** ∇_W = 2 Uᵀv (Xᵀr)ᵀ has rows in S, so W's S⊥ part stays W0 P_S⊥; but B − B0 = U W then has the
    S⊥ part U(t) W0 P_S⊥, nonzero once U moves. Unlike full FT, LoRA changes features on S⊥ whenever W0 has S⊥
    components (always, for a random W0): exactly, B(t) P_S⊥ = B0 P_S⊥ + U(t) W0 P_S⊥.

    Solved in reduced coordinates (v, U, H = W V); the trajectory's `basis` is [V, Q] with Q an orthonormal basis
    of the S⊥ parts of W0's rows. `lp_head=True` starts from the LP head v_lp^∞ (LP then LoRA).
    **Returns:** a `Trajectory` (method "lora").
    """
    if int(rank) != rank or rank < 1:
        raise ValueError(f"`rank` must be a positive integer, got {rank}")
    init_scale = _check_rate(init_scale, "init_scale")
    v0 = _check_head(problem, v0)
    if lp_head:
        v0 = lp_limit_head(problem, v0)
    dtype = v0.dtype
    W0 = init_scale / np.sqrt(problem.d) * jax.random.normal(key, (int(rank), problem.d), dtype)
    (v, U, H), steps = _solve_gradient_flow(
        _lora_loss, _lora_init(problem, v0, W0), times, rtol=rtol, atol=atol, max_steps=max_steps, method="lora"
    )
    Q = _complement_basis(problem, W0)
    dG = jnp.concatenate([U @ H, U @ (W0 @ Q)], axis=-1)
    basis = jnp.concatenate([problem._V, Q], axis=1)
    return _make_trajectory(problem, np.asarray(times, np.float64), v, dG, steps, "lora", basis=basis)


def _lora_init(problem: Problem, v0, W0):
    """(θ0, args) of the reduced LoRA flow: θ = (v, U, H = W V), U0 = 0."""
    k, rank = problem.k, W0.shape[0]
    return (v0, jnp.zeros((k, rank), v0.dtype), W0 @ problem._V), (problem._s, problem._Uty, problem.B0 @ problem._V)


def _lora_predictor(problem: Problem, W0, path):
    """w(t) = B0ᵀv + W(t)ᵀUᵀv with W(t) = W0 + (H − H0)Vᵀ, from the reduced path (v, U, H) (T leading)."""
    v, U, H = path
    u = jnp.einsum("tkp,tk->tp", U, v)
    H0 = W0 @ problem._V
    return v @ problem.B0 + u @ W0 + jnp.einsum("tp,tpr,dr->td", u, H - H0, problem._V)


def deep_fine_tune(
    problem: Problem,
    v0: jax.Array,
    times,
    *,
    depth: int = 2,
    lp_head: bool = False,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
) -> Trajectory:
    """Fine-tuning a deeper feature extractor B = W_L ⋯ W_2 W_1 (`depth` = L layers below the head), from
    W_1 = B0 and W_j = I_k (j ≥ 2), so B(0) = B0; gradient flow on (v, W_1, …, W_L).

    **Prediction:** only the first layer's gradient has rows in S; the upper layers mix the pretrained features,
    so B(t) P_S⊥ = M(t) B0 P_S⊥ with M = W_L ⋯ W_2, which changes for L ≥ 2: features on S⊥ now move.
    `depth` = 1 is FT; `lp_head=True` starts from the LP head v_lp^∞ (LP-FT for the deeper extractor).

    **Returns:** a `Trajectory` (method "deep"; `basis` is [V, Q] with Q an orthonormal basis of the S⊥ parts
    of B0's rows).
    """
    if int(depth) != depth or depth < 1:
        raise ValueError(f"`depth` must be a positive integer, got {depth}")
    v0 = _check_head(problem, v0)
    if lp_head:
        v0 = lp_limit_head(problem, v0)
    if depth == 1:
        return _fine_tune(problem, v0, times, rtol=rtol, atol=atol, max_steps=max_steps, solver=None, method="deep")
    k = problem.k
    V = problem._V
    G0 = problem.B0 @ V
    (v, Ws, dG1), steps = _solve_gradient_flow(
        _deep_loss, _deep_init(problem, v0, int(depth)), times, rtol=rtol, atol=atol, max_steps=max_steps,
        method="deep",
    )  # fmt: skip
    M = jax.vmap(_chain)(Ws)
    Q = _complement_basis(problem, problem.B0)
    dG = jnp.concatenate([M @ (G0 + dG1) - G0, (M - jnp.eye(k, dtype=v0.dtype)) @ (problem.B0 @ Q)], axis=-1)
    basis = jnp.concatenate([V, Q], axis=1)
    return _make_trajectory(problem, np.asarray(times, np.float64), v, dG, steps, "deep", basis=basis)


def _deep_init(problem: Problem, v0, depth: int):
    """(θ0, args) of the reduced deep flow: θ = (v, W_2..W_L = I, ΔG = 0)."""
    k = problem.k
    G0 = problem.B0 @ problem._V
    Ws0 = jnp.broadcast_to(jnp.eye(k, dtype=v0.dtype), (depth - 1, k, k))
    return (v0, Ws0, jnp.zeros_like(G0)), (problem._s, problem._Uty, G0)


def _deep_predictor(problem: Problem, path):
    """w(t) = B(t)ᵀv with B = M (B0 + ΔG Vᵀ), from the reduced path (v, W_2..W_L, ΔG) (T leading)."""
    v, Ws, dG1 = path
    u = jnp.einsum("tij,ti->tj", jax.vmap(_chain)(Ws), v)  # Mᵀ v
    return u @ problem.B0 + jnp.einsum("tk,tkr,dr->td", u, dG1, problem._V)


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
