"""Process-wide settings, each an explicit opt-in: importing linnet changes no JAX or matplotlib setting.

Precision: every function computes in the dtype of the arrays it is given. Checking the paper's theory to 1e-8
and tighter needs float64, which the caller turns on before first use, as with any JAX library:
``jax.config.update("jax_enable_x64", True)`` (the CLI, the notebooks and the tests do so; `enable_x64` below is
the same call).
"""

import os

import jax


def enable_x64() -> None:
    """Turn on JAX's float64 mode for this process (`jax.config.update("jax_enable_x64", True)`). Call it before
    creating arrays: arrays made before keep their dtype."""
    jax.config.update("jax_enable_x64", True)


def use_compilation_cache(path: str | os.PathLike | None = None) -> str:
    """Turn on JAX's persistent compilation cache in `path` (default `~/.cache/linnet/jax`) for this process.

    A first call of `fine_tune` on a new shape spends ~3 s on CPU tracing and compiling the implicit solver
    (measured in `benchmarks/RESULTS.md`); with the cache, later processes load the compiled program instead
    (first call 1.7 s on the small benchmark problem, most of it tracing, which JAX must still do). It is a
    process-wide JAX setting, so linnet never turns it on by itself. Every compiled program is cached, however
    quick its compilation.

    **Returns:** the cache directory, as a string.
    """
    path = os.path.expanduser(os.path.join("~", ".cache", "linnet", "jax") if path is None else os.fspath(path))
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
