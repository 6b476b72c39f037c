"""Process-wide settings, each an explicit opt-in: importing linnet changes no JAX or matplotlib setting.

Precision: every function computes in the dtype of the arrays it is given. Checking the paper's theory to 1e-8
and tighter needs float64, which the caller turns on before first use, as with any JAX library:
``jax.config.update("jax_enable_x64", True)`` (the CLI, the notebooks and the tests do so; `enable_x64` below is
the same call).
"""

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
from jax.core import Tracer

from ._context import LIGHT


def enable_x64() -> None:
    """Turn on JAX's float64 mode for this process (`jax.config.update("jax_enable_x64", True)`). Call it before
    creating arrays: arrays made before keep their dtype."""
    jax.config.update("jax_enable_x64", True)


def use_compilation_cache(path: str | os.PathLike | None = None) -> str:
    """Turn on JAX's persistent compilation cache for this process, in `path`; by default in the directory the
    caller already gave JAX (`JAX_COMPILATION_CACHE_DIR` or `jax.config.jax_compilation_cache_dir`), else in
    `~/.cache/linnet/jax`.

    A first call of `fine_tune` on a new shape spends ~3 s on CPU tracing and compiling the implicit solver
    (measured in `benchmarks/RESULTS.md`); with the cache, later processes load the compiled program instead
    (first call 1.5–1.7 s on the small benchmark problem, most of it tracing, which JAX must still do). It is a
    process-wide JAX setting, so importing linnet never turns it on; the `linnet` command line does (unless given
    `--no-cache`), and so do the notebooks. Every compiled program is cached, however quick its compilation.
    JAX keys each entry by the program, the JAX version and the device, so a changed linnet cannot load a stale
    program.

    **Returns:** the cache directory, as a string.
    """
    if path is None:
        # getattr: the typing stubs of jax.config do not declare its options
        given = getattr(jax.config, "jax_compilation_cache_dir", None)
        path = str(given) if given else os.path.join("~", ".cache", "linnet", "jax")
    path = os.path.expanduser(os.fspath(path))
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


# XLA's CPU code generator for fused loops: the newer MLIR "fusion emitters" (XLA's default) or the classic LLVM
# emitters. linnet's programs are mostly while loops of many small fusions (one implicit Runge–Kutta step), where
# the classic emitters compile about twice as fast (measured on 2 CPU cores: FT + L2-SP + a gradient program
# 15.9 s → 8.6 s of XLA compile time) and run as fast; float64 results agree to the last bit or two.
_FAST_COMPILE_FLAG = "--xla_cpu_use_fusion_emitters=false"
# XLA aborts the process on a flag it does not know, so each flag is only set for the jaxlib releases known to have
# it (`_FLAG_RELEASES` below): this one was checked in jaxlib 0.7.0, 0.7.2 and 0.10.2; jaxlib 0.11 removed the
# classic emitters, and with them the flag (0.11.2 and 0.12.1 abort on it)


def fast_compile() -> bool:
    """Make XLA compile linnet's programs about twice as fast on CPU, for this process: adds
    `--xla_cpu_use_fusion_emitters=false` to `XLA_FLAGS` (XLA's classic CPU emitters instead of its newer MLIR
    fusion emitters). Compilation dominates short runs (a first `fine_tune` on a new shape is mostly tracing and
    compiling), so the CLI and the test suite turn it on; it changes no other JAX setting, and GPUs and TPUs
    ignore it.

    The flag is set only for the jaxlib releases it was verified in (0.7 to 0.10; jaxlib 0.11 removed the classic
    emitters, and XLA aborts on a flag it does not know); on others it warns and does nothing. XLA reads `XLA_FLAGS`
    once, when JAX first creates its CPU backend. Call this before any JAX computation; a call after that has no
    effect on the running process (it still sets the variable, which processes started from this one inherit) and
    warns.

    **Returns:** whether the flag is in effect for this process.
    """
    return _add_xla_flag(_FAST_COMPILE_FLAG, "fast_compile")


# XLA's CPU runtime runs a program's operations as a dataflow graph on its thread pool, independent operations at
# once. One integration step here is some 300 small operations (r ~ 100 columns, k ~ 5 rows), for which handing
# work between threads costs more than it gives. With this flag in XLA_FLAGS the runtime runs them one after the
# other (measured on 2 cores: the small stiff problem's warm solve 12.5 → 9.7 ms and 18.7 → 10.1 ms of CPU time; a
# stress-search batch of 250 solves 0.44 → 0.29 s, 0.88 → 0.30 s of CPU time; d = 5 000, k = 20, n = 1 000:
# 407 → 434 ms; paper scale the same). As a per-program compiler option it has no effect: XLA takes it from
# XLA_FLAGS, for the whole process.
_SEQUENTIAL_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def sequential_runtime() -> bool:
    """Make XLA's CPU runtime run each program's operations one after another, for this process: adds
    `--xla_cpu_enable_concurrency_optimized_scheduler=false` to `XLA_FLAGS`. linnet's solves are loops of many
    small operations, which XLA by default spreads over its threads at a cost larger than the gain: with it, a warm
    solve of the small stiff benchmark problem takes about a quarter less time and half the CPU time, and processes
    sharing the cores (the CLI's figure workers, the test suite's) stop taking time from each other. Problems whose
    single operations are large (n, d in the thousands) run at about the same speed (up to 7 % slower measured);
    a large operation's own threads are unaffected. The CLI, the notebooks and the test suite turn it on; it
    changes no other setting, and GPUs and TPUs ignore it.

    Set for jaxlib 0.7 to 0.12 (the releases it was verified in; on others it warns and does nothing); timing and
    the return value as for `fast_compile`: call it before any JAX computation. The gain is jaxlib 0.10's: on
    0.12.1 the warm solve took the same time with and without it (17–18 ms, and as much CPU time: that runtime
    already runs this program's operations one after another; 0.10.2 on the same machine: 23–25 ms and 37–40 ms
    of CPU time by default, 19–21 ms with it). **Returns:** whether the flag is in effect for this process.
    """
    return _add_xla_flag(_SEQUENTIAL_FLAG, "sequential_runtime")


# XLA splits the machine code of a large program into parts that LLVM compiles on several threads. Processes that
# already share the cores (the CLI's figure workers, the test suite's) gain nothing from the threads and pay for the
# split: with one part, `linnet reproduce` took 60 s against 63–65 s (114 s of CPU time against 120–123 s, 2 cores),
# while a single process compiles its first `fine_tune` slower (1.34–1.38 s against 1.20–1.31 s), so this is for
# the CLI and the test suite, not a library default. Code generated whole or in parts may round differently.
_SERIAL_CODEGEN_FLAG = "--xla_cpu_parallel_codegen_split_count=1"

# The jaxlib releases (major, minor) each flag was checked in, first to last: XLA aborts on a flag it does not know,
# so a flag is set only in these. Checked by starting XLA with the flag in XLA_FLAGS in jaxlib 0.7.0, 0.7.2, 0.10.2,
# 0.11.2 and 0.12.1 (the newest at the time of writing), and, as per-program compiler options, the optimisation
# level and the code-generation split in 0.10.2 and 0.12.1.
_FLAG_RELEASES = {
    _FAST_COMPILE_FLAG: ((0, 7), (0, 10)),
    _SEQUENTIAL_FLAG: ((0, 7), (0, 12)),
    _SERIAL_CODEGEN_FLAG: ((0, 7), (0, 12)),
}
# the releases checked to lack the classic emitters' flag (the emitters were removed in jaxlib 0.11)
_CLASSIC_REMOVED = ((0, 11), (0, 12))


def shared_cores_flags() -> None:
    """The XLA settings of linnet's own applications (the CLI and the test suite), whose processes share the cores:
    `fast_compile()`, `sequential_runtime()` and one code-generation thread per program (`_SERIAL_CODEGEN_FLAG`),
    each before the first JAX computation and only on a jaxlib it was verified for (`_FLAG_RELEASES`; from jaxlib
    0.11 on, the last two only: the classic emitters are gone)."""
    fast_compile()
    sequential_runtime()
    _add_xla_flag(_SERIAL_CODEGEN_FLAG, "shared_cores_flags")


def _add_xla_flag(flag: str, caller: str) -> bool:
    """Append `flag` (`--name=value`) to XLA_FLAGS, unless the caller's XLA_FLAGS already name it (their choice
    stands) or the jaxlib release is not one it was verified in (XLA aborts on an unknown flag); warn where it
    cannot take effect. **Returns:** whether `flag` is in effect for this process."""
    import warnings

    flags = os.environ.get("XLA_FLAGS", "")
    if flag.split("=")[0] in flags:  # the caller's own choice (e.g. set at launch) stands
        return flag in flags.split()
    if not _jaxlib_verified(flag):
        release = _jaxlib_release()
        why = (
            "XLA's classic CPU emitters, which it selects, were removed in jaxlib 0.11"
            if flag == _FAST_COMPILE_FLAG and _CLASSIC_REMOVED[0] <= release <= _CLASSIC_REMOVED[1]
            else f"not verified for jaxlib {_jaxlib_version()} (XLA aborts on an unknown flag)"
        )
        warnings.warn(f"linnet.{caller}(): {why}, so XLA_FLAGS is left as it is", RuntimeWarning, stacklevel=3)
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()
    if _backends_started():
        warnings.warn(
            f"linnet.{caller}(): JAX's CPU backend is already running, so XLA_FLAGS changes only reach processes "
            f"started from this one; call {caller}() before the first JAX computation",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True


def _backends_started() -> bool:
    """Whether JAX has created its backends (after which XLA_FLAGS is no longer read)."""
    try:
        from jax._src import xla_bridge  # no public API answers this; if it moves, assume not started

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return False


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _jaxlib_version() -> str:
    import jaxlib

    return str(getattr(jaxlib, "__version__", "0.0"))  # getattr: typing stubs do not re-export __version__


def _jaxlib_release() -> tuple[int, ...]:
    """jaxlib's (major, minor), or (0, 0) if it cannot be read."""
    try:
        return tuple(int(x) for x in _jaxlib_version().split(".")[:2])
    except ValueError:
        return (0, 0)


def _jaxlib_verified(flag: str) -> bool:
    """Whether `flag` (one of `_FLAG_RELEASES`; its per-program option alike) was verified in this jaxlib."""
    first, last = _FLAG_RELEASES[flag]
    return first <= _jaxlib_release() <= last


# The XLA options of linnet's own compiled programs (each `jit` below): the classic CPU emitters, as `fast_compile`
# sets for a whole process, here for linnet's programs only, so no global setting changes. The FT flow's
# integration program (d = 200, k = 3, n = 40, 2 CPU cores) compiles in 1.42 s against 2.00 s and runs in 7.9 ms
# against 9.3 ms. GPUs and TPUs ignore a CPU option; each option is set only on the jaxlib releases its flag was
# verified in (`_FLAG_RELEASES`: from jaxlib 0.11 on, XLA's fusion emitters are the only ones, and a program's
# default options are empty).
_CALLER_FLAGS = os.environ.get("XLA_FLAGS", "")
# At backend optimisation level 0, the classic emitters with the machine code split into parts (LLVM compiles them
# on several threads; XLA's default) miscompile the FT flow's integration program (jaxlib 0.10.2, CPU): its
# Rosenbrock steps' Newton solves came out with residuals of order 1 (1e-11 compiled whole or at the default
# level), so the step met its error test only with 4–25 × the steps and the state never reached the stationary
# point (‖f‖ stuck near 1e-10, where the default reaches 3e-14; a sweep of L2-SP failed to converge in 100 000
# steps). Compiled whole (one part, `_SERIAL_CODEGEN_FLAG` for one program; with XLA's concurrency-optimised
# scheduler off it also came out right) it integrates as the default does:
# `tests/test_config.py::test_light_and_set_up_programs_integrate_the_ft_flow_as_the_default_does`. So every
# program linnet compiles at level 0 is compiled whole, also when the caller's XLA_FLAGS choose level 0.
_WHOLE = {"xla_cpu_parallel_codegen_split_count": 1} if _jaxlib_verified(_SERIAL_CODEGEN_FLAG) else {}
_CLASSIC = {"xla_cpu_use_fusion_emitters": False} if _jaxlib_verified(_FAST_COMPILE_FLAG) else {}
_CALLER_LEVEL_0 = "--xla_backend_optimization_level=0" in _CALLER_FLAGS.split()
COMPILER_OPTIONS = {**_CLASSIC, **(_WHOLE if _CALLER_LEVEL_0 else {})}
# The options of a set-up program (`jit(..., setup=True)`): one whose run is short next to its compilation, run
# once or a few times per shape (a batch's draw, a closed form over a batch, the steps around an integration).
# XLA's backend optimisation level 0 compiles them 2–3 × faster (a batch of 250 subspace shifts: 0.62 s against
# 1.5–1.9 s; level 1 saves nothing over the default: with the CLI's settings the two_lr, lora and error_vs_time
# figures' data took 6.6, 7.0 and 5.3 s of XLA compile at the default level, 7.4, 6.6 and 4.2 s at level 1, and
# 3.4, 2.5 and 2.2 s at level 0), compiled whole (above); the integration programs, whose run is what a user waits
# for, keep the default level. A level the caller sets in XLA_FLAGS is left to apply. On jaxlib 0.12.1 (fusion
# emitters) the same options cut a first draw's set-up from 2.7–3.2 s to 1.8–2.0 s and a first `fine_tune` on a
# new shape in a compiled bucket from 0.46–0.50 to 0.29–0.34 s, and the regression test above passes there.
SETUP_OPTIONS = (
    {**COMPILER_OPTIONS, "xla_backend_optimization_level": 0, **_WHOLE}
    if _WHOLE and "xla_backend_optimization_level" not in _CALLER_FLAGS
    else COMPILER_OPTIONS
)


@contextlib.contextmanager
def light_compile(on: bool = True) -> Iterator[None]:
    """A context in which linnet's programs first compiled here are compiled as set-up programs (`SETUP_OPTIONS`: XLA's
    backend optimisation level 0, each program's machine code generated whole), for work that runs each program once or
    a few times, where compiling is most of the wait: a figure, a first look at a new shape. Compilation takes about
    half as long, and the compiled integrations run slower (measured: the small stiff problem's warm solve 2.5–3×
    slower; a batch of long stiff solves up to 2×), so a program that is run many times or on large problems is better
    compiled outside it. A program built by the caller's own `jax.jit` or `jax.grad` around linnet's functions is
    compiled with the caller's options, inside the context or not. `light_compile(False)` restores the default inside an
    outer `light_compile()`.

    It changes no JAX or XLA setting: each of linnet's programs keeps one compiled form per choice, and a
    program compiled in the context is reused there (and stored under its own key in a persistent compilation
    cache). The choice is a context variable, so it holds in this thread and in the host threads linnet's batches
    start from it (`linnet.sweep`'s parts); results agree with the default's to rounding. Where the caller's
    `XLA_FLAGS` fix an optimisation level, or on a jaxlib linnet sets no compiler options for, it changes nothing.
    """
    token = LIGHT.set(bool(on))
    try:
        yield
    finally:
        LIGHT.reset(token)


def jit(fun: Callable | None = None, *, setup: bool = False, **kwargs) -> Any:
    """`jax.jit`, compiled with linnet's `COMPILER_OPTIONS` (`SETUP_OPTIONS` if `setup` or inside
    `light_compile()`) when called at top level; as a decorator, plain or through `functools.partial` with
    `static_argnames`. JAX takes compiler options only on a program it compiles itself: inside a caller's `jax.jit`
    (or a loop or branch being traced) the function runs as a plain `jax.jit`, part of the caller's program."""
    if fun is None:
        return lambda f: jit(f, setup=setup, **kwargs)
    options = SETUP_OPTIONS if setup else COMPILER_OPTIONS
    if not options and not SETUP_OPTIONS:  # no options in either form (a jaxlib linnet sets none for)
        return jax.jit(fun, **kwargs)
    return _Jit(fun, kwargs, options, SETUP_OPTIONS)


class _Jit:
    """A jitted function in three forms: with compiler options (top level), with the light options (top level,
    inside `light_compile()`; the same form where both option sets agree) and plain (nested in another trace,
    where JAX refuses options). Attribute access (`trace`, `lower`, …) goes to the default top-level form;
    `_cache_size` counts the programs of both top-level forms."""

    def __init__(self, fun, kwargs, options, light_options):
        functools.update_wrapper(self, fun)
        self._top = jax.jit(fun, compiler_options=options, **kwargs)
        self._light = self._top if light_options == options else jax.jit(fun, compiler_options=light_options, **kwargs)
        self._nested = jax.jit(fun, **kwargs)

    def __call__(self, *args, **kwargs):
        # an argument traced by jit, grad or a loop means a staged call: plain at once, not traced twice. vmap's
        # tracers (the ones with a `batch_dim`) are not staged: JAX batches the top-level program, options and all
        leaves = jax.tree_util.tree_leaves((args, kwargs))
        if any(isinstance(x, Tracer) and not hasattr(x, "batch_dim") for x in leaves):
            return self._nested(*args, **kwargs)
        try:
            return (self._light if LIGHT.get() else self._top)(*args, **kwargs)
        except ValueError as e:  # staged with concrete arguments only: JAX refuses before anything runs
            if "can only be passed to top-level" not in str(e):
                raise
        return self._nested(*args, **kwargs)

    def _cache_size(self) -> int:
        # JAX's private counter of a jitted function's compiled programs (its stubs do not declare it)
        forms = (self._top,) if self._light is self._top else (self._top, self._light)
        return sum(f._cache_size() for f in forms)  # pyright: ignore[reportAttributeAccessIssue]

    def __getattr__(self, name):
        return getattr(self._top, name)
