"""The lists of methods written in prose (README, `Trajectory`'s docstring, `sweep`'s docstring) name exactly the
registered methods, so that a method added to the registry cannot be missing from what a reader sees."""

import re
from pathlib import Path

import linnet

ROOT = Path(__file__).resolve().parents[1]


def _names(text: str) -> set[str]:
    return set(re.findall(r'"?\b([a-z][a-z0-9_]*)\b"?', text))


def test_readme_lists_the_registered_methods():
    text = (ROOT / "README.md").read_text()
    m = re.search(r"`linnet.methods\(\)` lists the registered methods \(([^)]*)\)", text)
    assert m, "README's list of methods not found"
    assert _names(m.group(1)) == set(linnet.methods())


def test_trajectory_docstring_lists_the_registered_methods():
    m = re.search(r"`method`: the registry name \(([^)]*)\)", linnet.Trajectory.__doc__ or "")
    assert m
    assert _names(m.group(1)) == set(linnet.methods())


def test_sweep_docstring_lists_the_registered_methods():
    m = re.search(r"registered names \(`linnet.methods\(\)`: ([^)]*)\)", linnet.sweep.__doc__ or "")
    assert m
    assert _names(m.group(1)) == set(linnet.methods())
