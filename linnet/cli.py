"""The `linnet` command line. Every subcommand calls the library; nothing here computes theory of its own."""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from ._cli_args import (
    Parser,
    as_flags,
    float_in,
    fmt,
    method_options,
    non_negative_int,
    one_off,
    positive_int,
    seed_arg,
    table,
    writable_file,
    writable_folder,
)
from ._registry import REQUIRED


def _build_problem(args):
    import jax

    import linnet

    if args.n > args.d:  # the library's message would also offer `m` (dim S), which the command line does not set
        raise ValueError(f"`n` = {args.n} > `d` = {args.d}: the n points must span a subspace of R^d; pass n <= d")
    key = jax.random.PRNGKey(args.seed)
    kp, kh = jax.random.split(key)
    labels = "sign" if getattr(args, "loss", "squared") == "logistic" else "linear"
    flip = getattr(args, "flip", None)
    extra = dict(flip=flip) if labels == "sign" and flip is not None else {}
    problem = linnet.subspace_shift(
        kp, d=args.d, k=args.k, n=args.n, eps=args.eps, ood=args.ood, labels=labels, **extra
    )
    if args.head == "zero":
        v0 = np.zeros(args.k)
    else:
        v0 = np.asarray(linnet.random_head(kh, args.k, args.head_scale))
    return problem, v0


def _add_problem_args(p, *, d=200, k=3, n=40, eps=0.1):
    p.add_argument("--d", type=positive_int, default=d, help="input dimension d")
    p.add_argument("--k", type=positive_int, default=k, help="number of features k")
    p.add_argument("--n", type=positive_int, default=n, help="number of ID training points n")
    p.add_argument("--eps", type=float_in(0.0, 2**0.5), default=eps, help="feature error ε in [0, √2]")
    p.add_argument(
        "--ood",
        choices=["isotropic", "orthogonal", "mixture", "id"],
        default="isotropic",
        help="OOD second moment; isotropic is the paper's worst case",
    )
    p.add_argument("--head", choices=["zero", "random"], default="random", help="head initialisation v0")
    p.add_argument("--head-scale", type=float_in(0.0, 1e6), default=1.0, help="σ of a random head")
    p.add_argument("--seed", type=seed_arg, default=0, help="jax.random seed in [0, 2**32 - 1]")


def cmd_compare(args):
    """FT, LP and LP-FT on one subspace shift: errors at a few times and at the limit."""
    import linnet

    problem, v0 = _build_problem(args)
    times = np.array([0.0, 0.1, 1.0, 10.0, np.inf])
    t0 = time.perf_counter()
    with one_off(args):
        runs = {"LP": linnet.linear_probe, "FT": linnet.fine_tune, "LP-FT": linnet.lp_ft}
        trajs = {name: run(problem, v0, times) for name, run in runs.items()}
    elapsed = time.perf_counter() - t0
    print(
        f"subspace shift: d={args.d} k={args.k} n={args.n} eps={args.eps} ood={args.ood} "
        f"head={args.head} seed={args.seed}"
    )
    rows = []
    for name, tr in trajs.items():
        for i, t in enumerate(times):
            rows.append(
                [
                    name,
                    fmt(t),
                    fmt(float(tr.train_loss[i])),
                    fmt(float(tr.id_error[i])),
                    fmt(float(tr.ood_error[i])),
                    fmt(float(tr.feature_change[i])),
                ]
            )
    print(table(rows, ["method", "t", "train loss", "ID error", "OOD error", "|B - B0|_F"]))
    best = min(trajs, key=lambda m: float(trajs[m].ood_error[-1]))
    print(f"\nlowest OOD error at t = inf: {best}   ({elapsed:.1f} s, including compilation)")
    return 0


def cmd_run(args):
    """One method, one problem: a table over time, optionally saved as JSON."""

    if args.save:
        writable_file(args.save)  # before the run, so that a bad path does not lose it
    if args.loss != "logistic" and args.flip is not None:
        raise ValueError("--flip (label-flip probability) applies to --loss logistic only")
    problem, v0 = _build_problem(args)
    if args.loss == "logistic":  # no t = ∞ in general: decades of t instead (the flow runs in log time)
        times = np.concatenate([[0.0], np.logspace(0, 8, args.num_times - 1)])
        head = ["t", "logistic loss", "ID 0-1 error", "OOD 0-1 error"]
    else:
        times = np.concatenate([[0.0], np.logspace(-2, 3, args.num_times - 1), [np.inf]])
        head = ["t", "train loss", "ID error", "OOD error"]
    with one_off(args):
        tr = _run_method(args, problem, v0, times)
    rows = [
        [fmt(t), fmt(float(a)), fmt(float(b)), fmt(float(c))]
        for t, a, b, c in zip(times, tr.train_loss, tr.id_error, tr.ood_error, strict=True)
    ]
    print(table(rows, head))
    if args.save:
        data = {
            "args": {k: v for k, v in vars(args).items() if k != "func"},
            "times": [float(t) for t in times],
            "train_loss": np.asarray(tr.train_loss).tolist(),
            "id_error": np.asarray(tr.id_error).tolist(),
            "ood_error": np.asarray(tr.ood_error).tolist(),
        }
        with open(args.save, "w") as f:
            json.dump(data, f, indent=1)
        print(f"saved {args.save}")
    return 0


def _run_method(args, problem, v0, times):
    """One registered method through `linnet.simulate`: its parameters are read from the options of the same name
    (`--eta-B` → `eta_B`, ...), so a newly registered method needs no code here beyond its options."""
    import jax

    import linnet

    loss = getattr(args, "loss", "squared")
    m = linnet.get_method(args.method, loss)
    own = {q.name for q in m.params}
    given = [name for name in method_options() if getattr(args, name, None) is not None]
    unused = [name for name in given if name not in own]
    if unused:
        flags = ", ".join("--" + n.replace("_", "-") for n in unused)
        takes = ", ".join("--" + n.replace("_", "-") for n in sorted(own)) or "no parameters"
        raise ValueError(f"{flags} does not apply to --method {m.name} (loss={loss}); it takes {takes}")
    params = {name: getattr(args, name) for name in given}
    missing = [q.name for q in m.params if q.default is REQUIRED and q.name not in params]
    if missing:
        flags = ", ".join("--" + n.replace("_", "-") for n in missing)
        raise ValueError(f"--method {m.name} (loss={loss}) needs {flags}")
    if "rank" in params and params["rank"] > problem.k:
        raise ValueError(f"--rank {params['rank']} exceeds k = {problem.k}: B − B0 = U W has rank at most k")
    key = jax.random.PRNGKey(args.seed + 1) if m.needs_key else None
    # the header: what runs, with every parameter's value (defaults included), and what t means
    shown = [f"{q.name} = {params.get(q.name, q.default)}" + ("" if q.name in params else " (default)")
             for q in m.params]  # fmt: skip
    print(f"method {m.name} (loss = {loss}): {m.summary}")
    if shown:
        print("parameters: " + ", ".join(shown))
    lp_first = m.lp_head or any(q.name == "lp_time" for q in m.params)
    print("time t in the paper's units (L̂ = ‖X Bᵀv − y‖², no ½, no 1/n)" if loss == "squared" else
          "time t of the logistic loss's gradient flow", end="")  # fmt: skip
    print("; t counts from the FT phase, after LP" if lp_first else "", end="\n\n")
    return linnet.simulate(m.name, problem, v0, times, key=key, loss=loss, **params)


def cmd_stress(args):
    """Counterexample search over the paper's inequalities (linnet.stress)."""
    from . import stress

    if args.out:
        writable_file(args.out)
    summary = stress.stress(
        args.seed,
        instances=args.instances,
        batch=args.batch,
        starts=args.starts,
        ks=tuple(args.k),
        k_random=args.k_random,
        k_starts=args.k_starts,
        k_steps=args.k_steps,
        statements_random=args.statements_random,
        statements_starts=args.statements_starts,
        statements_steps=args.statements_steps,
        progress=not args.no_progress,
        out=args.out,
    )
    rows = []
    for name, r in summary["random"].items():
        rows.append([name, "random", str(r["tried"]), str(r["violations"]), fmt(r["min_slack"])])
    for name, g in summary["gradient"].items():
        best = g["replayed"][0]["simulated_min_slack"] if g["replayed"] else float("nan")
        rows.append([name, "gradient (k=1)", str(g["starts"]), str(g["violations"]), fmt(best)])
    print(table(rows, ["statement", "search", "tried", "violations", "min slack"]))
    rows = []
    for k, modes in summary["by_k"].items():
        for name, r in modes.items():
            replayed = fmt(r["replayed"]) if r["replayed"] is not None else "—"
            c_star = fmt(r["c_star_estimate"]) if "c_star_estimate" in r else ""
            rows.append([str(k), name, str(r["tried"]), str(r["violations"]), fmt(r["min_slack"]), replayed, c_star,
                         r["verdict"]])  # fmt: skip
    if rows:
        print("\nTheorem 3.1 by k through linnet.testing (relative slack min_t (√L_ood + λε)/(c RHS₀) − 1):")
        print(table(rows, ["k", "statement", "tried", "violations", "min rel. slack", "replayed", "c*(k) ≤",
                           "verdict"]))  # fmt: skip
    rows = [[name, str(r["tried"]), str(r["violations"]), fmt(r["min_slack"]),
             fmt(r["replayed"]) if r["replayed"] is not None else "—", r["verdict"]]
            for name, r in summary["statements"].items()]  # fmt: skip
    if rows:
        print("\nThe paper's statements through linnet.testing (search, shrink, replay by the reference):")
        print(table(rows, ["statement", "tried", "violations", "min slack", "replayed", "verdict"]))
    print(
        f"\n{summary['seconds_total']:.0f} s; gradient rows: violations among BFGS minimisers, min slack of the "
        "best one replayed by the ODE simulator. By-k rows: c_star rows search ε = 0, where 1 + the least relative "
        "slack estimates c*(k) from above; replayed: the worst instance's value under the reference (scipy Radau)"
    )
    if args.out:
        print(f"worst instances saved to {args.out} (replay with linnet.stress.replay)")
    return 0


def cmd_reproduce(args):
    """Regenerate every theory figure (PNG + PDF + JSON) and print the headline numbers."""
    import jax
    from tqdm.auto import tqdm

    from . import figures
    from .figures._jobs import default_jobs, make_many

    writable_folder(args.out)
    names = args.only or list(figures.FIGURES)
    jobs = default_jobs(names, args.jobs)
    # getattr: the typing stubs of jax.config do not declare its options
    cache = None if args.no_cache else getattr(jax.config, "jax_compilation_cache_dir", None)
    t0 = time.perf_counter()
    with tqdm(total=len(names), desc="figures", unit="fig") as bar:
        progress = lambda name: (bar.set_postfix(figure=name), bar.update())  # noqa: E731
        results = make_many(names, args.out, quick=args.quick, jobs=jobs, progress=progress, cache=cache)
    rows = []
    for name in names:
        verdict, lines = results[name]
        rows += [[label, value, verdict if i == 0 else ""] for i, (label, value) in enumerate(lines)]
    print(table(rows, ["quantity", "value", "verdict"]))
    print(
        "L is a squared error (L_ood, L_id); √L where a bound is on the root (Theorem 3.1). Verdicts: a stated "
        "result\nholds or is violated on the figure's data; a finding is a measured number no statement fixes."
    )
    print(f"\nwrote {len(names)} figures (PNG, PDF, JSON) to {args.out}/ in {time.perf_counter() - t0:.0f} s "
          f"({jobs} process{'es' if jobs > 1 else ''})")  # fmt: skip
    return 0


def load_plugins(argv) -> None:
    """Import the modules named by `--plugin MODULE` in `argv` and the entry points of the group 'linnet.methods':
    each registers its methods with `linnet.register` when imported."""
    import importlib
    from importlib.metadata import entry_points

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugin", action="append", default=[])
    known, _ = pre.parse_known_args(argv if argv is not None else sys.argv[1:])
    for name in known.plugin:
        importlib.import_module(name)
    for ep in entry_points(group="linnet.methods"):
        ep.load()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="linnet", description=__doc__)
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="do not use JAX's persistent compilation cache, otherwise on (in $JAX_COMPILATION_CACHE_DIR or "
        "~/.cache/linnet/jax; later runs then skip most compiling)",
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, so that the methods it registers (linnet.register) can be run; installed "
        "packages can also declare them in the entry-point group 'linnet.methods'",
    )
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    p = sub.add_parser("compare", help="FT vs LP vs LP-FT on one subspace shift (what `linnet` alone runs; the "
                       "README's main job is `linnet reproduce`)")  # fmt: skip
    _add_problem_args(p)
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("run", help="one simulation, printed as a table")
    from ._registry import methods

    p.add_argument("--method", choices=methods(), required=True, help="a registered method (linnet.methods())")
    _add_problem_args(p)
    p.add_argument(
        "--loss",
        choices=["squared", "logistic"],
        default="squared",
        help="training loss; logistic uses sign labels (methods: " + ", ".join(methods("logistic")) + ")",
    )
    p.add_argument("--flip", type=float_in(0.0, 0.5), default=None, help="logistic: label-flip probability")
    for name, (typ, users, doc) in method_options().items():
        p.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=positive_int if typ is int else float_in(0.0, 1e12),
            default=None,
            help=f"{doc}; taken by {', '.join(users)}",
        )
    p.add_argument("--num-times", type=positive_int, default=8, help="number of saved times (log-spaced)")
    p.add_argument("--save", default=None, help="write the table to this JSON file")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("reproduce", help="regenerate every theory figure and print the headline numbers")
    p.add_argument("--out", default="figures", help="output folder")
    p.add_argument("--quick", action="store_true", help="small sweeps (well under a minute; used by the tests)")
    from .figures import FIGURES

    p.add_argument(
        "--only", nargs="+", choices=FIGURES, metavar="NAME", help=f"only these figures, from: {', '.join(FIGURES)}"
    )
    p.add_argument(
        "--jobs", type=positive_int, default=None,
        help="figures computed at once, each in its own process (default: the usable CPU cores, at most 4)",
    )  # fmt: skip
    p.set_defaults(func=cmd_reproduce)
    p = sub.add_parser("stress", help="counterexample search for the paper's inequalities")
    p.add_argument("--instances", type=positive_int, default=10_000, help="random instances")
    p.add_argument("--batch", type=positive_int, default=250, help="instances per vmapped batch")
    p.add_argument("--starts", type=positive_int, default=64, help="BFGS starts of the k = 1 closed-form search")
    p.add_argument("--k", type=int, choices=[1, 2, 3, 5], nargs="*", default=[1, 2, 3, 5], help="k of the search by k")
    p.add_argument("--k-random", type=positive_int, default=256, help="random instances per k and statement")
    p.add_argument("--k-starts", type=non_negative_int, default=8, help="gradient starts per k and statement")
    p.add_argument("--k-steps", type=positive_int, default=60, help="Adam steps per start")
    p.add_argument("--statements-random", type=non_negative_int, default=256,
                   help="random instances per paper statement searched through linnet.testing (0: skip)")  # fmt: skip
    p.add_argument("--statements-starts", type=non_negative_int, default=2, help="gradient starts per statement")
    p.add_argument("--statements-steps", type=positive_int, default=20, help="Adam steps per gradient start")
    p.add_argument("--seed", type=seed_arg, default=0, help="jax.random seed in [0, 2**32 - 1]")
    p.add_argument("--out", default="figures/stress.json", help="JSON report with the worst instances")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_stress)
    return parser


def main(argv=None) -> int:
    import os
    import warnings

    import jax

    from ._config import shared_cores_flags

    # before any JAX computation (see each): compiling dominates the CLI's runs; its figure workers share the cores.
    # Called after JAX has started (`cli.main([...])` in a session) they cannot take effect: no reason to warn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        shared_cores_flags()
    # the CLI is an application, so it makes the precision choice a library must not: float64, unless the user
    # set JAX_ENABLE_X64 themselves (e.g. JAX_ENABLE_X64=0 on a TPU)
    if "JAX_ENABLE_X64" not in os.environ:
        jax.config.update("jax_enable_x64", True)
    try:
        load_plugins(argv)
    except ImportError as e:
        sys.stderr.write(f"linnet: error: --plugin: {e}\n")
        return 2
    parser = build_parser()  # after the plugins, so that their methods and parameters are options
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args([*(argv or []), "compare"])
    if not args.no_cache:
        from ._config import use_compilation_cache

        # an application's process-wide choice (cold start): a second run on the same shapes loads its programs
        use_compilation_cache()
    try:
        return args.func(args)
    except (ValueError, TypeError) as e:  # bad combinations the parser cannot see (e.g. k > n)
        sys.stderr.write(f"linnet: error: {as_flags(str(e), parser, args)}\n")
        return 2
    except OSError as e:  # a file that could not be written after all (disk full, permissions changed)
        sys.stderr.write(f"linnet: error: {e.strerror or e}: {e.filename or ''}\n")
        return 1
    except Exception as e:
        from ._trajectory import ConvergenceError

        if isinstance(e, ConvergenceError):
            sys.stderr.write(f"linnet: error: {as_flags(str(e), parser, args)}\n")
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
