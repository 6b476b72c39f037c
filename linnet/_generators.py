"""Problem generators: synthetic subspace shifts with the feature error set exactly, batches of them, random
heads and rotations, and the paper's Figure 2 toy."""

from __future__ import annotations

import functools
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import _geometry
from ._config import jit
from ._problem import Problem
from ._validate import is_traced, warn_regime

# ------------------------------------------------------------------------------------------------------
# Generators
# ------------------------------------------------------------------------------------------------------


_FLAT_DRAW_MAX = 1 << 22  # above this a draw's own cost outweighs compiling it for its shape


def _normal(key, shape: tuple[int, ...], dtype) -> jax.Array:
    """`jax.random.normal(key, shape, dtype)`, bit for bit, compiled once per power of two rather than per shape.

    Eager calls compile one XLA program per output shape, about 0.35 s each on CPU (`random_head`,
    `random_orthogonal` and the eager route of `subspace_shift`). With JAX's partitionable threefry (its default)
    each entry depends only on the key and its flat index, so the draw equals the first prod(shape) entries of a
    flat draw of any greater length; lengths are rounded up to a power of two, so many shapes share a program.
    Traced keys, very large draws and other PRNG settings take the plain call."""
    size = math.prod(shape)
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    # getattr: JAX's config options are not declared attributes for type checkers
    impl = str(jax.random.key_impl(key)) if typed else str(getattr(jax.config, "jax_default_prng_impl", ""))
    partitionable = bool(getattr(jax.config, "jax_threefry_partitionable", False))
    if is_traced(key) or size > _FLAT_DRAW_MAX or not partitionable or "threefry" not in impl:
        return jax.random.normal(key, shape, dtype=dtype)
    length = max(64, 1 << (size - 1).bit_length())
    return jax.random.normal(key, (length,), dtype=dtype)[:size].reshape(shape)


def _orthonormal_columns(key, d: int, p: int, dtype, against: jax.Array | None = None) -> jax.Array:
    """(d, p) orthonormal columns drawn uniformly (Haar), orthogonal to the columns of `against` if given."""
    g = _normal(key, (d, p), dtype)
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
    return scale * _normal(key, (int(k),), jnp.result_type(float))


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
    labels: str = "linear",
    flip: float = 0.0,
    dtype=None,
) -> Problem:
    """A synthetic subspace shift with feature error set exactly (regression targets or, with `labels="sign"`, ±1).

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
    - `labels`: `"linear"` (default: y = X w⋆, the paper's regression targets) or `"sign"`: binary labels
      y = sign(w⋆ᵀx_i) ∈ {±1} for the logistic loss (`fine_tune(..., loss="logistic")`), each flipped
      independently with probability `flip`.
    - `flip`: label-flip probability in [0, ½] for `labels="sign"` (drawn from `fold_in(key, 7)`, so the rest of
      the draw is the same as with `labels="linear"`).
    - `dtype`: float dtype (default float64 when x64 is on).

    **Returns:** a `Problem`.
    """
    subspace_shift_checks(d=d, k=k, n=n, m=m, inputs=inputs, labels=labels, flip=flip)
    m = n if m is None else m
    if not is_traced(eps) and not (0 <= eps <= math.sqrt(2)):
        raise ValueError(f"`eps` must be in [0, sqrt(2)] (feature distance between orthonormal frames), got {eps}")
    if not is_traced(shift) and not 0 <= shift <= 1:
        raise ValueError(f"`shift` must be in [0, 1], got {shift}")
    if not is_traced(shift) and shift != 1.0 and not (isinstance(ood, str) and ood == "mixture"):
        raise ValueError(f"`shift` applies to ood='mixture' only (got shift = {shift} with ood = {ood!r})")
    if not is_traced(v_star_scale) and not (np.isfinite(v_star_scale) and v_star_scale >= 0):
        raise ValueError(f"`v_star_scale` (the standard deviation of v_star) must be a finite number >= 0, got "
                         f"{v_star_scale}")  # fmt: skip
    dtype = jnp.dtype(dtype or jnp.result_type(float))
    if isinstance(ood, str) and ood not in _OOD_KINDS:
        raise ValueError(f"`ood` must be one of {_OOD_KINDS} or a (d, d) PSD array, got {ood!r}")
    options = dict(d=d, k=k, n=n, m=m, ood=ood, rotate=bool(rotate), inputs=inputs, labels=labels, dtype=dtype)
    if isinstance(ood, str) and n * d < _geometry.GRAM_MIN_SIZE:
        # one compiled set-up program per shape and options, instead of some forty eager operations each compiled
        # for its shape (a first draw with its Problem, d = 200, k = 3, n = 40, in a new process: 2.4 s eagerly).
        # A given Σ_ood array keeps the eager route, whose checks raise at once; so do large problems, whose
        # factorisation takes the host's BLAS (`linnet._geometry.thin_svd`)
        if not is_traced((key, eps, shift, v_star_scale, flip)):
            warn_regime(n, d, k)  # the Problem built inside the program is traced, so it cannot say so itself
        return _draw_compiled(key, eps, shift, v_star_scale, flip, **options)
    return _draw(key, eps, shift, v_star_scale, flip, **options)


def _draw(key, eps, shift, v_star_scale, flip, *, d, k, n, m, ood, rotate, inputs, labels, dtype) -> Problem:
    """The draw of `subspace_shift` (its arguments checked): see there."""
    kS, kB, kE, kU, kv, kZ = jax.random.split(key, 6)
    Bs = _orthonormal_columns(kB, d, k, dtype).T
    E = _orthonormal_columns(kE, d, k, dtype, against=Bs.T).T
    theta = 2 * jnp.arcsin(jnp.asarray(eps, dtype) / 2)
    B0 = jnp.cos(theta) * Bs + jnp.sin(theta) * E
    if rotate:
        B0 = random_orthogonal(kU, k, dtype) @ B0
    v_star = jnp.asarray(v_star_scale, dtype) * _normal(kv, (k,), dtype)
    if inputs == "subspace":
        VS = _orthonormal_columns(kS, d, m, dtype)
        X = _normal(kZ, (n, m), dtype) @ VS.T
    elif inputs == "isotropic":
        if m != n:
            raise ValueError(f"`inputs='isotropic'` draws rows N(0, I_d), so dim S = n; got m = {m} != n = {n}")
        X = _normal(kZ, (n, d), dtype)
        VS = None  # S = rowspace(X); a basis is only formed if a Σ_ood needs P_S (a QR of X.T is costly at scale)
    else:
        raise ValueError(f"`inputs` must be 'subspace' or 'isotropic', got {inputs!r}")
    if isinstance(ood, str):
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
    y = None
    if labels == "sign":
        f = X @ (Bs.T @ v_star)
        y = jnp.where(f >= 0, 1.0, -1.0).astype(dtype)
        flips = jax.random.bernoulli(jax.random.fold_in(key, 7), jnp.asarray(flip, dtype), (n,))
        y = jnp.where(flips, -y, y)
    return Problem(X, B0, Bs, v_star, y=y, sigma_ood=sigma)


_draw_compiled = partial(
    jit, setup=True, static_argnames=("d", "k", "n", "m", "ood", "rotate", "inputs", "labels", "dtype")
)(_draw)


def subspace_shifts(
    keys,
    eps,
    *,
    d: int,
    k: int,
    n: int,
    m: int | None = None,
    v_star_scale=None,
    inputs: str = "subspace",
    labels: str = "linear",
    flip: float = 0.0,
):
    """A batch of `subspace_shift` problems of one shape, one per key and ε: a `Problem` pytree whose every array
    has a leading batch axis N (the input to `sweep`).

    **Arguments:** `keys` (N,) `jax.random` keys, `eps` (N,) feature errors (or one ε for all), `d`, `k`, `n`, `m`,
    `inputs`, `labels`, `flip` as `subspace_shift`, `v_star_scale` (N,) or None (1). Σ_ood is the default I.

    **Returns:** a batched `Problem`.
    """
    keys = jnp.asarray(keys)
    typed = jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
    if (typed and keys.ndim != 1) or (not typed and (keys.ndim != 2 or keys.shape[1] != 2)):
        raise ValueError(
            f"`keys` must be N jax.random keys (jax.random.split(key, N)), got shape {keys.shape}, dtype {keys.dtype}"
        )
    N = keys.shape[0]
    eps = _batch_arg(eps, "eps", N)
    if not is_traced(eps) and not np.all((np.asarray(eps) >= 0) & (np.asarray(eps) <= math.sqrt(2))):
        raise ValueError(
            f"`eps` must be in [0, sqrt(2)] (feature distance between orthonormal frames), got {np.asarray(eps)}"
        )
    scale = jnp.ones_like(eps) if v_star_scale is None else _batch_arg(v_star_scale, "v_star_scale", N)
    if not is_traced(scale) and not np.all(np.isfinite(np.asarray(scale)) & (np.asarray(scale) >= 0)):
        raise ValueError(f"`v_star_scale` must be finite numbers >= 0, got {np.asarray(scale)}")
    # the single generator's static checks, once, before the batch is traced
    subspace_shift_checks(d=d, k=k, n=n, m=m, inputs=inputs, labels=labels, flip=flip)
    return _batched_generator(d, k, n, m, inputs, labels, float(flip))(keys, eps, scale)


def _batch_arg(x, name: str, N: int) -> jax.Array:
    """A per-instance real of a batch: a scalar (the same for all) or an (N,) array, as the default float dtype."""
    x = jnp.asarray(x, dtype=jnp.result_type(float))
    if x.ndim > 1 or (x.ndim == 1 and x.shape[0] != N):
        raise ValueError(f"`{name}` must be one number or one per key ({N},), got shape {x.shape}")
    return jnp.broadcast_to(x, (N,))


def subspace_shift_checks(*, d, k, n, m, inputs, labels, flip) -> None:
    """The shape and option checks of `subspace_shift` that do not depend on the draw."""
    for name, val in (("d", d), ("k", k), ("n", n)):
        if int(val) != val or val < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {val}")
    if m is None and n > d:
        raise ValueError(f"`n` = {n} > `d` = {d}: dim S defaults to n, which must be <= d; pass n <= d (or m <= d)")
    m = n if m is None else m
    if int(m) != m or not 1 <= m <= d:
        raise ValueError(f"`m` (dim S) must be an integer in [1, d = {d}], got {m}")
    if 2 * k > d:
        raise ValueError(f"`k` must satisfy 2k <= d so that B0 can be rotated away from B_star, got k={k}, d={d}")
    if inputs not in ("subspace", "isotropic"):
        raise ValueError(f"`inputs` must be 'subspace' or 'isotropic', got {inputs!r}")
    if inputs == "isotropic" and m != n:
        raise ValueError(f"`inputs='isotropic'` draws rows N(0, I_d), so dim S = n; got m = {m} != n = {n}")
    if labels not in ("linear", "sign"):
        raise ValueError(f"`labels` must be 'linear' (y = X w_star) or 'sign' (y = sign(X w_star)), got {labels!r}")
    if not is_traced(flip) and not 0 <= flip <= 0.5:
        raise ValueError(f"`flip` must be a probability in [0, 0.5], got {flip}")
    if labels == "linear" and not is_traced(flip) and flip != 0:
        raise ValueError("`flip` applies to labels='sign' only")


@functools.lru_cache(maxsize=32)
def _batched_generator(d, k, n, m, inputs, labels="linear", flip=0.0):
    def one(args):
        key, e, s = args
        return subspace_shift(key, d=d, k=k, n=n, m=m, eps=e, v_star_scale=s, inputs=inputs, labels=labels, flip=flip)

    # lax.map (one instance at a time inside one compiled loop), not vmap: on this project's 2-core CPU machines a
    # vmapped generator hung inside XLA with no CPU use (reproducibly: 16 problems at d = 500, 64 at d = 200;
    # never with one instance per iteration). Generation is a small part of a sweep's cost either way.
    return jit(lambda keys, eps, scale: jax.lax.map(one, (keys, eps, scale)), setup=True)


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
