"""Accuracy per tolerance: FT's predictor Bᵀv at every saved time, at the default rtol = 1e-8 / atol = 1e-10, on
every path a user reaches (eager default; `jit` with the problem traced, where the default cannot inspect cond(X)
and runs the stiff default, Rodas5P; diffrax's own Kvaerno5 as `solver=`), against an rtol-1e-12 reference.

Two families: whitened inputs (X Xᵀ = I: not stiff, long implicit steps under `jit`; reference diffrax Dopri8 at
rtol 1e-12) and the default generator (stiff; reference diffrax Kvaerno5 at rtol 1e-12). The error of a path is
max over saved times of |w(t) − w_ref(t)| / |w_ref(t)|; the target is 1e-7 (10 × rtol).
"""

from __future__ import annotations

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np

import linnet

TIMES = (0.0, 0.001, 0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0, float("inf"))


def _whitened(seed, d, k, n):
    rng = np.random.default_rng(seed)
    p = linnet.subspace_shift(jax.random.PRNGKey(seed), d=d, k=k, n=n, eps=0.3,
                              v_star_scale=float(np.exp(rng.uniform(-1, 1.5))))  # fmt: skip
    X = jnp.asarray(np.linalg.qr(rng.standard_normal((d, n)))[0].T)  # orthonormal rows: X Xᵀ = I
    p = linnet.Problem(X, p.B0, p.B_star, p.v_star, y=X @ (p.B_star.T @ p.v_star))
    v0 = jnp.asarray(rng.standard_normal(k) * np.exp(rng.uniform(-3, 1)))
    return p, v0


def _stiff(seed, d, k, n):
    p = linnet.subspace_shift(jax.random.PRNGKey(seed), d=d, k=k, n=n, eps=0.2)
    return p, linnet.random_head(jax.random.PRNGKey(seed + 50), k, 0.3)


FAMILIES = {
    "whitened (d = 40, k = 1, 2, n = 10)": (_whitened, (40, 10), (1, 2), dfx.Dopri8()),
    "default generator, stiff (d = 120, k = 3, n = 30)": (_stiff, (120, 30), (3,), dfx.Kvaerno5()),
}


TINY = {"whitened (d = 12, k = 1, n = 4; the smoke run)": (_whitened, (12, 4), (1,), dfx.Dopri8())}


def accuracy(seeds: int = 8, families=None) -> list[dict]:
    """**Returns** one row per (family, path): worst and median relative error over instances, instances over 1e-7
    and the total steps taken."""
    times = jnp.asarray(TIMES)
    jitted = jax.jit(lambda p, v0: linnet.fine_tune(p, v0, times))
    paths = {
        "eager, default solver": lambda p, v0: linnet.fine_tune(p, v0, times),
        "jit, problem traced (Rodas5P)": jitted,
        "diffrax Kvaerno5 (`solver=`)": lambda p, v0: linnet.fine_tune(p, v0, times, solver=dfx.Kvaerno5()),
    }
    rows = []
    for family, (make, (d, n), ks, ref_solver) in (families or FAMILIES).items():
        errors = {name: [] for name in paths}
        steps = {name: 0 for name in paths}
        for seed in range(seeds):
            for k in ks:
                p, v0 = make(seed, d, k, n)
                ref = linnet.fine_tune(p, v0, times, rtol=1e-12, atol=1e-14, solver=ref_solver, max_steps=10**6)
                w_ref = np.asarray(ref.predictor)
                norm = np.linalg.norm(w_ref, axis=1)
                for name, f in paths.items():
                    tr = f(p, v0)
                    errors[name].append(float(np.max(np.linalg.norm(np.asarray(tr.predictor) - w_ref, axis=1) / norm)))
                    steps[name] += int(tr.num_steps)
        for name in paths:
            e = np.asarray(errors[name])
            rows.append(dict(family=family, path=name, instances=len(e), worst=float(e.max()),
                             median=float(np.median(e)), over=int((e > 1e-7).sum()), steps=steps[name]))  # fmt: skip
    return rows


def table(rows) -> list[str]:
    """The Markdown section of RESULTS.md."""
    if not rows:
        return []
    out = [
        "## Accuracy per tolerance (FT, rtol = 1e-8, every saved time)",
        "",
        __doc__.split("\n\n")[1].replace("\n", " "),
        "",
        f"Saved times: {', '.join(f'{t:g}' for t in TIMES)}. Saved times are stepped to, not interpolated.",
        "",
        "| instances | path | n | worst rel. error | median | over 1e-7 | steps (all) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(f"| {r['family']} | {r['path']} | {r['instances']} | {r['worst']:.2e} | {r['median']:.2e} | "
                   f"{r['over']} | {r['steps']} |")  # fmt: skip
    return [*out, ""]
