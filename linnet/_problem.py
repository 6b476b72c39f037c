"""The problem: ID data, pretrained and true features, OOD/ID second moments (Section 3.1), and generators."""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp

from ._geometry import rank_mask, thin_svd
from ._validate import as_float_array, check_psd, check_shape, is_traced, warn_regime

_FIELDS = ("X", "y", "B0", "B_star", "v_star", "sigma_ood", "sigma_id")
# the default second moments (I and P_S) are stored as None and materialised only on access: a dense (d, d)
# matrix is 800 MB at d = 10⁴ and 80 GB at d = 10⁵, while the errors under the defaults need only O(d r) work
_STORED = ("X", "y", "B0", "B_star", "v_star", "_sigma_ood", "_sigma_id", "_s", "_V", "_Uty", "_G0")


@partial(jax.tree_util.register_dataclass, data_fields=["s", "V", "Uty", "G0"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class Reduced:
    """The coordinates where the dynamics live (`docs/theory.md`, "Reduced coordinates"), an immutable pytree.

    With the thin SVD X = U diag(s) Vᵀ (rank-masked: singular values below the numerical rank are set to 0 and
    their columns of V count as outside S), every gradient of L̂ with respect to B has rows in span(V) = S, so
    B(t) = B0 + ΔG(t) Vᵀ and the flows are integrated on (v, G = B V).

    **Fields:** `s` (r,) singular values of X (r = min(n, d)); `V` (d, r) right singular vectors; `Uty` (r,) the
    targets in the left singular basis, Uᵀy (0 where s = 0); `G0` (k, r) = B0 V, the pretrained features in S.
    A batched `Problem` gives a batched `Reduced` (every field with the leading batch axis).
    """

    s: jax.Array
    V: jax.Array
    Uty: jax.Array
    G0: jax.Array


def residual(s, a, v, G):
    """ρ = s ⊙ (Gᵀ v) − Uᵀy, shape (r,): the training residual X Bᵀv − y in the left singular basis of X, so that
    L̂ = ‖ρ‖² + ‖(I − UUᵀ) y‖²; `a` = Uᵀy."""
    return s * (G.T @ v) - a


@jax.tree_util.register_pytree_node_class
class Problem:
    """An instance of the paper's setting: f(x) = vᵀ B x fitted to y = X w⋆ with w⋆ = B⋆ᵀ v⋆.

    Immutable pytree (can be passed through `jax.jit` / `jax.vmap`). Besides the fields below it caches the
    thin SVD X = U diag(s) Vᵀ (rank-masked), so the factorisation of X is done once per problem.

    **Arguments:**

    - `X`: (n, d) ID training inputs, one per row.
    - `B0`: (k, d) pretrained features (the theorems assume orthonormal rows; the simulator does not).
    - `B_star`: (k, d) true features B⋆.
    - `v_star`: (k,) true head v⋆.
    - `y`: (n,) targets; default the noiseless `X @ w_star`.
    - `sigma_ood`: (d, d) PSD OOD second moment Σ_ood; default I, the submission's worst case over the unit
      ball, so `ood_error` is ‖Bᵀv − w⋆‖².
    - `sigma_id`: (d, d) PSD ID second moment; default P_S, the projection onto S = rowspace(X), so `id_error`
      is L_id:subspace = ‖P_S(Bᵀv − w⋆)‖².

    The defaults are not stored as (d, d) matrices (they are built on access to `problem.sigma_ood` /
    `problem.sigma_id`); the errors use their structure, so memory stays O(n d + d r) and d = 10⁵ is practical.

    Shapes are checked; NaN/inf and non-PSD Σ raise `ValueError`; k ≥ n, n ≥ d or k ≥ d − n warn
    (`OverparameterisationWarning`), since the theorems assume 1 ≤ k < n < d, k < d − n.
    """

    X: jax.Array
    y: jax.Array
    B0: jax.Array
    B_star: jax.Array
    v_star: jax.Array
    # stored privately (set once in __init__): the explicit Σs or None for the defaults, and the reduced SVD
    _sigma_ood: jax.Array | None
    _sigma_id: jax.Array | None
    _s: jax.Array
    _V: jax.Array
    _Uty: jax.Array
    _G0: jax.Array

    def __init__(self, X, B0, B_star, v_star, *, y=None, sigma_ood=None, sigma_id=None):
        X = as_float_array(X, "X", 2)
        n, d = X.shape
        B0 = as_float_array(B0, "B0", 2)
        if B0.shape[1] != d:
            raise ValueError(f"`B0` must have shape (k, {d}) (d = X.shape[1]), got {tuple(B0.shape)}")
        k = B0.shape[0]
        B_star = as_float_array(B_star, "B_star", 2)
        check_shape(B_star, "B_star", (k, d), "k x d, the same as B0")
        v_star = as_float_array(v_star, "v_star", 1)
        check_shape(v_star, "v_star", (k,), "one entry per feature, k = B0.shape[0]")
        for name, size in (("n (rows of X)", n), ("d (columns of X)", d), ("k (rows of B0)", k)):
            if size < 1:
                raise ValueError(f"`Problem` needs at least one of each: {name} is 0")
        dtype = jnp.result_type(X, B0, B_star, v_star)
        X, B0, B_star, v_star = (a.astype(dtype) for a in (X, B0, B_star, v_star))
        if y is None:
            y = X @ (B_star.T @ v_star)
        else:
            y = as_float_array(y, "y", 1).astype(dtype)
            check_shape(y, "y", (n,), "one target per row of X")
        U, s, Vt = thin_svd(X)  # through X Xᵀ for large, well-conditioned X (see there)
        mask = rank_mask(s, X.shape)
        s = jnp.where(mask, s, 0.0)
        if sigma_ood is not None:
            sigma_ood = as_float_array(sigma_ood, "sigma_ood", 2).astype(dtype)
            sigma_ood = check_psd(sigma_ood, "sigma_ood", d)
        if sigma_id is not None:
            sigma_id = as_float_array(sigma_id, "sigma_id", 2).astype(dtype)
            sigma_id = check_psd(sigma_id, "sigma_id", d)
        if not is_traced(X, B0):
            warn_regime(n, d, k)
        values = dict(X=X, y=y, B0=B0, B_star=B_star, v_star=v_star, _sigma_ood=sigma_ood, _sigma_id=sigma_id)
        values.update(_s=s, _V=Vt.T, _Uty=jnp.where(mask, U.T @ y, 0.0), _G0=B0 @ Vt.T)
        for name, val in values.items():
            object.__setattr__(self, name, val)

    # --- pytree protocol -------------------------------------------------------------------------------
    def tree_flatten(self):
        return tuple(getattr(self, f) for f in _STORED), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        for name, val in zip(_STORED, children, strict=True):
            object.__setattr__(obj, name, val)
        return obj

    def __setattr__(self, name, value):
        raise AttributeError("Problem is immutable; use Problem.replace(...) to make a modified copy")

    def replace(self, **changes) -> Problem:
        """A new Problem with some of (X, B0, B_star, v_star, y, sigma_ood, sigma_id) replaced.

        A changed X re-derives the default `sigma_id` = P_S only when `sigma_id` is not given and the old one
        was the default; pass `sigma_id` explicitly to control it.
        """
        unknown = set(changes) - set(_FIELDS)
        if unknown:
            raise TypeError(f"Problem.replace got unknown fields {sorted(unknown)}; allowed: {list(_FIELDS)}")
        kw = {f: changes.get(f, getattr(self, f)) for f in _FIELDS[:5]}
        kw.update(sigma_ood=changes.get("sigma_ood", self._sigma_ood), sigma_id=changes.get("sigma_id", self._sigma_id))
        if "X" in changes and "sigma_id" not in changes:
            kw["sigma_id"] = None
        if ("X" in changes or "B_star" in changes or "v_star" in changes) and "y" not in changes:
            kw["y"] = None
        return Problem(
            kw["X"], kw["B0"], kw["B_star"], kw["v_star"], y=kw["y"], sigma_ood=kw["sigma_ood"], sigma_id=kw["sigma_id"]
        )

    # --- derived quantities ----------------------------------------------------------------------------
    @property
    def sigma_ood(self) -> jax.Array:
        """Σ_ood, shape (d, d) (the default I is materialised on access)."""
        if self._sigma_ood is None:
            return jnp.broadcast_to(jnp.eye(self.d, dtype=self.X.dtype), (*self.X.shape[:-2], self.d, self.d))
        return self._sigma_ood

    @property
    def sigma_id(self) -> jax.Array:
        """Σ_id, shape (d, d) (the default P_S is materialised on access)."""
        if self._sigma_id is None:
            Vm = self.id_basis
            return Vm @ jnp.swapaxes(Vm, -1, -2)
        return self._sigma_id

    @property
    def reduced(self) -> Reduced:
        """The reduced representation (s, V, Uᵀy, G0) of the problem (see `Reduced`), computed once at construction."""
        return Reduced(s=self._s, V=self._V, Uty=self._Uty, G0=self._G0)

    @property
    def default_sigma_ood(self) -> bool:
        """Whether Σ_ood is the default I (stored implicitly)."""
        return self._sigma_ood is None

    @property
    def default_sigma_id(self) -> bool:
        """Whether Σ_id is the default P_S (stored implicitly)."""
        return self._sigma_id is None

    def error_form(self, a: jax.Array, b: jax.Array, *, which: str) -> jax.Array:
        """aᵀ Σ b for Σ = Σ_ood (`which="ood"`) or Σ_id (`which="id"`), `a`, `b` of shape (..., d).

        Its diagonal a = b = w − w⋆ is the error L_ood or L_id (Section 3.1). The defaults are applied without
        forming a (d, d) matrix: Σ_ood = I gives aᵀb, Σ_id = P_S gives (Vᵀa)ᵀ(Vᵀb), so the cost is O(d r)."""
        if which not in ("ood", "id"):
            raise ValueError(f"`which` must be 'ood' or 'id', got {which!r}")
        stored = self._sigma_ood if which == "ood" else self._sigma_id
        if stored is not None:
            return jnp.einsum("...i,...ij,...j->...", a, stored, b)
        if which == "ood":
            return jnp.sum(a * b, axis=-1)
        # project, then mask: the same numbers as through `id_basis`, without writing a masked copy of V (d, r)
        mask = self._s > 0
        pa = jnp.einsum("...d,...dr->...r", a, self._V) * mask
        pb = pa if b is a else jnp.einsum("...d,...dr->...r", b, self._V) * mask
        return jnp.sum(pa * pb, axis=-1)

    @property
    def w_star(self) -> jax.Array:
        """w⋆ = B⋆ᵀ v⋆, shape (d,)."""
        return jnp.einsum("...kd,...k->...d", self.B_star, self.v_star)

    @property
    def n(self) -> int:
        return self.X.shape[-2]

    @property
    def d(self) -> int:
        return self.X.shape[-1]

    @property
    def k(self) -> int:
        return self.B0.shape[-2]

    @property
    def id_basis(self) -> jax.Array:
        """(d, r) orthonormal eigenbasis V of XᵀX (r = min(n, d)); columns with zero singular value masked to 0."""
        return self._V * (self._s > 0)[..., None, :]

    @property
    def rank(self) -> int:
        """dim S = rank(X)."""
        return int(jnp.sum(self._s > 0))

    def __repr__(self) -> str:
        return f"Problem(n={self.n}, d={self.d}, k={self.k}, dtype={self.X.dtype})"
