"""The theory figures, each in two separate steps:

- `compute(name, quick, seed) -> dict`: the figure's numbers (`_data_paper`, `_data_beyond`), tested;
- `draw(name, data) -> matplotlib.figure.Figure`: the drawing, from that dict only (`_draw_paper`, `_draw_beyond`),
  under the package's style (`matplotlib.rc_context`; no backend or global rcParams is touched).

`make(name, out, quick, seed)` does both and writes `<name>.png`, `<name>.pdf` and `<name>.json` (the plotted
numbers with parameters, seeds and package versions) into `out`; `fig_<name>(out, quick, seed)` is the same for
one figure. Every number comes from the library (generators, the registry's methods and sweeps, `linnet.theory`);
nothing here re-derives a formula. `quick=True` shrinks the sweeps for the tests.
"""

from __future__ import annotations

import numpy as np

from .._config import light_compile
from . import _data_beyond, _data_classification, _data_paper, _draw_beyond, _draw_classification, _draw_paper
from ._data_paper import eps_sweep
from ._io import COLORS, STYLE, _save, _styled

FIGURES = (
    "toy",
    "error_vs_time",
    "ood_vs_eps",
    "id_vs_ood",
    "feature_change",
    "stress_slack",
    "phase",
    "phase_nd",
    "two_lr",
    "wise_ft",
    "l2_sp",
    "gd",
    "lora",
    "deep",
    "methods",
    "cls_error_vs_time",
    "cls_perp_fraction",
    "cls_lp_time",
)


def _lookup(prefix: str) -> dict:
    mods = (
        (_data_paper, _data_beyond, _data_classification)
        if prefix == "data"
        else (_draw_paper, _draw_beyond, _draw_classification)
    )
    return {n: getattr(m, f"{prefix}_{n}") for n in FIGURES for m in mods if hasattr(m, f"{prefix}_{n}")}


DATA = _lookup("data")
DRAW = _lookup("draw")


def _check(name: str) -> None:
    if name not in DATA:
        raise ValueError(f"unknown figure {name!r}; the figures are {list(FIGURES)}")


def compute(name: str, quick: bool = False, seed: int = 0, **kwargs) -> dict:
    """The numbers of figure `name` (a dict of arrays and scalars; see each `data_<name>`'s docstring).

    A figure runs each of its programs once or a few times, so they are compiled light (`linnet.light_compile`),
    except the ε sweeps at n > 40 (`eps_sweep`'s shapes in `phase_nd`), whose long batched solves run faster
    fully optimised."""
    _check(name)
    # measured in one process on 2 cores, all 18 figures: 182 s compiled as usual, 156 s all light (the ε × n/d
    # sweeps 32 → 41.5 s, every other figure as fast or faster: stress 44 → 40 s, the classification figures
    # 16 → 8 s), 147 s with every ε sweep at the default
    with light_compile():
        return DATA[name](quick=quick, seed=seed, **kwargs)


def draw(name: str, data: dict):
    """Figure `name` drawn from `data` (as returned by `compute`) alone: a `matplotlib.figure.Figure`."""
    _check(name)
    if not isinstance(data, dict):
        raise TypeError(f"`data` for figure {name!r} must be a dict (from compute({name!r}) or load({name!r})), "
                        f"got {type(data).__name__}")  # fmt: skip
    try:
        return fit_canvas(_styled(DRAW[name])(data))
    except KeyError as e:  # a dict that is not this figure's numbers
        raise ValueError(
            f"`data` for figure {name!r} lacks the entry {e.args[0]!r}; pass the dict returned by compute({name!r}) "
            f"or load({name!r})"
        ) from None


def fit_canvas(fig, rounds: int = 4):
    """Grow `fig` until everything drawn lies inside its canvas: a title or an outer axis label longer than the
    constrained layout can place spills past the edge; a larger canvas gives the axes room (the layout is redone
    each round). Returns `fig`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # a renderer to measure with; selects no backend and no pyplot state
    for _ in range(rounds):
        renderer = fig.canvas.get_renderer()  # pyright: ignore[reportAttributeAccessIssue]
        fig.draw(renderer)
        tb = fig.get_tightbbox(renderer)
        w, h = fig.get_size_inches()
        grow_w = max(0.0, -tb.x0) + max(0.0, tb.x1 - w)
        grow_h = max(0.0, -tb.y0) + max(0.0, tb.y1 - h)
        if grow_w < 0.01 and grow_h < 0.01:
            break
        # twice the overflow: text centred on an axes (a title) spills on both sides and gains half of any width
        fig.set_size_inches(w + 2 * grow_w + 0.05, h + 2 * grow_h + 0.05)
    return fig


def load(name: str, out="figures") -> dict:
    """The saved data of figure `name` from `out/<name>.json`, with the non-finite numbers the JSON stores as
    strings ("inf", "nan") turned back into floats; `draw(name, load(name))` redraws a committed figure."""
    import json
    from pathlib import Path

    _check(name)
    path = Path(out) / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no saved data for figure {name!r} at {path}; run `linnet reproduce --only {name}`")

    def restore(x):
        if isinstance(x, dict):
            return {k: restore(v) for k, v in x.items()}
        if isinstance(x, list):
            return [restore(v) for v in x]
        if x in ("inf", "-inf", "nan"):
            return float(x)
        return x

    try:
        data = restore(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is not valid JSON ({e.msg} at line {e.lineno}); "
            f"regenerate it with `linnet reproduce --only {name}`"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a figure's data (a JSON object); regenerate it with "
                         f"`linnet reproduce --only {name}`")  # fmt: skip
    return data


def make(name: str, out="figures", quick: bool = False, seed: int = 0, **kwargs) -> dict:
    """Compute, draw and save figure `name` into `out`; returns the saved data (with `figure` and `versions`)."""
    data = compute(name, quick, seed, **kwargs)
    return _save(draw(name, data), name, out, data)


def _figure_function(name: str):
    def fig(out="figures", quick: bool = False, seed: int = 0, **kwargs) -> dict:
        return make(name, out, quick, seed, **kwargs)

    fig.__name__ = fig.__qualname__ = f"fig_{name}"
    fig.__doc__ = f"`make({name!r}, out, quick, seed)`: " + (DATA[name].__doc__ or "")
    return fig


fig_toy = _figure_function("toy")
fig_error_vs_time = _figure_function("error_vs_time")
fig_ood_vs_eps = _figure_function("ood_vs_eps")
fig_id_vs_ood = _figure_function("id_vs_ood")
fig_feature_change = _figure_function("feature_change")
fig_stress_slack = _figure_function("stress_slack")
fig_phase = _figure_function("phase")
fig_phase_nd = _figure_function("phase_nd")
fig_two_lr = _figure_function("two_lr")
fig_wise_ft = _figure_function("wise_ft")
fig_l2_sp = _figure_function("l2_sp")
fig_gd = _figure_function("gd")
fig_lora = _figure_function("lora")
fig_deep = _figure_function("deep")
fig_methods = _figure_function("methods")
fig_cls_error_vs_time = _figure_function("cls_error_vs_time")
fig_cls_perp_fraction = _figure_function("cls_perp_fraction")
fig_cls_lp_time = _figure_function("cls_lp_time")
# name -> fig_<name>, in FIGURES order (what `linnet reproduce` runs)
REGISTRY = {
    "toy": fig_toy,
    "error_vs_time": fig_error_vs_time,
    "ood_vs_eps": fig_ood_vs_eps,
    "id_vs_ood": fig_id_vs_ood,
    "feature_change": fig_feature_change,
    "stress_slack": fig_stress_slack,
    "phase": fig_phase,
    "phase_nd": fig_phase_nd,
    "two_lr": fig_two_lr,
    "wise_ft": fig_wise_ft,
    "l2_sp": fig_l2_sp,
    "gd": fig_gd,
    "lora": fig_lora,
    "deep": fig_deep,
    "methods": fig_methods,
    "cls_error_vs_time": fig_cls_error_vs_time,
    "cls_perp_fraction": fig_cls_perp_fraction,
    "cls_lp_time": fig_cls_lp_time,
}


def verdict(name: str, data: dict) -> str:
    """What a figure says of a stated result, from its own data: "holds", "violated" (a statement of the paper or
    a fact of the theory), or "finding" (a measured number that no statement fixes)."""
    if name == "stress_slack":  # Theorem 3.1 as printed, searched
        return "violated" if data["violations"] else "holds"
    if name == "error_vs_time":  # Theorem 3.1 on the figure's instance: √L_ood(t) ≥ bound for all t
        return "holds" if min(np.min(data["sqrt_ood"]["FT"]), 1e300) >= data["bounds"]["FT"] else "violated"
    if name == "feature_change":  # fact 1: FT and LP-FT change nothing on S⊥
        return "holds" if max(data["FT"]["max_in_S_perp"], data["LP-FT"]["max_in_S_perp"]) <= 1e-10 else "violated"
    if name == "id_vs_ood":  # Proposition 3.1: FT's L_id:subspace below LP's (ties at rounding level allowed)
        ft, lp = np.asarray(data["FT"]["id_error"]), np.asarray(data["LP"]["id_error"])
        return "holds" if np.all(ft <= lp + 1e-12) else "violated"
    return "finding"


def headline(name: str, data: dict) -> list[tuple[str, str]]:
    """The numbers `linnet reproduce` prints for one figure (read from the figure's own data)."""
    f = "{:.3g}".format
    if name == "toy":
        e = data["ood_sq_error_on_x_ood"]
        return [("toy: squared error on x_ood, LP / FT", f"{f(e['LP'])} / {f(e['FT'])}")]
    if name == "error_vs_time":
        o = data["sqrt_ood"]
        return [
            (
                "√L_ood at t=∞, FT(zero) / FT / LP / LP-FT",
                " / ".join(f(o[m][-1]) for m in ("FT (zero head)", "FT", "LP", "LP-FT")),
            ),
            ("Thm 3.1 bound (random head)", f(data["bounds"]["FT"])),
        ]
    if name == "ood_vs_eps":
        return [
            (
                "slope of L_ood(t=∞) vs ε, LP / FT / LP-FT",
                " / ".join(f(data[m]["slope"]) for m in ("LP", "FT", "LP-FT")),
            )
        ]
    if name == "id_vs_ood":
        i = len(data["eps"]) // 2
        return [
            (
                f"L_id at t=∞, ε={data['eps'][i]:.0e}, LP / FT / LP-FT",
                " / ".join(f(data[m]["id_error"][i]) for m in ("LP", "FT", "LP-FT")),
            )
        ]
    if name == "feature_change":
        return [
            ("‖B(∞) − B0‖_F, FT / LP-FT", f"{f(data['FT']['in_S'][-1])} / {f(data['LP-FT']['in_S'][-1])}"),
            ("max S⊥ feature change", f(max(data["FT"]["max_in_S_perp"], data["LP-FT"]["max_in_S_perp"]))),
        ]
    if name == "stress_slack":
        return [
            (
                "Thm 3.1 random search: violations / instances, min slack",
                f"{data['violations']} / {len(data['slacks'])}, {f(data['min_slack'])}",
            )
        ]
    if name == "two_lr":
        r = data["ratios"]
        o = np.asarray(data["ood_inf"]).mean(1)
        return [(f"two LR: mean L_ood(∞) at η_B/η_v = {r[0]:.0e} / {r[-1]:.0e}", f"{f(o[0])} / {f(o[-1])}")]
    if name == "wise_ft":
        return [
            (f"WiSE-FT LP→{m}: α*, L_ood(α*)", f"{data[m]['alpha_star']:.3f}, {f(data[m]['ood_at_alpha_star'])}")
            for m in ("FT", "LP-FT")
        ]
    if name == "gd":
        return [("GD: order of limit → flow limit", f"{data['order']:.2f}")]
    if name == "lora":
        o = np.asarray(data["ood_error"]).mean(-1)
        return [("LoRA: mean L_ood(∞), smallest / largest scale, top rank", f"{f(o[0, -1])} / {f(o[-1, -1])}")]
    if name == "deep":
        return [
            (
                f"deep: mean L_ood(∞) at L = {data['depths'][-1]}, FT / LP-FT",
                f"{f(np.mean(data['FT']['ood_error'][-1]))} / {f(np.mean(data['LP-FT']['ood_error'][-1]))}",
            )
        ]
    if name == "methods":
        return [("methods: lowest mean OOD error", data["ranking"][0])]
    if name == "l2_sp":
        o = np.asarray(data["ood_error"]).mean(1)
        return [("L2-SP: mean L_ood(∞), smallest / largest λ_B", f"{f(o[0])} / {f(o[-1])}")]
    if name == "phase":
        best = np.asarray(data["best"])
        return [
            ("phase grid share where best, LP / FT / LP-FT", " / ".join(f"{np.mean(best == i):.0%}" for i in range(3)))
        ]
    if name == "phase_nd":
        z = np.asarray(data["log10_ft_over_lp"])
        return [("phase n/d: share of the ε × n/d grid where LP beats FT", f"{np.mean(z > 0):.0%}")]
    if name == "cls_error_vs_time":
        o = {m: np.mean(np.asarray(data["ood_error"][m])[:, -1]) for m in ("LP", "FT", "LP-FT")}
        return [
            (
                "logistic OOD 0-1 at t = 1e12, LP / FT / LP-FT; max-margin",
                " / ".join(f(o[m]) for m in ("LP", "FT", "LP-FT")) + f"; {f(np.mean(data['data_max_margin_ood']))}",
            )
        ]
    if name == "cls_perp_fraction":
        return [("logistic FT: fitted exponent of ‖P_S⊥w‖/‖w‖ in log t", f(np.mean(data["fitted_exponent"])))]
    if name == "cls_lp_time":
        o = np.asarray(data["ood_error"]).mean(0)
        return [("logistic LP-FT: OOD at t = 1e2, T_lp = 0 / largest", f"{f(o[0, 0])} / {f(o[-1, 0])}")]
    return []


__all__ = [
    "COLORS",
    "DATA",
    "DRAW",
    "FIGURES",
    "REGISTRY",
    "STYLE",
    "compute",
    "draw",
    "eps_sweep",
    "fig_cls_error_vs_time",
    "fig_cls_lp_time",
    "fig_cls_perp_fraction",
    "fig_deep",
    "fig_error_vs_time",
    "fig_feature_change",
    "fig_gd",
    "fig_id_vs_ood",
    "fig_l2_sp",
    "fig_lora",
    "fig_methods",
    "fig_ood_vs_eps",
    "fig_phase",
    "fig_phase_nd",
    "fig_stress_slack",
    "fig_toy",
    "fig_two_lr",
    "fig_wise_ft",
    "headline",
    "load",
    "make",
    "verdict",
]  # fmt: skip
assert {n[4:] for n in __all__ if n.startswith("fig_")} == set(FIGURES)
