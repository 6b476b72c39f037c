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
    (lp,) = _quoted(r"at ε = 1e-02 in the figure \(`figures/id_vs_ood.json`\): LP ([\d.e+-]+), FT < 1e-13")
    d = _fig("id_vs_ood")
    i = d["eps"].index(0.01)
    # FT's ID error at its limit is rounding (it moves with any recompilation), so it is quoted as a bound
    assert _same(lp, d["LP"]["id_error"][i]) and 0 <= d["FT"]["id_error"][i] < 1e-13


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


# Every table of paper_repro.md with a "figure" and a "measured" column: each decimal number in a row's measured
# cell must be a number of that row's figure JSON, to the digits quoted (a value, or a mean or median of one of its
# arrays along an axis: the rows quote means over seeds). Not checked: approximate values ("≈ 0.8"), numbers after
# "Theorem"/"Section"/…, and the few listed below, each with the reason it is not in the JSON.
_NUM = re.compile(r"(?<![\w.\-−/])([−-]?\d+\.\d+(?:e[−+-]?\d+)?)(?![\w.])")
_RUN = re.compile(r"[−-]?\d+\.\d+(?:e[−+-]?\d+)?(?:, [−-]?\d+\.\d+(?:e[−+-]?\d+)?){2,}")
_NOT_A_MEASUREMENT = re.compile(r"(Theorem|Proposition|Section|Lemma|Corollary|Figure|Fact|Table|Appendix|≈|~)\s*$")
_NOT_IN_THE_JSON = {
    "-0.78": "a number of an earlier stress run, quoted as history",
    "-0.000817": "a number of an earlier stress run, quoted as history",
    "4.4e-3": "1 − cos(v, u_F), computed by the row's test, not stored in the figure",
    "3.2e-4": "1 − cos(v, u_F), computed by the row's test, not stored in the figure",
    "0.005": "a difference of two quoted values of the same figure",
}


def _values(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _values(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _values(v)
        try:
            a = np.asarray(obj, float)
        except (TypeError, ValueError):
            return
        if a.size:
            with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
                __import__("warnings").simplefilter("ignore")
                for axis in range(a.ndim):
                    yield from np.ravel(np.nanmean(a, axis=axis))
                    yield from np.ravel(np.nanmedian(a, axis=axis))
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        yield float(obj)


def _sequences(obj):
    """Every 1-D sequence of a figure's JSON: its lists of numbers, the rows of its arrays, and their means and
    medians along each axis."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _sequences(v)
    elif isinstance(obj, list):
        try:
            a = np.asarray(obj, float)
        except (TypeError, ValueError):
            for v in obj:
                yield from _sequences(v)
            return
        if a.size == 0:
            return
        arrays = [a]
        with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore")
            for axis in range(a.ndim if a.ndim >= 2 else 0):
                arrays += [np.nanmean(a, axis=axis), np.nanmedian(a, axis=axis)]
        for b in arrays:
            for axis in range(b.ndim):  # the lines of b along each axis
                yield from np.moveaxis(b, axis, -1).reshape(-1, b.shape[axis])


def _run_agrees(run: list[str], sequences) -> bool:
    """The quoted run q1, q2, … equals entries of one sequence in that order (a curve may be quoted at some of
    its points), each to its quoted digits."""
    for seq in sequences:
        j = 0
        for q in run:
            while j < len(seq) and not _agrees(q, [seq[j]]):
                j += 1
            if j == len(seq):
                break
            j += 1
        else:
            return True
    return False


def _agrees(quoted: str, values) -> bool:
    x = float(quoted)
    mantissa = quoted.lstrip("-").split("e")[0]
    sig = len(mantissa.replace(".", "").lstrip("0")) or 1
    decimals = len(mantissa.split(".")[1])
    for v in values:
        if not np.isfinite(v):
            continue
        if "e" in quoted and float(f"{v:.{sig - 1}e}") == x:
            return True
        if "e" not in quoted and (round(v, decimals) == x or float(f"{v:.{sig}g}") == x):
            return True
    return False


def _figure_rows():
    header = None
    for line in TEXT.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if set(line) <= set("|-: ") or "figure" not in header or "measured" not in header:
            continue
        figure_cell, measured = cells[header.index("figure")], cells[header.index("measured")]
        names = re.findall(r"`(\w+)`", figure_cell) + re.findall(r"\((\w+) figure\)", measured)
        names = [n for n in names if (ROOT / "figures" / f"{n}.json").exists()]
        if "stress_slack" in names:
            names.append("stress")  # the full search's report, which the stress row quotes too
        if names:
            yield names, measured


def test_every_number_a_row_quotes_from_its_figure_is_in_the_figures_json():
    rows = list(_figure_rows())
    assert len(rows) >= 15  # the tables were found
    checked, stale = 0, []
    for names, measured in rows:
        values = [v for n in names for v in _values(_fig(n))]
        sequences = [q for n in names for q in _sequences(_fig(n))]
        in_runs = set()
        # a run of three or more quoted numbers (a curve, or means over a sweep) must be entries of one sequence of
        # the JSON, in order: much stronger than each number alone, which a long JSON may hold by chance
        for r in _RUN.finditer(measured):
            run = [q.replace("−", "-") for q in _NUM.findall(r.group(0))]
            if any(q in _NOT_IN_THE_JSON for q in run) or _NOT_A_MEASUREMENT.search(measured[: r.start()]):
                continue
            in_runs.update(range(r.start(), r.end()))
            checked += len(run)
            if not _run_agrees(run, sequences):
                stale.append((names, "run", r.group(0)))
        for m in _NUM.finditer(measured):
            if m.start() in in_runs:
                continue
            quoted = m.group(1).replace("−", "-")
            if _NOT_A_MEASUREMENT.search(measured[: m.start()]) or quoted in _NOT_IN_THE_JSON:
                continue
            checked += 1
            if not _agrees(quoted, values):
                stale.append((names, quoted, measured[max(0, m.start() - 50) : m.end()]))
    assert checked >= 150 and not stale, stale


def test_the_ranking_table_is_the_methods_figure():
    """The ranking (mean ± std of L_ood over seeds, mean L_id:subspace) is `figures/methods.json`, row for row, to
    the digits quoted; an L_id at rounding level (< 1e-12) is quoted as such."""
    d = _fig("methods")
    ood, idd = np.asarray(d["ood_error"]), np.asarray(d["id_error"])
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \| ([\d.e-]+) ± ([\d.e-]+) \| ([^|]+) \|$", TEXT, flags=re.M)
    assert [r[1].strip() for r in rows] == d["ranking"]
    for _, name, mean, std, lid in rows:
        i = d["methods"].index(name.strip())
        assert _agrees(mean, [ood[i].mean()]) and _agrees(std, [ood[i].std()]), (name, mean, std)
        lid = lid.strip()
        if lid.startswith("<"):
            assert idd[i].mean() < float(lid.lstrip("< ")), (name, lid)
        else:
            assert _agrees(lid, [idd[i].mean()]), (name, lid, idd[i].mean())
