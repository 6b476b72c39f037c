"""Counterexample search for the paper's inequalities.

For each inequality we look for instances that minimise the slack (simulated side minus bound side; negative means
the statement is violated), in four ways:

(a) `random_search`: large random sweeps over shapes (d, k, n, dim S), feature error ε, head scale (zero heads
    included), ‖v⋆‖ and the OOD second moment, simulated in vmapped batches at several times and at t = ∞;
(b) `gradient_search`: BFGS on the instance itself (inputs X, features B0, B⋆, heads v0, v⋆) through the exact k = 1
    fine-tuning limit (docs/theory.md, "Reduced coordinates") and t = 0, with `jax.grad`; each minimiser is then
    replayed with the ODE simulator at every saved time;
(c) `search_by_k` (`linnet.testing.statements`), for k = 1, 2, 3, 5: Theorem 3.1 in both readings of ε and its
    corrected form, as relative slacks min_t (√L_ood + λε)/(c RHS₀) − 1, and at ε = 0 the estimate of the tight
    constant c*(k), each through `linnet.testing.search` (random instances, then Adam through `jax.grad` of the
    simulator); every reported worst instance is replayed by the independent reference (scipy Radau, full state);
(d) `statements_search`: every statement of `linnet.testing.statements.PAPER` (Theorem 3.1 in both readings of ε,
    its corrected and halved forms, Proposition 3.1, facts 1 and 2) through `linnet.testing.search` on two small
    shapes, with shrinking and the reference's replay. (a) and (b) keep the k = 1 measurements that paper_repro
    quotes (the slack distribution of the figure `stress_slack`, the closed-form search).

Statements searched by (a) and (b):
- "theorem_3_1": Theorem 3.1 (submission; camera-ready 3.2), Σ_ood = I, φ in the absolute-value form:
  slack = min_t √L_ood(t) − bound.
- "theorem_3_1_eps_squared": the same with the theorem's own, squared reading of ε (`eps_form="theorem"`).
- "theorem_3_1_camera_ready": the camera-ready Σ-weighted form on random mixtures Σ = (1 − u) P_S + u P_S⊥.
- "theorem_3_1_halved": the candidate correction with (1 + ‖w⋆‖)² replaced by 2 (1 + ‖w⋆‖)² (see paper_repro.md).
- "theorem_3_1_corrected": linnet's empirical correction ½ RHS₀ − (1 + ‖w⋆‖) ε (`theory.theorem_3_1_corrected`).
- "proposition_3_1": L_id:subspace(LP∞) − L_id:subspace(FT∞) (differences within the solver tolerance
  1e-8 (1 + ‖w⋆‖²) count as ties).
Every worst instance is saved with what is needed to replay it (`replay`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import theory as th
from ._config import jit
from ._errors import id_error_of_predictor
from ._generators import subspace_shift, subspace_shifts
from ._problem import Problem
from ._run.predictors import batched_predictors
from .testing.statements import SHAPES_BY_K, search_by_k
from .testing.statements import search_paper as statements_search

TIMES = (0.0, 0.01, 0.1, 1.0, 10.0, 100.0, math.inf)
DEFAULT_SHAPES = ((12, 1, 6, 3), (16, 1, 8, 4), (20, 2, 8, 4), (24, 3, 10, 5), (30, 2, 12, 6), (16, 1, 6, 6))
STATEMENTS = (
    "theorem_3_1",
    "theorem_3_1_eps_squared",
    "theorem_3_1_camera_ready",
    "theorem_3_1_halved",
    "theorem_3_1_corrected",
    "proposition_3_1",
)


@dataclasses.dataclass
class StatementReport:
    """Search outcome for one statement: instances tried, minimum slack, violations, the worst instance."""

    statement: str
    tried: int = 0
    violations: int = 0
    min_slack: float = math.inf
    worst: dict | None = None
    slacks: list | None = None  # every instance's slack, when the search is asked to collect them

    def update(self, slack: np.ndarray, describe) -> None:
        slack = np.asarray(slack, dtype=np.float64)
        valid = np.isfinite(slack)
        if self.slacks is not None:
            self.slacks.extend(slack[valid].tolist())
        self.tried += int(valid.sum())
        self.violations += int(np.sum(slack[valid] < 0))
        if valid.any():
            i = int(np.nanargmin(np.where(valid, slack, np.inf)))
            if slack[i] < self.min_slack:
                self.min_slack = float(slack[i])
                self.worst = describe(i)


def _bound_halved(problem: Problem, v0):
    """Theorem 3.1 with the (1 + ‖w⋆‖)² of the denominator doubled: a candidate corrected constant."""
    eps = th.feature_error(problem)
    return (th.ft_ood_lower_bound(problem, v0) + eps) / 2 - eps


def replay(instance: dict) -> tuple[Problem, jax.Array]:
    """Rebuild a saved instance: `(problem, v0)`. Random-search instances are regenerated from their key;
    gradient-search instances carry their arrays."""
    if instance["kind"] == "random":
        key = jnp.asarray(np.asarray(instance["key"], dtype=np.uint32))
        p = subspace_shift(
            key,
            d=instance["d"],
            k=instance["k"],
            n=instance["n"],
            m=instance["m"],
            eps=instance["eps"],
            v_star_scale=instance["v_star_scale"],
        )
        if instance.get("shift") is not None:
            PS = p.sigma_id
            u = instance["shift"]
            p = p.replace(sigma_ood=(1 - u) * PS + u * (jnp.eye(p.d) - PS))
        return p, jnp.asarray(instance["v0"])
    if instance["kind"] == "gradient":
        import warnings

        from ._validate import OverparameterisationWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OverparameterisationWarning)
            p = Problem(
                np.asarray(instance["X"]),
                np.asarray(instance["B0"]),
                np.asarray(instance["B_star"]),
                np.asarray(instance["v_star"]),
            )
        return p, jnp.asarray(instance["v0"])
    raise ValueError(f"unknown instance kind {instance.get('kind')!r}")


@partial(jit, setup=True, static_argnames=("size", "shape"))
def _draw_batch(key, size, shape):
    """A random batch of `size` instances of `shape` (d, k, n, dim S), one compiled program per shape."""
    d, k, n, m = shape
    ke, kp, kh, ks, kz, kv, ku = jax.random.split(key, 7)
    eps = jnp.exp(jax.random.uniform(ke, (size,), minval=math.log(1e-4), maxval=math.log(math.sqrt(2))))
    vs_scale = jnp.exp(jax.random.uniform(kv, (size,), minval=math.log(0.1), maxval=math.log(10.0)))
    keys = jax.random.split(kp, size)
    probs = subspace_shifts(keys, eps, d=d, k=k, n=n, m=m, v_star_scale=vs_scale)
    head_scale = jnp.exp(jax.random.uniform(ks, (size, 1), minval=math.log(1e-2), maxval=math.log(10.0)))
    zero = jax.random.uniform(kz, (size, 1)) < 0.2
    heads = jnp.where(zero, 0.0, head_scale * jax.random.normal(kh, (size, k)))
    shift = jax.random.uniform(ku, (size,), minval=0.05, maxval=0.95)
    return probs, heads, keys, eps, vs_scale, shift


@partial(jit, setup=True)
def _batch_slacks(probs, heads, w, shift) -> dict:
    """Each statement's slack on every member of a random batch (its minimum over the saved times), from the FT
    predictors `w` (N, T, d): one compiled program per shape, instead of one small program per operation.
    Theorem 3.1's forms compare √L_ood with their bounds (isotropic Σ_ood; the camera-ready form under the mixture
    Σ = (1 − u) P_S + u P_S⊥, whose σ_min is min(u, 1 − u)); Proposition 3.1 compares the ID errors of the LP and FT
    limits."""
    d = probs.X.shape[-1]
    e = w - probs.w_star[:, None, :]
    PS = probs.sigma_id
    Sigma = (1 - shift)[:, None, None] * PS + shift[:, None, None] * (jnp.eye(d) - PS)
    sq_iso = jnp.sqrt(jnp.sum(e**2, -1))
    sq_sig = jnp.sqrt(jnp.einsum("ntd,nde,nte->nt", e, Sigma, e))
    bound = jax.vmap(th.ft_ood_lower_bound)(probs, heads)
    bounds = {
        "theorem_3_1": bound,
        "theorem_3_1_eps_squared": jax.vmap(lambda p, v: th.ft_ood_lower_bound(p, v, eps_form="theorem"))(probs, heads),
        "theorem_3_1_halved": jax.vmap(_bound_halved)(probs, heads),
        "theorem_3_1_corrected": jax.vmap(th.theorem_3_1_corrected)(probs, heads),
    }
    out = {name: jnp.min(sq_iso - b[:, None], 1) for name, b in bounds.items()}
    out["theorem_3_1_camera_ready"] = jnp.min(sq_sig - (jnp.sqrt(jnp.minimum(shift, 1 - shift)) * bound)[:, None], 1)
    lp_w = jnp.einsum("nk,nkd->nd", jax.vmap(th.lp_limit)(probs, heads), probs.B0)
    lp_id = jax.vmap(id_error_of_predictor)(probs, lp_w)
    ft_id = jax.vmap(id_error_of_predictor)(probs, w[:, -1])
    # FT's ID error at its limit is 0 up to the steady-state tolerance: at this search's rtol = 1e-7 it is resolved
    # to ~1e-8 ‖w⋆‖² (replays at rtol = 1e-12 give ~1e-15). A difference inside that is not evidence either way,
    # so it is counted as a tie (slack 0), not as a violation.
    tol = 1e-8 * (1.0 + jnp.sum(probs.w_star**2, -1))
    diff = lp_id - ft_id
    out["proposition_3_1"] = jnp.where(jnp.abs(diff) <= tol, 0.0, diff)
    return out


def random_search(
    key,
    *,
    instances: int = 10_000,
    batch: int = 250,
    shapes=DEFAULT_SHAPES,
    times=TIMES,
    progress: bool = True,
    collect: bool = False,
) -> dict[str, StatementReport]:
    """(a) Random sweep: `instances` instances in batches, cycling through `shapes` (d, k, n, dim S).
    `collect=True` keeps every instance's slack in `StatementReport.slacks` (for the slack-distribution figure)."""
    from tqdm.auto import tqdm

    reports = {s: StatementReport(s, slacks=[] if collect else None) for s in STATEMENTS}
    n_batches = max(1, math.ceil(instances / batch))
    bar = tqdm(range(n_batches), desc="random search", unit="batch", disable=not progress)
    done = 0
    for b in bar:
        size = min(batch, instances - done)
        shape = shapes[b % len(shapes)]
        probs, heads, keys, eps, vs_scale, shift = _draw_batch(jax.random.fold_in(key, b), size, shape)
        _, w = batched_predictors(probs, heads, times, rtol=1e-7, atol=1e-9)
        slack = {name: np.asarray(x) for name, x in _batch_slacks(probs, heads, w, shift).items()}

        def describe(i, with_shift=False, _keys=keys, _eps=eps, _vs=vs_scale, _h=heads, _sh=shift, _shape=shape):
            return dict(
                kind="random",
                d=_shape[0],
                k=_shape[1],
                n=_shape[2],
                m=_shape[3],
                key=np.asarray(_keys[i]).tolist(),
                eps=float(_eps[i]),
                v_star_scale=float(_vs[i]),
                v0=np.asarray(_h[i]).tolist(),
                shift=float(_sh[i]) if with_shift else None,
            )

        for name in ("theorem_3_1", "theorem_3_1_eps_squared", "theorem_3_1_halved", "theorem_3_1_corrected"):
            reports[name].update(slack[name], describe)
        reports["theorem_3_1_camera_ready"].update(slack["theorem_3_1_camera_ready"], lambda i: describe(i, True))
        reports["proposition_3_1"].update(slack["proposition_3_1"], describe)
        done += size
        bar.set_postfix(min_slack_thm31=f"{reports['theorem_3_1'].min_slack:.3g}")
    return reports


# ------------------------------------------------------------------------------------------------------
# (b) gradient-based search through the exact k = 1 limit
# ------------------------------------------------------------------------------------------------------


def _unpack(theta, n, d):
    X = theta[: n * d].reshape(n, d)
    bs = theta[n * d : n * d + d]
    b0 = theta[n * d + d : n * d + 2 * d]
    log_vs, v0 = theta[-2], theta[-1]
    return X, (bs / jnp.linalg.norm(bs))[None], (b0 / jnp.linalg.norm(b0))[None], jnp.exp(log_vs)[None], v0[None]


def _ratio_k1(theta, n, d, halved=False):
    """min over t ∈ {0, ∞} of (√L_ood + ε) / T, k = 1, with the closed-form limit, where the bound is T − ε.

    The bound is violated iff this ratio is < 1. Unlike the raw slack it is smooth and never flat (T > 0 whenever
    φ > 0 and cos θ_k > 0), so BFGS can follow it into the small-ε, v0 ≈ v⋆ corner where violations live.
    """
    X, Bs, B0, vs, v0 = _unpack(theta, n, d)
    p = Problem(X, B0, Bs, vs)
    eps = th.feature_error(p)
    bound = _bound_halved(p, v0) if halved else th.ft_ood_lower_bound(p, v0)
    T = bound + eps
    V = p.id_basis
    c = v0[0] ** 2 - jnp.sum((V.T @ B0[0]) ** 2)
    v_inf, B_inf = th.ft_limit_k1(p, v0)  # sign(v0): exact when c > 0, which the objective enforces
    out = []
    for v, B in ((v0, B0), (v_inf, B_inf)):
        s = jnp.sqrt(jnp.sum((B.T @ v - p.w_star) ** 2))
        out.append((s + eps) / T)
    return jnp.where(c > 0, jnp.minimum(*out), 1e6)


def gradient_search(key, *, starts: int = 64, n: int = 3, d: int = 6, halved: bool = False, progress: bool = True):
    """(b) BFGS from `starts` random instances (k = 1, n × d inputs) on `_ratio_k1` at t = 0 and t = ∞.

    Starts have B0 near B⋆ and |v0| > ‖P_S b0‖ (c > 0), where the closed-form limit needs no simulation.

    **Returns:** list of dicts (`relative_slack` = ratio − 1, negative = violated; the instance arrays), best first.
    """
    from jax.scipy.optimize import minimize

    dim = n * d + 2 * d + 2
    k1, k2, k3 = jax.random.split(key, 3)
    thetas = jax.random.normal(k1, (starts, dim))
    bs = thetas[:, n * d : n * d + d]
    thetas = thetas.at[:, n * d + d : n * d + 2 * d].set(bs + 0.1 * jax.random.normal(k2, (starts, d)))
    thetas = thetas.at[:, -1].set(1.0 + 2.0 * jax.random.uniform(k3, (starts,)))

    @jit
    def run(theta0):
        res = minimize(lambda t: _ratio_k1(t, n, d, halved), theta0, method="BFGS", options=dict(maxiter=300))
        return res.x, _ratio_k1(res.x, n, d, halved) - 1.0

    xs, vals = jax.vmap(run)(thetas)
    order = np.argsort(np.asarray(vals))
    found = []
    for i in order:
        X, Bs, B0, vs, v0 = _unpack(xs[i], n, d)
        if not np.isfinite(float(vals[i])):
            continue
        found.append(
            dict(
                kind="gradient",
                relative_slack=float(vals[i]),
                X=np.asarray(X).tolist(),
                B0=np.asarray(B0).tolist(),
                B_star=np.asarray(Bs).tolist(),
                v_star=np.asarray(vs).tolist(),
                v0=np.asarray(v0).tolist(),
            )
        )
    return found


def simulated_slack(instance: dict, *, halved: bool = False, times=TIMES) -> np.ndarray:
    """Replay an instance with the ODE simulator: √L_ood(t) − bound at each saved time (Σ_ood as stored)."""
    from ._methods.paper import fine_tune

    p, v0 = replay(instance)
    tr = fine_tune(p, v0, list(times), rtol=1e-10, atol=1e-12)
    bound = _bound_halved(p, v0) if halved else th.ft_ood_lower_bound(p, v0, camera_ready=True)
    return np.sqrt(np.asarray(tr.ood_error)) - float(bound)


def stress(
    seed: int = 0,
    *,
    instances: int = 10_000,
    batch: int = 250,
    starts: int = 64,
    ks=tuple(SHAPES_BY_K),
    k_random: int = 256,
    k_starts: int = 8,
    k_steps: int = 60,
    statements_random: int = 256,
    statements_starts: int = 2,
    statements_steps: int = 20,
    progress: bool = True,
    out: str | None = None,
) -> dict:
    """Run the searches for every statement and summarise. `ks`: the k of (c), the search by k through
    `linnet.testing` (`k_random` random instances, `k_starts` starts of `k_steps` Adam steps per k and statement;
    empty to skip it); `statements_*`: the budget of (d), the paper's statements through `linnet.testing`
    (`statements_random=0` skips it). `out` (a path) saves the JSON report with the worst instances so they can be
    replayed (`replay` and `simulated_slack` for (a) and (b); `linnet.testing.Instance.from_json` for (c), (d))."""
    t0 = time.perf_counter()
    key = jax.random.PRNGKey(seed)
    reports = random_search(jax.random.fold_in(key, 0), instances=instances, batch=batch, progress=progress)
    t_random = time.perf_counter() - t0
    grad = {}
    for name, halved in (("theorem_3_1", False), ("theorem_3_1_halved", True)):
        found = gradient_search(jax.random.fold_in(key, 1 + halved), starts=starts, halved=halved, progress=progress)
        verified = []
        for inst in found[:5]:  # replay the five best with the simulator at every saved time
            sl = simulated_slack(inst, halved=halved)
            verified.append(
                dict(
                    inst,
                    simulated_min_slack=float(np.min(sl)),
                    violated_at_times=[t for t, s in zip(TIMES, sl, strict=True) if s < 0],
                )
            )
        grad[name] = dict(
            starts=starts,
            best_relative_slack=found[0]["relative_slack"] if found else None,
            violations=sum(1 for f in found if f["relative_slack"] < 0),
            replayed=verified,
        )
    summary_k = {}
    if ks:
        summary_k = search_by_k(jax.random.fold_in(key, 7), tuple(ks), random=k_random, starts=k_starts,
                                steps=k_steps, progress=progress)  # fmt: skip
    statements = {}
    if statements_random:
        statements = statements_search(jax.random.fold_in(key, 11), random=statements_random, starts=statements_starts,
                                       steps=statements_steps, progress=progress)  # fmt: skip
    summary = dict(
        seed=seed,
        by_k=summary_k,
        statements=statements,
        seconds_random=round(t_random, 1),
        seconds_total=round(time.perf_counter() - t0, 1),
        random=dict((s, dataclasses.asdict(r)) for s, r in reports.items()),
        gradient=grad,
    )
    if out:
        with open(out, "w") as f:
            json.dump(summary, f, indent=1, default=float)
    return summary


def theorem_3_1_counterexample() -> tuple[Problem, jax.Array]:
    """A pinned instance violating Theorem 3.1 as printed (both φ forms agree here, φ² > 0).

    k = 1, d = 6, n = 3, ε = 0 (B0 = B⋆), ‖v⋆‖ = 3, v0 = 3.03, and B⋆ with ‖P_S b⋆‖² = 0.5. Then φ² = 9 · 0.1809,
    min(φ, φ²/‖w⋆‖) = φ²/‖w⋆‖ and the bound ≈ cos θ · 2 ‖v⋆‖² δ / (1 + ‖v⋆‖)² exceeds the error ≈ δ at t = 0 and
    cos θ · δ ‖v⋆‖²/(‖v⋆‖² + ‖P_S b⋆‖²) at the limit, for δ = v0 − ‖v⋆‖ small.
    """
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 6))
    _, _, vt = np.linalg.svd(X)
    b = math.sqrt(0.5) * vt[0] + math.sqrt(0.5) * vt[3]  # half in S, half in S⊥: cos θ(R, S⊥) = √0.5
    return Problem(X, b[None], b[None], np.array([3.0])), jnp.asarray([3.03])
