"""The problem: ID data, pretrained and true features, OOD/ID second moments (Section 3.1), and generators."""

from __future__ import annotations

import dataclasses
import functools
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ._geometry import rank_mask
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
        dtype = jnp.result_type(X, B0, B_star, v_star)
        X, B0, B_star, v_star = (a.astype(dtype) for a in (X, B0, B_star, v_star))
        if y is None:
            y = X @ (B_star.T @ v_star)
        else:
            y = as_float_array(y, "y", 1).astype(dtype)
            check_shape(y, "y", (n,), "one target per row of X")
        U, s, Vt = jnp.linalg.svd(X, full_matrices=False)
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
        V = self.id_basis
        return jnp.sum(jnp.einsum("...d,...dr->...r", a, V) * jnp.einsum("...d,...dr->...r", b, V), axis=-1)

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


# ------------------------------------------------------------------------------------------------------
# Generators
# ------------------------------------------------------------------------------------------------------


def _orthonormal_columns(key, d: int, p: int, dtype, against: jax.Array | None = None) -> jax.Array:
    """(d, p) orthonormal columns drawn uniformly (Haar), orthogonal to the columns of `against` if given."""
    g = jax.random.normal(key, (d, p), dtype=dtype)
    if against is not None:
        g = g - against @ (against.T @ g)
    q, r = jnp.linalg.qr(g)
    # fix signs so the draw is Haar-distributed rather than biased by the QR convention
    return q * jnp.sign(jnp.diag(r))


def random_orthogonal(key, k: int, dtype=None) -> jax.Array:
    """A Haar-random (k, k) orthogonal matrix."""
    dtype = dtype or jnp.result_type(float)
    return _orthonormal_columns(key, k, k, dtype)


def random_head(key, k: int, scale: float = 1.0) -> jax.Array:
    """A random head v0 ~ N(0, scale² I_k), the random initialisation covered by the theory.

    **Arguments:** `key` a `jax.random` key, `k` the number of features, `scale` the standard deviation σ ≥ 0.

    **Returns:** (k,) array in the default float dtype.
    """
    if int(k) != k or k < 1:
        raise ValueError(f"`k` must be a positive integer, got {k}")
    if not (np.isfinite(scale) and scale >= 0):
        raise ValueError(f"`scale` must be a finite number >= 0, got {scale}")
    return scale * jax.random.normal(key, (int(k),), dtype=jnp.result_type(float))


_OOD_KINDS = ("isotropic", "orthogonal", "mixture", "id")


def subspace_shift(
    key,
    *,
    d: int,
    k: int,
    n: int,
    eps: float,
    m: int | None = None,
    ood: str | jax.Array = "isotropic",
    shift: float = 1.0,
    v_star_scale: float = 1.0,
    rotate: bool = True,
    inputs: str = "subspace",
    dtype=None,
) -> Problem:
    """A synthetic subspace shift with feature error set exactly.

    Construction: S is a Haar-random m-dimensional subspace of R^d with orthonormal basis V_S (d, m); the n ID
    inputs are rows of Z V_Sᵀ with Z ~ N(0, I) of shape (n, m), so rowspace(X) = S almost surely when m ≤ n.
    B⋆ has Haar-random orthonormal rows; v⋆ ~ N(0, v_star_scale² I_k). The pretrained features are
    B0 = U (cos θ B⋆ + sin θ E) with E orthonormal rows orthogonal to rowspace(B⋆), U a Haar-random rotation
    (the ground truth is only defined up to U; `rotate=False` gives U = I) and every principal angle
    θ = 2 arcsin(ε/2), so that B0 has orthonormal rows and `feature_distance(B0, B_star) == eps`.

    **Arguments:**

    - `key`: a `jax.random` key.
    - `d`, `k`, `n`: input dimension, number of features, number of training points.
    - `eps`: feature error ε ∈ [0, √2] (√2 is the largest distance between k-frames, θ = π/2).
    - `m`: dim S (default n).
    - `ood`: the OOD second moment Σ_ood: `"isotropic"` (I, the paper's worst case), `"orthogonal"` (P_S⊥:
      test inputs orthogonal to the training data), `"id"` (P_S), `"mixture"` ((1 − shift) P_S + shift P_S⊥),
      or a (d, d) PSD array.
    - `shift`: the shift strength in [0, 1] for `"mixture"`.
    - `v_star_scale`: standard deviation of v⋆.
    - `rotate`: whether to apply the random rotation U to B0.
    - `inputs`: `"subspace"` (default: rows N(0, P_S) in a drawn m-dimensional S, as above) or `"isotropic"`:
      rows X_i ~ N(0, I_d), the Gaussian inputs of Theorem 3.2, with S = rowspace(X) (then m = n, and X is far
      better conditioned than a square Gaussian inside S, so the flow is much less stiff).
    - `dtype`: float dtype (default float64 when x64 is on).

    **Returns:** a `Problem`.
    """
    for name, val in (("d", d), ("k", k), ("n", n)):
        if int(val) != val or val < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {val}")
    m = n if m is None else m
    if int(m) != m or not 1 <= m <= d:
        raise ValueError(f"`m` (dim S) must be an integer in [1, d = {d}], got {m}")
    if not is_traced(eps) and not (0 <= eps <= math.sqrt(2)):
        raise ValueError(f"`eps` must be in [0, sqrt(2)] (feature distance between orthonormal frames), got {eps}")
    if 2 * k > d:
        raise ValueError(f"`k` must satisfy 2k <= d so that B0 can be rotated away from B_star, got k={k}, d={d}")
    if not is_traced(shift) and not 0 <= shift <= 1:
        raise ValueError(f"`shift` must be in [0, 1], got {shift}")
    dtype = dtype or jnp.result_type(float)
    kS, kB, kE, kU, kv, kZ = jax.random.split(key, 6)
    Bs = _orthonormal_columns(kB, d, k, dtype).T
    E = _orthonormal_columns(kE, d, k, dtype, against=Bs.T).T
    theta = 2 * jnp.arcsin(jnp.asarray(eps, dtype) / 2)
    B0 = jnp.cos(theta) * Bs + jnp.sin(theta) * E
    if rotate:
        B0 = random_orthogonal(kU, k, dtype) @ B0
    v_star = jnp.asarray(v_star_scale, dtype) * jax.random.normal(kv, (k,), dtype=dtype)
    if inputs == "subspace":
        VS = _orthonormal_columns(kS, d, m, dtype)
        X = jax.random.normal(kZ, (n, m), dtype=dtype) @ VS.T
    elif inputs == "isotropic":
        if m != n:
            raise ValueError(f"`inputs='isotropic'` draws rows N(0, I_d), so dim S = n; got m = {m} != n = {n}")
        X = jax.random.normal(kZ, (n, d), dtype=dtype)
        VS = None  # S = rowspace(X); a basis is only formed if a Σ_ood needs P_S (a QR of X.T is costly at scale)
    else:
        raise ValueError(f"`inputs` must be 'subspace' or 'isotropic', got {inputs!r}")
    if isinstance(ood, str):
        if ood not in _OOD_KINDS:
            raise ValueError(f"`ood` must be one of {_OOD_KINDS} or a (d, d) PSD array, got {ood!r}")
        if ood == "isotropic":
            sigma = None  # Problem's default Σ_ood = I, stored without a (d, d) matrix
        else:
            VS = jnp.linalg.qr(X.T)[0] if VS is None else VS
            PS = VS @ VS.T
            sigma = {
                "orthogonal": jnp.eye(d, dtype=dtype) - PS,
                "id": PS,
                "mixture": (1 - shift) * PS + shift * (jnp.eye(d, dtype=dtype) - PS),
            }[ood]
    else:
        sigma = ood
    return Problem(X, B0, Bs, v_star, sigma_ood=sigma)


def subspace_shifts(
    keys, eps, *, d: int, k: int, n: int, m: int | None = None, v_star_scale=None, inputs: str = "subspace"
):
    """A batch of `subspace_shift` problems of one shape, one per key and ε: a `Problem` pytree whose every array
    has a leading batch axis N (the input to `sweep`).

    **Arguments:** `keys` (N,) `jax.random` keys, `eps` (N,) feature errors (or one ε for all), `d`, `k`, `n`, `m`,
    `inputs` as `subspace_shift`, `v_star_scale` (N,) or None (1). Σ_ood is the default I.

    **Returns:** a batched `Problem`.
    """
    keys = jnp.asarray(keys)
    typed = jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
    if (typed and keys.ndim != 1) or (not typed and (keys.ndim != 2 or keys.shape[1] != 2)):
        raise ValueError(
            f"`keys` must be N jax.random keys (jax.random.split(key, N)), got shape {keys.shape}, dtype {keys.dtype}"
        )
    eps = jnp.broadcast_to(jnp.asarray(eps, dtype=jnp.result_type(float)), keys.shape[:1])
    scale = jnp.ones_like(eps) if v_star_scale is None else v_star_scale
    scale = jnp.broadcast_to(jnp.asarray(scale, dtype=eps.dtype), eps.shape)
    return _batched_generator(d, k, n, m, inputs)(keys, eps, scale)


@functools.lru_cache(maxsize=32)
def _batched_generator(d, k, n, m, inputs):
    def one(args):
        key, e, s = args
        return subspace_shift(key, d=d, k=k, n=n, m=m, eps=e, v_star_scale=s, inputs=inputs)

    # lax.map (one instance at a time inside one compiled loop), not vmap: on this project's 2-core CPU machines a
    # vmapped generator hung inside XLA with no CPU use (reproducibly: 16 problems at d = 500, 64 at d = 200;
    # never with one instance per iteration). Generation is a small part of a sweep's cost either way.
    return jax.jit(lambda keys, eps, scale: jax.lax.map(one, (keys, eps, scale)))


def figure2_toy(
    *,
    x_id=(1.0, 0.0),
    b_star_angle: float = math.pi / 4,
    b0_angle: float = math.pi / 4 + math.pi / 36,
    v_star: float = 1.0,
    sigma_ood=None,
) -> Problem:
    """The paper's Figure 2 toy: d = 2, k = 1, one training point x_id.

    B⋆ = [cos α⋆, sin α⋆], B0 = [cos α0, sin α0] (unit rows, so ε = 2 sin(|α0 − α⋆|/2)), v⋆ scalar,
    X = [x_id]. The defaults (B⋆ at 45°, B0 5° away, ε ≈ 0.087) are the figure's regime of good features. The OOD
    direction of the figure is the unit vector orthogonal to x_id; the default Σ_ood = I
    measures the worst case, and `sigma_ood = outer(x_ood, x_ood)` measures the error on x_ood alone.

    **Returns:** a `Problem` with n = 1, d = 2, k = 1 (outside k < n, so the regime warning is silenced).
    """
    import warnings

    from ._validate import OverparameterisationWarning

    X = jnp.asarray([x_id], dtype=jnp.result_type(float))
    if X.shape != (1, 2):
        raise ValueError(f"`x_id` must be a 2-vector, got {x_id}")
    Bs = jnp.asarray([[math.cos(b_star_angle), math.sin(b_star_angle)]])
    B0 = jnp.asarray([[math.cos(b0_angle), math.sin(b0_angle)]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverparameterisationWarning)
        return Problem(X, B0, Bs, jnp.asarray([v_star]), sigma_ood=sigma_ood)


def figure2_ood_point(problem: Problem) -> jax.Array:
    """The OOD point of Figure 2: the unit vector orthogonal to x_id (d = 2)."""
    x = problem.X[0] / jnp.linalg.norm(problem.X[0])
    return jnp.asarray([-x[1], x[0]])
