"""Figures (quick mode), the command line, and its errors."""

import argparse
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


@pytest.mark.slow  # the quick `linnet reproduce` (about 60 s)
def test_reproduce_quick_writes_every_figure(quick_figs):
    rc, out = quick_figs
    assert rc == 0
    for name in figures.FIGURES:
        png, pdf, js = (out / f"{name}.{ext}" for ext in ("png", "pdf", "json"))
        assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert pdf.stat().st_size > 1000
        data = json.loads(js.read_text())
        assert data["figure"] == name and "jax" in data["versions"]


@pytest.mark.slow  # the quick `linnet reproduce` (about 60 s)
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


@pytest.mark.slow  # the quick `linnet reproduce` (about 60 s)
def test_phase_map_agrees_with_theorem_3_2s_prediction(quick_figs):
    """Theorem 3.2 in the phase data: wherever ε is below the crossover ε*(u) predicted from LP's fitted ε² law
    (u ≥ 0.2, away from the rounding floor at u = 0), LP's OOD error is below FT's (log10 ratio > 0); and the
    best-method map is the argmin of the three errors it was drawn from."""
    _, out = quick_figs
    ph = json.loads((out / "phase.json").read_text())
    u, eps = np.asarray(ph["u"]), np.asarray(ph["eps"])
    z, cross = np.asarray(ph["log10_ft_over_lp"]), np.asarray(ph["predicted_crossover_eps"])
    below = (eps[:, None] < cross[None, :]) & (u[None, :] >= 0.2)
    assert below.sum() >= 20 and np.all(z[below] > 0)
    assert np.array_equal(np.asarray(ph["best"]), np.argmin(np.asarray(ph["L"]), axis=0))


@pytest.mark.slow  # the quick `linnet reproduce` (about 60 s)
def test_phase_nd_agrees_with_theorem_3_2_and_fact_1(quick_figs):
    """The n/d map: at the smallest ε, LP beats FT at every n/d (Theorem 3.2: L_LP/L_FT → 0 as ε → 0); wherever ε is
    below the predicted crossover ε*(n/d), LP's error is below FT's; and FT's disadvantage at the smallest ε shrinks
    as n/d grows (fact 1: FT leaves the (d − n)-dimensional S⊥ part of B0 as it is, the source of its excess error),
    so log10(L_FT/L_LP) is largest at the smallest n/d. The maps are the log-ratios of the errors they come from."""
    _, out = quick_figs
    ph = json.loads((out / "phase_nd.json").read_text())
    eps, nd = np.asarray(ph["eps"]), np.asarray(ph["n_over_d"])
    z, cross, L = np.asarray(ph["log10_ft_over_lp"]), np.asarray(ph["predicted_crossover_eps"]), np.asarray(ph["L"])
    assert np.all(np.diff(nd) > 0) and z.shape == (eps.size, nd.size)
    assert np.all(z[0] > 0)
    below = eps[:, None] < cross[None, :]
    assert below.sum() >= nd.size and np.all(z[below] > 0)
    assert np.argmax(z[0]) == 0
    np.testing.assert_allclose(z, np.log10(L[1] / L[0]), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(ph["log10_lpft_over_lp"]), np.log10(L[2] / L[0]), rtol=1e-12)


@pytest.mark.slow  # the quick `linnet reproduce` (about 60 s)
def test_beyond_the_paper_figure_data(quick_figs):
    """The new figures' numbers satisfy their predictions: GD's limit approaches the flow's at first order and
    diverges at 3× the stable step; LoRA and deeper FT change S⊥ features (FT does not); the exact WiSE-FT α*
    is no worse than either end point; the ranking covers every method."""
    _, out = quick_figs
    gd = json.loads((out / "gd.json").read_text())
    assert 0.8 < gd["order"] < 1.3 and gd["diverges_at_3x"]
    lora = json.loads((out / "lora.json").read_text())
    assert np.min(lora["s_perp_change"]) > 1e-6
    deep = json.loads((out / "deep.json").read_text())
    assert np.max(deep["FT"]["s_perp_change"][0]) < 1e-12 and np.min(deep["FT"]["s_perp_change"][1]) > 1e-6
    w = json.loads((out / "wise_ft.json").read_text())
    for m in ("FT", "LP-FT"):
        ends = [w[m]["ood_error"][0], w[m]["ood_error"][-1]]
        assert w[m]["ood_at_alpha_star"] <= min(ends) + 1e-12
    ranking = json.loads((out / "methods.json").read_text())["ranking"]
    assert len(ranking) == 13 and {"LP", "FT", "LP-FT", "WiSE-FT (α*)"} <= set(ranking)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--method", "sgd"], "invalid choice"),
        (["run", "--method", "gd", "--lr", "-1"], "--lr"),
        (["run", "--method", "ft", "--eps", "2"], "--eps"),
        (["run", "--method", "ft", "--k", "0"], "--k"),
        (["reproduce", "--only", "nope"], "invalid choice"),
        (["compare", "--k", "30", "--d", "40"], "error"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_clear_line(argv, needle, capsys):
    """In process (`cli.main`, as the console script calls it); the entry point itself is run below."""
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse's own errors exit
        rc = e.code
    err = capsys.readouterr().err
    assert rc not in (0, None)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("linnet: error:") and needle in lines[0]
    assert "Traceback" not in err


def test_bad_arguments_through_the_entry_point_give_one_clear_line():
    for argv, needle in ([["frobnicate"], "invalid choice"], [["compare", "--k", "30", "--d", "40"], "error"]):
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


@pytest.mark.parametrize("command", ["compare", "run"])
def test_one_off_commands_compile_light_for_small_problems(command, monkeypatch, capsys):
    """`linnet compare` and `linnet run` solve inside `linnet.light_compile()` for n up to `ONE_OFF_LIGHT_N` (a spy on
    the library call they make records the switch), and outside it above."""
    import linnet
    from linnet._cli_args import ONE_OFF_LIGHT_N, one_off
    from linnet._context import LIGHT

    seen = []
    name = "fine_tune" if command == "compare" else "simulate"
    original = getattr(linnet, name)

    def spy(*args, **kwargs):
        seen.append(LIGHT.get())
        return original(*args, **kwargs)

    monkeypatch.setattr(linnet, name, spy)
    argv = [command, "--d", "20", "--k", "2", "--n", "6"] + (
        ["--method", "ft", "--num-times", "3"] if command == "run" else []
    )
    assert cli.main(["--no-cache", *argv]) == 0
    assert seen == [True]
    assert not LIGHT.get()
    for n, light in ((ONE_OFF_LIGHT_N, True), (ONE_OFF_LIGHT_N + 1, False)):
        with one_off(argparse.Namespace(n=n)):
            assert LIGHT.get() is light


@pytest.mark.parametrize("method", ["two_lr", "l2_sp", "lp_features_only", "gd", "lora", "deep"])
def test_run_every_new_method_matches_the_library(method, tmp_path):
    """`linnet run --method M` reports the library's numbers for M (same problem, same parameters)."""
    import jax

    import linnet

    out = tmp_path / "run.json"
    argv = ["run", "--method", method, "--d", "20", "--k", "2", "--n", "6", "--num-times", "3", "--save", str(out)]
    argv += {"two_lr": ["--eta-B", "0.1"], "l2_sp": ["--lam-B", "0.1"], "lora": ["--rank", "2"]}.get(method, [])
    assert cli.main(argv) == 0
    data = json.loads(out.read_text())
    kp, kh = jax.random.split(jax.random.PRNGKey(0))
    p = linnet.subspace_shift(kp, d=20, k=2, n=6, eps=0.1)
    v0 = linnet.random_head(kh, 2, 1.0)
    t = data["times"]
    ref = {
        "two_lr": lambda: linnet.two_learning_rates(p, v0, t, eta_B=0.1),
        "l2_sp": lambda: linnet.l2_sp(p, v0, t, lam_B=0.1),
        "lp_features_only": lambda: linnet.features_only(p, v0, t, lp_head=True),
        "gd": lambda: linnet.gradient_descent(p, v0, t, lr=0.5 * linnet.gd_stability_step(p, v0)),
        "lora": lambda: linnet.lora(p, v0, t, rank=2, key=jax.random.PRNGKey(1)),
        "deep": lambda: linnet.deep_fine_tune(p, v0, t, depth=2),
    }[method]()
    np.testing.assert_allclose(data["ood_error"], ref.ood_error, rtol=1e-10)


def test_figures_sharing_the_eps_sweep_are_one_task():
    """`linnet reproduce`'s tasks: the figures that read the cached ε sweep run in one process (so it is computed
    once), listed first in the order given; every other figure is its own task."""
    from linnet.figures._jobs import tasks

    assert tasks(["toy", "phase", "gd", "ood_vs_eps"]) == [("phase", "ood_vs_eps"), ("toy",), ("gd",)]
    assert tasks(["toy"]) == [("toy",)]
    every = tasks(figures.FIGURES)
    assert sorted(n for t in every for n in t) == sorted(figures.FIGURES)
    assert every[0] == ("ood_vs_eps", "id_vs_ood", "phase", "phase_nd")


@pytest.mark.slow  # two worker processes compile their programs afresh (about 20 s)
def test_figures_in_worker_processes_write_the_same_files(tmp_path):
    """`make_many` with 2 worker processes (spawned, given this process's float64 choice) writes the same bytes
    (JSON, PNG, PDF) as in this process, for two quick figures, and returns the same verdicts and headlines."""
    from linnet.figures._jobs import make_many

    one = make_many(["toy", "gd"], tmp_path / "one", quick=True, jobs=1)
    two = make_many(["toy", "gd"], tmp_path / "two", quick=True, jobs=2)
    assert one == two
    for name in ("toy", "gd"):
        for ext in ("json", "png", "pdf"):
            assert (tmp_path / "one" / f"{name}.{ext}").read_bytes() == (
                tmp_path / "two" / f"{name}.{ext}"
            ).read_bytes()
