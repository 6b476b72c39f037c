"""Sweeps shard their batch axis over devices: 8 simulated CPU devices give the single-device results (1e-12)."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    import linnet
    from linnet import _sweep
    assert len(jax.devices()) == 8, jax.devices()
    N = 13  # not a multiple of 8: exercises the padding
    keys = jax.random.split(jax.random.PRNGKey(0), N)
    eps = jnp.linspace(0.01, 0.5, N)
    probs = _sweep.batched_subspace_shifts(keys, eps, d=16, k=2, n=6, m=4)
    heads = jax.random.normal(jax.random.PRNGKey(1), (N, 2))
    times = [0.0, 0.5, np.inf]
    for method in ("ft", "lpft"):
        _, w8 = _sweep.batched_predictors(probs, heads, times, method=method)
        _, w1 = _sweep.batched_predictors(probs, heads, times, method=method, devices=jax.devices()[:1])
        assert w8.shape == w1.shape == (N, 3, 16)
        err = float(jnp.max(jnp.abs(w8 - w1)))
        assert err <= 1e-12, (method, err)
    print("OK")
    """
)


def test_sweep_on_eight_cpu_devices_matches_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("OK")
