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
    for ax in axes:
        assert ax.get_xlabel() and ax.get_ylabel(), (name, ax.get_title())
    legends = [ax.get_legend() for ax in axes if ax.get_legend() is not None] + list(fig.legends)
    assert legends, f"{name}: no legend"
    for ax in axes:
        assert _points_under_legend(ax, legends) == 0, (name, ax.get_title())


def test_unknown_figure_and_missing_data_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown figure 'nope'"):
        figures.compute("nope")
    with pytest.raises(FileNotFoundError, match="linnet reproduce --only toy"):
        figures.load("toy", tmp_path)
