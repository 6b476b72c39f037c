"""linnet against what a user would otherwise run, on the same problems and the same accuracy target.

Every competitor integrates the same flow, ∂_t v = −∇_v L̂, ∂_t B = −∇_B L̂ with L̂ = ‖X Bᵀv − y‖², on the full
(v, B) ∈ R^k × R^{k×d} state. "To its limit" means: up to the time t⋆ at which linnet's steady-state test stopped,
and a competitor counts as accurate when its predictor Bᵀv at t⋆ agrees with linnet's (computed at rtol 1e-10 as
the reference) to 1e-6 relative. A competitor that exceeds its time budget is stopped and reported as "> budget".
"""

from __future__ import annotations

import dataclasses
import platform
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import linnet
from linnet._methods import ft_flow as _flow
from linnet._solver import choice

TARGET = 1e-6  # relative agreement of the limiting predictor


@dataclasses.dataclass
class Row:
    size: str
    method: str
    seconds: float
    rel_error: float
    note: str = ""


class _Budget(Exception):
    pass


SIZES = {
    # name: (d, k, n, inputs); "tiny" is the smoke run's (`python -m benchmarks --smoke`), not a benchmark
    "tiny": (40, 2, 10, "subspace"),
    "small": (500, 5, 100, "subspace"),
    "small-gaussian": (500, 5, 100, "isotropic"),
    "medium": (5000, 20, 1000, "subspace"),
    "paper": (10_000, 100, 5000, "isotropic"),
    # the paper scale on the default, ill-conditioned generator (issue #12, item 5): stiff, so implicit; k = 100
    # takes the closed-form (Sherman–Morrison) Newton solve, and X's SVD goes through X Xᵀ (linnet._geometry)
    "paper-subspace": (10_000, 100, 5000, "subspace"),
}


def make_problem(size: str):
    """The benchmark problems (ε = 0.1, v0 ~ N(0, I_k)): `SIZES[size]` = (d, k, n, inputs).

    "subspace" inputs are linnet's default generator (a square Gaussian factor inside a random S, cond(X) ~ n, so
    the flow is stiff); "isotropic" inputs are X_i ~ N(0, I_d), Theorem 3.2's setting, well conditioned (not
    stiff) when n < d/2."""
    d, k, n, inputs = SIZES[size]
    key = jax.random.PRNGKey(0)
    problem = linnet.subspace_shift(key, d=d, k=k, n=n, eps=0.1, inputs=inputs)
    v0 = jax.random.normal(jax.random.PRNGKey(1), (k,))
    return problem, v0


def _rel(w, ref):
    return float(np.linalg.norm(np.asarray(w) - np.asarray(ref)) / np.linalg.norm(np.asarray(ref)))


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return time.perf_counter() - t, out


def linnet_rows(size, problem, v0, ref_w, t_star, repeats=3, other_solver=True):
    """linnet.fine_tune to t = ∞ with its default solver choice: cold (first call: compilation included) and
    warm (best of `repeats`); then the other solver family for comparison."""
    explicit = choice.explicit_is_enough(problem.reduced.s)
    auto = "Tsit5, not stiff" if explicit else f"{choice.solver_name(_flow.default_solver())}, stiff"
    rows = []
    jax.clear_caches()  # cold means cold, even if an earlier row compiled the same shapes
    cold, tr = _timed(lambda: linnet.fine_tune(problem, v0, [np.inf]))
    err = _rel(tr.predictor[-1], ref_w)
    rows.append(Row(size, "linnet.fine_tune (cold)", cold, err, f"{int(tr.num_steps)} steps; auto solver: {auto}"))
    warm = min(_timed(lambda: linnet.fine_tune(problem, v0, [np.inf]))[0] for _ in range(repeats))
    rows.append(Row(size, "linnet.fine_tune (warm)", warm, err, f"{int(tr.num_steps)} steps"))
    if not other_solver:
        return rows
    # Kvaerno5 with the same closed-form Newton solve: fused into one step (the default before Rodas5P), and
    # inside diffrax's own Kvaerno5 (its stage and Newton loops)
    kvaerno = [("FusedKvaerno5+ShermanMorrison", _flow.kvaerno5_solver()),
               ("diffrax Kvaerno5+ShermanMorrison", _flow.structured_solver())]  # fmt: skip
    for label, same in [] if explicit else kvaerno:
        c, tr3 = _timed(lambda same=same: linnet.fine_tune(problem, v0, [np.inf], solver=same))
        w = min(_timed(lambda same=same: linnet.fine_tune(problem, v0, [np.inf], solver=same))[0]
                for _ in range(repeats))  # fmt: skip
        rows.append(Row(size, f"linnet.fine_tune, solver={label} (warm)", w,
                        _rel(tr3.predictor[-1], ref_w), f"{int(tr3.num_steps)} steps, cold {c:.2f} s"))  # fmt: skip
    other = _flow.default_solver() if explicit else choice.explicit_solver()
    name = (
        f"linnet.fine_tune, solver={choice.solver_name(other)} (warm)"
        if explicit
        else "linnet.fine_tune, solver=Tsit5 (warm)"
    )

    def go():
        return linnet.fine_tune(problem, v0, [np.inf], solver=other, max_steps=200_000)

    try:
        c, tr2 = _timed(go)
    except linnet.ConvergenceError:
        return [*rows, Row(size, name, np.inf, np.nan, "no steady state in 200 000 steps (stiff)")]
    w = min(_timed(go)[0] for _ in range(repeats)) if repeats > 1 else c
    note = f"{int(tr2.num_steps)} steps" + (f", cold {c:.2f} s" if repeats > 1 else ", includes compilation")
    rows.append(Row(size, name, w, _rel(tr2.predictor[-1], ref_w), note))
    return rows


# the first fine_tune of a fresh process: argv = (size, setting), setting "fast" (linnet.fast_compile() before any
# computation), "sequential" (linnet.sequential_runtime(); then also the best of 10 warm calls) or a
# compilation-cache directory (linnet.use_compilation_cache)
_COLD = """
import sys, time, jax, numpy as np
import linnet
size, setting = sys.argv[1], sys.argv[2]
if setting == "fast":
    linnet.fast_compile()
if setting == "sequential":
    assert linnet.sequential_runtime()
jax.config.update("jax_enable_x64", True)
if setting not in ("fast", "sequential"):
    linnet.use_compilation_cache(setting)
from benchmarks.suite import make_problem
problem, v0 = make_problem(size)
jax.block_until_ready(problem.reduced.s)
go = lambda: jax.block_until_ready(linnet.fine_tune(problem, v0, [np.inf]).ood_error)
t = time.perf_counter()
go()
times = [time.perf_counter() - t]
for _ in range(10 if setting == "sequential" else 0):
    t = time.perf_counter()
    go()
    times.append(time.perf_counter() - t)
print(times[0], min(times[1:], default=float("nan")))
"""


def _in_new_process(size: str, setting: str) -> tuple[float, float]:
    """(first `fine_tune` seconds, best warm seconds or NaN) in a fresh subprocess (without the caller's
    XLA_FLAGS), see `_COLD`."""
    import os
    import subprocess
    import sys

    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, "-c", _COLD, size, setting], capture_output=True, text=True, cwd=root, check=True, env=env
    )
    cold, warm = (float(x) for x in proc.stdout.strip().splitlines()[-1].split())
    return cold, warm


def _cold_in_new_process(size: str, setting: str) -> float:
    """Seconds of the first `fine_tune` in a fresh subprocess, see `_in_new_process`."""
    return _in_new_process(size, setting)[0]


def sequential_rows(size):
    """A new process that turned on `linnet.sequential_runtime()` (XLA's runtime one operation after another)
    before its first computation: the first `fine_tune` (no compilation cache) and the best of 10 warm calls."""
    cold, warm = _in_new_process(size, "sequential")
    note = "`linnet.sequential_runtime()`"
    return [Row(size, "linnet.fine_tune (warm, new process, sequential_runtime)", warm, np.nan, note),
            Row(size, "linnet.fine_tune (cold, new process, sequential_runtime)", cold, np.nan, note)]  # fmt: skip


def fast_compile_cold_rows(size):
    """The first `fine_tune` call of a new process that turned on `linnet.fast_compile()` (XLA's classic CPU
    emitters) before its first computation, with no compilation cache: tracing and compiling included."""
    t = _cold_in_new_process(size, "fast")
    return [Row(size, "linnet.fine_tune (cold, new process, fast_compile)", t, np.nan, "`linnet.fast_compile()`")]


def cached_cold_rows(size, problem, v0, ref_w):
    """The first `fine_tune` call of a new process when JAX's persistent compilation cache
    (`linnet.use_compilation_cache`) was filled by an earlier process: tracing still happens, XLA compilation
    does not. Two fresh subprocesses share a temporary cache; the second one's time is reported."""
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        times = [_cold_in_new_process(size, cache) for _ in range(2)]
    note = f"first process (cache empty) {times[0]:.2f} s; `linnet.use_compilation_cache()`"
    return [Row(size, "linnet.fine_tune (cold, new process, compilation cache filled)", times[1], np.nan, note)]


def _full_grad_np(X, y, k, d):
    def f(t, theta):
        v, B = theta[:k], theta[k:].reshape(k, d)
        r = X @ (B.T @ v) - y
        Xtr = X.T @ r
        return -np.concatenate([2 * B @ Xtr, (2 * np.outer(v, Xtr)).ravel()])

    return f


def scipy_rows(size, problem, v0, ref_w, t_star, methods=("LSODA", "BDF"), budget=300.0):
    """scipy.integrate.solve_ivp on the flattened full ODE (k + k d unknowns), no Jacobian supplied (what a user
    would write), rtol 1e-8 / atol 1e-10, integrated to t⋆."""
    from scipy.integrate import solve_ivp

    X, y = np.asarray(problem.X), np.asarray(problem.y)
    k, d = problem.k, problem.d
    f = _full_grad_np(X, y, k, d)
    theta0 = np.concatenate([np.asarray(v0), np.asarray(problem.B0).ravel()])
    rows = []
    for m in methods:
        start = time.perf_counter()

        def fb(t, th, start=start):
            if time.perf_counter() - start > budget:
                raise _Budget
            return f(t, th)

        try:
            sol = solve_ivp(fb, (0.0, t_star), theta0, method=m, rtol=1e-8, atol=1e-10)
            el = time.perf_counter() - start
            th = sol.y[:, -1]
            w = th[k:].reshape(k, d).T @ th[:k]
            rows.append(Row(size, f"scipy solve_ivp {m} (full state)", el, _rel(w, ref_w), f"{sol.nfev} f-evals"))
        except _Budget:
            rows.append(
                Row(size, f"scipy solve_ivp {m} (full state)", np.inf, np.nan, f"stopped at budget {budget:.0f} s")
            )
        except MemoryError as e:  # LSODA, BDF and Radau allocate a dense (k + k d)² Jacobian
            rows.append(Row(size, f"scipy solve_ivp {m} (full state)", np.inf, np.nan, f"cannot run: {e}"))
    return rows


def tsit5_rows(size, problem, v0, ref_w, t_star, max_steps=2_000_000, safe_dt0=False):
    """diffrax Tsit5 (explicit) on the full (v, B) state, rtol 1e-8 / atol 1e-10: the naive JAX version. It is
    compiled once (the cold call), then timed warm. `safe_dt0` starts from linnet's 1 / (Lipschitz bound of f)
    instead of diffrax's initial-step heuristic, which at k = 100 overshoots the stability limit, overflows to NaN
    and then rejects every step (measured: 0 of 300 steps accepted at d = 2000, k = 100, n = 1000)."""
    import diffrax as dfx

    X, y = problem.X, problem.y

    def field(t, state, args):
        v, B = state
        r = X @ (B.T @ v) - y
        Xtr = X.T @ r
        return (-2 * B @ Xtr, -2 * jnp.outer(v, Xtr))

    dt0 = None
    if safe_dt0:
        G0 = problem.B0 @ problem.reduced.V
        red = problem.reduced
        dt0 = float(1.0 / _flow._lipschitz_bound(red.s, red.Uty, v0, G0, jnp.asarray(_flow.FT_PARAMS)))

    @jax.jit
    def solve(v0, B0):
        sol = dfx.diffeqsolve(
            dfx.ODETerm(field),
            dfx.Tsit5(),
            0.0,
            t_star,
            dt0,
            (v0, B0),
            stepsize_controller=dfx.PIDController(rtol=1e-8, atol=1e-10),
            max_steps=max_steps,
            throw=False,
        )
        v, B = sol.ys
        return B[-1].T @ v[-1], sol.stats["num_steps"], sol.result == dfx.RESULTS.successful

    cold, _ = _timed(lambda: solve(v0, problem.B0))
    warm, (w, steps, ok) = _timed(lambda: solve(v0, problem.B0))
    note = f"{int(steps)} steps, compile+run {cold:.1f} s" + ("" if bool(ok) else f"; hit max_steps {max_steps}")
    name = "diffrax Tsit5 (full state, warm)" + (", dt0 = 1/Lipschitz" if safe_dt0 else "")
    return [Row(size, name, warm if bool(ok) else np.inf, _rel(w, ref_w), note)]


def gd_rows(size, problem, v0, ref_w, t_star, budget=300.0):
    """A NumPy gradient-descent loop on (v, B) with the largest stable step (0.9 × 2/λ_max at the start; halved
    on divergence), run until its own steady state. Its limit is a different point (implicit bias of the
    discrete step): the error column is its distance to the flow's limit, not solver error."""
    X, y = np.asarray(problem.X), np.asarray(problem.y)
    lr = 0.9 * linnet.gd_stability_step(problem, v0)
    for _ in range(10):
        v, B = np.array(v0), np.array(problem.B0)
        start = time.perf_counter()
        it, diverged, timed_out = 0, False, False
        while True:
            r = X @ (B.T @ v) - y
            Xtr = X.T @ r
            gv, gB = 2 * B @ Xtr, 2 * np.outer(v, Xtr)
            v, B = v - lr * gv, B - lr * gB
            it += 1
            step = lr * np.sqrt(np.sum(gv**2) + np.sum(gB**2))
            if not np.isfinite(step) or step > 1e6:
                diverged = True
                break
            if step <= 1e-12 * (1 + np.sqrt(np.sum(v**2) + np.sum(B**2))):
                break
            if time.perf_counter() - start > budget:
                timed_out = True
                break
        if not diverged:
            break
        lr /= 2
    el = time.perf_counter() - start
    note = f"lr = {lr:.3g}, {it} iterations" + (f"; stopped at budget {budget:.0f} s" if timed_out else "")
    return [Row(size, "NumPy gradient descent", np.inf if timed_out else el, _rel(B.T @ v, ref_w), note)]


def float32_rows(size, problem, v0, ref_w):
    """linnet.fine_tune in float32 (the same problem, cast), its time and its error against the float64 limit.

    float32 needs rtol = atol ≈ 1e-4 on these problems: tighter tolerances sit below the rounding noise of the
    stiff stages (steps are rejected forever); its accuracy is then limited by about cond(X)² · 6e-8."""
    f32 = partial(jnp.asarray, dtype=jnp.float32)
    problem = linnet.Problem(f32(problem.X), f32(problem.B0), f32(problem.B_star), f32(problem.v_star))
    v0 = f32(v0)

    def go():
        return linnet.fine_tune(problem, v0, [np.inf], rtol=1e-4, atol=1e-4)

    cold, tr = _timed(go)
    warm = min(_timed(go)[0] for _ in range(3))
    err = _rel(np.asarray(tr.predictor[-1], np.float64), ref_w)
    note = f"{int(tr.num_steps)} steps, cold {cold:.2f} s"
    return [Row(size, "linnet.fine_tune float32 (warm, rtol = atol = 1e-4)", warm, err, note)]


def machine_info() -> str:
    import diffrax
    import scipy

    devs = ", ".join(str(d) for d in jax.devices())
    return (
        f"{platform.platform()}; Python {platform.python_version()}; {platform.processor() or 'cpu'}; "
        f"{__import__('os').cpu_count()} cores; jax {jax.__version__}, diffrax {diffrax.__version__}, "
        f"numpy {np.__version__}, scipy {scipy.__version__}; devices: {devs}"
    )


def sweep_throughput(n_instances=1000, loop_instances=50, inputs="subspace", shape=(500, 5, 100)):
    """Trajectories per second of `linnet.sweep` (FT to t = ∞, metrics only) on the small problem (`shape` =
    (d, k, n)) against a Python loop of single `fine_tune` calls on `loop_instances` of the same problems (each
    taken out of the batch before the clock starts: slicing a batched Problem costs a few ms per instance, which
    is not the call's), and those instances' warm solves (`warm_s`: the mean over them of each one's best of 3
    calls, the size tables' timing), so that the loop's cost splits into solves and the Python around them."""
    d, k, n = shape
    keys = jax.random.split(jax.random.PRNGKey(2), n_instances)
    problems = linnet.subspace_shifts(keys, 0.1, d=d, k=k, n=n, inputs=inputs)
    heads = jax.random.normal(jax.random.PRNGKey(3), (n_instances, k))
    # compile on one batch of the timed batch size: a batch's program depends on its size
    first = jax.tree_util.tree_map(lambda a: a[:250], problems)
    linnet.sweep(first, heads[:250], [np.inf], methods=("ft",), batch_size=250, progress=False)
    t = time.perf_counter()
    linnet.sweep(problems, heads, [np.inf], methods=("ft",), batch_size=250, progress=False)
    sweep_s = time.perf_counter() - t
    singles = [jax.tree_util.tree_map(lambda a, i=i: a[i], problems) for i in range(loop_instances)]
    linnet.fine_tune(singles[0], heads[0], [np.inf])  # compile
    t = time.perf_counter()
    for i, p in enumerate(singles):
        jax.block_until_ready(linnet.fine_tune(p, heads[i], [np.inf]).ood_error)
    loop_s = (time.perf_counter() - t) / loop_instances
    warm = [
        min(_timed(lambda p=p, v=v: linnet.fine_tune(p, v, [np.inf]))[0] for _ in range(3))
        for p, v in zip(singles, heads, strict=False)
    ]
    return {
        "inputs": inputs,
        "sweep_per_s": n_instances / sweep_s,
        "loop_per_s": 1 / loop_s,
        "sweep_s": sweep_s,
        "n": n_instances,
        "warm_s": float(np.mean(warm)),
    }


def batch_curve(n_instances=96, sizes=(1, 8, 32, 96), shape=(500, 5, 100)):
    """Time per trajectory of `linnet.sweep` (FT to t = ∞, small stiff problem) against the batch size c, for the
    three ways a batch can run (issue #12, item 3): "map" (`lax.map` of single solves, c per compiled call),
    "vmap" (c single solves vmapped together: `chunk=c`) and "stacked" (c instances as one ODE with a shared
    controller: `batching="stacked"`). Each configuration is compiled on its first batch, then timed on all
    `n_instances`. **Returns:** [{route, c, per_traj_s, steps_mean, steps_max}]."""
    d, k, n = shape
    keys = jax.random.split(jax.random.PRNGKey(2), n_instances)
    problems = linnet.subspace_shifts(keys, 0.1, d=d, k=k, n=n)
    heads = jax.random.normal(jax.random.PRNGKey(3), (n_instances, k))
    out = []
    for route in ("map", "vmap", "stacked"):
        for c in sizes:
            kw = dict(methods=("ft",), batch_size=c, progress=False)
            kw["chunk"] = c if route == "vmap" else 1
            if route == "stacked":
                kw["batching"] = "stacked"
            first = jax.tree_util.tree_map(lambda a, c=c: a[:c], problems)
            linnet.sweep(first, heads[:c], [np.inf], **kw)  # compile
            t = time.perf_counter()
            res = linnet.sweep(problems, heads, [np.inf], **kw)
            dt = time.perf_counter() - t
            st = np.asarray(res.num_steps[0, 0])
            out.append({"route": route, "c": c, "per_traj_s": dt / n_instances, "steps_mean": float(st.mean()),
                        "steps_max": int(st.max())})  # fmt: skip
            print(out[-1], flush=True)
    return out


def _embed(problem, d, key):
    """The same problem in R^d (d ≥ problem.d): zero-pad the coordinates and apply a random signed permutation,
    an orthogonal map of R^d. X Xᵀ, X B0ᵀ, B0 B0ᵀ and ‖w⋆‖ are unchanged, so the reduced flow (s, Uᵀy, G0 = B0 V)
    is the same up to the signs of the singular vectors: only the embedding dimension grows."""
    d0 = problem.d
    kp, ks = jax.random.split(key)
    perm = jax.random.permutation(kp, d)
    signs = jnp.where(jax.random.bernoulli(ks, 0.5, (d,)), 1.0, -1.0)

    def lift(A):
        return (jnp.zeros((*A.shape[:-1], d), A.dtype).at[..., :d0].set(A) * signs)[..., perm]

    return linnet.Problem(lift(problem.X), lift(problem.B0), lift(problem.B_star), problem.v_star)


def d_scaling(ds=(1_000, 3_000, 10_000, 30_000, 100_000), n=200, k=10):
    """Warm time per fine-tuning solve to t = ∞ for growing d at fixed n, k, on one problem (default generator,
    d = ds[0]) embedded isometrically in R^d (`_embed`), so every d integrates the same reduced flow; and the
    one-time factorisation (`Problem` construction: SVD of X) for each d."""
    base = linnet.subspace_shift(jax.random.PRNGKey(0), d=ds[0], k=k, n=n, eps=0.1)
    v0 = jax.random.normal(jax.random.PRNGKey(1), (k,))
    out = []
    for d in ds:
        t = time.perf_counter()
        problem = _embed(base, d, jax.random.PRNGKey(d))
        jax.block_until_ready(problem.reduced.s)
        fact = time.perf_counter() - t
        tr = linnet.fine_tune(problem, v0, [np.inf])
        solve = min(_timed(lambda problem=problem: linnet.fine_tune(problem, v0, [np.inf]))[0] for _ in range(3))
        w = np.asarray(tr.predictor[-1])
        out.append(
            {
                "d": d,
                "factorise_s": fact,
                "solve_s": solve,
                "steps": int(tr.num_steps),
                "ood_error": float(tr.ood_error[-1]),
                "w_norm": float(np.linalg.norm(w)),
            }
        )
    return out
