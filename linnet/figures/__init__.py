"""The theory figures. One function per figure; each writes `<name>.png`, `<name>.pdf` and `<name>.json` (the
plotted numbers, parameters, seeds and package versions) into `out`, and returns the data dict.

Every number comes from the library (problem generators, `linear_probe` / `fine_tune` / `lp_ft`, the batched
sweeps and `linnet.theory`); nothing here re-derives a formula. `quick=True` shrinks sweeps for the tests.
"""

from __future__ import annotations

import numpy as np

from ._io import COLORS, STYLE
from .beyond import fig_deep, fig_gd, fig_l2_sp, fig_lora, fig_methods, fig_two_lr, fig_wise_ft
from .paper import (
    eps_sweep,
    fig_error_vs_time,
    fig_feature_change,
    fig_id_vs_ood,
    fig_ood_vs_eps,
    fig_phase,
    fig_stress_slack,
    fig_toy,
)

FIGURES = (
    "toy",
    "error_vs_time",
    "ood_vs_eps",
    "id_vs_ood",
    "feature_change",
    "stress_slack",
    "phase",
    "two_lr",
    "wise_ft",
    "l2_sp",
    "gd",
    "lora",
    "deep",
    "methods",
)


REGISTRY = {
    "toy": fig_toy,
    "error_vs_time": fig_error_vs_time,
    "ood_vs_eps": fig_ood_vs_eps,
    "id_vs_ood": fig_id_vs_ood,
    "feature_change": fig_feature_change,
    "stress_slack": fig_stress_slack,
    "phase": fig_phase,
    "two_lr": fig_two_lr,
    "wise_ft": fig_wise_ft,
    "l2_sp": fig_l2_sp,
    "gd": fig_gd,
    "lora": fig_lora,
    "deep": fig_deep,
    "methods": fig_methods,
}


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
    return []


__all__ = ["COLORS", "FIGURES", "REGISTRY", "STYLE", "eps_sweep", "headline", *(f"fig_{n}" for n in FIGURES)]
