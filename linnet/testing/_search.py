"""`search` and `assert_holds`: a statement `statement(problem, v0) -> slack` searched for counterexamples over a
family of instances — random instances in compiled batches, then gradient descent (optax's Adam, through
`jax.grad` of the statement) from the worst — shrunk, and replayed by the independent reference."""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from .._config import jit
from .._geometry import feature_distance
from .._problem import Problem
from .._run.plan import host_workers, run_in_parts
from ._instance import Instance, check_eps, check_shapes, draw_instance, index, stack
from ._reference import reference

TOL = 1e-6  # a slack in [−TOL, 0) is a tie at the simulator's accuracy, not a violation (see `search`)


@dataclasses.dataclass(frozen=True)
class SearchReport:
    """What `search` found. `tried`: instances evaluated (random and gradient starts' final points); `failed`:
    those whose evaluation failed (dropped); `violations`: slacks below −`tol` under the simulator; `min_slack`:
    the smallest slack; `worst`: its instance (shrunk when it violates), or None; `replayed`: the worst instance's
    slack recomputed by the independent reference (None if not replayed); `worst_slack`: its slack under the
    simulator (after shrinking); `confirmed`: whether the replay confirms
    a violation (None when there is none to confirm or no replay); `seconds`: wall time."""

    tried: int
    violations: int
    min_slack: float
    worst: Instance | None
    replayed: float | None
    confirmed: bool | None
    failed: int = 0
    worst_slack: float | None = None
    tol: float = TOL
    seconds: float = 0.0
    note: str = ""

    def __str__(self) -> str:
        verdict = (
            "no violation" if not self.violations else
            "violated (confirmed by the reference)" if self.confirmed else
            "violation NOT confirmed by the reference" if self.confirmed is False else "violated (not replayed)"
        )  # fmt: skip
        rep = "" if self.replayed is None else f", replayed slack {self.replayed:.6g}"
        counts = f"{self.violations} of {self.tried} instances below -{self.tol:g}"
        worst = "" if self.worst_slack is None else f"; the reported (shrunk) instance's slack {self.worst_slack:.6g}"
        tail = f"{self.failed} failed; {self.seconds:.1f} s {self.note}"
        return f"{verdict}: {counts}; min slack {self.min_slack:.6g}{worst}{rep}; {tail}".strip()


class Counterexample(AssertionError):
    """A statement is violated: `.instance` (an `Instance`) and `.report` (the `SearchReport`)."""

    def __init__(self, message: str, instance: Instance, report: SearchReport):
        super().__init__(message)
        self.instance = instance
        self.report = report


class _Silent:
    """A progress bar that shows nothing."""

    def update(self, n=1):
        pass

    def close(self):
        pass


def _evaluate(statement, batch: Instance, size: int) -> np.ndarray:
    """The statement's slack on each member of a batch, by one compiled `vmap` (in parts on host threads,
    `linnet._run.plan.run_in_parts`); a batch that fails is evaluated member by member and the failing members get
    NaN."""
    fn = _compiled(statement)
    try:
        parts = host_workers(jax.devices())
        return np.asarray(run_in_parts(fn[0], (batch.problem, batch.v0), (True, True), parts), np.float64)[:size]
    except Exception:
        out = np.full(size, np.nan)
        for i in range(size):
            one = index(batch, i)
            try:
                out[i] = float(fn[1](one.problem, one.v0))
            except Exception:
                pass
        return out


_COMPILED: dict = {}


def _compiled(statement):
    if statement not in _COMPILED:
        _COMPILED[statement] = (jit(jax.vmap(statement)), jit(statement))
    return _COMPILED[statement]


# --- the gradient part's parametrisation: (X, B⋆, E, ε, row angles, U, v⋆, v0) with
# B0 = U (cos Θ B⋆ + sin Θ E): orthonormal rows, principal angles θᵢ ≤ θ_max = 2 arcsin(ε/2) (the largest equal
# to it, so d(B0, B⋆) = ε exactly) and a rotation U of B0's rows, which the head sees. A random instance has U = I
# and equal angles; the descent frees both (a family with them fixed missed Theorem 3.1's violations at k > 1)


def _orthonormal_rows(A):
    q, r = jnp.linalg.qr(A.T)
    return (q * jnp.sign(jnp.diag(r))).T  # sign-fixed, so that orthonormal rows map to themselves


def _build(theta, eps) -> tuple[Problem, jax.Array]:
    lo, hi = eps
    Bs = _orthonormal_rows(theta["Bs"])
    E = theta["E"] - (theta["E"] @ Bs.T) @ Bs
    E = _orthonormal_rows(E)
    e = lo + (hi - lo) * jax.nn.sigmoid(theta["e"]) if hi > lo else jnp.asarray(lo, Bs.dtype)
    share = jax.nn.sigmoid(theta["a"])
    ang = 2.0 * jnp.arcsin(e / 2.0) * (share / jnp.max(share))[:, None]
    U = _orthonormal_rows(theta["U"])
    B0 = U @ (jnp.cos(ang) * Bs + jnp.sin(ang) * E)
    return Problem(theta["X"], B0, Bs, theta["vs"]), theta["v0"]


def _theta(inst: Instance, eps, key) -> dict:
    """The parameters of a family instance (U = I, equal angles), from which the descent starts."""
    p = inst.problem
    lo, hi = eps
    e = float(feature_distance(p.B0, p.B_star))
    ang = 2.0 * math.asin(min(e, math.sqrt(2)) / 2.0)
    if math.sin(ang) > 1e-6:
        E = (p.B0 - math.cos(ang) * p.B_star) / math.sin(ang)
    else:
        E = jax.random.normal(key, p.B0.shape, p.X.dtype)
    u = min(max((e - lo) / (hi - lo), 1e-6), 1 - 1e-6) if hi > lo else 0.5
    k = p.B0.shape[0]
    return dict(X=p.X, Bs=p.B_star, E=E, e=jnp.asarray(math.log(u / (1 - u)), p.X.dtype), vs=p.v_star, v0=inst.v0,
                a=jnp.full((k,), 3.0, p.X.dtype), U=jnp.eye(k, dtype=p.X.dtype))  # fmt: skip


def _descend(statement, inst: Instance, eps, steps: int, lr: float, key) -> tuple[float, Instance] | None:
    """`steps` Adam steps on the slack from `inst`; the best point met. None if every evaluation failed."""
    import optax

    theta = _theta(inst, eps, key)
    opt = optax.adam(lr)
    state = opt.init(theta)

    @jit
    def step(theta, state):
        val, g = jax.value_and_grad(lambda th: statement(*_build(th, eps)))(theta)
        upd, state = opt.update(g, state, theta)
        return val, optax.apply_updates(theta, upd), state

    best = None
    for _ in range(steps):
        try:
            val, new, new_state = step(theta, state)
            val = float(val)
        except Exception:
            break
        if not math.isfinite(val) or not all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(new)):
            break
        if best is None or val < best[0]:
            best = (val, theta)
        theta, state = new, new_state
    if best is None:
        return None
    p, v0 = _build(best[1], eps)
    return best[0], Instance(p, v0)


def _slack(statement, inst: Instance) -> float:
    try:
        return float(jit(statement)(inst.problem, inst.v0))
    except Exception:
        return math.nan


def _shrink(statement, inst: Instance, tol: float, budget: int = 8) -> Instance:
    """Simplify a violating instance while it still violates: ε = 0 (B0 = B⋆), fewer training points, numbers
    rounded to 3 significant digits; at most `budget` accepted simplifications."""

    def rounded(x):
        x = np.asarray(x, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            mag = np.where(x == 0, 1.0, 10.0 ** (np.floor(np.log10(np.abs(x))) - 2))
        return np.round(x / mag) * mag

    def candidates(i: Instance):
        p = i.problem
        if float(feature_distance(p.B0, p.B_star)) > 0:
            yield Instance(Problem(p.X, p.B_star, p.B_star, p.v_star), i.v0)
        if p.n > 1:
            yield Instance(Problem(p.X[:-1], p.B0, p.B_star, p.v_star), i.v0)
        r = Instance(Problem(rounded(p.X), p.B0, p.B_star, rounded(p.v_star)), jnp.asarray(rounded(i.v0)))
        if not np.array_equal(np.asarray(r.problem.X), np.asarray(p.X)):
            yield r

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a shrunk instance may leave the paper's regime (k ≥ n): that is allowed
        for _ in range(budget):
            for c in candidates(inst):
                if _slack(statement, c) < -tol:
                    inst = c
                    break
            else:
                return inst
    return inst


def replay(statement, instance: Instance) -> float:
    """The statement's slack on `instance` with every simulation routed to the independent reference
    (`reference()`: scipy Radau on the full state, NumPy's exact LP)."""
    with reference():
        return float(statement(instance.problem, instance.v0))


def search(
    statement,
    *,
    key,
    shapes,
    eps=(0.0, 0.5),
    random: int = 1024,
    starts: int = 8,
    steps: int = 60,
    progress: bool = True,
    tol: float = TOL,
    batch: int = 64,
    lr: float = 0.05,
    shrink: bool = True,
    replay_worst: bool = True,
) -> SearchReport:
    """Search `statement(problem, v0) -> slack` (≥ 0 where it holds) for counterexamples.

    **Arguments:**

    - `statement`: a function of a `Problem` and a head (k,) returning a scalar JAX array, built from linnet's
      public API, so that it composes with `jit`, `vmap` and `grad`.
    - `key`: a `jax.random` key; `shapes`: (d, k, n) or (d, k, n, dim S) tuples; `eps`: the range (lo, hi) of the
      feature error ε, set exactly in every instance.
    - `random`: random instances (split over the shapes), evaluated in compiled batches of `batch` with
      `jax.vmap`; `starts`, `steps`, `lr`: Adam (optax) from the `starts` worst random instances, `steps` steps
      of size `lr` on the slack through `jax.grad`, over X, B⋆, B0 (rows kept orthonormal, ε kept in range), v⋆
      and v0. A member whose evaluation fails is dropped and counted in `failed`.
    - `tol`: a violation is a slack below −`tol`. The default 1e-6 is 100× the simulator's tolerance (rtol 1e-8
      on the state) at the scale of the family's errors (‖w⋆‖ ≤ 10), so a rounding tie is not reported.
    - `shrink`: simplify a violating worst instance (ε = 0, fewer points, rounded numbers) while it still
      violates; `replay_worst`: recompute its slack with `reference()`, independently of the simulator.

    The family: `subspace_shift` inputs (Gaussian in a drawn S, ill-conditioned), B0 and B⋆ with orthonormal rows
    at ε, ‖v⋆‖ log-uniform over [0.1, 10], heads zero, random or nearly aligned with v⋆ at scales log-uniform
    over [0.01, 10]; Σ_ood = I.

    **Returns:** a `SearchReport`.
    """
    t0 = time.perf_counter()
    shapes = check_shapes(shapes)
    lo, hi = check_eps(eps)
    for name, val in (("random", random), ("starts", starts), ("steps", steps), ("batch", batch)):
        if int(val) != val or val < (1 if name == "batch" else 0):
            raise ValueError(f"`{name}` must be a non-negative integer (batch: positive), got {val}")
    if random == 0 and starts > 0:
        raise ValueError("the gradient part starts from the worst random instances: give `random` > 0")
    slacks: list[float] = []
    pool: list[tuple[float, Instance]] = []
    keys = jax.random.split(key, len(shapes) + 1)
    per = [random // len(shapes) + (i < random % len(shapes)) for i in range(len(shapes))]
    if progress:  # imported only when shown: tqdm.auto warns in a notebook without ipywidgets even when disabled
        from tqdm.auto import tqdm

        bar = tqdm(total=random + starts, desc="search", unit="inst")
    else:
        bar = _Silent()
    import warnings

    for shape, count, kk in zip(shapes, per, keys[:-1], strict=True):
        ikeys = jax.random.split(kk, max(count, 1))
        for b in range(0, count, batch):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the family leaves the paper's regime on purpose (k ≥ n allowed)
                members = [draw_instance(ikeys[j], shape, (lo, hi)) for j in range(b, min(b + batch, count))]
            size = len(members)
            vals = _evaluate(statement, stack(members + [members[-1]] * (batch - size)), size)
            slacks += list(vals)
            pool += [(float(v), m) for v, m in zip(vals, members, strict=True) if np.isfinite(v)]
            bar.update(size)
    pool.sort(key=lambda x: x[0])
    best = pool[0] if pool else None
    gkeys = jax.random.split(keys[-1], max(starts, 1))
    grad_finals = []
    for j, (_, inst) in enumerate(pool[:starts]):
        found = _descend(statement, inst, (lo, hi), steps, lr, gkeys[j])
        if found is None:  # every step of this start failed: dropped, and counted in `failed`
            grad_finals.append(math.nan)
        else:
            grad_finals.append(found[0])
            if best is None or found[0] < best[0]:
                best = found
        bar.update(1)
    bar.close()
    all_slacks = np.asarray(slacks + grad_finals, np.float64)
    finite = all_slacks[np.isfinite(all_slacks)]
    violations = int(np.sum(finite < -tol))
    worst, replayed, confirmed, note, worst_slack = None, None, None, "", None
    min_slack = float(finite.min()) if finite.size else math.nan
    if best is not None:
        worst = best[1]
        if violations and shrink:
            worst = _shrink(statement, worst, tol)
        worst_slack = _slack(statement, worst)
        if replay_worst and violations:
            try:
                replayed = replay(statement, worst)
                confirmed = replayed < -tol
            except Exception as err:  # no reference for the methods the statement uses: say so, keep the verdict
                note = f"(replay failed: {type(err).__name__}: {str(err)[:200]})"
    return SearchReport(
        tried=len(all_slacks), violations=violations, min_slack=min_slack, worst=worst, replayed=replayed,
        confirmed=confirmed, failed=int(np.sum(~np.isfinite(all_slacks))), tol=tol, worst_slack=worst_slack,
        seconds=time.perf_counter() - t0, note=note,
    )  # fmt: skip


def assert_holds(statement, *, pin: str | None = None, **search_kwargs) -> SearchReport:
    """`search(statement, **search_kwargs)`; returns the report when nothing is violated, else raises
    `Counterexample` (an `AssertionError`) with the slack, the replayed slack and the worst instance's JSON —
    written to `pin` (default: a file in the temporary folder) when it is long — so that a failing pytest run pins
    the case (`Instance.from_json(open(path).read())`). A violation the reference does not confirm is not raised."""
    report = search(statement, **search_kwargs)
    if not report.violations or report.confirmed is False or report.worst is None:
        return report
    text = report.worst.to_json()
    if pin is None and len(text) > 2000:
        fd, pin = tempfile.mkstemp(prefix="linnet_counterexample_", suffix=".json")
        os.close(fd)
    where = text
    if pin is not None:
        with open(pin, "w") as f:
            f.write(text)
        where = f"written to {pin}"
    raise Counterexample(f"{getattr(statement, '__name__', 'statement')}: {report}\ninstance: {where}",
                         report.worst, report)  # fmt: skip
