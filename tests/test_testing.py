"""`linnet.testing`: statements searched for counterexamples, replayed by the independent reference, shrunk and
pinned. References: the pinned Theorem 3.1 counterexample (`linnet.stress.theorem_3_1_counterexample`, itself
checked against scipy Radau in test_stress.py), scipy Radau through `reference()`, exact JSON round trips."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import linnet
from linnet import testing as lt

S = lt.statements


def _instance(seed=0, d=10, k=2, n=5, eps=0.2):
    from linnet.testing._instance import draw_instance

    return draw_instance(jax.random.PRNGKey(seed), (d, k, n, n), (eps, eps))


def test_instance_json_round_trip_is_exact():
    inst = _instance()
    p = inst.problem.replace(sigma_ood=jnp.diag(jnp.linspace(0.1, 2.0, 10)))
    inst = lt.Instance(p, inst.v0)
    back = lt.Instance.from_json(inst.to_json())
    for name in ("X", "B0", "B_star", "v_star", "y", "sigma_ood"):
        a, b = np.asarray(getattr(inst.problem, name)), np.asarray(getattr(back.problem, name))
        assert a.dtype == b.dtype == np.float64 and np.array_equal(a.view(np.int64), b.view(np.int64)), name
    assert back.problem.default_sigma_id and np.array_equal(np.asarray(back.v0), np.asarray(inst.v0))
    with pytest.raises(ValueError, match="not an Instance's JSON"):
        lt.Instance.from_json(json.dumps({"X": [[1.0]]}))


def test_search_arguments_are_checked():
    for kw, pattern in [
        (dict(shapes=[(4, 3, 2)]), "2k <= d"),
        (dict(shapes=[]), "`shapes` is empty"),
        (dict(shapes=[(8, 1, 4)], eps=(0.5, 0.1)), "`eps` must satisfy"),
        (dict(shapes=[(8, 1, 4)], random=0), "give `random` > 0"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            lt.search(S.balancedness, key=jax.random.PRNGKey(0), progress=False, **kw)


@pytest.mark.slow  # compiles a search, a transform or a subprocess (5-8 s)
def test_replay_agrees_with_the_simulator_on_random_instances():
    """The same statement evaluated by linnet's solver and by the reference (Radau on the full state, rtol 1e-10)
    agrees to 1e-6 (the simulator's rtol 1e-8 on the state, over errors of size ≤ 100)."""
    for seed in range(3):
        inst = _instance(seed)
        for statement in (S.theorem_3_1, S.proposition_3_1):
            sim = float(statement(inst.problem, inst.v0))
            ref = lt.replay(statement, inst)
            assert abs(sim - ref) <= 1e-6 * (1.0 + abs(ref)), (seed, statement.__name__, sim, ref)


def test_the_reference_is_not_the_simulator():
    """Under `reference()` the trajectory comes from scipy (its label says so) and methods without a reference
    are refused rather than silently simulated."""
    inst = _instance(1)
    with lt.reference():
        tr = linnet.fine_tune(inst.problem, inst.v0, [0.0, 1.0])
        assert "Radau" in tr.solver
        with pytest.raises(NotImplementedError, match="has an independent reference for"):
            linnet.lora(inst.problem, inst.v0, [1.0], rank=1, key=jax.random.PRNGKey(0))
    assert "Radau" not in linnet.fine_tune(inst.problem, inst.v0, [0.0, 1.0]).solver


@pytest.mark.slow  # compiles a search, a transform or a subprocess (5-8 s)
def test_facts_and_proposition_3_1_are_not_reported_violated():
    for statement in (S.features_fixed_off_S, S.balancedness, S.proposition_3_1):
        rep = lt.search(statement, key=jax.random.PRNGKey(3), shapes=[(10, 2, 5)], random=16, starts=0,
                        progress=False)  # fmt: skip
        assert rep.violations == 0 and rep.tried == 16 and rep.failed == 0, (statement.__name__, str(rep))


def test_balancedness_holds_under_the_reference_too():
    """Fact 2 is structural for no integrator: the full-state Radau integration keeps v vᵀ − B Bᵀ to 1e-6."""
    inst = _instance(4)
    assert lt.replay(S.balancedness, inst) >= 0 and lt.replay(S.features_fixed_off_S, inst) >= 0


@pytest.mark.slow
def test_search_finds_the_theorem_3_1_region_and_the_reference_confirms_it():
    """k = 1, ε = 0: the region of the pinned counterexample (‖v⋆‖ > 1, head nearly aligned) is found by the random
    part and the gradient part, shrunk, and confirmed by scipy Radau."""
    rep = lt.search(S.theorem_3_1, key=jax.random.PRNGKey(0), shapes=[(6, 1, 3)], eps=(0.0, 0.0), random=64,
                    starts=2, steps=20, progress=False)  # fmt: skip
    assert rep.violations > 0 and rep.confirmed, str(rep)
    assert rep.replayed < -rep.tol and abs(rep.replayed - rep.worst_slack) <= 1e-6 * (1 + abs(rep.replayed))
    # the pinned instance of linnet.stress violates it too (reference: its own Radau replay in test_stress.py)
    p, v0 = linnet.stress.theorem_3_1_counterexample()
    assert float(S.theorem_3_1(p, v0)) < 0


def _ft_never_increases_ood(problem, v0):
    """A plausible conjecture that is false: fine-tuning never makes the OOD error worse than at the start."""
    tr = linnet.fine_tune(problem, v0, [0.0, np.inf])
    return tr.ood_error[0] - tr.ood_error[-1]


@pytest.mark.slow
def test_assert_holds_pins_a_false_statement(tmp_path):
    pin = tmp_path / "case.json"
    with pytest.raises(lt.Counterexample) as info:
        lt.assert_holds(_ft_never_increases_ood, key=jax.random.PRNGKey(0), shapes=[(8, 1, 4)], eps=(0.0, 0.3),
                        random=32, starts=0, progress=False, pin=str(pin))  # fmt: skip
    err = info.value
    assert isinstance(err, AssertionError) and "replayed slack" in str(err) and str(pin) in str(err)
    back = lt.Instance.from_json(pin.read_text())
    again = float(jax.jit(_ft_never_increases_ood)(back.problem, back.v0))
    assert again == pytest.approx(err.report.worst_slack, rel=1e-9) and again < 0


@pytest.mark.slow  # compiles a search, a transform or a subprocess (5-8 s)
def test_assert_holds_returns_the_report_of_a_true_statement():
    rep = lt.assert_holds(S.balancedness, key=jax.random.PRNGKey(5), shapes=[(8, 2, 4)], random=8, starts=0,
                          progress=False)  # fmt: skip
    assert rep.violations == 0 and rep.min_slack >= 0


@settings(max_examples=6, deadline=None)
@given(lt.instances(d=8, k=2, n=4, eps=(0.0, 0.4)))
def test_instances_strategy_draws_the_family(inst):
    p = inst.problem
    assert p.X.shape == (4, 8) and p.B0.shape == (2, 8)
    # orthonormal rows and ε in range (reference: NumPy's Procrustes distance)
    B0, Bs = np.asarray(p.B0), np.asarray(p.B_star)
    np.testing.assert_allclose(B0 @ B0.T, np.eye(2), atol=1e-12)
    P, _, Qt = np.linalg.svd(B0 @ Bs.T)
    assert -1e-12 <= np.linalg.norm(B0 - P @ Qt @ Bs, ord=2) <= 0.4 + 1e-12
    assert 0.1 - 1e-12 <= float(np.linalg.norm(np.asarray(p.v_star))) <= 10 + 1e-9
