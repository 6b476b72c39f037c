"""Process-wide settings: the persistent compilation cache helper (run in a subprocess, since it changes JAX's
global configuration)."""

import os
import subprocess
import sys

import jaxlib
import pytest

# Which XLA flags this jaxlib has, written here from what was observed (not read from linnet._config): starting XLA
# with each flag in XLA_FLAGS, jaxlib 0.7.0 to 0.10.2 accept all three; 0.11.2 and 0.12.1 abort on the classic
# emitters' flag (the classic emitters were removed) and accept the other two.
RELEASE = tuple(int(a) for a in jaxlib.__version__.split(".")[:2])
HAS_CLASSIC = (0, 7) <= RELEASE <= (0, 10)
HAS_SCHEDULER_AND_SPLIT = (0, 7) <= RELEASE <= (0, 12)

SCRIPT = """
import sys, jax, numpy as np
jax.config.update("jax_enable_x64", True)
import linnet
# no argument: the directory the caller gave JAX (JAX_COMPILATION_CACHE_DIR) stands
path = linnet.use_compilation_cache(None if sys.argv[2] == "default" else sys.argv[1])
assert path == sys.argv[1], path
p = linnet.subspace_shift(jax.random.PRNGKey(0), d=20, k=2, n=6, eps=0.3, inputs="isotropic")
print(float(linnet.fine_tune(p, np.ones(2), [np.inf]).ood_error[-1]))
"""


@pytest.mark.slow  # a fresh process that compiles (6 s)
def test_compilation_cache_is_written_and_reused(tmp_path):
    """A first process fills the cache directory; a second one, reading it, computes the same limit (bitwise). The
    first names the directory through `JAX_COMPILATION_CACHE_DIR` (which `use_compilation_cache()` keeps), the
    second as the argument."""
    cache = str(tmp_path / "jax-cache")
    run = lambda how: subprocess.run(  # noqa: E731
        [sys.executable, "-c", SCRIPT, cache, how],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_COMPILATION_CACHE_DIR": cache if how == "default" else str(tmp_path / "unused")},
    )
    first = run("default")
    assert first.returncode == 0, first.stderr[-2000:]
    entries = os.listdir(cache)
    assert len(entries) > 0
    second = run("argument")
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.strip().splitlines()[-1] == first.stdout.strip().splitlines()[-1]
    assert sorted(os.listdir(cache)) == sorted(entries)  # nothing new to compile: every program came from the cache


FAST = """
import os, sys, warnings, jax
import linnet
name, flag = sys.argv[1], sys.argv[2]
assert getattr(linnet, name)() is True
assert os.environ["XLA_FLAGS"].split()[-1] == flag
assert getattr(linnet, name)() is True  # a second call: the flag is there already
assert os.environ["XLA_FLAGS"].split().count(flag) == 1
jax.numpy.ones(2).block_until_ready()  # starts the CPU backend
os.environ.pop("XLA_FLAGS")
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    assert getattr(linnet, name)() is False
assert any("already running" in str(x.message) and name in str(x.message) for x in w), [str(x.message) for x in w]
print("OK")
"""

_FLAGS = {
    "fast_compile": "--xla_cpu_use_fusion_emitters=false",
    "sequential_runtime": "--xla_cpu_enable_concurrency_optimized_scheduler=false",
}


@pytest.mark.parametrize("name", sorted(_FLAGS))
def test_process_flags_are_set_before_the_backend_starts_and_warn_after(name):
    """`fast_compile` and `sequential_runtime` append their flag to XLA_FLAGS (once) and report it in effect when
    called first; once JAX's backend is running they warn and return False (XLA would not read the flag any more).
    In a subprocess, without the suite's own XLA_FLAGS."""
    if not (HAS_CLASSIC if name == "fast_compile" else HAS_SCHEDULER_AND_SPLIT):
        pytest.skip(f"{name}'s flag does not exist in jaxlib {jaxlib.__version__} (the tests below check it says so)")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-c", FAST, name, _FLAGS[name]], capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "OK"


WITHOUT_CLASSIC = """
import os, sys, warnings, jaxlib
jaxlib.__version__ = sys.argv[1]  # a release without the classic emitters
import linnet
from linnet._config import COMPILER_OPTIONS, SETUP_OPTIONS, shared_cores_flags
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    assert linnet.fast_compile() is False
    assert linnet.sequential_runtime() is True
    shared_cores_flags()
assert any("removed in jaxlib 0.11" in str(x.message) for x in w), [str(x.message) for x in w]
print(os.environ["XLA_FLAGS"])
print(sorted(COMPILER_OPTIONS), sorted(SETUP_OPTIONS))
"""


@pytest.mark.parametrize("release", ["0.11.2", "0.12.1"])
def test_on_a_jaxlib_without_the_classic_emitters_only_their_flag_is_left_out(release):
    """jaxlib 0.11 removed XLA's classic CPU emitters and with them their flag, on which XLA aborts: there
    `fast_compile` warns that they were removed and returns False, while `sequential_runtime` and the CLI's
    one-part code generation are still set, and set-up programs still compile at level 0, whole. The release is
    faked in a subprocess (the checks run before any compilation), so this runs on any jaxlib."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-c", WITHOUT_CLASSIC, release], capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    flags, options = proc.stdout.strip().splitlines()[-2:]
    assert sorted(flags.split()) == sorted([_FLAGS["sequential_runtime"], "--xla_cpu_parallel_codegen_split_count=1"])
    assert options == "[] ['xla_backend_optimization_level', 'xla_cpu_parallel_codegen_split_count']"


SHARED = """
import os, sys
from linnet._config import shared_cores_flags
shared_cores_flags()
print(os.environ.get("XLA_FLAGS", ""))
"""


def test_the_clis_settings_set_three_flags_and_keep_a_callers_choice():
    """`shared_cores_flags` (the CLI's and the suite's settings) appends the two public flags and one
    code-generation thread per program, each once, those of them this jaxlib has (`HAS_CLASSIC`,
    `HAS_SCHEDULER_AND_SPLIT`); a split count the caller already set in XLA_FLAGS stands. In a subprocess, without
    the suite's own XLA_FLAGS."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", SHARED], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    flags = out.stdout.split()
    want = [_FLAGS["sequential_runtime"], "--xla_cpu_parallel_codegen_split_count=1"] if HAS_SCHEDULER_AND_SPLIT else []
    assert sorted(flags) == sorted(want + ([_FLAGS["fast_compile"]] if HAS_CLASSIC else []))
    env["XLA_FLAGS"] = "--xla_cpu_parallel_codegen_split_count=4"
    out = subprocess.run([sys.executable, "-c", SHARED], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    flags = out.stdout.split()
    assert "--xla_cpu_parallel_codegen_split_count=4" in flags and len(flags) == len(want) + HAS_CLASSIC


UNVERIFIED = """
import os, sys, warnings, jaxlib
jaxlib.__version__ = "0.99.0"  # a release the flags were not checked in
import linnet
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    assert getattr(linnet, sys.argv[1])() is False
assert "XLA_FLAGS" not in os.environ
assert any("not verified for jaxlib 0.99.0" in str(x.message) for x in w), [str(x.message) for x in w]
print("OK")
"""


@pytest.mark.parametrize("name", sorted(_FLAGS))
def test_process_flags_leave_xla_flags_alone_on_an_unverified_jaxlib(name):
    """XLA aborts the process on a flag it does not know, so on a jaxlib the flags were not verified in,
    `fast_compile` and `sequential_runtime` warn, return False and do not touch XLA_FLAGS."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-c", UNVERIFIED, name], capture_output=True, text=True, timeout=120,
                          env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "OK"


def test_version_has_one_source():
    """The installed metadata, the package and CITATION.cff all carry `linnet/_version.py`'s version."""
    import importlib.metadata
    from pathlib import Path

    import linnet

    assert importlib.metadata.version("linnet") == linnet.__version__
    cff = (Path(__file__).parent.parent / "CITATION.cff").read_text()
    assert f"version: {linnet.__version__}\n" in cff
    assert (Path(linnet.__file__).parent / "py.typed").exists()


@pytest.mark.slow  # a fresh process that compiles (6 s)
def test_the_command_line_turns_the_compilation_cache_on_unless_told_not_to(tmp_path):
    """`linnet` fills `~/.cache/linnet/jax` by default (cold start) and writes nothing with `--no-cache`.
    In subprocesses with their own HOME. (That a directory the caller gave JAX is kept is tested above.)"""
    argv = ["run", "--method", "lp", "--d", "12", "--k", "2", "--n", "4", "--num-times", "2"]
    base = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}

    def run(home, *flags):
        env = {**base, "HOME": str(home)}
        cmd = [sys.executable, "-m", "linnet", *flags, *argv]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]

    run(tmp_path / "a")
    assert len(os.listdir(tmp_path / "a" / ".cache" / "linnet" / "jax")) > 0
    run(tmp_path / "b", "--no-cache")
    assert not (tmp_path / "b" / ".cache").exists()


def test_linnet_jit_with_its_compiler_options_composes_like_jax_jit():
    """`linnet._config.jit`: on the verified jaxlib releases its options are XLA's classic CPU emitters. Nested in
    a caller's `jax.jit` (traced or closed-over concrete arguments), under `grad` and under `vmap`, and with
    `static_argnames` through `functools.partial`, it returns what a plain `jax.jit` returns (the reference): the
    option changes XLA's code generator, not the computation; 1e-15 relative allows rounding."""
    import os
    from functools import partial

    import jax
    import jax.numpy as jnp
    import numpy as np

    from linnet._config import COMPILER_OPTIONS, jit

    def f(x, *, p):
        return jnp.sin(x) ** p + jnp.cumsum(x)

    ours, ref = partial(jit, static_argnames=("p",))(f), jax.jit(f, static_argnames=("p",))
    x = jnp.linspace(0.1, 1.0, 5)
    # under a caller's level 0 (the suite's XLA_FLAGS) each program is also compiled whole (`_config._WHOLE`)
    level_0 = "--xla_backend_optimization_level=0" in os.environ.get("XLA_FLAGS", "").split()
    whole = {"xla_cpu_parallel_codegen_split_count": 1} if level_0 and HAS_SCHEDULER_AND_SPLIT else {}
    assert COMPILER_OPTIONS == {**({"xla_cpu_use_fusion_emitters": False} if HAS_CLASSIC else {}), **whole}
    cases = {
        "top": (lambda: ours(x, p=2), lambda: ref(x, p=2)),
        "jit, traced": (lambda: jax.jit(lambda y: ours(y, p=2))(x), lambda: ref(x, p=2)),
        "jit, closed over": (lambda: jax.jit(lambda: ours(x, p=3))(), lambda: ref(x, p=3)),
        "grad": (lambda: jax.grad(lambda y: ours(y, p=2).sum())(x), lambda: jax.grad(lambda y: ref(y, p=2).sum())(x)),
        "vmap": (lambda: jax.vmap(lambda y: ours(y, p=2))(jnp.stack([x, 2 * x])),
                 lambda: jnp.stack([ref(x, p=2), ref(2 * x, p=2)])),
    }  # fmt: skip
    for name, (got, want) in cases.items():
        np.testing.assert_allclose(np.asarray(got()), np.asarray(want()), rtol=1e-15, err_msg=name)


_SETUP_SCRIPT = """
import json
from functools import partial
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from linnet._config import COMPILER_OPTIONS, SETUP_OPTIONS, jit
f = lambda x, *, p: jnp.sin(x) ** p + jnp.cumsum(x) @ jnp.outer(x, x)
ours, ref = partial(jit, setup=True, static_argnames=("p",))(f), jax.jit(f, static_argnames=("p",))
x = jnp.linspace(0.1, 1.0, 40)
pairs = [(ours(x, p=2), ref(x, p=2)), (jax.jit(lambda y: ours(y, p=3))(x), ref(x, p=3)),
         (jax.grad(lambda y: ours(y, p=2).sum())(x), jax.grad(lambda y: ref(y, p=2).sum())(x)),
         (jax.vmap(lambda y: ours(y, p=2))(jnp.stack([x, 2 * x])), jnp.stack([ref(x, p=2), ref(2 * x, p=2)]))]
err = max(float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))) for a, b in pairs)
print(json.dumps(dict(setup=SETUP_OPTIONS, default=COMPILER_OPTIONS, err=err)))
"""


@pytest.mark.parametrize("level", [None, "2"])
def test_set_up_programs_compile_at_level_0_unless_the_caller_chose_a_level(level):
    """`jit(..., setup=True)` (the programs whose run is short next to their compilation) adds XLA's backend
    optimisation level 0, compiled whole (one code-generation part), to linnet's compiler options, except when the
    caller's XLA_FLAGS set a level (which then applies). Top level, nested in `jax.jit`, under `grad` and `vmap`, it
    returns what a plain `jax.jit` returns (the reference) to 1e-14 relative: compiled whole, the level changes the
    machine code's rounding (the order of a vectorised sum), not the computation (see the regression test below). Run in
    a fresh process: the suite itself sets a level in XLA_FLAGS."""
    import json
    import os
    import subprocess
    import sys

    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "optimization_level" not in f)
    if level is not None:
        flags = f"{flags} --xla_backend_optimization_level={level}".strip()
    proc = subprocess.run([sys.executable, "-c", _SETUP_SCRIPT], capture_output=True, text=True,
                          env={**os.environ, "XLA_FLAGS": flags}, check=True)  # fmt: skip
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if HAS_SCHEDULER_AND_SPLIT:  # a jaxlib whose options are known: linnet sets them
        whole = {"xla_cpu_parallel_codegen_split_count": 1}
        want = out["default"] if level is not None else {**out["default"], "xla_backend_optimization_level": 0, **whole}
        assert out["setup"] == want
    else:
        assert out["setup"] == out["default"] == {}
    assert out["err"] <= 1e-14, out["err"]


_LIGHT_SCRIPT = """
import json
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import linnet
from linnet._config import COMPILER_OPTIONS, SETUP_OPTIONS, jit
from linnet._context import LIGHT
from linnet._run.plan import run_in_parts
f = lambda x: jnp.sin(x) ** 2 + jnp.cumsum(x) @ jnp.outer(x, x)
ours, ref = jit(f), jax.jit(f)
x = jnp.linspace(0.1, 1.0, 40)
sizes = lambda: [ours._top._cache_size(), ours._light._cache_size(), ours._cache_size()]
out = dict(distinct=ours._light is not ours._top, before=sizes())
with linnet.light_compile():
    a = ours(x)
    out["inside"] = sizes()
    with linnet.light_compile(False):
        b = ours(x)
        out["nested_off"] = sizes()
    ours(x)
    out["again"] = sizes()
    seen = []
    def g(y):
        seen.append(LIGHT.get())
        return y * 2
    run_in_parts(g, (jnp.arange(16.0),), (True,), workers=2)
    out["threads"] = seen
out["after"] = LIGHT.get()
out["err"] = max(float(np.max(np.abs(c - ref(x)) / np.abs(ref(x)))) for c in (a, b))
out["light_options"] = SETUP_OPTIONS != COMPILER_OPTIONS
print(json.dumps(out))
"""


def test_light_compile_routes_programs_to_their_light_form_in_its_context_and_threads():
    """`linnet.light_compile()`: a `linnet._config.jit` program first called inside it compiles its light form
    (set-up options) and not its default one; `light_compile(False)` inside it compiles the default; calling again
    compiles nothing; the batches' host threads (`run_in_parts`) see the context; on leaving, it is off. Values
    agree with a plain `jax.jit` (the reference) to 1e-14 relative (machine code's rounding). A fresh process
    without the suite's optimisation level in XLA_FLAGS, where the two forms differ."""
    import json
    import os
    import subprocess
    import sys

    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "optimization_level" not in f)
    proc = subprocess.run([sys.executable, "-c", _LIGHT_SCRIPT], capture_output=True, text=True,
                          env={**os.environ, "XLA_FLAGS": flags}, check=True)  # fmt: skip
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out["light_options"]:
        pytest.skip("no compiler options on this jaxlib: light_compile changes nothing")
    assert out["distinct"]
    assert out["before"] == [0, 0, 0]
    assert out["inside"] == [0, 1, 1]
    assert out["nested_off"] == [1, 1, 2]
    assert out["again"] == [1, 1, 2]
    assert out["threads"] == [True, True]
    assert out["after"] is False
    assert out["err"] <= 1e-14, out["err"]


_LEVEL_SCRIPT = """
import json
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import linnet
from linnet._config import COMPILER_OPTIONS, SETUP_OPTIONS
from linnet._methods import ft_flow
from linnet._solver.integrate import integrate
key = jax.random.PRNGKey(0)
probs = linnet.subspace_shifts(jax.random.split(key, 6), jnp.full(6, 0.1), inputs="isotropic", d=60, k=3, n=15)
heads = jax.random.normal(jax.random.fold_in(key, 1), (6, 3))
times = jnp.asarray(np.geomspace(1e3, 1e6, 4))
def run(y0, args):
    return integrate(ft_flow.general_field, y0, args, times, steady=None, solver=ft_flow.batch_solver(), rtol=1e-8,
                     atol=1e-10, max_steps=20_000)
out = {}
for label, options in (("default", COMPILER_OPTIONS), ("setup", SETUP_OPTIONS)):
    compiled = None
    for lam in ((0.0, 0.0), (1e-3, 0.005)):
        for i in range(6):
            red = jax.tree_util.tree_map(lambda a: a[i], probs).reduced
            args = (red.s, red.Uty, red.G0, jnp.array([1.0, 1.0, *lam]))
            y0 = (heads[i], red.G0)
            compiled = compiled or jax.jit(run).lower(y0, args).compile(compiler_options=options)
            ys, result, steps, _ = compiled(y0, args)
            f = ft_flow.general_field(0.0, (ys[0][-1], ys[1][-1]), args)
            out.setdefault(label, []).append([int(steps), float(jnp.sqrt(sum(jnp.sum(x**2) for x in f)))])
p5 = jax.tree_util.tree_map(lambda a: a[5], probs)
with linnet.light_compile():
    tr = linnet.sweep(jax.tree_util.tree_map(lambda a: a[5:], probs), heads[5:], [np.inf],
                      methods=[{"name": "l2_sp", "lam_B": 0.00517947, "lam_v": 1e-3}], progress=False)
out["sweep_light_steps"] = int(tr.num_steps.ravel()[0])
out["single_steps"] = int(linnet.l2_sp(p5, heads[5], [np.inf], lam_B=0.00517947, lam_v=1e-3).num_steps)
print(json.dumps(out))
"""


def test_light_and_set_up_programs_integrate_the_ft_flow_as_the_default_does():
    """Regression (jaxlib 0.10.2, CPU): with the classic emitters, XLA's backend optimisation level 0 with the
    machine code split into parts (XLA's default) miscompiled the FT flow's Rosenbrock step in some programs: its Newton
    solves had residuals of order 1, the step met its error test with 4–25 × the steps and the state never reached the
    stationary point (‖f‖ stayed near 1e-10; a sweep of L2-SP under `light_compile()` failed to converge in 100 000
    steps). The integration program compiled with the set-up options (those of `light_compile`) must integrate as the
    default-compiled one: on 12 flows (FT and L2-SP, six instances, the batch solver, to t = 10⁶ with no steady-state
    stop) it ends at a stationary point, ‖f(θ(10⁶))‖ ≤ 1e-12 (the independent criterion: the gradient vanishes there;
    the default reaches 3e-14, the miscompiled program 3e-11–3e-10), in at most 1.25 × the default's steps (rounding
    moves a step count by a few per cent); and the L2-SP sweep that failed converges in as many steps (± 10 %) as the
    single call. A fresh process with no XLA_FLAGS, as a library user's (the suite's own flags compile every program
    whole, which hid the miscompilation from it)."""
    import json
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _LEVEL_SCRIPT], capture_output=True, text=True,
                          env={**os.environ, "XLA_FLAGS": ""}, check=True)  # fmt: skip
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for (steps, f), (ref_steps, ref_f) in zip(out["setup"], out["default"], strict=True):
        assert ref_f <= 1e-12, ref_f
        assert f <= 1e-12, (f, steps, ref_steps)
        assert steps <= 1.25 * ref_steps, (steps, ref_steps)
    assert abs(out["sweep_light_steps"] - out["single_steps"]) <= 0.1 * out["single_steps"], out


def test_the_dependency_floors_are_the_oldest_versions_tested():
    """Every floor in pyproject.toml's dependencies is the version `.ci/oldest.txt` pins (the oldest set the suite
    was run with), and every pin there is a declared dependency: a floor lowered or raised without the other is
    a claim nobody tested."""
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement
    from packaging.version import Version

    root = Path(__file__).parent.parent
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {}
    for dep in deps:
        req = Requirement(dep)
        (spec,) = [s for s in req.specifier if s.operator == ">="]
        floors[req.name] = Version(spec.version)
    pins = {}
    for line in (root / ".ci" / "oldest.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip()] = Version(version.strip())
    assert floors == pins
