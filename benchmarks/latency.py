"""What a user waits for before the first number: compile latency in a fresh process with no compilation cache.

Each measurement runs in a new Python process (no persistent cache, the caller's XLA_FLAGS dropped), so that
tracing and compiling are counted as a new user meets them. The yardstick is diffrax's own first Kvaerno5 solve of
the Robertson problem (stiff, 3 unknowns) in the same process, after JAX's backend is up; ratios to it are what
the targets in RESULTS.md compare, since they cancel most of the machine's speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_SCRIPT = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
jnp.zeros(1).block_until_ready()  # the backend's start-up is no one's compile
import diffrax as dfx

def clock(f):
    t = time.perf_counter(); jax.block_until_ready(f()); return time.perf_counter() - t

def robertson():
    def f(t, y, a):
        return jnp.stack([-0.04 * y[0] + 1e4 * y[1] * y[2], 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                          3e7 * y[1] ** 2])
    sol = dfx.diffeqsolve(dfx.ODETerm(f), dfx.Kvaerno5(), 0.0, 1e5, 1e-6, jnp.array([1.0, 0.0, 0.0]),
                          stepsize_controller=dfx.PIDController(rtol=1e-8, atol=1e-10), max_steps=100_000)
    return sol.ys

out = {"robertson": clock(robertson)}
import linnet
d, k, n = (int(a) for a in sys.argv[2:5])
times = [0.0, 0.1, 1.0, np.inf]
key = jax.random.PRNGKey(0)
t0 = time.perf_counter()
p = linnet.subspace_shift(key, d=d, k=k, n=n, eps=0.1)
jax.block_until_ready(p.reduced.s)
out["first_problem"] = time.perf_counter() - t0  # the draw and X's factorisation
v0 = linnet.random_head(jax.random.PRNGKey(1), k, 1.0)
kinds = sys.argv[1].split(",")  # the smoke run does all three in one process (it checks they run, not their times)
if "calls" in kinds:
    out["first_fine_tune"] = clock(lambda: linnet.fine_tune(p, v0, times).ood_error)
    out["warm_fine_tune"] = clock(lambda: linnet.fine_tune(p, v0, times).ood_error)
    out["first_grad"] = clock(lambda: jax.grad(lambda v: linnet.fine_tune(p, v, [np.inf]).ood_error[-1])(v0))
    for label, (dd, nn) in {"new_shape_same_bucket": (d + 60, n - 4), "new_shape_new_bucket": (d + 60, n + 5)}.items():
        q = linnet.subspace_shift(jax.random.PRNGKey(2), d=dd, k=k, n=nn, eps=0.1)
        jax.block_until_ready(q.reduced.s)
        out[label] = clock(lambda: linnet.fine_tune(q, v0, times).ood_error)
        out[label + "_r"] = [int(q.reduced.s.shape[0]), int(p.reduced.s.shape[0])]
if "profile" in kinds:  # where the first call's time goes: the FT flow's three programs, ahead of time
    from linnet._run import padded
    from linnet._methods import ft_flow
    reals = {n: jnp.asarray(x) for n, x in (("eta_v", 1.0), ("eta_B", 1.0), ("lam_v", 0.0), ("lam_B", 0.0))}
    ts = jnp.asarray(times)
    def aot(f, *a, **kw):
        t0 = time.perf_counter(); tr = f.trace(*a, **kw); t1 = time.perf_counter(); lo = tr.lower()
        t2 = time.perf_counter(); c = lo.compile(); t3 = time.perf_counter()
        return c, [t1 - t0, t2 - t1, t3 - t2]
    c, out["prepare"] = aot(padded._prepare, p, v0, ts, reals, None, name="ft", loss="squared", statics=())
    y0, args, tp, count = c(p, v0, ts, reals, None)
    _, out["integrate"] = aot(padded._integrate, y0, args, tp, 1e-8, 1e-10, count, name="ft", loss="squared",
                              solver=ft_flow.default_solver(), max_steps=100_000)
if "session" in kinds:  # a typical first session: FT, its gradient, LP, LP-FT, three heads at once, a second shape
    def session():
        linnet.fine_tune(p, v0, times).ood_error.block_until_ready()
        jax.grad(lambda v: linnet.fine_tune(p, v, [np.inf]).ood_error[-1])(v0).block_until_ready()
        linnet.linear_probe(p, v0, times).ood_error.block_until_ready()
        linnet.lp_ft(p, v0, times).ood_error.block_until_ready()
        heads = jax.random.normal(jax.random.PRNGKey(3), (3, k))
        jax.vmap(lambda v: linnet.fine_tune(p, v, times).ood_error)(heads).block_until_ready()
        q = linnet.subspace_shift(jax.random.PRNGKey(2), d=d + 60, k=k, n=n - 4, eps=0.1)
        return linnet.fine_tune(q, v0, times).ood_error
    out["session"] = clock(session)
print(json.dumps(out))
"""


def _fresh(kind: str, shape) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, kind, *map(str, shape)], capture_output=True, text=True,
                          cwd=root, env=env, check=True)  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def latency(shape=(200, 3, 40), smoke: bool = False) -> dict:
    """The latency measurements (seconds) of two fresh processes on `subspace_shift(d, k, n)`: the first draw with
    its factorisation, the first `fine_tune`
    (times 0, 0.1, 1, ∞), its warm repeat, the first `jax.grad` of the OOD error at t = ∞, the same call on a new
    shape (d + 60, n − 4: r in the same bucket, for n = 40; d + 60, n + 5: r in the next bucket), and a typical
    first session; each process's own Robertson yardstick. `smoke=True` runs the three in one process (to check
    the script, in a third of the time; its numbers are not fresh-process latencies)."""
    if smoke:
        calls = session = prof = _fresh("calls,session,profile", shape)
    else:
        calls, session, prof = _fresh("calls", shape), _fresh("session", shape), _fresh("profile", shape)
    return {**calls, "session": session["session"], "session_robertson": session["robertson"], "shape": list(shape),
            "profile": {"prepare": prof["prepare"], "integrate": prof["integrate"]}}  # fmt: skip


def table(lat: dict | None) -> list[str]:
    """The latency section of RESULTS.md."""
    if not lat:
        return []
    rb, d, k, n = lat["robertson"], *lat["shape"]
    rows = [
        *([("first `subspace_shift` (the draw and X's factorisation)", lat["first_problem"], rb, "")]
          if "first_problem" in lat else []),
        ("first `fine_tune` (times 0, 0.1, 1, ∞)", lat["first_fine_tune"], rb, "≤ 1.5×"),
        ("its warm repeat", lat["warm_fine_tune"], rb, ""),
        ("first `jax.grad` of L_ood at t = ∞", lat["first_grad"], rb, "≤ 3×"),
        (f"new shape, r = {lat['new_shape_same_bucket_r'][0]} (same bucket as r = {lat['new_shape_same_bucket_r'][1]})",
         lat["new_shape_same_bucket"], rb, "≤ 0.5×"),
        (f"new shape, r = {lat['new_shape_new_bucket_r'][0]} (the next bucket: a new integration program)",
         lat["new_shape_new_bucket"], rb, ""),
        ("typical first session (FT, grad, LP, LP-FT, vmap of 3 heads, a second shape)", lat["session"],
         lat["session_robertson"], "≤ 6×"),
    ]  # fmt: skip
    lines = [
        f"## Latency: fresh process, no compilation cache (`subspace_shift(d={d}, k={k}, n={n})`, float64)",
        "",
        f"Yardstick: diffrax's own first Kvaerno5 solve of the Robertson problem in the same process: {rb:.2f} s "
        f"(session process: {lat['session_robertson']:.2f} s).",
        "",
        "| call | seconds | ÷ Robertson | target |",
        "|---|---:|---:|---:|",
        *[f"| {a} | {t:.2f} | {t / y:.2f}× | {g} |" for a, t, y, g in rows],
        "",
    ]
    prof = lat.get("profile")
    if prof:
        tr, lo, co = prof["integrate"]
        lines += [
            f"Where the first call goes (ahead-of-time, a third fresh process): the FT flow's integration program "
            f"(`linnet._run.padded._integrate`: the Rodas5P step in linnet's own loop, `linnet._solver.loop`, "
            f"with the steady-state stop and the saves) traces in {tr:.2f} s, lowers in {lo:.2f} s and compiles in "
            f"{co:.2f} s (XLA); the per-shape set-up program compiles in {sum(prof['prepare']):.2f} s. Through "
            "`diffrax.diffeqsolve`, as before that loop, the same program traced in 0.52 s and compiled in 1.27 s "
            "(previous run). A new shape in a compiled bucket pays only the small programs around it. The "
            "integration program is compiled with XLA's classic CPU emitters "
            "(`linnet._config.COMPILER_OPTIONS`, per program). The first `jax.grad` (in the head, k entries ≤ "
            "`FORWARD_MODE_MAX` = 4) goes by forward mode: one program that carries the k tangents through the "
            "solve (diffrax's `ForwardMode`, vmapped), which compiles in about half the time of the checkpointed "
            "reverse pass it replaced here. A user's un-jitted `jax.grad` reaches that program at the level of the "
            "integration (`linnet._solver.integrate.solve_program`), so it is compiled as a top-level program with "
            "the same compiler options, not inside the gradient's trace, where JAX takes none.",
            "",
        ]
    return lines
