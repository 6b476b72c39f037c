"""`Instance`: one problem and one initial head, the unit a statement is evaluated on, with an exact JSON form; and
the family of instances a search draws from."""

from __future__ import annotations

import dataclasses
import json
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .._generators import subspace_shift
from .._problem import Problem

HEAD_KINDS = ("zero", "random", "aligned")


@partial(jax.tree_util.register_dataclass, data_fields=["problem", "v0"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class Instance:
    """A `Problem` and an initial head `v0` (k,): the input of a statement `statement(problem, v0) -> slack`.

    An immutable pytree (batched under `jax.vmap`). `to_json()` / `Instance.from_json(text)` round-trip it exactly:
    every array is written as its float64 values (Python's shortest repr, which reads back bit for bit), with
    everything needed to rebuild the problem (X, B0, B⋆, v⋆, y and the Σs that are not the defaults)."""

    problem: Problem
    v0: jax.Array

    def to_json(self) -> str:
        p = self.problem
        if p.X.ndim != 2:
            raise ValueError("`to_json` writes one instance; index a batch first")
        data = {
            name: np.asarray(getattr(p, name), np.float64).tolist() for name in ("X", "B0", "B_star", "v_star", "y")
        }
        data["sigma_ood"] = None if p.default_sigma_ood else np.asarray(p.sigma_ood, np.float64).tolist()
        data["sigma_id"] = None if p.default_sigma_id else np.asarray(p.sigma_id, np.float64).tolist()
        data["v0"] = np.asarray(self.v0, np.float64).tolist()
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Instance:
        try:
            data = json.loads(text)
            arrays = {a: None if data[a] is None else np.asarray(data[a], np.float64) for a in data}
            problem = Problem(arrays["X"], arrays["B0"], arrays["B_star"], arrays["v_star"], y=arrays["y"],
                              sigma_ood=arrays["sigma_ood"], sigma_id=arrays["sigma_id"])  # fmt: skip
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"not an Instance's JSON ({type(e).__name__}: {e})") from None
        return cls(problem, jnp.asarray(arrays["v0"]))

    def __repr__(self) -> str:
        p = self.problem
        return f"Instance(d={p.d}, k={p.k}, n={p.n}, dtype={p.X.dtype})"


def check_shapes(shapes) -> list[tuple[int, int, int, int]]:
    """`shapes` as (d, k, n, m) tuples (m = dim S, default n), each checked as `subspace_shift` would."""
    if isinstance(shapes, tuple) and shapes and isinstance(shapes[0], int):
        shapes = [shapes]
    out = []
    for s in shapes:
        if not isinstance(s, tuple | list) or len(s) not in (3, 4) or not all(int(x) == x and x >= 1 for x in s):
            raise ValueError(
                f"each entry of `shapes` must be (d, k, n) or (d, k, n, dim S) of positive ints, got {s!r}"
            )
        d, k, n = (int(x) for x in s[:3])
        m = int(s[3]) if len(s) == 4 else n
        if 2 * k > d or m > d:
            raise ValueError(f"shape {tuple(s)}: need 2k <= d and dim S <= d")
        out.append((d, k, n, m))
    if not out:
        raise ValueError("`shapes` is empty: give at least one (d, k, n)")
    return out


def check_eps(eps) -> tuple[float, float]:
    try:
        lo, hi = (float(e) for e in eps)
    except (TypeError, ValueError):
        raise ValueError(f"`eps` must be a pair (lo, hi), got {eps!r}") from None
    if not 0.0 <= lo <= hi <= math.sqrt(2):
        raise ValueError(f"`eps` must satisfy 0 <= lo <= hi <= sqrt(2), got {eps!r}")
    return lo, hi


def draw_instance(key, shape: tuple[int, int, int, int], eps: tuple[float, float]) -> Instance:
    """One instance of the search family (concrete): a `subspace_shift` (Gaussian inputs in a drawn S of dim m, so
    ill-conditioned) with ε uniform in `eps` and set exactly (B0 = cos θ B⋆ + sin θ E, no rotation), ‖v⋆‖
    log-uniform over [0.1, 10], and a head that is zero, random (N(0, σ² I)) or nearly aligned with v⋆
    (v⋆ (1 + σ g)), σ log-uniform over [0.01, 10]."""
    d, k, n, m = shape
    kp, ke, kv, kh, kk, ks = jax.random.split(key, 6)
    e = float(jax.random.uniform(ke, (), minval=eps[0], maxval=eps[1]))
    p = subspace_shift(kp, d=d, k=k, n=n, m=m, eps=e, rotate=False)
    norm = 10.0 ** float(jax.random.uniform(kv, (), minval=-1.0, maxval=1.0))
    v_star = p.v_star / jnp.linalg.norm(p.v_star) * norm
    p = p.replace(v_star=v_star)
    sigma = 10.0 ** float(jax.random.uniform(ks, (), minval=-2.0, maxval=1.0))
    kind = HEAD_KINDS[int(jax.random.randint(kk, (), 0, 3))]
    g = jax.random.normal(kh, (k,), p.X.dtype)
    v0 = {"zero": jnp.zeros(k, p.X.dtype), "random": sigma * g, "aligned": v_star * (1.0 + sigma * g)}[kind]
    return Instance(p, v0)


def stack(instances: list[Instance]) -> Instance:
    """A batch (leading axis) of instances of one shape."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *instances)


def index(batch: Instance, i: int) -> Instance:
    return jax.tree_util.tree_map(lambda x: x[i], batch)
