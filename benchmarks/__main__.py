"""Run the benchmark suite and write benchmarks/RESULTS.md:  python -m benchmarks [--sizes small medium paper]."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)  # linnet leaves the precision to the caller; the benchmarks are float64

import linnet  # noqa: E402

from . import suite  # noqa: E402


def reference(problem, v0):
    """linnet at rtol 1e-10 / atol 1e-12: the reference limit w∞ and the time t⋆ of its steady-state stop."""
    tr = linnet.fine_tune(problem, v0, [np.inf], rtol=1e-10, atol=1e-12, max_steps=1_000_000)
    return np.asarray(tr.predictor[-1]), float(tr.t_stop)


def run(sizes, budget, out: Path, keep: bool = False, keep_sections: bool = False, smoke: bool = False):
    """Time the sizes and the sections below and write `out` (Markdown) and its JSON. `smoke=True` runs every
    size's competitors and every section at a tiny size, to check that they run (the tests do), not to time."""
    rows, extra, old = [], {}, {}
    if keep and out.with_suffix(".json").exists():  # keep earlier sizes' rows (e.g. after a long run was cut short)
        old = json.loads(out.with_suffix(".json").read_text())
        rows = [suite.Row(**r) for r in old["rows"] if r["size"] not in sizes]
        extra = {k: v for k, v in old["extra"].items() if not any(k.startswith(f"{z}_") for z in sizes)}
    for size in sizes:
        print(f"== {size}", flush=True)
        t = time.perf_counter()
        problem, v0 = suite.make_problem(size)
        jax.block_until_ready(problem.reduced.s)
        extra[f"{size}_setup_s"] = time.perf_counter() - t
        ref_w, t_star = reference(problem, v0)
        extra[f"{size}_t_star"] = t_star
        # at paper scale the other solver is not run: on Gaussian inputs the automatic choice is Tsit5, and the
        # arrowhead solve (r k³ = 5·10⁹ flops a factorisation) had not finished a trial solve in 15 minutes
        paper = size.startswith("paper")
        rows += suite.linnet_rows(size, problem, v0, ref_w, t_star, repeats=1 if paper else 3, other_solver=not paper)
        if not paper:  # a second paper-scale setup (float32 SVD of X) would double the run; see RESULTS.md
            rows += suite.float32_rows(size, problem, v0, ref_w)
        if size == "tiny":  # the smoke run: every competitor once, in seconds
            rows += suite.scipy_rows(size, problem, v0, ref_w, t_star, ("LSODA",), budget)
            rows += suite.tsit5_rows(size, problem, v0, ref_w, t_star)
            rows += suite.gd_rows(size, problem, v0, ref_w, t_star, min(budget, 2.0))  # it runs: enough to check
        elif size.startswith("small"):
            rows += suite.cached_cold_rows(size, problem, v0, ref_w)
            rows += suite.fast_compile_cold_rows(size)
            rows += suite.sequential_rows(size)
            rows += suite.scipy_rows(size, problem, v0, ref_w, t_star, ("LSODA", "BDF", "Radau"), budget)
            rows += suite.tsit5_rows(size, problem, v0, ref_w, t_star)
            rows += suite.gd_rows(size, problem, v0, ref_w, t_star, budget)
        elif size == "medium":
            rows += suite.scipy_rows(size, problem, v0, ref_w, t_star, ("LSODA",), budget)
            rows += suite.gd_rows(size, problem, v0, ref_w, t_star, budget)
        elif size == "paper":  # scipy's implicit methods would need a (10⁶)² Jacobian; the explicit ones can run
            rows += suite.tsit5_rows(size, problem, v0, ref_w, t_star, max_steps=2_000, safe_dt0=True)
            rows += suite.gd_rows(size, problem, v0, ref_w, t_star, budget)
        else:  # paper-subspace: stiff, so explicit full-state competitors are step-limited; GD within the budget
            rows += suite.gd_rows(size, problem, v0, ref_w, t_star, budget)
        for r in rows:
            if r.size == size:
                print(f"  {r.method:45s} {r.seconds:10.3f} s  rel err {r.rel_error:.2e}  {r.note}", flush=True)
        write(out, rows, extra, None, None, budget)  # partial results survive a later failure
    from . import accuracy, latency, reproduce_profile, setup_profile, step_profile, testing_search

    # with --keep-sections, the sections after the sizes are taken from RESULTS.json where it has them
    kept = old if keep_sections else {}
    tiny = (40, 2, 10)
    sections = {
        "sweep": lambda: [suite.sweep_throughput(inputs=inp) for inp in ("subspace", "isotropic")],
        "batch_curve": suite.batch_curve,
        "step_profile": step_profile.profile,
        "batched_step": step_profile.batched,
        "operations": step_profile.operations,
        "step_profile_medium": lambda: step_profile.profile(5_000, 20, 1_000, dense=False),
        "setup_profile": setup_profile.profile,
        "d_scaling": suite.d_scaling,
        "latency": latency.latency,
        "accuracy": accuracy.accuracy,
        "testing_search": testing_search.measure,
        "reproduce": reproduce_profile.measure,
    }
    if smoke:
        sections = {
            "sweep": lambda: [suite.sweep_throughput(4, 2, inp, tiny) for inp in ("subspace", "isotropic")],
            "batch_curve": lambda: suite.batch_curve(4, (1, 2, 4), tiny),
            "step_profile": lambda: step_profile.profile(*tiny),
            "batched_step": lambda: step_profile.batched(*tiny, sizes=(2,)),
            "operations": lambda: step_profile.operations(*tiny),
            "step_profile_medium": lambda: step_profile.profile(60, 2, 12, dense=False),
            "setup_profile": lambda: setup_profile.profile(60, 20),
            "d_scaling": lambda: suite.d_scaling((100, 200), n=20, k=2),
            "latency": lambda: latency.latency((40, 2, 10), smoke=True),
            "accuracy": lambda: accuracy.accuracy(1, accuracy.TINY),
            "testing_search": lambda: testing_search.measure(8, default_search=False),
            "reproduce": lambda: reproduce_profile.measure(quick=True, only=("toy",)),
        }
    for name, compute in sections.items():
        have = kept.get(name, kept.get("extra", {}).get(name))
        print(f"== {name}" + (" (kept from RESULTS.json)" if have is not None else ""), flush=True)
        value = have if have is not None else compute()
        print(value, flush=True)
        if name in ("sweep", "d_scaling"):
            extra[f"_{name}"] = value
        else:
            extra[name] = value
    thr, dsc = extra.pop("_sweep"), extra.pop("_d_scaling")
    write(out, rows, extra, thr, dsc, budget)


def _s(x):
    return "> budget" if not np.isfinite(x) else (f"{x:.3g}" if x < 100 else f"{x:.0f}")


def write(out: Path, rows, extra, thr, dsc, budget):
    lines = [
        "# Benchmark results",
        "",
        "Regenerate with `python -m benchmarks` (from the repository root, after `pip install '.[test]'`).",
        "",
        f"Machine: {suite.machine_info()}",
        "",
        "Problems: `subspace_shift` with ε = 0.1, v0 ~ N(0, I_k); inputs from the default generator (a square "
        "Gaussian factor in a random S: cond(X) ~ n, a stiff flow) or, where marked, X_i ~ N(0, I_d) (well "
        "conditioned, not stiff). "
        "Accuracy: relative distance of the predictor Bᵀv at the limit time t⋆ (where linnet's steady-state test "
        "stops) to linnet's rtol = 1e-10 reference; target 1e-6. Competitors integrate the full (v, B) state "
        f"(k + k d unknowns) to t⋆. Budget per competitor: {budget:.0f} s. Ratio = competitor time / linnet warm time.",
        "",
    ]
    for size in [z for z in suite.SIZES if any(r.size == z for r in rows)]:
        base = next(r.seconds for r in rows if r.size == size and r.method == "linnet.fine_tune (warm)")
        lines += [
            f"## {size} (setup incl. SVD {extra[f'{size}_setup_s']:.1f} s, t⋆ = {extra[f'{size}_t_star']:.3g})",
            "",
            "| method | time (s) | × linnet warm | rel. error of limit | note |",
            "|---|---:|---:|---:|---|",
        ]
        for r in rows:
            if r.size == size:
                ratio = (
                    ""
                    if "linnet" in r.method
                    else ("> " + f"{budget / base:.0f}" if not np.isfinite(r.seconds) else f"{r.seconds / base:.0f}")
                )
                err = "—" if np.isnan(r.rel_error) else f"{r.rel_error:.1e}"
                lines.append(f"| {r.method} | {_s(r.seconds)} | {ratio} | {err} | {r.note} |")
        lines.append("")
    if "paper" not in {r.size for r in rows}:
        lines += ["The paper-scale problem was not run in this invocation (`--sizes ... paper`).", ""]
    else:
        lines += [
            "At paper scale the full state has k + k d ≈ 10⁶ unknowns: scipy's implicit methods would need a dense "
            "(10⁶)² Jacobian and are not run; the explicit competitors are (diffrax Tsit5 with a stable first step, "
            "see the notes). "
            "On Gaussian inputs (`paper`) the automatic choice is Tsit5 (cond(X)² ≈ 34, not stiff); on the default "
            "generator (`paper-subspace`, stiff) it is `Rodas5P` (a Rosenbrock–Wanner method) with the "
            "closed-form Newton solve, and X's "
            "factorisation goes through X Xᵀ (`linnet._geometry`, with its orthogonality check). The setup time is "
            "the generator's draw and that factorisation, done once per problem. float32 is not run at "
            "paper scale (its own factorisation of X would double the setup).",
            "",
        ]
    if thr is None:
        out.write_text("\n".join(lines))
        out.with_suffix(".json").write_text(json.dumps({"rows": [r.__dict__ for r in rows], "extra": extra}, indent=1))
        return
    lines += [
        "## Sweep throughput (small problem, FT to t = ∞, metrics only)",
        "",
        "| inputs | instances | `linnet.sweep` (s) | sweep trajectories/s | loop of `fine_tune`, per s | ratio |",
        "|---|---:|---:|---:|---:|---:|",
        *[
            f"| {t['inputs']} | {t['n']} | {t['sweep_s']:.1f} | **{t['sweep_per_s']:.1f}** | {t['loop_per_s']:.1f} | "
            f"{t['sweep_per_s'] / t['loop_per_s']:.2f}× |"
            for t in thr
        ],
        "",
        *_sweep_budget(thr[0], rows),
        *_curve(extra.get("batch_curve")),
        *_profile(extra.get("step_profile"), "small stiff problem"),
        *_batched(extra.get("batched_step")),
        *_operations(extra.get("operations")),
        *_profile(extra.get("step_profile_medium"), "medium problem, d = 5 000, k = 20, n = 1 000"),
        *_setup(extra.get("setup_profile"), extra.get("paper-subspace_setup_s")),
        f"## Scaling in d (n = 200, k = 10: one problem at d = {dsc[0]['d']}, embedded isometrically in R^d)",
        "",
        "Every d integrates the same reduced flow (zero-padding and a random signed permutation of the coordinates "
        "leave X Xᵀ, X B0ᵀ and B0 B0ᵀ unchanged), so the step count should not move and the limit's L_ood must "
        "agree; what grows with d is only the O(n d r) factorisation and the O(k d r) projections in and out.",
        "",
        "| d | factorise X (s) | FT solve to t = ∞, warm (s) | steps | per step (ms) | L_ood at the limit |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in dsc:
        lines.append(
            f"| {r['d']} | {r['factorise_s']:.2f} | {r['solve_s']:.3f} | {r['steps']} | "
            f"{1e3 * r['solve_s'] / r['steps']:.2f} | {r['ood_error']:.10g} |"
        )
    lines.append("")
    from .latency import table

    lines += table(extra.get("latency"))
    from .accuracy import table as accuracy_table

    lines += accuracy_table(extra.get("accuracy"))
    from .reproduce_profile import table as reproduce_table

    lines += reproduce_table(extra.get("reproduce"), (extra.get("latency") or {}).get("robertson"))
    from .testing_search import table as search_table

    lines += search_table(extra.get("testing_search"), "## linnet.testing.search")
    lines += _targets(rows, thr, dsc, extra)
    out.write_text("\n".join(lines))
    (out.with_suffix(".json")).write_text(
        json.dumps({"rows": [r.__dict__ for r in rows], "extra": extra, "sweep": thr, "d_scaling": dsc}, indent=1)
    )
    print(f"wrote {out}")


def _curve(curve):
    """The batch-size curve (issue #12, items 3 and 7) as Markdown lines."""
    if not curve:
        return []
    sizes = sorted({r["c"] for r in curve})
    routes = [z for z in ("map", "vmap", "stacked") if any(r["route"] == z for r in curve)]

    def cell(route, c):
        r = next(x for x in curve if x["route"] == route and x["c"] == c)
        return f"{1e3 * r['per_traj_s']:.0f} ms ({r['steps_mean']:.0f}/{r['steps_max']})"

    n = "96"
    return [
        "## Batch size against time per trajectory (small stiff problem, FT to t = ∞, `linnet.sweep`)",
        "",
        f"{n} instances per configuration, after compiling on the first batch; each cell is the time per trajectory "
        "(mean/max steps per member). c is the batch: instances per compiled call (`batch_size`) for map, "
        'instances vmapped together (`chunk`) for vmap, members of one ODE (`batching="stacked"`) for stacked. '
        "A vmapped solve runs every member for the slowest member's steps; a stack's shared controller takes the "
        "union of its members' small steps, so its step count grows with c. Host threads (`workers`, default the "
        "usable cores up to 4) run a batch of at least 8 in parts of at least 4, each on its own core (for stacked: "
        "each part one stack of c/2 members); a batch smaller than that runs as one call.",
        "",
        "| route | " + " | ".join(f"c = {c}" for c in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
        *[f"| {z} | " + " | ".join(cell(z, c) for c in sizes) + " |" for z in routes],
        "",
    ]


def _sweep_budget(t, rows) -> list[str]:
    """Where the sweep's ratio to a loop of calls comes from (issue #33's 4× target), from this run's numbers."""
    table = [r.seconds for r in rows if r.size == "small" and r.method == "linnet.fine_tune (warm)"]
    warm, where, later = table, "in the small table above", []
    if "warm_s" in t:  # measured with the sweep, in the same run
        warm, where = [t["warm_s"]], "of the same instances (each one's best of 3, averaged)"
        if table and not 0.8 < t["warm_s"] / table[0] < 1.25:  # a section re-measured on a faster or slower day
            later = [
                f"This section and the batch-size table below come from another run than the tables above, on a "
                "machine that ran the warm solve "
                f"at {1e3 * t['warm_s']:.1f} ms against the small table's {1e3 * table[0]:.1f} ms: their ratios "
                "compare with each other, their absolute rates not with the other sections.",
                "",
            ]
    if t["inputs"] != "subspace" or not warm:
        return []
    call, member = 1 / t["loop_per_s"], 2 / t["sweep_per_s"]  # a member's CPU time on the sweep's two threads
    return [
        *later,
        f"Against the loop a sweep gains three factors, whose product is the ratio: two host threads (2×), the "
        f"Python around each call (a call in the loop, on an instance taken out of the batch beforehand, took "
        f"{1e3 * call:.1f} ms against the warm solve's "
        f"{1e3 * warm[0]:.1f} ms {where}: {call / warm[0]:.2f}×), and vmapping 8 members a step "
        f"(a member's share of the sweep's CPU time, {1e3 * member:.2f} ms, against the warm solve: "
        f"{warm[0] / member:.2f}×). Earlier runs timed the loop with each instance sliced out of the batched "
        "Problem inside it (2–3 ms an instance), which raised the ratio by about 8 %. The vmapping factor is "
        "what a batched step gains per member (the batched-step table below) less the member-steps a chunk spends on "
        "members already done (9 % with the members in `batch_order`, 15 % in their given order) and each member's "
        "set-up and metrics. The vmapped chunks use the method's `batch_solver`, whose k × k LU is vectorised across "
        "them, on the unpadded flow (the batch program is compiled per shape, so r = 100 is not padded to its "
        "bucket, 112, as a single call's is: 8–16 % more trajectories/s in alternating runs). Measured and left: "
        "chunks of 4, 12 or 16 (slower), Rodas5P's stages unrolled (slower: 180–205/s), "
        "a fitted predictor of the step count (from log s_min, log ‖v0‖ and log ‖ρ0/s‖; by the step counts it would "
        "waste 7 % instead of 9 %).",
        "",
    ]


def _profile(rows, label):
    """The per-step table (issue #12, items 2 and 7) as Markdown lines."""
    if not rows:
        return []
    from . import step_profile

    return [
        f"## Per-step profile ({label}; `python -m benchmarks.step_profile` for the approach to the limit)",
        "",
        *step_profile.table(rows),
        "",
    ]


def _batched(rows):
    from . import step_profile

    return step_profile.batched_table(rows)


def _operations(ops):
    from . import step_profile

    return step_profile.operations_lines(ops)


def _setup(rows, total):
    """The paper-scale setup's parts (issue #12, item 5) as Markdown lines."""
    if not rows:
        return []
    from . import setup_profile

    return [
        "## Setup profile (`paper-subspace`: d = 10⁴, k = 100, n = 5 000; `python -m benchmarks.setup_profile`)",
        "",
        *setup_profile.table(rows, total),
        "",
    ]


def _targets(rows, thr, dsc, extra):
    """Issues #5's, #12's and #33's targets, each marked met or missed from the numbers above."""

    def t(size, method):
        return next((r.seconds for r in rows if r.size == size and r.method == method), None)

    out = ["## Targets (issues #5, #12 and #33)", "", "| target | measured | met |", "|---|---|---|"]
    warm = t("small", "linnet.fine_tune (warm)")
    for comp, factor in (("scipy solve_ivp LSODA (full state)", 50), ("diffrax Tsit5 (full state, warm)", 100)):
        c = t("small", comp)
        if warm and c:
            ratio = c / warm
            out.append(
                f"| small, warm: ≥ {factor}× faster than {comp} | {ratio:.0f}× | {'yes' if ratio >= factor else 'no'} |"
            )
    cold = t("small", "linnet.fine_tune (cold)")
    if cold:
        out.append(f"| small, cold (with compilation) < 3 s | {cold:.2f} s | {'yes' if cold < 3 else 'no'} |")
    fast = t("small", "linnet.fine_tune (cold, new process, fast_compile)")
    if fast:
        ok = "yes" if fast < 2 else "no"
        out.append(f"| small, cold in a new process with `fast_compile()` < 2 s | {fast:.2f} s | {ok} |")
    cached = t("small", "linnet.fine_tune (cold, new process, compilation cache filled)")
    if cached:
        ok = "yes" if cached <= 2 else "no"
        out.append(
            f"| cold first call ≤ 2 s (issue #12; the CLI and notebooks fill the cache) | {cached:.2f} s | {ok} |"
        )
    lsoda = t("small", "scipy solve_ivp LSODA (full state)")
    if warm:
        ok = "yes" if warm <= 0.02 else "no"
        ratio = f", {lsoda / warm:.0f}× LSODA" if lsoda else ""
        out.append(f"| small stiff, warm, ≤ 20 ms and ≥ 400× LSODA (issue #12) | {1e3 * warm:.0f} ms{ratio} | {ok} |")
    medium = t("medium", "linnet.fine_tune (warm)")
    if medium:
        out.append(f"| medium, warm, ≤ 1.5 s (issue #12) | {medium:.2f} s | {'yes' if medium <= 1.5 else 'no'} |")
    setup = extra.get("paper-subspace_setup_s")
    if setup:
        ok = "yes" if setup <= 30 else "no"
        out.append(
            f"| paper scale, default generator, setup ≤ 30 s (issue #12; see its profile) | {setup:.0f} s | {ok} |"
        )
    # the sweep section may come from a run on a faster or slower day (`_sweep_budget`): its rates say so
    pace = thr[0]["warm_s"] / warm if (thr and warm and "warm_s" in thr[0]) else 1.0
    run_note = "" if 0.8 < pace < 1.25 else f" (in a run whose warm solve took {pace:.1f}× the small table's)"
    for r in thr:
        out.append(
            f"| sweep ≥ 200 trajectories/s ({r['inputs']} inputs) | {r['sweep_per_s']:.0f}/s{run_note} | "
            f"{'yes' if r['sweep_per_s'] >= 200 else 'no'} |"
        )
        ratio = r["sweep_per_s"] / r["loop_per_s"]
        out.append(f"| sweep ≥ 10× a loop of calls ({r['inputs']}) | {ratio:.1f}× | {'yes' if ratio >= 10 else 'no'} |")
    paper = t("paper", "linnet.fine_tune (warm)")
    if paper:
        out.append(
            f"| paper scale, one FT trajectory to its limit < 60 s | {paper:.1f} s | {'yes' if paper < 60 else 'no'} |"
        )
    stiff = t("paper-subspace", "linnet.fine_tune (warm)")
    if stiff:
        ok = "yes" if stiff <= 120 else "no"
        label = "paper scale, default generator, FT to t = ∞ ≤ 120 s after setup (issue #12)"
        out.append(f"| {label} | {stiff:.1f} s | {ok} |")
    if dsc:
        solves = [r["solve_s"] for r in dsc]
        spread = max(solves) / min(solves) - 1
        per_step = [r["solve_s"] / r["steps"] for r in dsc]
        ps = max(per_step) / min(per_step) - 1
        out.append(
            f"| time per solve flat in d within 20 % (d = {dsc[0]['d']} … {dsc[-1]['d']}) | "
            f"spread {100 * spread:.0f} % (per step {100 * ps:.0f} %) | {'yes' if spread <= 0.2 else 'no'} |"
        )
    lat = extra.get("latency")
    if lat:
        rb = lat["robertson"]
        checks = (
            ("first `fine_tune`", lat["first_fine_tune"], 1.5),
            ("first `jax.grad` at t = ∞", lat["first_grad"], 3.0),
            ("a new shape (same k, r in a compiled bucket)", lat["new_shape_same_bucket"], 0.5),
            ("a typical first session", lat["session"] / lat["session_robertson"] * rb, 6.0),
        )
        for label, value, goal in checks:
            ratio = value / rb
            out.append(f"| {label} ÷ diffrax's first Robertson solve ≤ {goal:g}× | {ratio:.2f}× | "
                       f"{'yes' if ratio <= goal else 'no'} |")  # fmt: skip
    for r in thr[:1]:  # issue #33's sweep target, on the stiff inputs
        ratio = r["sweep_per_s"] / r["loop_per_s"]
        ok = r["sweep_per_s"] >= 150 and ratio >= 4
        out.append(f"| sweep of small stiff problems ≥ 150/s and ≥ 4× a loop (issue #33) | {r['sweep_per_s']:.0f}/s, "
                   f"{ratio:.1f}×{run_note} | {'yes' if ok else 'no'} |")  # fmt: skip
    batched = extra.get("batched_step")
    if batched:
        worst = max(r["batched_s"] / r["floor_s"] for r in batched)
        out.append(f"| batched step per member ≤ 1.5× its arithmetic floor (issue #33) | {worst:.2f}× | "
                   f"{'yes' if worst <= 1.5 else 'no'} |")  # fmt: skip
    if warm:
        out.append(f"| small stiff, warm, to t = ∞ ≤ 12 ms (issue #33), XLA's default runtime | {1e3 * warm:.1f} ms | "
                   f"{'yes' if warm <= 0.012 else 'no'} |")  # fmt: skip
    seq = t("small", "linnet.fine_tune (warm, new process, sequential_runtime)")
    if seq:
        out.append(f"| the same, with `linnet.sequential_runtime()` (opt-in; the CLI's and the suite's) | "
                   f"{1e3 * seq:.1f} ms | {'yes' if seq <= 0.012 else 'no'} |")  # fmt: skip
    rep = extra.get("reproduce")
    if rep:
        how = "readme" if "readme" in rep else "cli"
        wall = rep[how]["wall_s"]
        ok = "yes" if wall <= 60 else "no"
        label = "as the README runs it, empty cache" if how == "readme" else "`--no-cache`"
        from .reproduce_profile import at_yardstick

        est = at_yardstick(rep, (extra.get("latency") or {}).get("robertson"))
        if est is not None and abs(est / wall - 1) > 0.25:  # measured on a machine of another speed: say so
            wall_text = f"{wall:.0f} s here; ≈ {est:.0f} s at the latency section's machine speed (Robertson yardstick)"
            ok = f"{ok}; ≈ {'yes' if est <= 60 else 'no'} scaled"
        else:
            wall_text = f"{wall:.0f} s"
        out.append(f"| `linnet reproduce`, figures, ≤ 60 s (issue #33; {label}) | {wall_text} | {ok} |")
    acc = extra.get("accuracy")
    if acc:
        worst = max(r["worst"] for r in acc)
        out.append(f"| global error at rtol 1e-8, every path and saved time, ≤ 1e-7 | {worst:.1e} | "
                   f"{'yes' if worst <= 1e-7 else 'no'} |")  # fmt: skip
    return [*out, ""]


def main():
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--sizes", nargs="*", choices=[z for z in suite.SIZES if z != "tiny"],
                    default=[z for z in suite.SIZES if z != "tiny"])  # fmt: skip
    ap.add_argument("--smoke", action="store_true", help="every competitor and section once at a tiny size, to check "
                    "that they run (writes to --out; the tests use it)")  # fmt: skip
    ap.add_argument("--budget", type=float, default=300.0, help="seconds allowed per slow competitor")
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    ap.add_argument("--keep", action="store_true", help="keep the rows of sizes not run now from RESULTS.json")
    ap.add_argument("--keep-sections", action="store_true",
                    help="with --keep: take the sweep, batch-curve, per-step and d-scaling sections from RESULTS.json "
                    "where it has them, instead of rerunning them")  # fmt: skip
    args = ap.parse_args()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        run(["tiny"], min(args.budget, 30.0), Path(args.out), smoke=True)
        return
    run(args.sizes, args.budget, Path(args.out), keep=args.keep, keep_sections=args.keep_sections)


if __name__ == "__main__":
    main()
