"""The plan of a batch, shared by `sweep` and `batched_predictors`: which program runs a method (methods on one
shared flow run its one compiled batch), which members take the explicit solver (decided on the host from their
concrete data, by `linnet._run.simulate.solver_plan`'s rule), how a batch runs under the fallback rule, in parts on
host threads, and what a failure message advises."""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import math
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .._closed_forms import lp_limit_head
from .._config import jit, usable_cores
from .._registry import Method, Param, get_method
from .._solver import choice
from .._validate import check_value


def mode_options(mode: str, explicit, max_steps: int) -> dict:
    """`simulate`'s solver options for one member of a batch run in `mode`: "mixed" (each member's choice by
    `lax.cond` on its flag `explicit`), "explicit" (Tsit5 with its step budget) or "default" (the method's
    default solver)."""
    if mode == "mixed":
        return dict(_explicit=explicit, max_steps=max_steps)
    if mode == "explicit":
        return dict(solver=choice.explicit_solver(), max_steps=min(max_steps, choice.EXPLICIT_STEPS))
    return dict(max_steps=max_steps)


def run_planned(run, flags: np.ndarray):
    """Run a batch under the fallback rule with as few compiled solvers as it needs. `run(mode)` runs the batch
    in that mode (see `_mode_options`) and returns (outputs, steps, ok); `flags` (N,) are the members' explicit
    choices, made from their concrete data. All explicit: Tsit5 alone, then the default solver only if some member
    failed, keeping each member's first success. None explicit: the default solver alone. Mixed: both in one
    program, chosen per member by `lax.cond`."""
    if flags.any() and not flags.all():
        return run("mixed")
    out, st, ok = run("explicit" if flags.all() else "default")
    if flags.all() and not bool(np.all(ok)):
        out2, st2, ok2 = run("default")
        keep = np.asarray(ok)

        def pick(a, b):
            return jnp.where(keep.reshape((-1,) + (1,) * (jnp.ndim(a) - 1)), a, b)

        out, st = jax.tree_util.tree_map(pick, (out, st), (out2, st2))
        ok = np.asarray(ok2) | keep
    return out, st, ok


def budget_advice(m: Method, opts: dict, max_steps: int) -> str:
    """What to change when members of a batch did not converge, naming the method's own budget."""
    if m.budget == "max_steps":
        return f"increase `max_steps` (now {max_steps})"
    now = opts.get(m.budget, m.param(m.budget).default)
    return (f"a method that counts its own budget: increase its '{m.budget}' (now {now}) for the times asked, or, "
            "if it diverged, lower its step (GD diverges above about 2/λ_max of the Hessian)")  # fmt: skip


def explicit_allowed(m, opts) -> bool:
    """Whether the method may take the explicit solver automatically (plain FT and LP-FT)."""
    return m.kind == "flow" and m.explicit_ok is not None and bool(m.explicit_ok(opts))


def shard_batch(fn, devices, batched: tuple[bool, ...], setup: bool = False):
    """`jax.jit(fn)` with its batch axis sharded over `devices` (a 1-D mesh named "batch" and `jax.shard_map`; each
    device runs its own compiled loop over its share). `batched[i]` says whether argument i has the batch axis
    (else it is replicated); every output has it. One device: plain `jax.jit(fn)`. `setup`: compiled as a set-up
    program (`linnet._config.SETUP_OPTIONS`; for a closed form's batch)."""
    if len(devices) == 1:
        return jit(fn, setup=setup)
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.asarray(devices), ("batch",))
    specs = tuple(P("batch") if b else P() for b in batched)
    return jit(jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=P("batch"), check_vma=False), setup=setup)


# members vmapped together by default in a batch of a stiff flow with a closed-form Newton solve (the generalised
# FT flow, every member on its implicit solver). A sweep of 500 small stiff problems (d = 500, k = 5, n = 100,
# batches of 250, 2 CPU cores): 205–212 trajectories/s at 8, 194–202 at 16, 166–171 at 32, 163–165 one member at
# a time; vmapped members run as many steps as the slowest of them, which larger chunks pay for
AUTO_CHUNK = 8


def batch_chunk(chunk: int | None, stackable: bool, mode: str) -> int:
    """The members a batch vmaps together: `chunk` if given; otherwise `AUTO_CHUNK` for a flow whose Newton solve
    is a closed form (`stackable`: its vmapped step is as cheap per member as a single one) when every member
    takes the implicit solver (`mode == "default"`), else 1 (a vmapped choice of solver runs both; other methods
    keep their members apart)."""
    if chunk is not None:
        return int(chunk)
    return AUTO_CHUNK if stackable and mode == "default" else 1


def is_closed_form(runner, loss: str = "squared") -> bool:
    """Whether a batch's runner (a registered name or a `Method`) evaluates a closed form: its batch is compiled as
    a set-up program (a short run next to its compilation; no integration in it)."""
    m = get_method(runner, loss) if isinstance(runner, str) else runner
    return m.kind == "closed_form"


# the most host threads a batch is cut into by default
MAX_WORKERS = 4


def host_workers(devices, workers: int | None = None) -> int:
    """How many host threads run parts of one batch at once. `workers` given: that many (a positive integer).
    Default: on a single CPU device, the cores this process may use, at most `MAX_WORKERS` = 4 (XLA runs each
    part's program on the calling thread, so two threads keep two cores busy: a sweep of small stiff instances ran
    1.6–2× faster on 2 cores); otherwise 1 (several devices already split the batch by `shard_batch`; an
    accelerator runs a batch as one program)."""
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
            raise ValueError(f"`workers` must be a positive integer (host threads), got {workers!r}")
        return int(workers)
    if len(devices) != 1 or devices[0].platform != "cpu":
        return 1
    return max(1, min(usable_cores(), MAX_WORKERS))


@partial(jit, setup=True, static_argnames=("size",))
def _rows(tree, start, size: int):
    # one program per tree of shapes, whatever the start (a traced offset): every leaf's slice in one call
    return jax.tree_util.tree_map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, size), tree)


def take_rows(tree, start: int, stop: int, size: int):
    """Rows `start` to `stop` (exclusive) of every leaf of `tree` (its leading axis), padded to `size` rows by
    repeating row `stop − 1`. A range without padding is cut by one compiled slice of every leaf at once, which
    copies the rows (a gather by index, as `a[idx]` does, costs twice as much and compiles per leaf: in a first sweep
    of 1 000 small stiff instances the gathers took 0.7 of its 5.0 s); only a padded range gathers."""
    if start == 0 and stop == size == jax.tree_util.tree_leaves(tree)[0].shape[0]:
        return tree  # every row, unpadded: nothing to copy
    if stop - start == size:
        return _rows(tree, jnp.asarray(start), size=size)
    idx = padded_rows(start, stop, size)
    return jax.tree_util.tree_map(lambda a: a[idx], tree)


def padded_rows(start: int, stop: int, size: int) -> np.ndarray:
    """The row indices `take_rows` takes: `start` … `stop − 1`, then `stop − 1` repeated up to `size` entries."""
    return np.minimum(np.arange(start, start + size), stop - 1)


def run_in_parts(fn, args: tuple, batched: tuple[bool, ...], workers: int, min_part: int = 4, rows=None):
    """`fn(*args)` with the batch axis (the leading one of every leaf of `args[i]` where `batched[i]`) cut into
    up to `workers` parts of equal size, at least `min_part` members each (the last padded by repeating the batch's
    final member), each run and waited for on its own host thread, the outputs (every leaf with the batch axis) put
    back together with the padding dropped. The parts have one shape, so `fn` compiles once (JAX compiles concurrent
    first calls of one program once). The members of a batch are independent, so the result is that of one call,
    member for member, to rounding. A batch too small for two parts runs as one call: a thread gains nothing on a
    few members, and XLA compiles a loop over a single member differently (it removes the loop), which at t = ∞ can
    move the steady-state stop (measured at XLA's optimisation level 0: 208 steps against 144 for one member).

    `rows = (start, stop, size)`: the batched arguments are whole arrays, and the batch is their rows `start` to
    `stop`, padded to `size` by repeating row `stop − 1` (a sweep's batch); each part takes its rows from the whole
    arrays at once (`take_rows`), so the batch is never copied as a whole, and a part that would hold padding only
    is not run. The output has the batch's `size` rows; those past its `stop − start` members are not specified (the
    caller drops them)."""
    if rows is None:
        N = jax.tree_util.tree_leaves([a for a, b in zip(args, batched, strict=True) if b])[0].shape[0]
        start, stop = 0, N
    else:
        start, stop, N = (int(x) for x in rows)
    parts = max(1, min(int(workers), N // max(1, int(min_part))))
    part_size = math.ceil(N / parts)
    lead = [a for a, b in zip(args, batched, strict=True) if b]

    def call(i):
        if rows is None and parts == 1:
            return fn(*args)
        it = iter(take_rows(lead, start + i * part_size, min(stop, start + (i + 1) * part_size), part_size))
        return jax.block_until_ready(fn(*[next(it) if b else a for a, b in zip(args, batched, strict=True)]))

    if parts <= 1:
        return call(0)
    real = [i for i in range(parts) if start + i * part_size < stop]  # parts holding at least one member of the batch
    # each thread runs in a copy of the caller's context, so that its switches (`linnet.light_compile`, the
    # reference simulator of `linnet.testing.reference`) hold there too
    contexts = [contextvars.copy_context() for _ in real]
    with ThreadPoolExecutor(len(real)) as pool:
        outs = list(pool.map(lambda c, i: c.run(call, i), contexts, real))
    outs += [outs[-1]] * (parts - len(real))  # fillers for parts of padding only, dropped below
    return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs)[:N], *outs)


lp_heads = jit(jax.vmap(lp_limit_head), setup=True)  # the LP limits v_lp^∞ of a batch: one small program


@functools.cache
def program_method(name: str, reals: tuple[str, ...]) -> Method:
    """The registered method `name` as the runner of a shared program: its parameters are the program's reals
    `reals` (already validated, so only finiteness is checked), and it starts from the head it is given."""
    m = get_method(name)
    params = tuple(Param(r, 0.0, lower=None, doc="a real of the shared program") for r in reals)
    return dataclasses.replace(m, params=params, program=None, lp_head=False, checks=None, delegate=None)


def plan_method(m: Method, opts: dict, times, dtype) -> tuple:
    """How a batch (`sweep`, `batched_predictors`) runs method `m` with options `opts` (concrete): `(runner, reals,
    static options, start from the LP head?, time scale)`; the batch runs `runner` with the real parameters `reals`
    (arguments of the compiled function, so a sweep over η or λ compiles once) at the times scaled by `time scale`.

    - The method's value checks run here, on the concrete parameters.
    - A parameter choice that is another method (`Method.delegate`: two learning rates with a zero rate) runs that
      method, on the host's decision (inside the batch every parameter is traced, so it could not be taken there).
    - Methods that declare a shared `program` (FT, LP-FT, two learning rates and L2-SP all run FT's) are run by it,
      so one compiled batch serves all of them; the LP head, where the method starts from it, is computed before
      the batch.
    - Any other method runs as itself, with its non-real options static."""
    from .simulate import parse_params

    lp_head = bool(opts.get("lp_head", False))
    given = {a: b for a, b in opts.items() if a not in ("seed", "lp_head")}
    reals, statics = parse_params(m, given, dtype)
    p = {**reals, **dict(statics)}
    for bad, message in m.checks(p, times) if m.checks is not None else ():
        check_value(None, bad, message)
    other = None if m.delegate is None else m.delegate(p)
    if other is not None:
        name, kw, scale = other
        sub = {**kw, "lp_head": lp_head}
        runner, r, key_opts, lp_first, s = plan_method(get_method(name, m.loss), sub, times * scale, dtype)
        return runner, r, key_opts, lp_first, scale * s
    if m.program is not None and m.loss == "squared":
        name, prog = m.program(p, dtype)
        return program_method(name, tuple(sorted(prog))), prog, (), bool(m.lp_head or lp_head), 1.0
    real_names = {q.name for q in m.params if q.kind == "real"}
    reals = {a: jnp.asarray(b, dtype) for a, b in opts.items() if a in real_names and b is not None}
    statics = {a: b for a, b in opts.items() if a not in reals and not (a == "lp_head" and not b)}
    return m.name, reals, tuple(sorted(statics.items())), False, 1.0
