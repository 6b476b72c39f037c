"""Accuracy per tolerance: the FT predictor at every saved time, at the default rtol = 1e-8, against an independent
closed form, on every path (eager, under `jit` with the problem traced, and diffrax's own Kvaerno5 as a control).

The reference is the whitened, aligned k = 1 flow, solved here from scratch. With X = √c Q (Q orthonormal rows, so
XᵀX = c P_S) and P_S b0, P_S w⋆ both along one unit vector â ∈ S, the moving part of b stays on â, and with
α = âᵀb, p = v α (the predictor's S-part is p â):

    dv/dt = −2c α (v α − A),  dα/dt = −2c v (v α − A)   (A = âᵀ w⋆; L̂ = ‖X bᵀ v − y‖², no ½)

so λ = v² − α² is conserved (balancedness), v² + α² = √(λ² + 4p²), and dp/dt = −2c √(λ² + 4p²) (p − A): one
separable scalar equation, t(p) = ∫_{p0}^{p} dq / (2c √(λ² + 4q²) (A − q)), computed by its antiderivative
(checked against scipy's `quad`) and inverted by `brentq`. Then v² = (λ + √(λ² + 4p²))/2 (its sign is v0's when
λ > 0) and w(t) = p â + v P_{S⊥} b0.

Tolerance: the relative error |w(t) − w_ref(t)| / |w(t)| ≤ 1e-7 at every saved time (10 × rtol, the global error an
rtol-1e-8 local-error controller is expected to keep on these short, non-chaotic paths); the reference is exact to
about 1e-13 (brentq's tolerance below). Before the solver stepped onto the saved times, the jit path
interpolated them with the step's cubic Hermite polynomial and was off by up to 1e-6 here.
"""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import quad
from scipy.optimize import brentq

import linnet

TIMES = np.array([0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, np.inf])
D, N = 24, 8


def _aligned_instance(seed):
    """A whitened k = 1 problem whose P_S b0 and P_S w⋆ are parallel (the reduced flow is two-dimensional).
    **Returns** (problem, v0, reference data (c, A, â, P_S⊥ b0, α0))."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((D, D)))[0]  # columns: â, S's other directions, then S⊥
    a_hat, s_basis, perp = basis[:, 0], basis[:, :N], basis[:, N:]
    c = float(np.exp(rng.uniform(np.log(0.2), np.log(5.0))))
    # rows span S and XᵀX = c P_S: S's basis as rows, mixed by a random rotation (which keeps XᵀX)
    X = np.sqrt(c) * np.linalg.qr(rng.standard_normal((N, N)))[0] @ s_basis.T
    phi, psi = rng.uniform(0.3, 1.2, size=2)
    e_perp = perp @ (v := rng.standard_normal(D - N)) / np.linalg.norm(v)
    f_perp = perp @ (v := rng.standard_normal(D - N)) / np.linalg.norm(v)
    b0 = np.cos(phi) * a_hat + np.sin(phi) * e_perp  # unit row: B0 has orthonormal rows
    b_star = np.cos(psi) * a_hat + np.sin(psi) * f_perp
    v_star = float(rng.choice([-1, 1]) * np.exp(rng.uniform(np.log(0.3), np.log(3.0))))
    v0 = float(rng.choice([-1, 1]) * np.exp(rng.uniform(np.log(0.05), np.log(2.0))))
    w_star = v_star * b_star
    problem = linnet.Problem(jnp.asarray(X), jnp.asarray(b0[None]), jnp.asarray(b_star[None]), jnp.asarray([v_star]),
                             y=jnp.asarray(X @ w_star))  # fmt: skip
    return problem, jnp.asarray([v0]), (c, float(a_hat @ w_star), a_hat, np.sin(phi) * e_perp, np.cos(phi))


def _time_to(p, p0, c, A, lam):
    """t(p) = ∫_{p0}^{p} dq / (2c √(λ² + 4q²)(A − q)) by its antiderivative (with u = A − q the integrand is
    1/(u √(4u² − 8Au + R²)), R² = λ² + 4A²; a table integral):
    F(q) = ln|(2R² − 8A(A − q) + 2R √(λ² + 4q²)) / (A − q)| / R.
    `test_the_antiderivative_matches_quadrature` checks it against scipy's `quad`."""
    R = np.sqrt(lam**2 + 4 * A**2)

    def F(q):
        return np.log(abs((2 * R**2 - 8 * A * (A - q) + 2 * R * np.sqrt(lam**2 + 4 * q**2)) / (A - q))) / R

    return (F(p) - F(p0)) / (2 * c)


def _closed_form(times, v0, c, A, a_hat, b_perp, alpha0):
    """w(t) of the aligned whitened flow (module docstring), at each of `times` (inf: the limit)."""
    p0 = v0 * alpha0
    lam = v0**2 - alpha0**2
    out = []
    for t in times:
        far = A - (A - p0) * 1e-13  # p moves monotonically from p0 towards A and reaches it only as t → ∞
        if np.isinf(t) or _time_to(far, p0, c, A, lam) <= t:
            p = A  # within 1e-13 (A − p0) of the limit
        elif t == 0:
            p = p0
        else:
            p = brentq(lambda q, t=t: _time_to(q, p0, c, A, lam) - t, p0, far, xtol=1e-16, rtol=1e-15, maxiter=500)
        v_sq = (lam + np.sqrt(lam**2 + 4 * p**2)) / 2
        if lam > 0:
            v = np.sign(v0) * np.sqrt(v_sq)
        else:  # α keeps its sign instead, and v = p / α
            alpha = np.sign(alpha0) * np.sqrt(v_sq - lam)
            v = p / alpha
        out.append(p * a_hat + v * b_perp)
    return np.array(out)


SEEDS = range(8)


@pytest.fixture(scope="module")
def cases():
    out = []
    for seed in SEEDS:
        problem, v0, data = _aligned_instance(seed)
        out.append((problem, v0, _closed_form(TIMES, float(v0[0]), *data)))
    return out


def _worst(predictors, refs):
    return max(
        float(np.max(np.linalg.norm(np.asarray(w) - r, axis=1) / np.linalg.norm(r, axis=1)))
        for w, r in zip(predictors, refs, strict=True)
    )


def test_the_antiderivative_matches_quadrature():
    """The table integral in `_time_to` equals scipy's adaptive quadrature of the integrand, to 1e-9 relative."""
    for lam, A, p0 in ((0.7, 1.3, 0.1), (-0.4, -0.8, 0.05), (0.2, 2.0, 2.5), (1.5, -0.3, 0.4)):
        for frac in (0.3, 0.9, 0.999):
            p = p0 + frac * (A - p0)

            def integrand(q, lam=lam, A=A):
                return 1 / (2 * 1.7 * np.sqrt(lam**2 + 4 * q**2) * (A - q))

            want = quad(integrand, p0, p, epsrel=1e-12)[0]
            assert _time_to(p, p0, 1.7, A, lam) == pytest.approx(want, rel=1e-9)


def test_the_closed_form_reference_solves_its_own_ode():
    """The reference is checked against its own ODE by finite differences (independently of linnet): dp/dt from a
    central difference of the closed form equals −2c √(λ² + 4p²)(p − A) to 1e-6."""
    _, v0, (c, A, a_hat, b_perp, alpha0) = _aligned_instance(3)
    v0 = float(v0[0])
    lam = v0**2 - alpha0**2
    for t in (0.05, 0.4, 2.0):
        h = 1e-4
        w = _closed_form(np.array([t - h, t, t + h]), v0, c, A, a_hat, b_perp, alpha0)
        p = w @ a_hat
        dp = (p[2] - p[0]) / (2 * h)
        assert dp == pytest.approx(-2 * c * np.sqrt(lam**2 + 4 * p[1] ** 2) * (p[1] - A), rel=1e-6)


def test_eager_default_meets_ten_rtol_at_every_saved_time(cases):
    preds = [linnet.fine_tune(p, v0, TIMES).predictor for p, v0, _ in cases]
    assert _worst(preds, [r for *_, r in cases]) <= 1e-7


def test_jit_with_traced_problem_meets_ten_rtol_at_every_saved_time(cases):
    """Under `jit` with the problem traced the default cannot read cond(X) from the data, so it runs the implicit
    FusedKvaerno5 on these non-stiff paths: long steps, which interpolated saves did not survive."""
    f = jax.jit(lambda p, v0: linnet.fine_tune(p, v0, TIMES).predictor)
    preds = [f(p, v0) for p, v0, _ in cases]
    assert _worst(preds, [r for *_, r in cases]) <= 1e-7


def test_diffrax_kvaerno5_meets_ten_rtol_at_every_saved_time(cases):
    preds = [linnet.fine_tune(p, v0, TIMES, solver=dfx.Kvaerno5()).predictor for p, v0, _ in cases[:3]]
    assert _worst(preds, [r for *_, r in cases[:3]]) <= 1e-7


def test_error_scales_with_rtol(cases):
    """Tolerance proportionality: at rtol = 1e-10 the jit path's worst error is at least 10× smaller than at 1e-8
    (a floor that does not move with rtol, such as interpolation error, would fail this)."""
    f = jax.jit(lambda p, v0, rtol: linnet.fine_tune(p, v0, TIMES, rtol=rtol, atol=rtol * 1e-2).predictor,
                static_argnums=2)  # fmt: skip
    refs = [r for *_, r in cases]
    loose = _worst([f(p, v0, 1e-8) for p, v0, _ in cases], refs)
    tight = _worst([f(p, v0, 1e-10) for p, v0, _ in cases], refs)
    assert tight <= loose / 10


def _with_singular_values(s, d=8, k=1, seed=0):
    rng = np.random.default_rng(seed)
    n = len(s)
    U = np.linalg.qr(rng.standard_normal((n, n)))[0]
    V = np.linalg.qr(rng.standard_normal((d, n)))[0]
    X = U @ np.diag(s) @ V.T
    B = np.linalg.qr(rng.standard_normal((d, k)))[0].T
    return linnet.Problem(jnp.asarray(X), jnp.asarray(B), jnp.asarray(B), jnp.asarray(rng.standard_normal(k)))


def test_a_limit_below_the_rounding_floor_is_warned_about():
    """With singular values of X spanning 3 … 1e-6, eps cond(X)² = 2e-3 > rtol: the slowest mode's velocity is below
    the rounding noise of the field, so the t = ∞ state cannot be resolved to rtol and FT says so; with a spread of
    3 … 0.1 (eps cond² = 2e-13) it does not. Finite times alone are not concerned."""
    bad = _with_singular_values([3.0, 1.0, 1e-6])
    with pytest.warns(UserWarning, match=r"cond\(X\)² · eps = 2\.0e-03 exceeds rtol"):
        linnet.fine_tune(bad, jnp.asarray([0.5]), [0.0, np.inf])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        linnet.fine_tune(_with_singular_values([3.0, 1.0, 0.1]), jnp.asarray([0.5]), [0.0, np.inf])
        linnet.fine_tune(bad, jnp.asarray([0.5]), [0.0, 1.0])


def test_proposition_3_1_says_nothing_outside_its_hypothesis_or_the_resolution():
    """`statements.proposition_3_1` is NaN (the search drops it) where w⋆ ∈ rowspace(B0) (here B0 = B⋆) and where
    eps cond(X)² > 1e-8; a finite slack otherwise."""
    import warnings

    from linnet.testing import statements

    same = _with_singular_values([3.0, 1.0, 0.5], k=1)  # B0 = B⋆: w⋆ in rowspace(B0)
    assert np.isnan(float(statements.proposition_3_1(same, jnp.asarray([0.5]))))
    other = same.replace(B0=jnp.asarray(np.linalg.qr(np.random.default_rng(3).standard_normal((8, 1)))[0].T))
    assert np.isfinite(float(statements.proposition_3_1(other, jnp.asarray([0.5]))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        flat = _with_singular_values([3.0, 1.0, 1e-6], k=1)
        flat = flat.replace(B0=other.B0)
        assert np.isnan(float(statements.proposition_3_1(flat, jnp.asarray([0.5]))))
