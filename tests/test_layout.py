"""The package's layout rules, read from the source: no import cycle (lazy imports inside functions included), no
module over 400 lines, no test module importing another."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "linnet"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The linnet modules that `path` imports anywhere in its body (relative and absolute imports)."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("linnet"):
                found.add(mod)
                found.update(f"{mod}.{a.name}" for a in node.names)  # `from . import _flow` imports a module
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("linnet"))
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        # an import of a package means its __init__; keep only edges to modules that exist
        graph[name] = {m for m in _imports(path) if m in files and m != name and m != "linnet"}
    return graph


def test_no_import_cycle_between_linnet_modules():
    """Depth-first search for a back edge; a package's __init__ importing its own submodules is not a cycle of
    modules, so edges into a package (its __init__) from inside it are ignored."""
    graph = _graph()
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(m) :], m]))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_the_cycle_check_can_fail(tmp_path, monkeypatch):
    """The checker itself: two modules importing each other are reported."""
    pkg = tmp_path / "linnet"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_a.py").write_text("from ._b import x\n")
    (pkg / "_b.py").write_text("def f():\n    from ._a import y\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    monkeypatch.setattr(__import__(__name__), "PKG", pkg)
    try:
        test_no_import_cycle_between_linnet_modules()
    except AssertionError as e:
        assert "import cycle" in str(e)
    else:
        raise AssertionError("a cycle was not found")


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_no_test_module_imports_another():
    tests = {p.stem for p in (ROOT / "tests").glob("test_*.py")} | {"conftest"}
    for p in (ROOT / "tests").glob("*.py"):
        names = _imports_any(p)
        assert not names & tests, (p.name, names & tests)


def _imports_any(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
    return out


# the layers, lowest first: a module may import only from its own layer or a lower one (the core modules at the
# package's top level are below every subpackage; the public root `linnet` is above everything)
LAYERS = {
    "linnet._solver": 1,
    "linnet._methods": 3,
    "linnet._run": 2,
    "linnet.theory": 4,
    "linnet.testing": 5,
    "linnet.figures": 5,
}


def _layer(module: str) -> int:
    for prefix, level in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return level
    return 0  # the core modules (problem, registry, trajectory, …) and the CLI, checked below


def test_data_flows_one_way_between_layers():
    """The solver layer imports no method, run, theory or figure module; the run layer no method (it reads
    declarations from the registry); methods no theory, figures or testing. So a solver can be read, tested and
    replaced without the FT flow, and a method added without touching the run layer."""
    bad = []
    for name, deps in _graph().items():
        for dep in deps:
            if _layer(dep) > _layer(name) and _layer(name) > 0:
                bad.append(f"{name} -> {dep}")
    assert not bad, bad


def test_core_modules_import_no_subpackage_and_no_subpackage_imports_the_root():
    """The core (problem, registry, trajectory, validation, …) sits below every subpackage, and no module imports
    the package root `linnet` except the command line (`cli`, `__main__`), which sits on top of the public API."""
    graph = _graph()
    top = ("linnet.cli", "linnet.stress")  # the command line and the stress search use everything
    core = [n for n in graph if _layer(n) == 0 and n.count(".") == 1 and n not in top]
    bad = [f"{n} -> {d}" for n in core for d in graph[n] if _layer(d) > 0]
    assert not bad, bad
    for path in PKG.rglob("*.py"):
        if path.parent == PKG and path.stem in ("cli", "__main__"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            root_import = isinstance(node, ast.Import) and any(a.name == "linnet" for a in node.names)
            if isinstance(node, ast.ImportFrom):
                package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                submodules = {p.stem for p in PKG.iterdir()} | {p.name for p in PKG.iterdir() if p.is_dir()}
                root_import = mod == "linnet" and any(a.name not in submodules for a in node.names)
            assert not root_import, f"{path.relative_to(ROOT)} imports the package root"


def test_diffrax_internals_are_read_in_one_module():
    """Every read of diffrax's private layout (an implicit stage's argument tuple, a root finder's linear state,
    private modules) is in `linnet/_solver/diffrax_internals.py`, whose check runs on every diffrax version."""
    allowed = PKG / "_solver" / "diffrax_internals.py"
    needles = re.compile(r"linear_state|\b(dfx|diffrax)\._[a-z]|_VeryChordState|len\(args\) == 8")
    for path in PKG.rglob("*.py"):
        if path == allowed:
            continue
        found = needles.findall(path.read_text())
        assert not found, (str(path.relative_to(ROOT)), found)
    assert "linear_state" in allowed.read_text()
