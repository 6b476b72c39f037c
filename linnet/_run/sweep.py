"""`sweep`: many instances × methods × heads, as a transform of the registry's single-instance function.

Each (method, head) is `linnet.simulate` with `throw=False`, mapped over a batch of problems by `lax.map` (`chunk`
members vmapped together: by default 8 for a flow with a closed-form Newton solve when every member takes the
implicit solver, whose vmapped step costs per member about what a single step does; otherwise one at a time, since a
vmapped adaptive solve runs every member for the slowest member's steps and turns branches into selects). A batch
whose members all take the implicit solver runs the method's `batch_solver` (its linear algebra vectorised across
vmapped members), its chunks in the order of the method's `batch_order` (like step counts together). The batch is
sharded over devices by `shard_map` and, on one CPU device, cut into parts that host threads run at once
(`linnet._run.plan.run_in_parts`); `batching="stacked"` runs each batch (part) as one ODE instead
(`linnet._run.stacked`). Batches are padded to one size, so each method compiles once per shape, not once per batch;
since the batch program is per shape anyway, its members run the unpadded flow (no bucket of r, `linnet._run.padded`).
Methods that run one shared program (FT, LP-FT, two learning rates, L2-SP: see `Method.program`) share one compiled
batch per shape and solver plan. Only L̂, L_id and L_ood are kept.
"""

from __future__ import annotations

import dataclasses
import functools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .._numerics import scale_out_of_range, scale_range
from .._problem import Problem
from .._registry import REGISTRY, Method, get_method, parse_spec
from .._solver.choice import explicit_is_enough
from .._trajectory import ConvergenceError, is_okay
from .._validate import check_times
from .plan import (
    batch_chunk,
    budget_advice,
    explicit_allowed,
    host_workers,
    is_closed_form,
    lp_heads,
    mode_options,
    padded_rows,
    plan_method,
    run_in_parts,
    run_planned,
    shard_batch,
    take_rows,
)
from .simulate import simulate
from .stacked import can_stack, stacked_batch


@functools.lru_cache(maxsize=64)
def _batched(
    name: str | Method, opts: tuple, rtol: float, atol: float, max_steps: int, chunk: int, devices: tuple, mode: str,
    loss: str = "squared",
):  # fmt: skip
    """The compiled batch function of one method (a registered name, or the runner of a shared program, see
    `plan.plan_method`): (problems (N, …), (heads (N, k), indices (N,), explicit (N,)),
    times, reals) → ((train_loss, id_error, ood_error) (N, T), steps (N,), ok (N,)). `opts` holds the static
    options only; the method's real parameters (`reals`, a dict of scalars) are arguments of the compiled
    function, so a sweep over η or λ compiles once, not once per value. `explicit` is each member's
    solver choice, made from its concrete data by the same rule as `fine_tune` (`choice.explicit_is_enough`).
    `mode`: "mixed" (each member's choice by `lax.cond`), "explicit" (Tsit5 for all, with its step budget) or
    "default" (the implicit solver for all: the method's `batch_solver` where it declares one, else its default)."""
    kw = dict(opts)
    seed = kw.pop("seed", None)
    m = name if isinstance(name, Method) else get_method(name, loss)
    # every member on the implicit solver: the method's batch solver (vectorised across vmapped members), whatever
    # the chunk, so that chunks of any size take the same steps to rounding
    solver = m.batch_solver() if mode == "default" and m.batch_solver is not None else None

    def one(args, times, reals):
        p, v0, idx, explicit = args
        key = None if seed is None else jax.random.fold_in(jax.random.PRNGKey(seed), idx)
        extra = mode_options(mode, explicit, max_steps) | ({} if solver is None else {"solver": solver})
        # this program is compiled per shape: padding r to a bucket (for reuse across shapes) would only cost
        tr = simulate(name, p, v0, times, rtol=rtol, atol=atol, throw=False, key=key, loss=loss, _pad=False, **extra,
                      **kw, **reals)  # fmt: skip
        return (tr.train_loss, tr.id_error, tr.ood_error), tr.num_steps, is_okay(tr.result)

    def batch(problems, inputs, times, reals):
        v0s, idx, explicit = inputs
        members = (problems, v0s, idx, explicit)
        if chunk == 1 or m.batch_order is None:
            # lax.map runs one member per iteration, so each member's solver branch (`lax.cond`) really branches
            return jax.lax.map(lambda a: one(a, times, reals), members, batch_size=None if chunk == 1 else chunk)
        # vmapped chunks run for their slowest member: members of like cost are put together (the method's
        # `batch_order`), each chunk gathers its own, and the results go back to the members' places
        order = jnp.argsort(m.batch_order(problems, v0s))
        out = jax.lax.map(lambda i: one(jax.tree_util.tree_map(lambda a: a[i], members), times, reals), order,
                          batch_size=chunk)  # fmt: skip
        return jax.tree_util.tree_map(lambda o: jnp.zeros_like(o).at[order].set(o), out)

    fn = shard_batch(batch, devices, (True, True, False, False), setup=is_closed_form(name, loss))
    _BATCH_FUNCTIONS.append(fn)
    return fn


_BATCH_FUNCTIONS: list = []  # every batch function made, to count their compiled programs (`compiled_batches`)


def compiled_batches() -> int:
    """How many batch programs `sweep` has compiled in this process (one per batch function and input shape)."""
    return sum(f._cache_size() for f in _BATCH_FUNCTIONS)


def _batched_chunked(name, opts, rtol, atol, max_steps, chunk, devices, stackable, mode, loss="squared"):
    """`_batched` with the chunk `plan.batch_chunk` chooses for the batch's solver plan `mode`."""
    return _batched(name, opts, rtol, atol, max_steps, batch_chunk(chunk, stackable, mode), devices, mode, loss)


def _run_mapped(run, args, workers, rows, mode):
    return run_in_parts(run(mode), args, (True, True, False, False), workers, rows=rows)


def _run_stacked(m, args, max_steps, devices, rtol, atol, workers, rows, mode):
    problems, (start, _, _), times, reals = args
    fn = stacked_batch(m, mode == "explicit", max_steps, devices)
    return run_in_parts(fn, (problems, start, times, reals, float(rtol), float(atol)), (True, True) + (False,) * 4,
                        workers, rows=rows)  # fmt: skip


@partial(
    jax.tree_util.register_dataclass,
    data_fields=["times", "train_loss", "id_error", "ood_error", "num_steps"],
    meta_fields=["methods", "heads"],
)
@dataclasses.dataclass(frozen=True)
class SweepResult:
    """Metrics of a sweep (an immutable pytree); no parameters are stored, so memory is O(M H N T).

    **Fields:** `times` (T,); `train_loss`, `id_error`, `ood_error` (M, H, N, T) indexed by method, head and
    instance; `num_steps` (M, H, N) ODE steps (0 for closed forms); `methods`, `heads` the labels of the axes.
    """

    times: jax.Array
    train_loss: jax.Array
    id_error: jax.Array
    ood_error: jax.Array
    num_steps: jax.Array
    methods: tuple[str, ...]
    heads: tuple[str, ...]

    def get(self, method: str, head: str | None = None) -> dict[str, np.ndarray]:
        """The (N, T) metrics of one method (and head; default the first) as NumPy arrays."""
        if method not in self.methods:
            raise KeyError(f"method {method!r} not in this sweep; it has {list(self.methods)}")
        head = self.heads[0] if head is None else head
        if head not in self.heads:
            raise KeyError(f"head {head!r} not in this sweep; it has {list(self.heads)}")
        i, j = self.methods.index(method), self.heads.index(head)
        return {
            name: np.asarray(getattr(self, name)[i, j]) for name in ("train_loss", "id_error", "ood_error", "num_steps")
        }


def sweep(
    problems: Problem,
    heads,
    times,
    *,
    methods=("lp", "ft", "lpft"),
    batch_size: int = 256,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
    chunk: int | None = None,
    batching: str = "map",
    devices=None,
    progress: bool = True,
    loss: str = "squared",
    workers: int | None = None,
) -> SweepResult:
    """Run many instances × methods × heads through the registry, one compiled computation per method and shape,
    and keep only the metrics L̂, L_id, L_ood at `times`.

    **Arguments:**

    - `problems`: a batched `Problem` (every array with a leading axis N), e.g. from `subspace_shifts`.
    - `heads`: initial heads, an (N, k) array (one per instance) or a (k,) array (shared), or a dict
      {label: such an array} to sweep several head initialisations.
    - `times`: (T,) increasing times ≥ 0 in the paper's units; a last `inf` is the limit.
    - `methods`: registered names (`linnet.methods()`: "lp", "ft", "lpft", "two_lr", "l2_sp", "features_only",
      "lp_features_only", "gd", "lora", "deep") or dicts with a "name" and that method's parameters, e.g.
      {"name": "two_lr", "eta_B": 0.1}, {"name": "l2_sp", "lam_B": 0.1}, {"name": "gd", "lr_fraction": 0.5}
      (step = lr_fraction · 2/λ_max at the start, per instance), {"name": "lora", "rank": 2, "seed": 0}
      (W0 drawn from fold_in(PRNGKey(seed), instance index)), {"name": "deep", "depth": 2}; each also takes
      "lp_head": True.
    - `batch_size`: instances per compiled call (progress is reported per batch; the last batch is padded);
      `chunk`: instances vmapped together inside a call (default: 8 for the FT-flow methods when every member
      of the batch takes the implicit solver, as stiff problems do: their vmapped step costs a member about what
      a single step costs, so the batch gains; else 1);
      `batching`: "map" (default: each instance its own solve, `chunk` of them vmapped) or "stacked" (each batch of
      `batch_size` instances, or each device's or host thread's share of it, is one ODE with one step-size
      controller, which holds every member to its own tolerance: `linnet._run.stacked`; for the methods on the
      generalised FT flow, FT, LP-FT, two learning rates and L2-SP, the others run as with "map"). A shared
      controller takes the union of the members' small steps, so small stacks pay (`benchmarks/RESULTS.md`);
      `devices`: devices to shard each batch over (default all; on several hosts call
      `jax.distributed.initialize()` first).
    - `rtol`, `atol`, `max_steps`: as `fine_tune`. `progress`: show a progress bar over batches.
    - `workers`: host threads that run parts of each batch at once (default: on one CPU device the cores this
      process may use, at most 4; else 1): on CPU each part's program runs on its own core. The members are
      independent, so the numbers do not depend on it.
    - `loss`: "squared" (default) or "logistic" for every method (a dict's own "loss" entry overrides it); under
      the logistic loss the errors are the 0-1 errors and L̂ the logistic loss (see `linnet.Trajectory`).

    Plain FT on data that are not stiff takes the explicit solver, batch by batch, with the same fallback rule as
    `fine_tune` (`linnet._run.simulate.solver_plan`).

    **Returns:** a `SweepResult`. Raises `ConvergenceError` if any solve did not converge.
    """
    from tqdm.auto import tqdm

    t_all = check_times(times)
    if not isinstance(problems, Problem) or problems.X.ndim != 3:
        shape = getattr(getattr(problems, "X", None), "shape", None)
        raise ValueError(f"`problems` must be a batched Problem (X of shape (N, n, d)), got X of shape {shape}")
    N, k = problems.X.shape[0], problems.B0.shape[1]
    dtype = problems.X.dtype
    if not isinstance(heads, dict):
        heads = {"v0": heads}
    head_arrays = {}
    for label, h in heads.items():
        h = jnp.asarray(h, dtype)
        if h.shape == (k,):
            h = jnp.broadcast_to(h, (N, k))
        if h.shape != (N, k):
            raise ValueError(f"head {label!r} in `heads` must have shape ({k},) or ({N}, {k}), got {h.shape}")
        head_arrays[label] = h
    if not head_arrays:
        raise ValueError("`heads` is empty: give an array (k,) or (N, k), or a dict {label: array} with at least one")
    if isinstance(methods, str | dict):
        methods = (methods,)
    specs = [parse_spec(m, loss) for m in methods]
    if not specs:
        raise ValueError(f"`methods` is empty: give at least one of {list(REGISTRY)} (or a dict with a 'name')")
    for label, m, opts in specs:
        if m.needs_key and "seed" not in opts:
            raise ValueError(
                f"method {label!r} draws its initialisation: in a sweep give it a 'seed' entry (each instance then "
                f"draws from fold_in(PRNGKey(seed), index)), e.g. {{'name': {m.name!r}, 'seed': 0, ...}}"
            )
    if chunk is not None and (isinstance(chunk, bool) or int(chunk) != chunk or chunk < 1):
        raise ValueError(f"`chunk` must be a positive integer (instances vmapped together), got {chunk}")
    if devices is not None and len(devices) == 0:
        raise ValueError("`devices` is empty: pass None (all devices) or a non-empty list of jax devices")
    bad_scale = np.flatnonzero(scale_out_of_range(np.asarray(problems.reduced.s), dtype))
    if bad_scale.size and any(m.kind != "closed_form" for _, m, _ in specs):
        lo, hi = scale_range(dtype)
        raise ValueError(
            f"`problems`: the scale of X (largest singular value) of {bad_scale.size} instances (first: index "
            f"{bad_scale[0]}) is outside [{lo:.2g}, {hi:.2g}], where {jnp.dtype(dtype).name} represents the flows; "
            "rescale X and y by a common factor c (no limit changes; time scales by 1/c²)"
        )
    if batching not in ("map", "stacked"):
        raise ValueError(f'`batching` must be "map" or "stacked", got {batching!r}')
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size}")
    devices = tuple(jax.devices() if devices is None else devices)
    workers = host_workers(devices, workers)
    size = min(int(batch_size), N)
    size += (-size) % len(devices)  # every device gets the same share
    T = t_all.shape[0]
    out = np.zeros((3, len(specs), len(head_arrays), N, T))
    steps = np.zeros((len(specs), len(head_arrays), N), dtype=np.int64)
    starts = range(0, N, size)
    bar = tqdm(total=len(starts) * len(specs) * len(head_arrays), desc="sweep", unit="batch", disable=not progress)
    explicit_all = np.asarray(explicit_is_enough(np.asarray(problems.reduced.s)))
    index = jnp.arange(N)  # each member's index in the sweep (a method that draws its start folds it into `seed`)
    for i, (label, m, opts) in enumerate(specs):
        runner, reals, key_opts, lp_first, scale = plan_method(m, opts, np.asarray(t_all), dtype)
        runner_method = runner if isinstance(runner, Method) else get_method(runner, m.loss)
        stack = batching == "stacked" and can_stack(runner_method)
        ts = jnp.asarray(t_all * scale, dtype)
        explicit = explicit_all & explicit_allowed(m, opts)
        explicit_dev = jnp.asarray(explicit)
        for j, heads in enumerate(head_arrays.values()):
            for b in starts:
                stop = min(b + size, N)
                rows = (b, stop, size)  # the batch: these rows of the whole arrays, padded; its parts cut from them
                flags = explicit[padded_rows(b, stop, size)]
                start = heads
                if lp_first:  # the batch's LP heads, computed on the batch (one program per batch shape)
                    lp = lp_heads(take_rows(problems, b, stop, size), take_rows(heads, b, stop, size))
                    start = np.array(heads)
                    start[b:stop] = np.asarray(lp)[: stop - b]
                    start = jnp.asarray(start)
                args = (problems, (start, index, explicit_dev), ts, reals)
                if stack:  # one ODE over the batch; "mixed" runs the implicit solver for all
                    run_batch = partial(_run_stacked, runner_method, args, int(max_steps), devices, rtol, atol, workers,
                                        rows)  # fmt: skip
                else:
                    run = partial(_batched_chunked, runner, key_opts, float(rtol), float(atol), int(max_steps), chunk,
                                  devices, can_stack(runner_method), loss=m.loss)  # fmt: skip
                    run_batch = partial(_run_mapped, run, args, workers, rows)
                # the fallback is decided on the host where the whole batch has one plan, so the implicit program is
                # compiled only if some member needs it, and only those members take its results
                metrics, st, ok = run_planned(run_batch, flags)
                ok = np.asarray(ok)[: stop - b]
                if not ok.all():
                    bad = np.flatnonzero(~ok)
                    raise ConvergenceError(
                        f"method {label!r}, head {list(head_arrays)[j]!r}: {bad.size} instances did not converge "
                        f"(first: index {b + bad[0]}); {budget_advice(m, opts, max_steps)}"
                    )
                out[:, i, j, b:stop] = np.stack([np.asarray(x)[: stop - b] for x in metrics])
                steps[i, j, b:stop] = np.asarray(st)[: stop - b]
                bar.update()
    bar.close()
    return SweepResult(
        times=jnp.asarray(t_all, dtype),
        train_loss=jnp.asarray(out[0]),
        id_error=jnp.asarray(out[1]),
        ood_error=jnp.asarray(out[2]),
        num_steps=jnp.asarray(steps),
        methods=tuple(s[0] for s in specs),
        heads=tuple(head_arrays),
    )
