"""Precision policy.

linnet checks the paper's theory to 1e-8 and tighter, which needs float64. Importing linnet therefore
turns on JAX's 64-bit mode, unless the user has set ``JAX_ENABLE_X64`` themselves (for example
``JAX_ENABLE_X64=0`` on a TPU): an explicit choice is respected. Every function computes in the dtype of
the arrays it is given, so float32 inputs give float32 results either way.
"""

import os

import jax

if "JAX_ENABLE_X64" not in os.environ:
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
