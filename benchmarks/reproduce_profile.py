"""Where `linnet reproduce` spends its time: the main job as a new user runs it, and each figure's cost split into
tracing, lowering, XLA compilation and the rest (running and drawing).

    python -m benchmarks.reproduce_profile          # prints the JSON of both measurements

Fresh processes:

- `linnet reproduce --out <temporary folder>`, the command as the README runs it (its default worker processes,
  the persistent compilation cache on, in a new empty folder, as in a fresh clone: the workers share it), and the
  same with `--no-cache`, each timed by wall clock and by the CPU time of the processes it starts;
- one process that computes and draws the figures one after the other, as the CLI's workers do (float64, the CLI's
  XLA settings `linnet._config.shared_cores_flags`), with JAX's own compile-time events
  (`jax.monitoring`: tracing, lowering to MLIR, backend compilation) summed per figure.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

_SCRIPT = r"""
import collections, json, sys, time, warnings
import jax
from linnet._config import shared_cores_flags
with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    shared_cores_flags()
jax.config.update("jax_enable_x64", True)
events = collections.Counter()
counts = collections.Counter()

def listen(event, duration, **kwargs):
    events[event] += duration
    counts[event] += 1

jax.monitoring.register_event_duration_secs_listener(listen)
from linnet.figures import FIGURES, compute, draw
quick = sys.argv[1] == "quick"
names = sys.argv[2:] or FIGURES
out = []
for name in names:
    events.clear(); counts.clear()
    t0 = time.perf_counter(); data = compute(name, quick=quick); t1 = time.perf_counter()
    draw(name, data); t2 = time.perf_counter()
    out.append(dict(figure=name, compute_s=t1 - t0, draw_s=t2 - t1,
                    trace_s=events["/jax/core/compile/jaxpr_trace_duration"],
                    lower_s=events["/jax/core/compile/jaxpr_to_mlir_module_duration"],
                    compile_s=events["/jax/core/compile/backend_compile_duration"],
                    programs=counts["/jax/core/compile/backend_compile_duration"]))
print(json.dumps(out))
"""


def _env() -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the caller's flags (e.g. the test suite's) are not a new user's
    return env


def cli_run(quick: bool = False, only=(), cache: bool = False) -> dict:
    """`linnet --no-cache reproduce` (`cache=False`) or `linnet reproduce` with a new, empty compilation cache
    (`cache=True`) into a temporary folder: {wall_s, cpu_s (user + system of the processes it started), jobs}."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as out:
        env = _env()
        args = [sys.executable, "-m", "linnet", *([] if cache else ["--no-cache"]), "reproduce", "--out", out]
        args += (["--quick"] if quick else []) + (["--only", *only] if only else [])
        if cache:
            env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(out, "cache")  # the CLI keeps a folder JAX was given
        t0 = time.perf_counter()
        proc = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
        wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    last = proc.stdout.strip().splitlines()[-1]  # "wrote 18 figures ... in 91 s (2 processes)"
    jobs = int(last.rsplit("(", 1)[1].split()[0]) if last.endswith(")") else 1
    return dict(wall_s=wall, cpu_s=cpu, jobs=jobs)


def per_figure(quick: bool = False, only=()) -> list[dict]:
    """Each figure computed and drawn in one fresh process, in `FIGURES` order: [{figure, compute_s, draw_s,
    trace_s, lower_s, compile_s, programs}]."""
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, "quick" if quick else "full", *only], capture_output=True,
                          text=True, env=_env(), check=True)  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def yardstick() -> float:
    """The machine's speed at compiling, measured as the latency section measures it: diffrax's first Kvaerno5
    solve of the Robertson problem in a fresh process (seconds). The main job is compile-bound, so its wall time
    scales with this across machines and days, which a time measured on another day can be set against."""
    from .latency import _fresh

    return float(_fresh("yardstick", (40, 2, 10))["robertson"])


def measure(quick: bool = False, only=()) -> dict:
    """The measurements of the module docstring: {"readme": cli_run(cache=True), "cli": cli_run(...) (no cache),
    "figures": per_figure(...), "robertson_s": yardstick()}."""
    return {"readme": cli_run(quick, only, cache=True), "cli": cli_run(quick, only), "figures": per_figure(quick, only),
            "robertson_s": yardstick()}  # fmt: skip


def at_yardstick(prof: dict, robertson_s: float | None) -> float | None:
    """The main job's wall time scaled to a machine whose Robertson yardstick took `robertson_s` (the latency
    section's), or None where either yardstick is missing: an estimate, since compiling is most but not all of
    the job."""
    how = "readme" if "readme" in prof else "cli"
    if not robertson_s or not prof.get("robertson_s"):
        return None
    return prof[how]["wall_s"] * robertson_s / prof["robertson_s"]


def table(prof: dict | None, robertson_s: float | None = None) -> list[str]:
    """The reproduce section of RESULTS.md; `robertson_s`: the latency section's yardstick, to scale to."""
    if not prof:
        return []
    cli, figs = prof["cli"], prof["figures"]
    keys = ("compute_s", "draw_s", "trace_s", "lower_s", "compile_s", "programs")
    total = {k: sum(f[k] for f in figs) for k in keys}
    rows = [
        f"| {f['figure']} | {f['compute_s']:.1f} | {f['draw_s']:.1f} | {f['trace_s']:.1f} | {f['lower_s']:.1f} | "
        f"{f['compile_s']:.1f} | {f['programs']} |"
        for f in sorted(figs, key=lambda f: -f["compute_s"])
    ]
    run_s = total["compute_s"] - total["trace_s"] - total["lower_s"] - total["compile_s"]
    readme = prof.get("readme")
    first = (
        f"The main job as the README runs it (`linnet reproduce`, fresh process, {readme['jobs']} worker processes, "
        f"the compilation cache on and empty at the start, as in a fresh clone): **{readme['wall_s']:.0f} s** wall, "
        f"{readme['cpu_s']:.0f} s of CPU time in all; with `--no-cache`: {cli['wall_s']:.0f} s wall, "
        if readme
        else f"The main job (`linnet --no-cache reproduce`, fresh process, {cli['jobs']} worker processes): "
        f"**{cli['wall_s']:.0f} s** wall, "
    )
    return [
        "## `linnet reproduce`: where the time goes",
        "",
        first + f"{cli['cpu_s']:.0f} s of CPU time in all. The same figures "
        f"computed one after the other in one fresh process: {total['compute_s']:.0f} s computing, of which "
        f"{total['trace_s']:.0f} s tracing, {total['lower_s']:.0f} s lowering and {total['compile_s']:.0f} s XLA "
        f"compilation of {total['programs']} programs, {run_s:.0f} s running (and the Python around it); drawing "
        f"{total['draw_s']:.0f} s." + _scaled(prof, robertson_s),
        "",
        "| figure | compute (s) | draw (s) | trace (s) | lower (s) | XLA compile (s) | programs |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        f"| all | {total['compute_s']:.1f} | {total['draw_s']:.1f} | {total['trace_s']:.1f} | "
        f"{total['lower_s']:.1f} | {total['compile_s']:.1f} | {total['programs']} |",
        "",
        "Compilation is most of the work: each figure's problems have their own shapes, so its batches compile their "
        "own programs (the stress search: six shapes, each a batch draw, a batched FT solve in one or two solver "
        "plans, and the slack program; the n/d sweep: six shapes, FT and LP each). So the figures compile light "
        "(`linnet.light_compile`: XLA's backend optimisation level 0, about half the compile time for slower runs), "
        "except the n/d sweep's columns at n > 40, whose long stiff solves run faster fully optimised; measured in "
        "alternating runs on one machine, the main job took 136 and 136 s before and 103 and 100 s after (CPU time "
        "261 → 189–194 s; the yardstick's scaling above maps that machine's 136 s for the earlier code to 62 s, "
        "against the 64 s measured for it on the latency section's day). The sweeps run on two host threads, so a "
        "worker uses more than one core at times and the two workers do not quite halve the wall time. With the "
        "cache on, a program one worker compiled is loaded by the other.",
        "",
    ]


def _scaled(prof: dict, robertson_s: float | None) -> str:
    est = at_yardstick(prof, robertson_s)
    if est is None:
        return ""
    return (
        f" The machine's yardstick in this run (diffrax's first Robertson solve, fresh process): "
        f"{prof['robertson_s']:.2f} s, against {robertson_s:.2f} s in the latency section's run; scaled by their "
        f"ratio, the main job would take about {est:.0f} s there (an estimate: compiling is most, not all, of it)."
    )


if __name__ == "__main__":
    print(json.dumps(measure(), indent=1))
