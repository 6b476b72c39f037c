"""Methods beyond the paper, each checked against an independent reference: full-state scipy
integrations written here from the method's definition, NumPy loops, closed forms, dense grids."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import linnet
from linnet import theory

# scipy Radau at rtol 1e-10 on the full state against linnet at its default rtol 1e-8: agreement to 1e-6 leaves
# two orders of margin for the accumulated solver error (measured ≈ 1e-9 on these problems).
TOL = 1e-6


@pytest.fixture(scope="module")
def prob():
    """Gaussian inputs (well conditioned, so GD and the deeper flows converge quickly): d = 24, k = 2, n = 8."""
    return linnet.subspace_shift(jax.random.PRNGKey(3), d=24, k=2, n=8, eps=0.3, inputs="isotropic")


@pytest.fixture(scope="module")
def v0():
    return jnp.asarray([0.7, -0.4])


def _radau(rhs, y0, times):
    sol = solve_ivp(rhs, (0.0, max(times)), y0, method="Radau", t_eval=times, rtol=1e-10, atol=1e-12)
    assert sol.success
    return sol.y.T


def _full_grads(X, y, v, B):
    r = X @ (B.T @ v) - y
    g = X.T @ r
    return 2 * B @ g, 2 * np.outer(v, g)


# --- 1. two learning rates -------------------------------------------------------------------------------


def test_two_lr_matches_full_state_scipy_and_conserves_scaled_balance(prob, v0):
    X, y, k, d = np.asarray(prob.X), np.asarray(prob.y), prob.k, prob.d
    eta_v, eta_B = 1.0, 0.2

    def rhs(t, th):
        v, B = th[:k], th[k:].reshape(k, d)
        gv, gB = _full_grads(X, y, v, B)
        return np.concatenate([-eta_v * gv, (-eta_B * gB).ravel()])

    times = [0.3, 2.0, 10.0]
    ref = _radau(rhs, np.concatenate([np.asarray(v0), np.asarray(prob.B0).ravel()]), times)
    tr = linnet.two_learning_rates(prob, v0, times, eta_v=eta_v, eta_B=eta_B)
    for i in range(len(times)):
        v, B = ref[i, :k], ref[i, k:].reshape(k, d)
        np.testing.assert_allclose(tr.predictor[i], B.T @ v, atol=TOL)
    # v vᵀ/η_v − B Bᵀ/η_B is conserved (derived in the docstring; the ODE solver does not know it)
    Bt = np.asarray(tr.B)
    C = [np.outer(tr.v[i], tr.v[i]) / eta_v - Bt[i] @ Bt[i].T / eta_B for i in range(len(times))]
    C0 = np.outer(v0, v0) / eta_v - np.asarray(prob.B0) @ np.asarray(prob.B0).T / eta_B
    for c in C:
        np.testing.assert_allclose(c, C0, atol=1e-6)


def test_two_lr_extremes_are_lp_and_features_only(prob, v0):
    times = [0.5, 3.0, np.inf]
    lp = linnet.linear_probe(prob, v0, [0.5 * 2, 3.0 * 2, np.inf])
    a = linnet.two_learning_rates(prob, v0, times, eta_v=2.0, eta_B=0.0)
    np.testing.assert_allclose(a.predictor, lp.predictor, atol=1e-12)
    fo = linnet.features_only(prob, v0, [1.5, 9.0, np.inf])
    b = linnet.two_learning_rates(prob, v0, times, eta_v=0.0, eta_B=3.0)
    np.testing.assert_allclose(b.predictor, fo.predictor, atol=1e-12)


def _k1_problem(key=0):
    return linnet.subspace_shift(jax.random.PRNGKey(key), d=12, k=1, n=4, eps=0.4, inputs="isotropic")


@pytest.mark.parametrize("ratio", [0.25, 1.0, 8.0])
def test_two_lr_k1_limit_matches_closed_form(ratio):
    """k = 1: the limit from the conserved v²/η_v − ‖b‖²/η_B (theory.ft_limit_k1 with lr_ratio) equals the
    simulated limit (v0 large enough that c > 0, so the sign is v0's)."""
    p = _k1_problem()
    v0 = jnp.asarray([2.5])
    v_inf, B_inf = theory.ft_limit_k1(p, v0, lr_ratio=ratio)
    tr = linnet.two_learning_rates(p, v0, [np.inf], eta_v=ratio, eta_B=1.0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tr.v[-1], v_inf, rtol=1e-7)
    np.testing.assert_allclose(tr.predictor[-1], B_inf.T @ v_inf, atol=1e-7)


def test_two_lr_limit_as_feature_rate_vanishes_is_not_lp():
    """Finding: as η_B/η_v → 0 the *limit* tends to v∞ = ‖P_S w⋆‖/‖P_S b0‖ (B keeps its norm and rotates in S),
    not to LP's limit, although at every finite t the trajectory tends to LP's. Reference: the formula, from
    NumPy projections."""
    p = _k1_problem(1)
    v0 = jnp.asarray([0.8])
    V = np.asarray(p.id_basis)
    b0, w = np.asarray(p.B0[0]), np.asarray(p.w_star)
    v_lim = np.linalg.norm(V.T @ w) / np.linalg.norm(V.T @ b0)
    tr = linnet.two_learning_rates(p, v0, [np.inf], eta_v=1.0, eta_B=1e-4, rtol=1e-10, atol=1e-12)
    assert abs(abs(float(tr.v[-1, 0])) - v_lim) < 1e-3 * v_lim
    lp = linnet.linear_probe(p, v0, [np.inf])
    assert abs(float(lp.v[-1, 0]) - float(tr.v[-1, 0])) > 1e-2  # not LP's head
    # at a finite time the slow-feature trajectory is LP's to O(η_B)
    t = [5.0]
    a = linnet.two_learning_rates(p, v0, t, eta_v=1.0, eta_B=1e-6)
    np.testing.assert_allclose(a.predictor, linnet.linear_probe(p, v0, t).predictor, atol=1e-4)


# --- 3. L2-SP --------------------------------------------------------------------------------------------


def test_l2_sp_matches_full_state_scipy_and_keeps_s_perp(prob, v0):
    X, y, k, d = np.asarray(prob.X), np.asarray(prob.y), prob.k, prob.d
    lam_B, lam_v = 0.3, 0.05
    B0 = np.asarray(prob.B0)

    def rhs(t, th):
        v, B = th[:k], th[k:].reshape(k, d)
        gv, gB = _full_grads(X, y, v, B)
        return np.concatenate([-(gv + 2 * lam_v * v), (-(gB + 2 * lam_B * (B - B0))).ravel()])

    times = [0.5, 4.0]
    ref = _radau(rhs, np.concatenate([np.asarray(v0), B0.ravel()]), times)
    tr = linnet.l2_sp(prob, v0, times, lam_B=lam_B, lam_v=lam_v)
    Pperp = np.eye(d) - np.asarray(linnet.projection(prob.X))
    for i in range(len(times)):
        v, B = ref[i, :k], ref[i, k:].reshape(k, d)
        np.testing.assert_allclose(tr.predictor[i], B.T @ v, atol=TOL)
        np.testing.assert_allclose(B @ Pperp, B0 @ Pperp, atol=1e-8)  # the reference keeps S⊥ too


def test_l2_sp_limit_is_stationary_for_the_full_objective(prob, v0):
    """At t = ∞ the gradient of L̂ + λ_B‖B − B0‖² + λ_v‖v‖², by jax.grad on the full (v, B), vanishes."""
    lam_B, lam_v = 0.2, 0.1
    tr = linnet.l2_sp(prob, v0, [np.inf], lam_B=lam_B, lam_v=lam_v, rtol=1e-10, atol=1e-12)
    v, B = tr.at(-1)

    def obj(v, B):
        return jnp.sum((prob.X @ (B.T @ v) - prob.y) ** 2) + lam_B * jnp.sum((B - prob.B0) ** 2) + lam_v * v @ v

    gv, gB = jax.grad(obj, argnums=(0, 1))(v, B)
    assert float(jnp.max(jnp.abs(gv))) < 1e-7 and float(jnp.max(jnp.abs(gB))) < 1e-7
    assert float(jnp.linalg.norm(B - prob.B0)) > 1e-3  # it moved: not a trivial stationary point


def test_l2_sp_without_head_penalty_has_no_limit(prob, v0):
    with pytest.raises(ValueError, match="lam_v"):
        linnet.l2_sp(prob, v0, [np.inf], lam_B=0.1, lam_v=0.0)


# --- 4. partial tuning ----------------------------------------------------------------------------------


def test_features_only_matches_scipy_with_frozen_head(prob, v0):
    X, y, k, d = np.asarray(prob.X), np.asarray(prob.y), prob.k, prob.d
    vv = np.asarray(v0)

    def rhs(t, th):
        _, gB = _full_grads(X, y, vv, th.reshape(k, d))
        return -gB.ravel()

    times = [0.05, 0.5, 3.0]
    ref = _radau(rhs, np.asarray(prob.B0).ravel(), times)
    tr = linnet.features_only(prob, v0, [*times, np.inf])
    for i in range(len(times)):
        np.testing.assert_allclose(tr.B[i], ref[i].reshape(k, d), atol=1e-8)
    assert float(tr.train_loss[-1]) < 1e-20 * float(tr.train_loss[0]) + 1e-24  # the limit fits the data


def test_features_only_with_lp_head_and_perfect_features_does_not_move():
    p = linnet.subspace_shift(jax.random.PRNGKey(4), d=24, k=2, n=8, eps=0.0, inputs="isotropic")
    tr = linnet.features_only(p, jnp.asarray([0.3, 0.1]), [1.0, np.inf], lp_head=True)
    assert float(jnp.max(tr.feature_change)) < 1e-10
    # whereas with ε > 0 it must move to fit
    q = linnet.subspace_shift(jax.random.PRNGKey(4), d=24, k=2, n=8, eps=0.2, inputs="isotropic")
    assert float(linnet.features_only(q, jnp.asarray([0.3, 0.1]), [np.inf], lp_head=True).feature_change[-1]) > 1e-3


# --- 2. WiSE-FT and 5. early stopping -------------------------------------------------------------------


def test_wise_ft_quartic_and_optimal_alpha_against_a_dense_grid(prob, v0):
    lp = linnet.linear_probe(prob, v0, [np.inf])
    ft = linnet.fine_tune(prob, v0, [np.inf])
    fam = linnet.wise_ft(prob, (lp.v[-1], prob.B0), ft.at(-1))
    grid = np.linspace(-0.5, 1.5, 4001)
    # brute force: the error of the interpolated weights, formed explicitly
    vs = (1 - grid)[:, None] * np.asarray(lp.v[-1]) + grid[:, None] * np.asarray(ft.v[-1])
    Bs = (1 - grid)[:, None, None] * np.asarray(prob.B0) + grid[:, None, None] * np.asarray(ft.B[-1])
    errs = np.sum((np.einsum("gk,gkd->gd", vs, Bs) - np.asarray(prob.w_star)) ** 2, axis=1)
    np.testing.assert_allclose(np.polynomial.polynomial.polyval(grid, fam.quartic()), errs, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(errs[[1000, 3000]], [lp.ood_error[-1], ft.ood_error[-1]], rtol=1e-9)
    a_star, e_star = fam.optimal_alpha()
    inside = (grid >= 0) & (grid <= 1)
    assert e_star <= errs[inside].min() + 1e-12
    assert abs(a_star - grid[inside][np.argmin(errs[inside])]) <= 1e-3


def test_early_stopping_is_the_argmin_over_saved_times(prob, v0):
    times = np.concatenate([np.logspace(-3, 2, 40), [np.inf]])
    tr = linnet.fine_tune(prob, v0, times)
    es = linnet.early_stopping(tr)
    i = int(np.argmin(np.asarray(tr.ood_error)))
    assert es.index == i and es.time == times[i] and es.value == float(tr.ood_error[i])
    with pytest.raises(ValueError, match="metric"):
        linnet.early_stopping(tr, "accuracy")


def test_theorem_3_1_counterexample_persists_under_early_stopping():
    """The bound claims all t; early-stopped FT (min over a dense grid) is below it on the pinned instance."""
    p, v0 = linnet.stress.theorem_3_1_counterexample()
    tr = linnet.fine_tune(p, v0, np.concatenate([np.logspace(-3, 3, 60), [np.inf]]))
    best = linnet.early_stopping(tr)
    assert np.sqrt(best.value) < float(theory.ft_ood_lower_bound(p, v0))


# --- 6. gradient descent --------------------------------------------------------------------------------


def test_gd_equals_numpy_loop_iteration_by_iteration(prob, v0):
    lr = 0.01
    X, y = np.asarray(prob.X), np.asarray(prob.y)
    v, B = np.asarray(v0, dtype=float), np.asarray(prob.B0, dtype=float)
    for _ in range(300):
        gv, gB = _full_grads(X, y, v, B)
        v, B = v - lr * gv, B - lr * gB
    tr = linnet.gradient_descent(prob, v0, [300 * lr], lr=lr)
    assert int(tr.num_steps) == 300
    np.testing.assert_allclose(tr.predictor[0], B.T @ v, atol=1e-10)


def test_gd_limit_converges_to_the_flow_at_first_order(prob, v0):
    flow = linnet.fine_tune(prob, v0, [np.inf], rtol=1e-11, atol=1e-13).predictor[-1]
    h = linnet.gd_stability_step(prob, v0)
    errs = [
        float(jnp.linalg.norm(linnet.gradient_descent(prob, v0, [np.inf], lr=lr, rtol=1e-12).predictor[-1] - flow))
        for lr in (h / 8, h / 16, h / 32)
    ]
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all((rates > 0.8) & (rates < 1.2)), (errs, rates)  # first order: halving lr halves the gap


def test_gd_beyond_the_stable_step_raises_divergence(prob, v0):
    h = linnet.gd_stability_step(prob, v0)
    with pytest.raises(linnet.DivergenceError, match="diverged"):
        linnet.gradient_descent(prob, v0, [np.inf], lr=3 * h)
    with pytest.raises(ValueError, match="lr"):
        linnet.gradient_descent(prob, v0, [1.0], lr=-1.0)


# --- 7. LoRA and 8. deeper extractors ---------------------------------------------------------------------


def test_lora_matches_full_state_scipy_and_moves_features_on_s_perp(prob, v0):
    X, y, k, d = np.asarray(prob.X), np.asarray(prob.y), prob.k, prob.d
    rank, key = 2, jax.random.PRNGKey(7)
    W0 = np.asarray(1.0 / np.sqrt(d) * jax.random.normal(key, (rank, d)))  # the documented initialisation
    B0 = np.asarray(prob.B0)
    sizes = [k, k * rank, rank * d]

    def unpack(th):
        v, U, W = np.split(th, np.cumsum(sizes)[:-1])
        return v, U.reshape(k, rank), W.reshape(rank, d)

    def rhs(t, th):
        v, U, W = unpack(th)
        gv, gB = _full_grads(X, y, v, B0 + U @ W)
        return np.concatenate([-gv, -(gB @ W.T).ravel(), -(U.T @ gB).ravel()])

    times = [0.5, 3.0]
    ref = _radau(rhs, np.concatenate([np.asarray(v0), np.zeros(k * rank), W0.ravel()]), times)
    tr = linnet.lora(prob, v0, times, rank=rank, key=key)
    Pperp = np.eye(d) - np.asarray(linnet.projection(prob.X))
    for i in range(len(times)):
        v, U, W = unpack(ref[i])
        np.testing.assert_allclose(tr.predictor[i], (B0 + U @ W).T @ v, atol=TOL)
        np.testing.assert_allclose(tr.B[i] @ Pperp, (B0 + U @ W) @ Pperp, atol=TOL)
    assert np.linalg.norm((np.asarray(tr.B[-1]) - B0) @ Pperp) > 1e-3  # unlike FT, S⊥ features moved


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_deep_matches_full_state_scipy_and_moves_features_on_s_perp(prob, v0, depth):
    """Against Radau on (v, W_1, …, W_L) with the chain rule by hand. Depth 1 is plain FT (linnet hands it to
    `fine_tune`), checked against the same independent integration: its S⊥ features stay frozen."""
    X, y, k, d = np.asarray(prob.X), np.asarray(prob.y), prob.k, prob.d
    B0 = np.asarray(prob.B0)
    L1 = depth - 1

    def unpack(th):
        v, W1, Ws = th[:k], th[k : k + k * d].reshape(k, d), th[k + k * d :].reshape(L1, k, k)
        return v, W1, Ws

    def chain(Ws):
        M = np.eye(k)
        for W in Ws:
            M = W @ M
        return M

    def rhs(t, th):
        v, W1, Ws = unpack(th)
        M = chain(Ws)
        gv, gB = _full_grads(X, y, v, M @ W1)  # gB = ∂L/∂B; chain rule by hand below
        gW1 = M.T @ gB
        gWs = []
        for j in range(L1):
            above = chain(Ws[j + 1 :])
            below = chain(Ws[:j]) @ W1
            gWs.append((above.T @ gB @ below.T).ravel())
        return np.concatenate([-gv, -gW1.ravel(), *(-g for g in gWs)])

    y0 = np.concatenate([np.asarray(v0), B0.ravel(), np.tile(np.eye(k), (L1, 1, 1)).ravel()])
    times = [0.5, 3.0]
    ref = _radau(rhs, y0, times)
    tr = linnet.deep_fine_tune(prob, v0, times, depth=depth)
    Pperp = np.eye(d) - np.asarray(linnet.projection(prob.X))
    for i in range(len(times)):
        v, W1, Ws = unpack(ref[i])
        B = chain(Ws) @ W1
        np.testing.assert_allclose(tr.predictor[i], B.T @ v, atol=TOL)
        np.testing.assert_allclose(tr.B[i], B, atol=TOL)
    s_perp_change = np.linalg.norm((np.asarray(tr.B[-1]) - B0) @ Pperp)
    if depth == 1:
        assert s_perp_change < 1e-10  # fact 1
    else:
        assert s_perp_change > 1e-3


# --- 9. label noise ---------------------------------------------------------------------------------------


def test_ft_interpolates_label_noise_exactly(prob, v0):
    """FT fits the noisy labels, so P_S w_ft∞ = X⁺ y and L_id:subspace = ‖P_S(X⁺ y − w⋆)‖² = ‖X⁺ ξ‖² (NumPy pinv)."""
    noisy = linnet.with_label_noise(prob, jax.random.PRNGKey(9), 0.3)
    xi = np.asarray(noisy.y) - np.asarray(prob.X) @ np.asarray(prob.w_star)
    assert 0.05 < np.std(xi) < 1.0
    tr = linnet.fine_tune(noisy, v0, [np.inf], rtol=1e-10, atol=1e-12)
    expected = np.sum((np.linalg.pinv(np.asarray(prob.X)) @ xi) ** 2)
    np.testing.assert_allclose(float(tr.id_error[-1]), expected, rtol=1e-6)
    assert float(tr.train_loss[-1]) < 1e-12
