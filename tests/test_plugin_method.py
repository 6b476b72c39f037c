"""A method declared and registered in a module outside linnet (`tests/plugins/lp_ode_method.py`) runs through every
route with no edit to linnet: `simulate`, `jit`, `vmap`, `grad`, `sweep` and `linnet run --plugin`. Reference:
its exact solution, `linnet.linear_probe` at time speed · t."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import linnet

PLUGINS = Path(__file__).parent / "plugins"
NAME = "lp_ode"


@pytest.fixture(autouse=True, scope="module")
def _plugin():
    """Import the user's module (which registers its method) for this file's tests only, and unregister it after,
    so that the registry other test files see is linnet's own."""
    import importlib

    sys.path.insert(0, str(PLUGINS))
    try:
        importlib.import_module("lp_ode_method")
        yield
    finally:
        sys.path.remove(str(PLUGINS))
        sys.modules.pop("lp_ode_method", None)
        linnet.unregister(NAME)


TIMES = np.array([0.0, 0.3, 1.0, np.inf])
# the ODE is solved at rtol 1e-10: its values agree with the closed form to 1e-7 relative (solver tolerance, with a
# steady-state stop within atol + rtol ‖v‖ of the limit)
TOL = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def prob():
    return linnet.subspace_shift(jax.random.PRNGKey(5), d=16, k=2, n=6, eps=0.2)


V0 = np.array([0.4, -1.1])


def test_simulate_matches_the_closed_form(prob):
    tr = linnet.simulate(NAME, prob, V0, TIMES, speed=2.0, **TOL)
    ref = linnet.linear_probe(prob, V0, 2.0 * TIMES)
    np.testing.assert_allclose(np.asarray(tr.v), np.asarray(ref.v), rtol=1e-7, atol=1e-9)
    assert tr.method == NAME and bool(linnet.is_okay(tr.result))


@pytest.mark.slow  # compiles a search, a transform or a subprocess (5-8 s)
def test_jit_vmap_and_grad(prob):
    run = jax.jit(lambda v, sp: linnet.simulate(NAME, prob, v, TIMES, speed=sp, **TOL).ood_error)
    ref = linnet.linear_probe(prob, V0, 1.5 * TIMES).ood_error
    np.testing.assert_allclose(np.asarray(run(V0, 1.5)), np.asarray(ref), rtol=1e-7)
    heads = jnp.stack([jnp.asarray(V0), -2.0 * jnp.asarray(V0)])
    many = jax.vmap(lambda v: run(v, 1.0))(heads)
    for i in range(2):
        ref = linnet.linear_probe(prob, heads[i], TIMES).ood_error
        np.testing.assert_allclose(np.asarray(many[i]), np.asarray(ref), rtol=1e-7)
    # d/dv0 of L_ood at t = 0.3: against the closed form's own gradient (exact)
    g = jax.grad(lambda v: run(v, 1.0)[1])(jnp.asarray(V0))
    g_ref = jax.grad(lambda v: linnet.linear_probe(prob, v, TIMES).ood_error[1])(jnp.asarray(V0))
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-6)


def test_sweep_runs_the_plugin(prob):
    probs = linnet.subspace_shifts(jax.random.split(jax.random.PRNGKey(6), 3), 0.2, d=16, k=2, n=6)
    res = linnet.sweep(probs, V0, TIMES, methods=["lp", {"name": NAME, "speed": 1.0}],
                       progress=False, **TOL)  # fmt: skip
    np.testing.assert_allclose(np.asarray(res.ood_error[1]), np.asarray(res.ood_error[0]), rtol=1e-7)


@pytest.mark.slow  # compiles a search, a transform or a subprocess (5-8 s)
def test_the_command_line_runs_the_plugin(tmp_path):
    """`linnet --plugin MODULE run --method NAME --speed 2` in a fresh process; its parameter is an option."""
    env = {**os.environ, "PYTHONPATH": str(PLUGINS), "JAX_PLATFORMS": "cpu"}
    out = tmp_path / "run.json"
    argv = ["--no-cache", "--plugin", "lp_ode_method", "run", "--method", "lp_ode", "--speed", "2", "--d", "16",
            "--k", "2", "--n", "6", "--num-times", "3", "--save", str(out)]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "linnet", *argv], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import json

    data = json.loads(out.read_text())
    kp, kh = jax.random.split(jax.random.PRNGKey(0))
    p = linnet.subspace_shift(kp, d=16, k=2, n=6, eps=0.1)
    v0 = linnet.random_head(kh, 2, 1.0)
    ref = linnet.linear_probe(p, v0, 2.0 * np.asarray(data["times"])).ood_error
    np.testing.assert_allclose(data["ood_error"], np.asarray(ref), rtol=1e-5)  # the CLI's default rtol 1e-8


def test_every_declared_parameter_is_a_command_line_option_with_the_declarations_default():
    assert NAME in linnet.methods()  # the plugin's parameter is among them
    """The `run` options are generated from the declarations (the plugin's `speed` included): one per parameter,
    with no default of its own (None: the declaration's default applies), so a CLI default cannot drift."""
    from linnet import cli

    run = next(a for a in cli.build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "run")[1]
    options = {a.dest: a for a in run._actions}
    for loss in ("squared", "logistic"):
        for name in linnet.methods(loss):
            for q in linnet.get_method(name, loss).params:
                if q.kind == "bool":
                    continue
                assert q.name in options, (name, q.name)
                assert (
                    options[q.name].default is None
                    and "--" + q.name.replace("_", "-") in options[q.name].option_strings
                )


def test_an_incomplete_declaration_fails_when_declared():
    """A missing piece is caught when the `Method` is made, naming it, not by an assert at the point of use."""
    with pytest.raises(TypeError, match="must declare steady, decode"):
        linnet.register(linnet.Method("half_flow", "a flow without its steady state", "flow", init=lambda *a: None,
                                      field=lambda *a: None, solver=lambda k: None))  # fmt: skip
    with pytest.raises(ValueError, match="not one of"):
        linnet.register(linnet.Method("shadow", "a closed form", "closed_form", path=lambda *a: None,
                                      params=(linnet.Param("rtol", 1.0),)))  # fmt: skip
    with pytest.raises(TypeError, match="must declare path"):
        linnet.simulate(linnet.Method("no_path", "an unregistered closed form", "closed_form"), None, None, [1.0])
    assert "half_flow" not in linnet.methods() and "shadow" not in linnet.methods()
    # the form of each kind makes its pieces required keywords, so the signature itself says what is missing
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'steady'"):
        linnet.FlowMethod("f", "a flow", init=lambda *a: None, field=lambda *a: None, decode=lambda *a: None,
                          solver=lambda k: None)  # fmt: skip
    with pytest.raises(TypeError, match="'path'"):
        linnet.ClosedFormMethod("c", "a closed form")
    m = linnet.IterationMethod("i", "an iteration", path=lambda *a: None)
    assert m.kind == "iteration" and isinstance(m, linnet.Method)
