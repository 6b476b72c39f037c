"""The method registry: every training method is declared once, as a `Method`, and everything else — the public
functions (`fine_tune`, `linear_probe`, …), `sweep`, `linnet run --method` and the figures — runs it through
`linnet.simulate`.

A declaration holds the method's parameters (`Param`: name, default, kind and the bound its value must meet),
how it starts (`lp_head`: from the LP limit), and either

- `kind="flow"`: an ODE on a small state — `init` (initial state and arguments), `field` (the reduced vector
  field), `steady` (its steady-state rule for t = ∞), `decode` (the path back to (v, ΔG, basis)), the default
  `solver` and whether the explicit solver may be chosen automatically (`explicit_ok`);
- `kind="closed_form"`: `path` evaluates the exact solution at the times;
- `kind="iteration"`: `path` runs a discrete iteration (gradient descent) and returns its own result code.

Methods that are one computation with other parameter values declare `program` and share one compiled program
(FT, LP-FT, two learning rates and L2-SP all run FT's). Adding a method is one `register(Method(...))` plus its
tests; see `docs/theory.md` for the conventions. `FlowMethod`, `ClosedFormMethod` and `IterationMethod` are the
forms of `Method` for each kind, with the kind's pieces as required keywords.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

REQUIRED = object()  # sentinel default of a parameter that must be given


@dataclasses.dataclass(frozen=True)
class Param:
    """One method parameter.

    - `kind`: `"real"` (continuous: may be traced, and differentiated), `"int"` or `"bool"` (static: they fix the
      shape or the structure of the computation).
    - `lower`: the smallest allowed value (inclusive), or None; `positive`: whether it must be > `lower`.
    - `default`: the default, `REQUIRED`, or None (a real that is optional: see the method's docs).
    """

    name: str
    default: Any
    kind: str = "real"
    lower: float | None = 0.0
    positive: bool = False
    doc: str = ""


@dataclasses.dataclass(frozen=True)
class Method:
    """A method declaration (see the module docstring), checked when it is made (`validate`): a flow without its
    field, a closed form without its path, a parameter that shadows an argument of `simulate` raise there.
    Functions receive `p`, the dict of validated parameters (reals as arrays of the problem's dtype, statics as
    Python values)."""

    name: str
    summary: str
    kind: str
    params: tuple[Param, ...] = ()
    lp_head: bool = False
    needs_key: bool = False
    # kind = "flow"
    init: Callable | None = None  # (problem, v0, p, key) -> (y0, args, aux)
    field: Callable | None = None  # (t, y, args) -> dy
    steady: Callable | None = None  # (rtol, atol) -> (t, y, args) -> bool
    decode: Callable | None = None  # (problem, ys, args, aux, p) -> (v (T, k), dG (T, k, r), basis (d, r))
    solver: Callable | None = None  # (k: int | None) -> the default (implicit) diffrax solver for k features
    explicit_ok: Callable | None = None  # (p) -> whether the explicit solver may be chosen automatically
    dt0: Callable | None = None  # (y0, args) -> first step of an explicit solver
    # () -> the solver for a stack of instances integrated as one ODE (`sweep(batching="stacked")`), whose Newton
    # solve is applied member by member; None: the method cannot be stacked
    stacked_solver: Callable | None = None
    # () -> the implicit solver of this method's members in a sweep's batch (vmapped `chunk` at a time), with its
    # linear algebra written to vectorise across the vmapped members; None: the default `solver`
    batch_solver: Callable | None = None
    # (problems, v0s) -> (N,) a key by which a sweep's batch orders its members before vmapping them `chunk` at a
    # time, so that a chunk, which runs for its slowest member's steps, holds members of like step counts; None:
    # the members in their given order
    batch_order: Callable | None = None
    # (y0, args, bucket) -> (y0, args): the state and arguments with the reduced dimension r padded to bucket(r)
    # by columns that do not move (exact), so that shapes in one bucket share the compiled integration
    # (`linnet._run.padded`); None: the method's program is per shape
    pad: Callable | None = None
    # kind = "closed_form": (problem, v0, times, p) -> (v, dG, basis)
    # kind = "iteration": (problem, v0, times, p, rtol, atol, max_steps) -> (v, dG, basis, result, num_steps, t_stop),
    # unreached times NaN
    path: Callable | None = None
    # the argument that bounds the work, named in a failure message: "max_steps" (solver steps) or a parameter
    budget: str = "max_steps"
    # value checks across parameters: (p, times) -> [(bad, message), ...]
    checks: Callable | None = None
    # a degenerate concrete parameter choice that is another method: (p) -> None | (name, params, time_scale)
    delegate: Callable | None = None
    # extra words for an eager failure message: (problem, v0, p) -> str
    advice: Callable | None = None
    # the training loss: "squared" (L̂ = ‖X Bᵀv − y‖², the paper's) or "logistic" (labels y ∈ {±1})
    loss: str = "squared"
    # integrate in τ = log(1 + t) (flows whose interesting times span decades, e.g. the logistic loss)
    log_time: bool = False
    # why t = ∞ is refused on this concrete problem, or None if it has a limit: (problem, p) -> str | None
    no_limit: Callable | None = None
    # methods that are one computation with other parameter values share one compiled program: (p, dtype) ->
    # (name, reals), the registered method whose program runs this one and all its reals (no statics). E.g. FT,
    # LP-FT, two learning rates and L2-SP all run FT's program with (η_v, η_B, λ_v, λ_B), so comparing them on
    # one shape compiles once. None: the method's own program.
    program: Callable | None = None

    def __post_init__(self):
        validate(self)  # a missing piece fails here, at the declaration, not when the method is first run

    def param(self, name: str) -> Param:
        for q in self.params:
            if q.name == name:
                return q
        raise KeyError(name)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FlowMethod(Method):
    """A method solved as an ODE on a small state (`kind="flow"`), with its pieces as required keywords:
    `FlowMethod(name, summary, init=..., field=..., steady=..., decode=..., solver=..., params=...)`; a missing
    one is a `TypeError` naming it, where the method is declared. The other fields are `Method`'s."""

    kind: str = dataclasses.field(default="flow", init=False)
    init: Callable = dataclasses.field()  # (problem, v0, p, key) -> (y0, args, aux)
    field: Callable = dataclasses.field()  # (t, y, args) -> dy
    steady: Callable = dataclasses.field()  # (rtol, atol) -> (t, y, args) -> bool
    decode: Callable = dataclasses.field()  # (problem, ys, args, aux, p) -> (v, dG, basis)
    solver: Callable = dataclasses.field()  # (k) -> the default implicit diffrax solver


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClosedFormMethod(Method):
    """A method evaluated exactly (`kind="closed_form"`): `ClosedFormMethod(name, summary, path=...)` with
    `path(problem, v0, times, p) -> (v (T, k), dG (T, k, r), basis (d, r))`."""

    kind: str = dataclasses.field(default="closed_form", init=False)
    path: Callable = dataclasses.field()


@dataclasses.dataclass(frozen=True, kw_only=True)
class IterationMethod(Method):
    """A discrete iteration (`kind="iteration"`, e.g. gradient descent): `IterationMethod(name, summary, path=...)`
    with `path(problem, v0, times, p, rtol, atol, max_steps) -> (v, dG, basis, result, num_steps, t_stop)`,
    unreached times NaN."""

    kind: str = dataclasses.field(default="iteration", init=False)
    path: Callable = dataclasses.field()


LOSSES = ("squared", "logistic")
# arguments of `simulate` itself, which a method's parameters cannot shadow
RESERVED = {"rtol", "atol", "max_steps", "solver", "throw", "key", "lp_head", "loss", "problem", "v0", "times"}

# the squared-loss methods, by name; the variants for another loss, by (name, loss)
REGISTRY: dict[str, Method] = {}
VARIANTS: dict[tuple[str, str], Method] = {}


def register(method: Method) -> Method:
    """Add a method to the registry (its (name, loss) must be new). Returns it, so a declaration can be assigned.

    A squared-loss method is registered under its name; a method with another `loss` is that loss's variant of the
    squared-loss method of the same name (e.g. the logistic "ft"), selected by `simulate(..., loss=...)`."""
    validate(method)
    if method.loss == "squared":
        if method.name in REGISTRY:
            raise ValueError(f"a method named {method.name!r} is already registered")
        REGISTRY[method.name] = method
    else:
        if (method.name, method.loss) in VARIANTS:
            raise ValueError(f"a {method.loss} variant of {method.name!r} is already registered")
        VARIANTS[(method.name, method.loss)] = method
    return method


def validate(method: Method) -> Method:
    """Check a declaration has every piece its kind needs (a flow: init, field, steady, decode, solver; a closed
    form or an iteration: path), unique parameter names that do not shadow `simulate`'s own arguments, and a
    budget that is one of its parameters; `TypeError`/`ValueError` naming what is wrong. Returns the method."""
    if method.kind not in ("flow", "closed_form", "iteration"):
        raise ValueError(f"`kind` must be 'flow', 'closed_form' or 'iteration', got {method.kind!r}")
    if method.loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {LOSSES}, got {method.loss!r}")
    needed = {"flow": ("init", "field", "steady", "decode", "solver"), "closed_form": ("path",),
              "iteration": ("path",)}[method.kind]  # fmt: skip
    missing = [a for a in needed if getattr(method, a) is None]
    if missing:
        raise TypeError(f"method {method.name!r} (kind {method.kind!r}) must declare {', '.join(missing)}")
    names = [q.name for q in method.params]
    if len(set(names)) != len(names) or set(names) & RESERVED:
        raise ValueError(f"method {method.name!r}: parameter names must be unique and not one of {sorted(RESERVED)}")
    if method.budget != "max_steps" and method.budget not in names:
        raise ValueError(f"method {method.name!r}: `budget` {method.budget!r} must be one of its parameters")
    return method


def unregister(name: str, loss: str = "squared") -> Method:
    """Remove the method `name` (for `loss`) from the registry, e.g. a plugin's method at the end of a test; returns
    its declaration. Programs compiled for it stay cached but are no longer reachable by name."""
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {LOSSES}, got {loss!r}")
    if loss == "squared" and name in REGISTRY:
        return REGISTRY.pop(name)
    if loss != "squared" and (name, loss) in VARIANTS:
        return VARIANTS.pop((name, loss))
    raise ValueError(f"no method {name!r} with loss={loss!r} is registered")


def get_method(name, loss: str = "squared") -> Method:
    """The registered `Method` called `name` for `loss` ("squared" or "logistic"); a `Method` is returned as is."""
    if isinstance(name, Method):
        return validate(name)
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {LOSSES}, got {loss!r}")
    if loss == "squared":
        if name not in REGISTRY:
            raise ValueError(f"unknown method {name!r}; registered methods: {sorted(REGISTRY)}")
        return REGISTRY[name]
    if (name, loss) not in VARIANTS:
        have = sorted(n for n, lo in VARIANTS if lo == loss)
        raise ValueError(f"method {name!r} has no {loss} variant; methods with loss={loss!r}: {have}")
    return VARIANTS[(name, loss)]


def methods(loss: str = "squared") -> tuple[str, ...]:
    """The names of the methods registered for `loss` ("squared": all of them; "logistic": lp, ft, lpft), in
    registration order."""
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {LOSSES}, got {loss!r}")
    if loss == "squared":
        return tuple(REGISTRY)
    return tuple(n for n, lo in VARIANTS if lo == loss)


def parse_spec(spec, loss: str = "squared") -> tuple[str, Method, dict]:
    """A method given as a name or a dict {"name": ..., parameters...} → (label, Method, options); `loss` is the
    default loss, which a dict's own "loss" entry overrides.

    The label is the name, followed by the parameters given, e.g. "two_lr(eta_B=0.3)" or "lora(rank=2, lp_head)"."""
    if isinstance(spec, str):
        if spec not in REGISTRY:
            raise ValueError(
                f"unknown method {spec!r} in `methods`; expected one of {sorted(REGISTRY)}, or a dict with a 'name' "
                f"and parameters, e.g. {{'name': 'two_lr', 'eta_B': 0.1}}"
            )
        return spec, get_method(spec, loss), {}
    if not isinstance(spec, dict):
        raise TypeError(f"each entry of `methods` must be a str or a dict, got {type(spec).__name__}")
    opts = dict(spec)
    name = opts.pop("name", None)
    if name not in REGISTRY:
        raise ValueError(f"a dict in `methods` needs 'name' in {sorted(REGISTRY)}, got {name!r}")
    own_loss = opts.pop("loss", None)
    m = get_method(name, loss if own_loss is None else own_loss)
    allowed = {q.name for q in m.params} | {"lp_head"} | ({"seed"} if m.needs_key else set())
    bad = set(opts) - allowed
    if bad:
        raise ValueError(f"method {name!r} takes {sorted(allowed)}, got unknown {sorted(bad)}")
    shown = [f"{a}={b:g}" if isinstance(b, int | float) else f"{a}={b}" for a, b in opts.items() if a != "lp_head"]
    if own_loss is not None:
        shown.append(f"loss={own_loss}")
    label = name + "(" + ", ".join(shown) + (", lp_head" if opts.get("lp_head") else "") + ")"
    return label.replace("(, ", "("), m, opts
