"""Test configuration: float64 everywhere (tolerances below 1e-8 need it), fast compilation, one compilation cache
for the run, and shared small problems."""

import os
import tempfile

import jax
import pytest
import scipy.linalg  # noqa: F401  (loads scipy's own OpenBLAS before the limit below)
from threadpoolctl import threadpool_limits

import linnet
from linnet._config import shared_cores_flags

# One BLAS thread per process. The suite runs two xdist workers on two cores, and each worker's scipy references
# (Radau on the full state, Nelder-Mead, SLSQP) call OpenBLAS on small matrices: with OpenBLAS's own threads the
# two processes oversubscribe the cores and its spinning threads starve each other (measured: the k = 3
# brute-force distance took 64 s in a suite run against 1.5 s alone). The environment variable reaches the
# processes the tests start; threadpoolctl limits the libraries this process has already loaded.
# (scipy.linalg is imported above so that its own OpenBLAS is loaded, and limited, too.)
os.environ["OPENBLAS_NUM_THREADS"] = "1"
threadpool_limits(1)

# XLA's LLVM backend at optimisation level 0, for the suite only: its programs are small and run briefly, so
# compiling them dominates (measured: the quick figures' data, as `linnet reproduce --quick` computes them, 84 s →
# 68 s). The operations are the same; XLA's CPU backend keeps fast-math off, so code generated without LLVM's
# optimisations may differ from the optimised code only in rounding (such as fused multiply-adds).
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
# before any JAX computation, and inherited by the processes the tests start, the CLI's settings
# (`linnet._config.shared_cores_flags`): XLA's classic CPU emitters, which compile linnet's solver programs about twice
# as fast (compiling is most of the suite's time; see fast_compile); XLA's runtime one operation after another and
# one code-generation thread per program, since the two xdist workers share the two cores. On a jaxlib the flags are
# not verified for it warns and sets none: the suite runs either way
shared_cores_flags()
jax.config.update("jax_enable_x64", True)

# One persistent compilation cache per test run, shared by both xdist workers and by the processes the tests start
# (notebook kernels, CLI subprocesses inherit the environment variable). Measured, it saves little: the workers
# and subprocesses share few programs (3 cache hits in a run of the whole suite). It starts empty on every run (the
# directory is named by the run's id), so no test sees a program compiled by an older version of the code.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
_CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"linnet-tests-{_RUN}"))
jax.config.update("jax_compilation_cache_dir", _CACHE)


@pytest.fixture(scope="session")
def small_problem():
    """d = 30, k = 2, n = 10, ε = 0.3: small enough for a full-state scipy reference."""
    return linnet.subspace_shift(jax.random.PRNGKey(0), d=30, k=2, n=10, eps=0.3)


# The longest files first: pytest-xdist (--dist loadfile) hands out whole files in collection order, so a long
# file collected last would run alone at the end while the other worker idles. Measured per-file times in a run of
# the whole suite (worker seconds, 2 cores; 880 s in all): the benchmark smoke run 110 s, the quick
# `linnet reproduce` 62 s, then 51 to 34 s.
_LONGEST_FIRST = (
    "test_benchmarks.py",
    "test_figures_cli.py",
    "test_gradient_modes.py",
    "test_structured.py",
    "test_stress.py",
    "test_notebooks.py",
    "test_fine_tune.py",
    "test_testing.py",
    "test_adversarial.py",
    "test_tight_constants.py",
    "test_composable.py",
)


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return _LONGEST_FIRST.index(name) if name in _LONGEST_FIRST else len(_LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file keeps its own order
