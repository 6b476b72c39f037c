"""The counterexample search, and the pinned counterexample to Theorem 3.1 as printed."""

import math

import jax
import numpy as np
import pytest
import scipy.linalg as sla

import linnet
from linnet import stress
from linnet import theory as th


def test_pinned_counterexample_violates_theorem_3_1():
    """Regression: k = 1, ε = 0, ‖v⋆‖ = 3, v0 = 3.03. The FT limit from the closed form of docs/theory.md (k = 1)
    (computed here with scipy, independently of linnet's solver) has √L_ood ≈ 0.0201 < bound ≈ 0.0240; the
    simulated trajectory is below the bound from t = 0.1 on. Both φ forms agree (φ² > 0)."""
    p, v0 = stress.theorem_3_1_counterexample()
    assert th.check_assumptions(p, v0).holds["theorem_3_1"]
    bound = float(th.ft_ood_lower_bound(p, v0))
    assert bound == pytest.approx(float(th.ft_ood_lower_bound(p, v0, form="printed")), rel=1e-15)
    # closed-form limit (fact 5) with scipy projections
    Q = sla.orth(np.asarray(p.X).T)
    PS = Q @ Q.T
    b0, w = np.asarray(p.B0)[0], np.asarray(p.w_star)
    c = float(v0[0]) ** 2 - np.sum((PS @ b0) ** 2)
    a2 = np.sum((PS @ w) ** 2)
    v_inf = math.sqrt((c + math.sqrt(c**2 + 4 * a2)) / 2)  # c > 0: sign of v0 (+)
    w_inf = PS @ w + v_inf * (np.eye(6) - PS) @ b0
    sqrt_ood_inf = np.linalg.norm(w_inf - w)
    assert sqrt_ood_inf < bound - 3e-3  # violated by a margin far above any numerical error
    tr = linnet.fine_tune(p, v0, list(stress.TIMES))
    slack = np.sqrt(np.asarray(tr.ood_error)) - bound
    assert slack[0] > 0  # at t = 0 it still holds
    assert np.all(slack[2:] < -3e-3)  # t = 0.1, 1, 10, 100, inf: violated
    assert abs(math.sqrt(float(tr.ood_error[-1])) - sqrt_ood_inf) < 1e-8


def test_gradient_search_finds_violations_confirmed_by_simulation():
    found = stress.gradient_search(jax.random.PRNGKey(0), starts=8)
    assert found[0]["relative_slack"] < 0
    sl = stress.simulated_slack(found[0])
    assert np.min(sl) < 0


def test_random_search_reports_and_replays():
    reports = stress.random_search(
        jax.random.PRNGKey(3), instances=60, batch=30, progress=False, shapes=((12, 1, 6, 3), (20, 2, 8, 4))
    )
    r = reports["theorem_3_1"]
    assert r.tried == 60 and math.isfinite(r.min_slack) and r.worst is not None
    # replaying the worst instance reproduces its slack: with linnet's single-instance solver, and with an
    # independent scipy Radau integration of the full state (the search ran at rtol 1e-7: 1e-5 absolute)
    sl = stress.simulated_slack(r.worst)
    assert abs(np.min(sl) - r.min_slack) < 1e-5
    from linnet._replay import radau_fine_tune

    p, v0 = stress.replay(r.worst)
    v, B = radau_fine_tune(p.X, p.y, p.B0, v0, stress.TIMES)
    root = np.linalg.norm(np.einsum("tkd,tk->td", B, v) - np.asarray(p.w_star), axis=1)
    assert abs(np.min(root - float(th.ft_ood_lower_bound(p, v0))) - r.min_slack) < 1e-5
    assert reports["proposition_3_1"].violations == 0
