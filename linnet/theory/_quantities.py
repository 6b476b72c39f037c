"""The pure quantities of docs/theory.md: functions of the problem and the initial head in `jax.numpy` (jit-,
vmap- and grad-safe), no simulation. Numbering: submission (see `linnet.theory`)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .._closed_forms import lp_limit_head
from .._errors import ood_error_of_predictor
from .._geometry import feature_distance
from .._problem import Problem
from .._validate import as_float_array, check_head, check_real, check_value, is_traced


def head_alignment_sq(v0: jax.Array, v_star: jax.Array) -> jax.Array:
    """φ² as printed in Theorem 3.1 (submission numbering; camera-ready number unverified): (v0ᵀv⋆)² − (v⋆ᵀv⋆)².

    It is negative whenever |v0ᵀv⋆| < ‖v⋆‖², a zero head included, so φ is then not real (docs/theory.md).
    """
    v0, v_star = _two_heads(v0, v_star)
    return (v0 @ v_star) ** 2 - (v_star @ v_star) ** 2


def _two_heads(v0, v_star):
    """`v0` and `v_star` as finite (k,) arrays of one dtype, or an error naming the argument."""
    v_star = as_float_array(v_star, "v_star", 1)
    v0 = as_float_array(v0, "v0", 1)
    if v0.shape != v_star.shape:
        raise ValueError(f"`v0` must have the shape of `v_star`, {v_star.shape}, got {v0.shape}")
    dtype = jnp.result_type(v0, v_star)
    msg = "`v0` and `v_star` must be finite (got NaN or inf)"
    bad = ~(jnp.all(jnp.isfinite(v0)) & jnp.all(jnp.isfinite(v_star)))
    return check_value((v0.astype(dtype), v_star.astype(dtype)), bad, msg)


def head_alignment_error(v0: jax.Array, v_star: jax.Array, *, form: str = "abs") -> jax.Array:
    """The head alignment error φ of Theorem 3.1 (submission numbering; camera-ready number unverified).

    - `form="abs"` (default, camera-ready *(unverified)* and linnet's convention): φ = √|(v0ᵀv⋆)² − (v⋆ᵀv⋆)²|.
    - `form="printed"`: φ = √((v0ᵀv⋆)² − (v⋆ᵀv⋆)²) exactly as printed in the submission: NaN where the
      square is negative (φ not real), so a bound built from it is visibly undefined there.

    **Arguments:** `v0`, `v_star` of shape (k,). **Returns:** a scalar.
    """
    sq = head_alignment_sq(v0, v_star)
    if form == "abs":
        return jnp.sqrt(jnp.abs(sq))
    if form == "printed":
        return jnp.where(sq >= 0, jnp.sqrt(jnp.where(sq >= 0, sq, 0.0)), jnp.nan)
    raise ValueError(f"`form` must be 'abs' or 'printed', got {form!r}")


def prob_head_alignment_below(delta: float, v_star, scale: float) -> float:
    """P(φ² < δ) for a random head v0 ~ N(0, scale² I), in closed form (φ in the absolute-value form).

    v0ᵀv⋆ ~ N(0, scale² ‖v⋆‖²), and φ² < δ iff (v0ᵀv⋆)² lies within δ of ‖v⋆‖⁴; the probability is a difference
    of normal CDFs. It tends to 0 as δ → 0: φ is bounded away from 0 with high probability (the random-head
    corollary, camera-ready Corollary 3.3, unverified). For a zero head φ² = ‖v⋆‖⁴ deterministically.
    """
    from scipy.stats import norm

    delta = check_real(delta, "delta", lower=0.0)
    scale = check_real(scale, "scale", lower=0.0)
    v_star = np.asarray(as_float_array(v_star, "v_star", 1))
    a = float(np.sum(v_star**2))  # ‖v⋆‖²
    if scale == 0 or a == 0:  # φ² = ‖v⋆‖⁴ for a zero head; φ = 0 for any head when v⋆ = 0
        return float(a**2 < delta)
    sd = scale * math.sqrt(a)
    lo = math.sqrt(max(a**2 - delta, 0.0))
    hi = math.sqrt(a**2 + delta)
    return float(2 * (norm.cdf(hi / sd) - norm.cdf(lo / sd)))


def feature_error(problem: Problem) -> jax.Array:
    """ε = d(B0, B⋆) = min over orthogonal U of ‖B0 − U B⋆‖₂ (Section 3.1)."""
    return feature_distance(problem.B0, problem.B_star)


def row_basis(B: jax.Array) -> jax.Array:
    """(d, k) orthonormal basis of rowspace(B) (B of full row rank)."""
    _, _, vt = jnp.linalg.svd(B, full_matrices=False)
    return vt.T


def cos_theta_k(problem: Problem, against: str = "complement") -> jax.Array:
    """cos θ_k(R, S⊥) (`against="complement"`) or cos θ_k(R, S) (`against="id"`), R = rowspace(B0).

    Definition (principal angles, Section 3): the k-th largest singular value of Eᵀ F for orthonormal bases E of R
    (dim k) and F of the other subspace; 0 when that subspace has dimension < k. Computed without a basis of S⊥:
    Eᵀ F Fᵀ E = Eᵀ P_S⊥ E, so cos θ_k(R, S⊥) = σ_k(P_S⊥ E) = σ_k(E − V Vᵀ E) (V a basis of S), and
    cos θ_k(R, S) = σ_k(Eᵀ V). Camera-ready writes cos θ_max(R0, S⊥) for the former.
    """
    E = row_basis(problem.B0)
    V = problem.id_basis
    k = problem.k
    if against == "complement":
        # σ_min(P_S⊥ E): the columns of P_S⊥ E have Gram matrix Eᵀ P_S⊥ E; no cancellation as in √(1 − σ²)
        return jnp.linalg.svd(E - V @ (V.T @ E), compute_uv=False)[k - 1]
    if against == "id":
        sv = jnp.linalg.svd(E.T @ V, compute_uv=False)
        return sv[k - 1] if sv.shape[0] >= k else jnp.zeros((), E.dtype)
    raise ValueError(f"`against` must be 'complement' (S⊥) or 'id' (S), got {against!r}")


def _sigma_min(sigma: jax.Array) -> jax.Array:
    return jnp.clip(jnp.linalg.eigvalsh(sigma)[0], 0.0, None)


EPS_FORMS = ("section", "theorem")


def theorem_3_1_eps(problem: Problem, eps_form: str = "section") -> jax.Array:
    """The ε of Theorem 3.1's right side, in either reading (docs/theory.md, "Theorem 3.1, as printed"):

    - `"section"` (default): Section 3.1's ε = d(B0, B⋆) = min_U ‖B0 − U B⋆‖₂;
    - `"theorem"`: the theorem's own definition, squared: ε = min_U ‖B0 − U B⋆‖₂².

    For d(B0, B⋆) < 1 the squared reading subtracts less, so its bound is the stronger claim; at ε = 0 the two
    coincide.
    """
    if eps_form not in EPS_FORMS:
        raise ValueError(
            f"`eps_form` must be one of {EPS_FORMS} (Section 3.1's ε or the theorem's ε²), got {eps_form!r}"
        )
    eps = feature_error(problem)
    return eps if eps_form == "section" else eps**2


def theorem_3_1_rhs0(problem: Problem, v0: jax.Array, *, form: str = "abs") -> jax.Array:
    """RHS₀ = (cos θ_k(R, S⊥) / √k) · min(φ, φ² / ‖w⋆‖₂) / (1 + ‖w⋆‖₂)²: Theorem 3.1's right side before its
    constant and its ε term (`form` as in `head_alignment_error`). **Returns:** a scalar ≥ 0 (NaN where the
    printed φ is not real)."""
    v0 = check_head(problem, v0)
    w_norm = jnp.linalg.norm(problem.w_star)
    phi = head_alignment_error(v0, problem.v_star, form=form)
    return cos_theta_k(problem) / math.sqrt(problem.k) * jnp.minimum(phi, phi**2 / w_norm) / (1 + w_norm) ** 2


def ft_ood_lower_bound(
    problem: Problem,
    v0: jax.Array,
    *,
    form: str = "abs",
    camera_ready: bool = False,
    eps_form: str = "section",
    c: float = 1.0,
    lam: float = 1.0,
) -> jax.Array:
    """Theorem 3.1 (submission numbering; camera-ready number unverified): a lower bound on √L_ood(v_ft(t),
    B_ft(t)) for all t,

        √L_ood ≥ c · RHS₀ − λ · ε,   RHS₀ = (cos θ_k(R, S⊥) / √k) · min(φ, φ² / ‖w⋆‖₂) / (1 + ‖w⋆‖₂)²,

    with R = rowspace(B0) and φ the head alignment error. As printed, c = λ = 1 (the defaults). Other values
    state a candidate corrected inequality (`linnet.stress` measures which ones survive).

    **Arguments:**

    - `form`: φ's reading, as in `head_alignment_error`: "abs" (linnet's) or "printed" (NaN where the printed φ²
      is negative).
    - `eps_form`: ε's reading, as in `theorem_3_1_eps`: "section" (Section 3.1's d(B0, B⋆)) or "theorem" (the
      theorem's own, squared).
    - `camera_ready=True` multiplies the right side by √σ_min(Σ_ood) *(unverified camera-ready form)*, for
      L_ood = (Bᵀv − w⋆)ᵀ Σ_ood (Bᵀv − w⋆). The default (submission) form is meant for Σ_ood = I.
    - `c`, `lam`: the constants c and λ.

    Hypotheses (see `check_assumptions`): B0, B⋆ orthonormal rows, cos θ_k(R, S⊥) > 0, 1 ≤ k < n < d, k < d − n.

    **Returns:** a scalar (may be negative: then the bound says nothing).
    """
    if not is_traced(c):
        check_real(c, "c")
    if not is_traced(lam):
        check_real(lam, "lam")
    bound = c * theorem_3_1_rhs0(problem, v0, form=form) - lam * theorem_3_1_eps(problem, eps_form)
    if camera_ready:
        if not problem.default_sigma_ood:  # the default Σ_ood = I has σ_min = 1
            bound = jnp.sqrt(_sigma_min(problem.sigma_ood)) * bound
    return bound


C_STAR_K1 = 0.5  # inf of √L_ood(FT limit)/RHS₀ for k = 1, ε = 0 (see `theorem_3_1_ratio_k1`)


def theorem_3_1_ratio_k1(v_star_norm, ps_b_sq, v0):
    """√L_ood(v_ft^∞, B_ft^∞) / RHS₀ in closed form, for k = 1, ε = 0 (B0 = B⋆ = b, a unit row), Σ_ood = I.

    With V = |v⋆|, α² = ‖P_S b‖² < 1 (`ps_b_sq`), v0 of v⋆'s sign and c = v0² − α² > 0 (so the limit has v0's
    sign, fact 5): the S⊥ part of the limiting error is (v∞ − V) P_S⊥ b and its S part is 0, so
    √L_ood = |v∞ − V| √(1 − α²), while RHS₀ = √(1 − α²) · V · min(√δ, δ)/(1 + V)² with δ = |v0² − V²|. Hence

        ratio = |v∞ − V| (1 + V)² / (V · min(√δ, δ)),

    where u = v∞² − V² solves u² + u (V² + α² − σδ) − σδV² = 0 (σ = sign(v0² − V²)), taken in a
    cancellation-free form. As δ → 0 the ratio tends to (1 + V)²/(2 (V² + α²)) > (1 + V)²/(2 (V² + 1)), and over
    all δ, V and α² its infimum is 1/2 (`C_STAR_K1`; not attained): it is approached as ‖v⋆‖ → ∞, ‖P_S b‖ → 1 and
    v0 → v⋆. So at t = ∞ the printed constant c = 1 fails for k = 1, and c = 1/2 is the largest that holds.

    **Arguments:** scalars (broadcastable arrays). **Returns:** the ratio.
    """
    V = jnp.abs(jnp.asarray(v_star_norm))
    a2 = jnp.asarray(ps_b_sq)
    x2 = jnp.asarray(v0) ** 2
    sig = jnp.sign(x2 - V**2)
    delta = jnp.abs(x2 - V**2)
    b = V**2 + a2 - sig * delta
    u = 2 * sig * delta * V**2 / (b + jnp.sqrt(b * b + 4 * sig * delta * V**2))
    dv = u / (jnp.sqrt(V**2 + u) + V)
    return jnp.abs(dv) * (1 + V) ** 2 / (V * jnp.minimum(jnp.sqrt(delta), delta))


def theorem_3_1_corrected(problem: Problem, v0: jax.Array) -> jax.Array:
    """An empirical corrected form of Theorem 3.1 (linnet's, not the paper's; no proof):

        √L_ood(v_ft(t), B_ft(t)) ≥ ½ · RHS₀ − (1 + ‖w⋆‖₂) · ε,   ε = d(B0, B⋆) (Section 3.1's reading).

    Why these constants: c = ½ is the exact tight constant for k = 1 at t = ∞ (`C_STAR_K1`); and an ε term with
    a constant λ cannot hold, since on instances where B0's error cancels the head's on S⊥ (√L_ood(∞) = 0) the
    required λ grows like ‖w⋆‖ (paper_repro.md, "the ε term"). `linnet stress` searches it; the tests pin the
    margin measured there. **Returns:** a scalar.
    """
    return ft_ood_lower_bound(problem, v0, c=C_STAR_K1, lam=1.0 + jnp.linalg.norm(problem.w_star))


def lp_limit(problem: Problem, v0: jax.Array) -> jax.Array:
    """v_lp^∞, the limit of linear probing from v0 (docs/theory.md, "Methods"): v0's component in null(F) plus F⁺ y,
    F = X B0ᵀ. The LP predictor is B0ᵀ v_lp^∞."""
    return lp_limit_head(problem, check_head(problem, v0))


def lp_ood_error(problem: Problem, v0: jax.Array) -> jax.Array:
    """Exact L_ood(v_lp^∞, B0). Evaluated over a family of problems at several ε it gives LP's OOD error as a
    function of ε (Theorem 3.2 predicts it vanishes as ε → 0; the tests measure the rate)."""
    return ood_error_of_predictor(problem, problem.B0.T @ lp_limit(problem, v0))


def ft_limit_k1(problem: Problem, v0: jax.Array, *, sign: float | None = None, lr_ratio: float = 1.0):
    """The exact fine-tuning limit for k = 1 (docs/theory.md, "Reduced coordinates").

    With two learning rates (`lr_ratio` ρ = η_v/η_B, see `two_learning_rates`) the conserved quantity is
    v²/η_v − ‖b‖²/η_B, and the same argument gives v∞² − ρ a²/v∞² = c with c = v0² − ρ‖P_S b0‖², so
    v∞² = (c + √(c² + 4ρa²))/2; ρ = 1 is plain FT. As ρ → ∞ (η_B/η_v → 0), v∞ → a/‖P_S b0‖.

    With b0 the row of B0, c = v0² − ‖P_S b0‖² and a = ‖P_S w⋆‖, facts 1, 2 and 4 give
    v∞² − a²/v∞² = c, so v∞² = (c + √(c² + 4a²))/2, and B∞ᵀv∞ = P_S w⋆ + v∞ P_S⊥ b0; the features are
    B∞ = P_S⊥ b0 + P_S w⋆ / v∞ (one row). When c > 0, v never crosses 0 and the sign is v0's. When c ≤ 0 the
    sign is decided by the path: pass `sign` if known, else it is read from a `fine_tune` run (not closed form).

    **Returns:** `(v_inf (1,), B_inf (1, d))`.
    """
    if problem.k != 1:
        raise ValueError(f"ft_limit_k1 needs k = 1, got k = {problem.k}")
    v0 = check_head(problem, jnp.reshape(v0, (1,)) if np.ndim(v0) == 0 else v0)  # a scalar head is (1,)
    if sign is not None and not is_traced(sign) and float(sign) not in (1.0, -1.0):
        raise ValueError(f"`sign` (the sign of v∞) must be +1 or -1 (or None: decided by the flow), got {sign!r}")
    V = problem.id_basis
    b0 = problem.B0[0]
    ps_b0 = V @ (V.T @ b0)
    ps_w = V @ (V.T @ problem.w_star)
    if not (np.isfinite(lr_ratio) and lr_ratio > 0):
        raise ValueError(f"`lr_ratio` (η_v/η_B) must be a finite number > 0, got {lr_ratio}")
    c = v0[0] ** 2 - lr_ratio * (ps_b0 @ ps_b0)
    a2 = lr_ratio * (ps_w @ ps_w)
    v_abs = jnp.sqrt((c + jnp.sqrt(c**2 + 4 * a2)) / 2)
    if sign is None:
        if is_traced(c):
            s = jnp.sign(v0[0])  # inside jit/grad: valid where c > 0, which callers must ensure
        elif float(c) > 0:
            s = jnp.sign(v0[0])
        else:
            from .._methods.variants import two_learning_rates

            s = jnp.sign(two_learning_rates(problem, v0, [jnp.inf], eta_v=lr_ratio, eta_B=1.0).v[-1, 0])
    else:
        s = jnp.sign(jnp.asarray(sign, problem.X.dtype))  # traced: ±1 by sign(), never a scale
    v_inf = s * v_abs
    B_inf = (b0 - ps_b0) + ps_w / v_inf
    return v_inf.reshape(1), B_inf.reshape(1, -1)
