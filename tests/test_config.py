"""Process-wide settings: the persistent compilation cache helper (run in a subprocess, since it changes JAX's
global configuration)."""

import os
import subprocess
import sys

SCRIPT = """
import sys, jax, numpy as np
jax.config.update("jax_enable_x64", True)
import linnet
path = linnet.use_compilation_cache(sys.argv[1])
assert path == sys.argv[1], path
p = linnet.subspace_shift(jax.random.PRNGKey(0), d=20, k=2, n=6, eps=0.3, inputs="isotropic")
print(float(linnet.fine_tune(p, np.ones(2), [np.inf]).ood_error[-1]))
"""


def test_compilation_cache_is_written_and_reused(tmp_path):
    """A first process fills the cache directory; a second one, reading it, computes the same limit (bitwise)."""
    cache = str(tmp_path / "jax-cache")
    run = lambda: subprocess.run(  # noqa: E731
        [sys.executable, "-c", SCRIPT, cache], capture_output=True, text=True, timeout=300, env=dict(os.environ)
    )
    first = run()
    assert first.returncode == 0, first.stderr[-2000:]
    entries = os.listdir(cache)
    assert len(entries) > 0
    second = run()
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.strip().splitlines()[-1] == first.stdout.strip().splitlines()[-1]
    assert sorted(os.listdir(cache)) == sorted(entries)  # nothing new to compile: every program came from the cache


def test_version_has_one_source():
    """The installed metadata, the package and CITATION.cff all carry `linnet/_version.py`'s version."""
    import importlib.metadata
    from pathlib import Path

    import linnet

    assert importlib.metadata.version("linnet") == linnet.__version__
    cff = (Path(__file__).parent.parent / "CITATION.cff").read_text()
    assert f"version: {linnet.__version__}\n" in cff
    assert (Path(linnet.__file__).parent / "py.typed").exists()
