"""The command line's argument types and checks, the methods' options generated from their declarations, and how a
one-off command compiles."""

from __future__ import annotations

import argparse
import re
import sys

import numpy as np


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` shows each option's default, except where it has none of its own (a method's parameter, whose
    default is its declaration's, named in its help)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is argparse.SUPPRESS or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line and exit status 2, without a usage dump, and shows
    defaults in `--help`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        sys.stderr.write(f"linnet: error: {message}\n")
        raise SystemExit(2)


def _int_at_least(s, lowest: int, what: str):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {what} integer, got {s!r}") from None
    if v < lowest:
        raise argparse.ArgumentTypeError(f"expected a {what} integer, got {s!r}")
    return v


def positive_int(s):
    return _int_at_least(s, 1, "positive")


def non_negative_int(s):
    return _int_at_least(s, 0, "non-negative")


def float_in(lo, hi):
    def parse(s):
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in [{lo:g}, {hi:g}], got {s!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected a number in [{lo:g}, {hi:g}], got {s!r}")
        return v

    return parse


def seed_arg(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**32 - 1], got {s!r}") from None
    if not 0 <= v < 2**32:  # jax.random.PRNGKey takes a 32-bit seed on every backend
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**32 - 1], got {s!r}")
    return v


def writable_file(path: str) -> str:
    """`path` if a file can be written there (its folder exists and is writable), checked before a long run."""
    import os

    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"`--save {path}`: that is a folder; give a file name, e.g. {os.path.join(path, 'run.json')}")
    if not os.path.isdir(folder):
        raise ValueError(f"`--save {path}`: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"`--save {path}`: the folder {folder} is not writable")
    return path


def writable_folder(path: str) -> str:
    """`path` as an output folder, created if need be, and checked writable before a long run."""
    import os

    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ValueError(f"`--out {path}`: cannot create that folder ({e.strerror})") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"`--out {path}`: the folder is not writable")
    return path


def method_options():
    """The methods' parameters as command-line options, from their declarations (`linnet.Param`): one option per
    parameter name (`eta_B` → `--eta-B`), with no default of its own, so that an option not given takes the
    declaration's default. **Returns:** {name: (type, [methods that take it], doc)}."""
    from ._registry import LOSSES, REQUIRED, get_method, methods

    opts: dict = {}
    for loss in LOSSES:
        for name in methods(loss):
            for q in get_method(name, loss).params:
                if q.kind == "bool":
                    continue
                typ = int if q.kind == "int" else float
                entry = opts.setdefault(q.name, (typ, [], q.doc))
                label = name if loss == "squared" else f"{name} (loss={loss})"
                # a default of None is explained by the parameter's doc (e.g. "default λ_B"), not printed as None
                default = None if q.default is None else "required" if q.default is REQUIRED else f"default {q.default}"
                if not any(u == label or u.startswith(label + " ") for u in entry[1]):
                    entry[1].append(label if default is None else f"{label} ({default})")
    return opts


def table(rows, headers):
    """A plain-text table: numeric columns right-aligned, text columns left-aligned."""

    def numeric(c):
        try:
            float(c)
        except ValueError:
            return False
        return True

    cols = list(zip(*([headers, *rows]), strict=True))
    widths = [max(len(str(c)) for c in col) for col in cols]
    right = [all(numeric(str(c)) for c in col[1:]) for col in cols]

    def line(cells):
        return "  ".join(f"{c:>{w}}" if r else f"{c:<{w}}" for c, w, r in zip(cells, widths, right, strict=True))

    head = line(headers).rstrip()
    return "\n".join([head, "-" * len(head)] + [line([str(c) for c in r]).rstrip() for r in rows])


def fmt(x):
    return f"{x:.4g}" if np.isfinite(x) else str(x)


def as_flags(message: str, parser, args) -> str:
    """A library message in the command line's words: an argument named in backquotes (`n`, `eta_B`) that is an
    option of the subcommand run becomes that option (--n, --eta-B), so that the error names what the user typed."""
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    options = set()
    if sub is not None and args.command in sub.choices:
        options = {a.dest for a in sub.choices[args.command]._actions if a.option_strings}

    def swap(m):
        name = m.group(1)
        return "--" + name.replace("_", "-") if name in options else m.group(0)

    return re.sub(r"`(\w+)`", swap, message)


# A command that runs each program once compiles it light (`linnet.light_compile`) up to this n: measured on 2 cores,
# `compare`'s three methods at d = 200, n = 40: 3.1 → 1.5 s; d = 2 000, n = 800: 3.4 → 3.1 s on the default
# (stiff) generator, 3.4 → 1.5 s on Gaussian inputs; d = 4 000, n = 2 000 (stiff): 3.5 → 4.7 s, a loss, as the
# slower run of a large, long solve outweighs the compile time saved.
ONE_OFF_LIGHT_N = 800


def one_off(args):
    """The context a one-off command (`compare`, `run`) solves in: `linnet.light_compile()` for n up to
    `ONE_OFF_LIGHT_N`."""
    from ._config import light_compile

    return light_compile(args.n <= ONE_OFF_LIGHT_N)
