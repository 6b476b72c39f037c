"""Many figures at once: `make_many` computes, draws and writes figures in worker processes, so that their
compilations and solves use every core (`linnet reproduce`).

Each figure is independent of the others except where figures share cached data (`SHARED`: the ε sweep behind
four figures), which run in one task so that the sweep is computed once. A worker is a fresh interpreter (the
"spawn" start method: forking a process in which JAX runs threads is unsafe) given the parent's float64 choice
and compilation cache; `XLA_FLAGS` (e.g. from `linnet.fast_compile`) reaches it through the environment. Every
figure is computed by the same code as in one process, so the files written are the same.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed

# figures that read one cached computation (`_data_paper.eps_sweep`; phase_nd's column at its shape): one task each
SHARED = (("ood_vs_eps", "id_vs_ood", "phase", "phase_nd"),)


def tasks(names) -> list[tuple[str, ...]]:
    """`names` as tasks: each group of `SHARED` (its members among `names`, in their order) is one task, every other
    figure its own; groups first (the longest tasks), then the rest in the order given."""
    names = list(names)
    grouped = [tuple(n for n in names if n in group) for group in SHARED]
    grouped = [g for g in grouped if g]
    inside = {n for g in grouped for n in g}
    return grouped + [(n,) for n in names if n not in inside]


def default_jobs(names, jobs: int | None = None) -> int:
    """The worker processes for the figures `names`: `jobs` if given, else the usable CPU cores (at most 4); never
    more than their tasks."""
    from .._config import usable_cores

    return max(1, min(jobs or min(usable_cores(), 4), len(tasks(names))))


def _init(x64: bool, cache: str | None) -> None:
    import jax

    jax.config.update("jax_enable_x64", x64)
    if cache is not None:
        from .._config import use_compilation_cache

        use_compilation_cache(cache)


def _run(names, out, quick, inner_progress=False) -> list[tuple[str, str, list]]:
    from . import headline, make, verdict

    rows = []
    for name in names:
        kw = dict(progress=True) if inner_progress and name == "stress_slack" else {}  # its own bar: the longest
        data = make(name, out, quick=quick, **kw)
        rows.append((name, verdict(name, data), headline(name, data)))
    return rows


def make_many(names, out="figures", quick: bool = False, jobs: int = 1, progress=None, cache: str | None = None):
    """Compute, draw and write the figures `names` into `out` (as `make`), `jobs` at a time in worker processes
    (`jobs = 1`: here, one after the other). `progress(name)` is called as each figure is written; `cache`: the
    persistent compilation cache directory the workers use (None: none).

    **Returns:** {name: (verdict, headline lines)} for every name.
    """
    import jax

    results = {}
    if jobs <= 1:
        for name in names:
            for n, v, h in _run((name,), out, quick, inner_progress=progress is not None):
                results[n] = (v, h)
                if progress is not None:
                    progress(n)
        return results
    context = multiprocessing.get_context("spawn")
    x64 = bool(getattr(jax.config, "jax_enable_x64", False))  # the stubs do not declare it
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init, initargs=(x64, cache)) as pool:
        futures = [pool.submit(_run, task, out, quick) for task in tasks(names)]
        for future in as_completed(futures):
            for n, v, h in future.result():
                results[n] = (v, h)
                if progress is not None:
                    progress(n)
    return results
