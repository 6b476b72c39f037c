"""Numbers that paper_repro.md quotes from a committed figure are that figure's JSON (to the digits quoted)."""

import json
import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "paper_repro.md").read_text()


def _fig(name):
    return json.loads((ROOT / "figures" / f"{name}.json").read_text())


def _quoted(pattern):
    m = re.search(pattern, TEXT)
    assert m, pattern
    return [float(g.replace("−", "-").rstrip(".,")) for g in m.groups()]


def _same(quoted, value, digits=3):
    return f"{quoted:.{digits}g}" == f"{value:.{digits}g}"


def test_id_vs_ood_row():
    lp, ft = _quoted(r"at ε = 1e-02 in the figure \(`figures/id_vs_ood.json`\): LP ([\d.e+-]+), FT ([\d.e+-]+)")
    d = _fig("id_vs_ood")
    i = d["eps"].index(0.01)
    assert _same(lp, d["LP"]["id_error"][i]) and _same(ft, d["FT"]["id_error"][i])


def test_stress_slack_row():
    m = re.search(
        r"smaller run \((\d+) (\d+) instances, `figures/stress_slack.json`\): (\d+) violation, min slack ([−\d.]+)",
        TEXT,
    )
    assert m
    n, v, slack = int(m.group(1) + m.group(2)), int(m.group(3)), float(m.group(4).replace("−", "-").rstrip(".,"))
    d = _fig("stress_slack")
    assert n == len(d["slacks"]) and v == d["violations"] and _same(slack, d["min_slack"], 2)


def test_ood_vs_eps_slopes():
    lp, ft, lpft = _quoted(r"LP ([\d.]+), FT ([\d.]+), LP-FT ([\d.]+); the test asserts slope")
    d = _fig("ood_vs_eps")
    assert _same(lp, d["LP"]["slope"]) and _same(ft, d["FT"]["slope"]) and _same(lpft, d["LP-FT"]["slope"])


def test_phase_nd_row():
    a, b = _quoted(r"falls from ([\d.]+) \(n/d = 0.05\) to ([\d.]+) \(0.7\)")
    z = np.asarray(_fig("phase_nd")["log10_ft_over_lp"])
    assert _same(a, z[0, 0]) and _same(b, z[0, -1])
