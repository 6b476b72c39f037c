"""The figures' drawing, apart from their numbers: every committed figure redraws from its own saved JSON
(`figures/<name>.json`, so a figure shows exactly its saved numbers), with labelled axes and legends that cover
no plotted point. The numbers themselves are tested in `test_figures_cli.py`."""

from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from linnet import figures

COMMITTED = Path(__file__).parent.parent / "figures"


def _points_under_legend(ax, legends) -> int:
    """How many of the axes' plotted line vertices (display coordinates) fall inside any of the legend boxes."""
    boxes = [leg.get_window_extent() for leg in legends]
    n = 0
    for line in ax.get_lines():
        xy = np.column_stack(line.get_data()).astype(float)
        xy = xy[np.all(np.isfinite(xy), axis=1)]
        if xy.size == 0:
            continue
        disp = ax.transData.transform(xy)
        inside_axes = ax.bbox.contains
        n += sum(any(b.contains(x, y) for b in boxes) and bool(inside_axes(x, y)) for x, y in disp)
    return n


@pytest.mark.parametrize("name", figures.FIGURES)
def test_committed_figure_redraws_from_its_numbers_with_labels_and_clear_legends(name):
    data = figures.load(name, COMMITTED)
    fig = figures.draw(name, data)
    FigureCanvasAgg(fig).draw()  # lay out, so that legend and data positions are final
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert axes
    for i, ax in enumerate(axes):
        # a secondary x axis (`twiny`) shares its y axis, and so its y label, with the panel it was made from
        twin = any(ax.get_shared_y_axes().joined(ax, other) for other in axes[:i])
        assert ax.get_xlabel() and (twin or ax.get_ylabel()), (name, ax.get_title())
    legends = [ax.get_legend() for ax in axes if ax.get_legend() is not None] + list(fig.legends)
    assert legends, f"{name}: no legend"
    for ax in axes:
        assert _points_under_legend(ax, legends) == 0, (name, ax.get_title())


def test_unknown_figure_and_missing_data_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown figure 'nope'"):
        figures.compute("nope")
    with pytest.raises(FileNotFoundError, match="linnet reproduce --only toy"):
        figures.load("toy", tmp_path)


# Reproducibility, said precisely: regenerating a figure reproduces its integers, booleans and strings exactly and
# its floating-point numbers to a stated tolerance, not bit for bit. Closed forms differ across machines in the last
# bits (BLAS and XLA's fusion order); ODE results can differ more, because a rounding difference may change which
# adaptive steps are accepted, moving the result by up to about the solver's tolerance (rtol 1e-8). RTOL_REPRO is
# 100× that; ATOL_REPRO covers quantities that are zero up to rounding (e.g. S⊥ feature changes ~1e-16).
RTOL_REPRO, ATOL_REPRO = 1e-6, 1e-12


def _compare(new, old, path="data"):
    if isinstance(old, dict):
        assert isinstance(new, dict) and set(new) == set(old), (path, sorted(set(new) ^ set(old)))
        for k in old:
            _compare(new[k], old[k], f"{path}.{k}")
    elif isinstance(old, list) and not (old and isinstance(old[0], int | float) and not isinstance(old[0], bool)):
        assert len(new) == len(old), path
        for i, (a, b) in enumerate(zip(new, old, strict=True)):
            _compare(a, b, f"{path}[{i}]")
    elif isinstance(old, bool | str | None) or (isinstance(old, int) and not isinstance(new, float)):
        assert new == old, (path, new, old)
    else:
        np.testing.assert_allclose(np.asarray(new, float), np.asarray(old, float), rtol=RTOL_REPRO, atol=ATOL_REPRO,
                                   err_msg=path)  # fmt: skip


@pytest.mark.parametrize("name", ["toy", "gd", "cls_perp_fraction"])
def test_regenerated_figure_data_match_the_committed_data(name, tmp_path):
    """A closed-form-heavy figure (toy), a discrete iteration (gd) and a log-time ODE figure (cls_perp_fraction),
    regenerated in full mode as `linnet reproduce` does (make, then the JSON), against their committed JSON."""
    import jax

    jax.config.update("jax_enable_x64", True)
    figures.make(name, out=tmp_path)
    new, old = figures.load(name, out=tmp_path), figures.load(name)
    for data in (new, old):
        data.pop("versions")  # package versions and platform: they differ between machines by design
    _compare(new, old)
