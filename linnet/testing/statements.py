"""The paper's results, and two facts of the flow, as statements for `linnet.testing.search`: each is
`statement(problem, v0) -> slack`, ≥ 0 where it holds (docs/theory.md gives each result; numbering is the
submission's). They use only the public API, so they compose with `jit`, `vmap` and `grad`, and under
`linnet.testing.reference()` they are re-evaluated by the independent reference."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .. import theory as th
from .._methods.paper import fine_tune, linear_probe
from .._validate import limit_floor

TIMES = np.array([0.0, 0.01, 0.1, 1.0, 10.0, 100.0, np.inf])  # where "for all t" is checked


def _min_root_ood(problem, v0):
    return jnp.min(jnp.sqrt(fine_tune(problem, v0, TIMES).ood_error))


def theorem_3_1(problem, v0):
    """Theorem 3.1 as printed (φ in the absolute-value form, Section 3.1's ε): min_t √L_ood(t) − bound."""
    return _min_root_ood(problem, v0) - th.ft_ood_lower_bound(problem, v0)


def theorem_3_1_eps_squared(problem, v0):
    """Theorem 3.1 with the theorem's own, squared reading of ε."""
    return _min_root_ood(problem, v0) - th.ft_ood_lower_bound(problem, v0, eps_form="theorem")


def theorem_3_1_corrected(problem, v0):
    """linnet's empirical correction ½ RHS₀ − (1 + ‖w⋆‖) ε (`theory.theorem_3_1_corrected`)."""
    return _min_root_ood(problem, v0) - th.theorem_3_1_corrected(problem, v0)


def theorem_3_1_halved(problem, v0):
    """The candidate with (1 + ‖w⋆‖)² replaced by 2 (1 + ‖w⋆‖)², i.e. ½ RHS₀ − ε."""
    return _min_root_ood(problem, v0) - th.ft_ood_lower_bound(problem, v0, c=0.5)


def proposition_3_1(problem, v0):
    """FT beats LP in distribution: L_id:subspace(LP∞) − L_id:subspace(FT∞). NaN (says nothing; the search drops
    it) where its hypothesis fails, w⋆ ∈ rowspace(B0) (to 1e-6 ‖w⋆‖; shrinking to ε = 0 gets there), or where FT's
    limit cannot be resolved: eps cond(X)² > 1e-8 (`linnet._validate.limit_floor`); on such instances
    both the simulator and the reference stop with X's slowest directions unconverged and report FT's ID error
    above LP's exact one."""
    diff = linear_probe(problem, v0, [jnp.inf]).id_error[-1] - fine_tune(problem, v0, [jnp.inf]).id_error[-1]
    w, B0 = problem.w_star, problem.B0
    off_rowspace = jnp.linalg.norm(w - B0.T @ (B0 @ w)) > 1e-6 * jnp.linalg.norm(w)
    resolved = limit_floor(problem.reduced.s) <= 1e-8
    return jnp.where(off_rowspace & resolved, diff, jnp.nan)


def features_fixed_off_S(problem, v0):
    """Fact 1: B(t) u = B0 u for u ∈ S⊥, as 1e-6 (1 + ‖B0‖) − max_t ‖(B(t) − B0) P_S⊥‖_F. Structural in the
    simulator (it integrates on S); a real check under the reference, which integrates the full state."""
    tr = fine_tune(problem, v0, TIMES)
    dB = tr.B - problem.B0
    V = problem.id_basis
    off = dB - (dB @ V) @ V.T
    return 1e-6 * (1.0 + jnp.linalg.norm(problem.B0)) - jnp.max(jnp.sqrt(jnp.sum(off**2, axis=(-2, -1))))


def balancedness(problem, v0):
    """Fact 2: v vᵀ − B Bᵀ is conserved, as 1e-6 (1 + ‖v0‖² + ‖B0‖²) − max_t ‖Δ(v vᵀ − B Bᵀ)‖_F."""
    tr = fine_tune(problem, v0, TIMES)
    M = tr.v[:, :, None] * tr.v[:, None, :] - jnp.einsum("tkd,tjd->tkj", tr.B, tr.B)
    M0 = jnp.outer(v0, v0) - problem.B0 @ problem.B0.T
    drift = jnp.sqrt(jnp.sum((M - M0) ** 2, axis=(-2, -1)))
    return 1e-6 * (1.0 + jnp.sum(v0**2) + jnp.sum(problem.B0**2)) - jnp.max(drift)


def _relative(problem, v0, *, times=TIMES, c=1.0, eps_form="section", lam_w=False):
    """min_t (√L_ood(t) + λ ε) / (c RHS₀) − 1, λ = 1 (or 1 + ‖w⋆‖ with `lam_w`): the statement
    √L_ood(t) ≥ c RHS₀ − λ ε for all t, divided by its bound's scale, so that its sign is the absolute slack's and
    a gradient search is not drawn to instances where everything is small. NaN (the search drops it) where
    RHS₀ < 1e-4: below that the simulator's absolute accuracy (≈ 1e-8 ‖w⋆‖) no longer resolves the ratio."""
    tr = fine_tune(problem, v0, times)
    rhs0 = th.theorem_3_1_rhs0(problem, v0)
    lam = 1.0 + jnp.linalg.norm(problem.w_star) if lam_w else 1.0
    eps = th.theorem_3_1_eps(problem, eps_form)
    ok = rhs0 >= 1e-4
    ratio = jnp.min(jnp.sqrt(tr.ood_error) + lam * eps) / (c * jnp.where(ok, rhs0, 1.0)) - 1.0
    return jnp.where(ok, ratio, jnp.nan)


def theorem_3_1_relative(problem, v0):
    """Theorem 3.1 as printed (Section 3.1's ε), relative: min_t (√L_ood(t) + ε)/RHS₀ − 1. At ε = 0,
    1 + its infimum over a family is the tight constant c*(k) of √L_ood ≥ c RHS₀ on that family."""
    return _relative(problem, v0)


def theorem_3_1_eps_squared_relative(problem, v0):
    """Theorem 3.1 in the theorem's ε² reading, relative: min_t (√L_ood(t) + ε²)/RHS₀ − 1."""
    return _relative(problem, v0, eps_form="theorem")


def theorem_3_1_corrected_relative(problem, v0):
    """linnet's corrected form, relative: min_t (√L_ood(t) + (1 + ‖w⋆‖) ε)/(½ RHS₀) − 1."""
    return _relative(problem, v0, c=th.C_STAR_K1, lam_w=True)


def theorem_3_1_relative_limit(problem, v0):
    """As `theorem_3_1_relative` at t = ∞ only: (√L_ood(∞) + ε)/RHS₀ − 1."""
    return _relative(problem, v0, times=np.array([np.inf]))


PAPER = {
    "theorem_3_1": theorem_3_1,
    "theorem_3_1_eps_squared": theorem_3_1_eps_squared,
    "theorem_3_1_corrected": theorem_3_1_corrected,
    "theorem_3_1_halved": theorem_3_1_halved,
    "proposition_3_1": proposition_3_1,
    "features_fixed_off_S": features_fixed_off_S,
    "balancedness": balancedness,
}


# the shapes searched: k = 1 (where Theorem 3.1's counterexample lives) and k = 2; ε over [0, 0.05], since the
# −ε term of Theorem 3.1 absorbs its violations at larger ε (the facts and Proposition 3.1 hold at every ε)
STATEMENT_SHAPES = ((6, 1, 3), (12, 2, 8, 4))
STATEMENT_EPS = (0.0, 0.05)


def search_paper(key, *, random: int = 256, starts: int = 2, steps: int = 20, shapes=STATEMENT_SHAPES,
                 eps=STATEMENT_EPS, names=None, progress: bool = True) -> dict:  # fmt: skip
    """Each statement of `PAPER` (or those in `names`) through `linnet.testing.search` (what `linnet stress`
    runs): `random` instances of the testing family over `shapes` with ε in `eps`, `starts` ×
    `steps` Adam steps, the worst instance shrunk and replayed by the reference. **Returns:** {name: the
    `SearchReport`'s fields, the worst instance as its exact JSON, and `verdict`: "violated (confirmed)",
    "violation not confirmed" or "no violation found" (a search cannot show that a statement holds)}."""
    from ._search import search

    unknown = set(names or ()) - set(PAPER)
    if unknown:
        raise ValueError(f"`names` must be among {sorted(PAPER)}, got {sorted(unknown)}")
    out = {}
    for j, (name, statement) in enumerate(PAPER.items()):
        if names is not None and name not in names:
            continue
        rep = search(statement, key=jax.random.fold_in(key, j), shapes=list(shapes), eps=eps, random=random,
                     starts=starts, steps=steps, progress=progress)  # fmt: skip
        out[name] = _fields(rep)
    return out


# The search by k (`search_by_k`): the smallest shapes (d, k, n) inside the theorem's regime 1 ≤ k < n < d,
# k < d − n, with room for S⊥; each statement with the ε range it is searched over. At ε = 0 the ε term is gone and
# 1 + the least relative slack found is an estimate, from above, of the tight constant c*(k).
SHAPES_BY_K = {1: (6, 1, 3), 2: (9, 2, 4), 3: (11, 3, 5), 5: (15, 5, 7)}
BY_K = {
    "theorem_3_1": (theorem_3_1_relative, (0.0, 0.3)),
    "theorem_3_1_eps_squared": (theorem_3_1_eps_squared_relative, (0.0, 0.3)),
    "theorem_3_1_corrected": (theorem_3_1_corrected_relative, (0.0, 0.3)),
    "c_star_all_t": (theorem_3_1_relative, (0.0, 0.0)),
    "c_star_t_inf": (theorem_3_1_relative_limit, (0.0, 0.0)),
}


def search_by_k(key, ks=tuple(SHAPES_BY_K), *, random: int = 256, starts: int = 8, steps: int = 60,
                names=None, progress: bool = True) -> dict:  # fmt: skip
    """Theorem 3.1 at each k of `ks` through `linnet.testing.search`: each statement of `BY_K` (or those in
    `names`) on the shape `SHAPES_BY_K[k]`, `random` random instances then `starts` × `steps` Adam steps. The
    violations of the printed and corrected forms are shrunk and replayed; the ε = 0 searches (`c_star_*`) are not
    shrunk (their least value is the estimate) and their worst instance is always replayed by the reference.

    **Returns:** {k: {name: the report's fields, `verdict`, the worst instance's JSON, and for `c_star_*` also
    `c_star_estimate` = 1 + min_slack and `c_star_replayed` = 1 + the reference's value}}."""
    from ._search import replay, search

    unknown = set(names or ()) - set(BY_K)
    if unknown:
        raise ValueError(f"`names` must be among {sorted(BY_K)}, got {sorted(unknown)}")
    bad = [k for k in ks if k not in SHAPES_BY_K]
    if bad:
        raise ValueError(f"`ks` must be among {sorted(SHAPES_BY_K)}, got {bad}")
    out = {}
    for k in ks:
        out[k] = {}
        for j, (name, (statement, eps)) in enumerate(BY_K.items()):
            if names is not None and name not in names:
                continue
            constant = name.startswith("c_star")
            rep = search(statement, key=jax.random.fold_in(key, 10 * k + j), shapes=[SHAPES_BY_K[k]], eps=eps,
                         random=random, starts=starts, steps=steps, progress=progress, shrink=not constant)  # fmt: skip
            row = _fields(rep)
            if constant and rep.worst is not None:
                replayed = rep.replayed if rep.replayed is not None else replay(statement, rep.worst)
                row.update(replayed=replayed, c_star_estimate=1.0 + rep.min_slack, c_star_replayed=1.0 + replayed)
            out[k][name] = row
    return out


def _fields(rep) -> dict:
    verdict = (
        "no violation found" if not rep.violations else
        "violated (confirmed)" if rep.confirmed else "violation not confirmed"
    )  # fmt: skip
    fields = {f.name: getattr(rep, f.name) for f in dataclasses.fields(rep) if f.name != "worst"}
    return dict(fields, verdict=verdict, worst=None if rep.worst is None else rep.worst.to_json())
