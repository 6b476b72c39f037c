"""Gradient search for counterexamples to Theorem 3.1 at any k, through the simulator (`jax.grad` of
`linnet.simulate`), and the measurement of its tight constant.

An instance is a continuous parameterisation θ (`unpack`):

- B⋆ = first k rows of expm(Ω⋆) and B0 = first k rows of expm(Ω⋆) expm(Ω_Δ), with Ω⋆, Ω_Δ skew-symmetric
  (d × d): both always have orthonormal rows, and Ω_Δ = 0 gives ε = 0 exactly (`eps_zero=True` drops it);
- X ∈ R^{n×d} free (the geometry of S = rowspace(X) and the spectrum of X);
- v⋆, v0 ∈ R^k free. Σ_ood = I (the submission's form; the Σ-weighted form is unverified and not searched).

The objective is the relative slack of the statement √L_ood(t) ≥ c·RHS₀ − λ·ε at the saved times (t = ∞
included): min_t (√L_ood(t) + λ ε) / (c RHS₀) − 1, negative where it is violated. With `eps_zero=True`,
`c=1` and `lam=0` it is min_t √L_ood(t)/RHS₀ − 1, so 1 + its infimum is the tight constant c*(k)
(`theory.theorem_3_1_rhs0`). Each start is optimised by Adam on `jax.value_and_grad` of that objective,
vmapped over starts; members whose solve fails count as not found (their value is +inf).
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import theory as th
from ._problem import Problem
from ._run.simulate import simulate
from ._trajectory import is_okay

SEARCH_TIMES = (0.0, 0.1, 1.0, 10.0, math.inf)
# (n, d) per k: the smallest shapes inside the theorem's regime 1 ≤ k < n < d, k < d − n, with room for S⊥
SEARCH_SHAPES = {1: (3, 6), 2: (4, 9), 3: (5, 11), 5: (7, 15)}


def _skew(A):
    return A - A.T


def unpack(theta: dict, k: int):
    """θ → (Problem, v0): see the module docstring. `theta` holds X (n, d), O_star (d, d), optionally O_delta
    (d, d), v_star (k,), v0 (k,)."""
    Q = jax.scipy.linalg.expm(_skew(theta["O_star"]))
    B_star = Q[:k]
    B0 = (Q @ jax.scipy.linalg.expm(_skew(theta["O_delta"])))[:k] if "O_delta" in theta else B_star
    return Problem(theta["X"], B0, B_star, theta["v_star"]), theta["v0"]


def relative_slack(
    theta, k, *, times=SEARCH_TIMES, c=1.0, lam=1.0, eps_form="section", lam_w=False, rtol=1e-8, atol=1e-10
):
    """min over `times` of (√L_ood(t) + λ ε)/(c RHS₀) − 1 for the instance θ; +inf where the solve fails or
    RHS₀ = 0 (the statement then says nothing). `lam_w=True` scales λ by (1 + ‖w⋆‖) (`theorem_3_1_corrected`)."""
    p, v0 = unpack(theta, k)
    tr = simulate("ft", p, v0, jnp.asarray(times), rtol=rtol, atol=atol, throw=False)
    rhs0 = th.theorem_3_1_rhs0(p, v0)
    eps = th.theorem_3_1_eps(p, eps_form) if "O_delta" in theta else 0.0
    if lam_w:
        lam = lam * (1.0 + jnp.linalg.norm(p.w_star))
    root = jnp.sqrt(jnp.maximum(tr.ood_error, 0.0))
    val = jnp.min(root + lam * eps) / (c * rhs0) - 1.0
    ok = jnp.isfinite(val) & (rhs0 > 0) & is_okay(tr.result)
    return jnp.where(ok, val, jnp.inf)


def random_starts(key, k: int, starts: int, *, eps_zero: bool, eps_scale: float = 0.05) -> dict:
    """`starts` random θ (stacked): v0 near v⋆ (where the bound is tight), Ω_Δ of size `eps_scale`."""
    n, d = SEARCH_SHAPES.get(k, (k + 2, 2 * k + 4))
    ks = jax.random.split(key, 6)
    v_star = jax.random.normal(ks[0], (starts, k)) * 2.0
    theta = dict(
        X=jax.random.normal(ks[1], (starts, n, d)),
        O_star=jax.random.normal(ks[2], (starts, d, d)),
        v_star=v_star,
        v0=v_star * (1.0 + 0.1 * jax.random.normal(ks[3], (starts, k))),
    )
    if not eps_zero:
        theta["O_delta"] = eps_scale * jax.random.normal(ks[4], (starts, d, d))
    return theta


def _where_rows(mask, a, b):
    """a where mask (one entry per start), else b."""
    return jnp.where(jnp.asarray(mask).reshape((-1,) + (1,) * (jnp.ndim(a) - 1)), a, b)


def _is_nonfinite_solve(err: Exception) -> bool:
    """Whether `err` is lineax's non-finite linear-solve error (raised inside the reverse pass, whatever `throw`
    says), the one failure a search member may hit and be stopped for; anything else is a bug and re-raised."""
    text = type(err).__name__ + str(err)
    return "non-finite" in text or "EquinoxRuntimeError" in text


def _per_member(one, theta, alive):
    """Value and gradient of each member alone (`one`: the jitted single-member function). A member whose
    evaluation raises a non-finite-solve error is marked dead, with value +inf and gradient 0, so that it stays
    where it is. **Returns:** `(values (S,), gradients like theta, alive (S,))`."""
    tmap = jax.tree_util.tree_map
    alive = alive.copy()
    vals, grads = [], []
    for j in range(alive.size):
        tj = tmap(lambda a, j=j: a[j], theta)
        try:
            vj, gj = jax.block_until_ready(one(tj))
        except Exception as err:
            if not _is_nonfinite_solve(err):
                raise
            alive[j] = False
            vj, gj = jnp.inf, tmap(jnp.zeros_like, tj)
        vals.append(jnp.asarray(vj, dtype=float))
        grads.append(gj)
    return jnp.stack(vals), tmap(lambda *a: jnp.stack(a), *grads), alive


def _optimiser(lr: float):
    """Adam (optax) with the rate decaying as lr / (1 + i/10): the objective has kinks (the min over times,
    min(φ, φ²/‖w⋆‖)) that a fixed step keeps bouncing on."""
    import optax

    return optax.adam(lambda i: lr / (1.0 + i / 10.0), eps=1e-12)


def gradient_search_k(
    key,
    k: int,
    *,
    starts: int = 8,
    steps: int = 60,
    lr: float = 0.03,
    eps_zero: bool = False,
    times=SEARCH_TIMES,
    c: float = 1.0,
    lam: float = 1.0,
    eps_form: str = "section",
    lam_w: bool = False,
    progress: bool = False,
) -> list[dict]:
    """Adam on `relative_slack` from `starts` random instances (see the module docstring).

    **Returns:** one dict per start, best first: `relative_slack` (the best value reached), `theta` (NumPy
    arrays of the best instance), `k`, `history` (the best value after each step, min over starts).
    """
    from tqdm.auto import tqdm

    theta = random_starts(key, k, starts, eps_zero=eps_zero)

    def f(t):
        return relative_slack(t, k, times=times, c=c, lam=lam, eps_form=eps_form, lam_w=lam_w)

    vg = jax.jit(jax.vmap(jax.value_and_grad(f)))
    one = jax.jit(jax.value_and_grad(f))  # compiled only if a member fails
    tmap = jax.tree_util.tree_map
    import optax

    opt = _optimiser(lr)
    state = opt.init(theta)
    best_val = np.full(starts, np.inf)
    best = tmap(np.asarray, theta)
    alive = np.ones(starts, bool)
    history = []
    for _ in tqdm(range(steps), desc=f"gradient search k={k}", disable=not progress):
        try:
            val, g = jax.block_until_ready(vg(theta))  # dispatch is asynchronous: a raise surfaces here
        except Exception as err:
            # a solve inside the reverse pass (lineax, through optimistix's implicit adjoint) raises on a
            # non-finite linear solve, whatever `throw` says: evaluate the members one by one and stop those that
            # raise where they are (a stopped member keeps raising, so later steps take this path again)
            if not _is_nonfinite_solve(err):
                raise
            val, g, alive = _per_member(one, theta, alive)
        val = np.where(alive, np.asarray(val), np.inf)
        better = val < best_val
        best_val = np.where(better, val, best_val)
        best = tmap(partial(_where_rows, better), theta, best)
        history.append(float(best_val.min()))
        # a failed member (value +inf) has no gradient: it stays where it is
        g = tmap(partial(_where_rows, np.isfinite(val)), g, tmap(jnp.zeros_like, g))
        g = tmap(lambda a: jnp.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0), g)
        updates, state = opt.update(g, state, theta)
        moved = optax.apply_updates(theta, updates)
        theta = tmap(partial(_where_rows, alive), moved, theta)  # dead members stay (Adam's momentum would move them)
    order = np.argsort(best_val)
    return [
        dict(
            k=k,
            relative_slack=float(best_val[i]),
            theta={name: a[i] for name, a in best.items()},
            history=history,
        )
        for i in order
        if np.isfinite(best_val[i])
    ]


def replay_radau(found: dict, *, times=SEARCH_TIMES, c=1.0, lam=1.0, eps_form="section", lam_w=False) -> dict:
    """Replay a found instance with the independent full-state Radau integration (`_replay`, rtol 1e-10,
    atol 1e-12) and recompute the slack √L_ood(t) − (c RHS₀ − λ ε) at every time.

    **Returns:** dict with `slack` (T,), `min_slack`, `violated_at` (the times with negative slack) and
    `relative_slack` (the replayed value of the search's objective).
    """
    from ._replay import radau_fine_tune

    k = found["k"]
    theta = {a: jnp.asarray(b) for a, b in found["theta"].items()}
    p, v0 = unpack(theta, k)
    v, B = radau_fine_tune(p.X, p.y, p.B0, v0, times)
    e = np.einsum("tkd,tk->td", B, v) - np.asarray(p.w_star)
    root = np.sqrt(np.sum(e**2, -1))
    rhs0 = float(th.theorem_3_1_rhs0(p, v0))
    eps = float(th.theorem_3_1_eps(p, eps_form)) if "O_delta" in theta else 0.0
    if lam_w:
        lam = lam * (1.0 + float(np.linalg.norm(np.asarray(p.w_star))))
    slack = root - (c * rhs0 - lam * eps)
    return dict(
        slack=slack,
        min_slack=float(slack.min()),
        violated_at=[float(t) for t, s in zip(times, slack, strict=True) if s < 0],
        relative_slack=float(np.min(root + lam * eps) / (c * rhs0) - 1.0),
        eps=eps,
        rhs0=rhs0,
    )


SEARCH_K = (1, 2, 3, 5)  # the k of the search through the simulator


def search_k(key, ks=SEARCH_K, *, starts: int = 8, steps: int = 60, replays: int = 2, progress: bool = False):
    """(c) For each k: the gradient search through the simulator for Theorem 3.1 as printed in both ε readings
    (ε > 0), and for the tight constant at ε = 0 (objective min_t √L_ood(t)/RHS₀, over all saved times and at
    t = ∞ alone). The best `replays` instances of each are replayed by scipy Radau on the full state.

    **Returns:** {k: {mode: {"best_relative_slack", "violations", "replayed": [...]}}}; for the ε = 0 modes,
    1 + best_relative_slack is the search's estimate (an upper bound) of c*(k).
    """
    modes = {  # mode: keyword arguments of gradient_search_k / replay_radau
        "theorem_3_1": dict(eps_form="section"),
        "theorem_3_1_eps_squared": dict(eps_form="theorem"),
        "theorem_3_1_corrected": dict(c=th.C_STAR_K1, lam_w=True),
        "c_star_all_t": dict(eps_zero=True, lam=0.0),
        "c_star_t_inf": dict(eps_zero=True, lam=0.0, times=(math.inf,)),
    }
    out = {}
    for k in ks:
        out[k] = {}
        for j, (mode, kw) in enumerate(modes.items()):
            kw = dict(kw)
            eps_zero = kw.pop("eps_zero", False)
            try:
                found = gradient_search_k(
                    jax.random.fold_in(key, 10 * k + j), k, starts=starts, steps=steps, eps_zero=eps_zero,
                    progress=progress, **kw,
                )  # fmt: skip
            except Exception as err:  # one failed search must not lose the others: report it
                error = f"{type(err).__name__}: {str(err)[:300]}"
                out[k][mode] = dict(starts=starts, steps=steps, error=error, best_relative_slack=None, violations=0,
                                    replayed=[], best_instance=None)  # fmt: skip
                continue
            replayed = []
            for f in found[:replays]:
                r = replay_radau(f, **kw)
                replayed.append(dict(search_relative_slack=f["relative_slack"], **{a: r[a] for a in (
                    "relative_slack", "min_slack", "violated_at", "eps", "rhs0")}))  # fmt: skip
            out[k][mode] = dict(
                starts=starts,
                steps=steps,
                best_relative_slack=found[0]["relative_slack"] if found else None,
                violations=sum(f["relative_slack"] < 0 for f in found),
                replayed=replayed,
                best_instance={a: np.asarray(b).tolist() for a, b in found[0]["theta"].items()} if found else None,
            )
    return out
