"""Figures (quick mode), the command line, and its errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from linnet import cli, figures


@pytest.fixture(scope="module")
def quick_figs(tmp_path_factory):
    out = tmp_path_factory.mktemp("figs")
    rc = cli.main(["reproduce", "--quick", "--out", str(out)])
    return rc, out


def test_reproduce_quick_writes_every_figure(quick_figs):
    rc, out = quick_figs
    assert rc == 0
    for name in figures.FIGURES:
        png, pdf, js = (out / f"{name}.{ext}" for ext in ("png", "pdf", "json"))
        assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert pdf.stat().st_size > 1000
        data = json.loads(js.read_text())
        assert data["figure"] == name and "jax" in data["versions"]


def test_figure_data_is_what_the_library_computes(quick_figs):
    """Numbers in the figure files agree with independent expectations: LP's OOD error slope ≈ 2 in ε
    (Theorem 3.2), FT's feature change on S⊥ is 0 (fact 1), LP beats FT on x_ood in the toy."""
    _, out = quick_figs
    eps = json.loads((out / "ood_vs_eps.json").read_text())
    assert abs(eps["LP"]["slope"] - 2) < 0.1 and abs(eps["FT"]["slope"]) < 0.5
    fc = json.loads((out / "feature_change.json").read_text())
    assert fc["FT"]["max_in_S_perp"] < 1e-12
    assert fc["FT"]["in_S"][-1] > fc["LP-FT"]["in_S"][-1]
    toy = json.loads((out / "toy.json").read_text())
    assert toy["ood_sq_error_on_x_ood"]["LP"] < toy["ood_sq_error_on_x_ood"]["FT"]
    # the toy's LP predictor fits x_id exactly
    assert abs(np.dot(toy["w_lp"], toy["x_id"]) - np.dot(toy["w_star"], toy["x_id"])) < 1e-12


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--method", "sgd"], "invalid choice"),
        (["run", "--method", "ft", "--eps", "2"], "--eps"),
        (["run", "--method", "ft", "--k", "0"], "--k"),
        (["reproduce", "--only", "nope"], "invalid choice"),
        (["compare", "--k", "30", "--d", "40"], "error"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_clear_line(argv, needle):
    proc = subprocess.run([sys.executable, "-m", "linnet", *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("linnet: error:") and needle in lines[0]
    assert "Traceback" not in proc.stderr


def test_run_prints_and_saves(tmp_path, capsys):
    out = tmp_path / "run.json"
    assert cli.main(["run", "--method", "lp", "--d", "30", "--k", "2", "--n", "8", "--save", str(out)]) == 0
    text = capsys.readouterr().out
    assert "OOD error" in text and "inf" in text
    data = json.loads(out.read_text())
    assert len(data["ood_error"]) == len(data["times"])
