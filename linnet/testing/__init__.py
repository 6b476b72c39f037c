"""Test your own predictions: a statement `statement(problem, v0) -> slack` (≥ 0 where it holds, a scalar JAX
array built from linnet's public API) is searched for counterexamples over a family of instances (`search`),
the worst is shrunk and replayed by a simulator independent of linnet's (`reference`, built on `radau_fine_tune`:
scipy Radau on the full state), and `assert_holds` turns a confirmed violation into a failing test that pins the
instance (`Counterexample`, `Instance.to_json`).
`instances` is a hypothesis strategy of the same family, and `statements` holds the paper's results as
statements. See docs/testing.md for a worked example."""

from . import statements
from ._instance import Instance
from ._radau import ReplayError, radau_fine_tune
from ._reference import reference
from ._search import Counterexample, SearchReport, assert_holds, replay, search
from ._strategies import instances

__all__ = [
    "Counterexample",
    "Instance",
    "ReplayError",
    "SearchReport",
    "assert_holds",
    "instances",
    "radau_fine_tune",
    "reference",
    "replay",
    "search",
    "statements",
]
