"""Every figure, redrawn from its committed numbers (`figures.draw(name, figures.load(name))`), keeps what it draws
inside its canvas, and none of its titles, axis labels, legend entries or annotations overlap another (tick labels
are placed by matplotlib's locators and left out)."""

import itertools

import matplotlib
import pytest

from linnet import figures


def _texts(fig, renderer):
    ticks = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            ticks.update(id(t) for t in axis.get_ticklabels(which="both"))
            ticks.add(id(axis.get_offset_text()))
    out = []
    for t in fig.findobj(matplotlib.text.Text):
        if id(t) in ticks or not t.get_visible() or not t.get_text().strip():
            continue
        box = t.get_window_extent(renderer)
        if box.width > 0 and box.height > 0:
            out.append((t.get_text(), box))
    return out


@pytest.mark.parametrize("name", figures.FIGURES)
def test_figure_content_is_inside_the_canvas_and_texts_do_not_overlap(name):
    fig = figures.draw(name, figures.load(name))
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    tb = fig.get_tightbbox(renderer)
    w, h = fig.get_size_inches()
    slack = 0.02  # inches: anti-aliasing of the outermost glyphs
    assert tb.x0 >= -slack and tb.y0 >= -slack and tb.x1 <= w + slack and tb.y1 <= h + slack, (tuple(tb.bounds), (w, h))
    boxes = _texts(fig, renderer)
    clashes = [(a[0], b[0]) for a, b in itertools.combinations(boxes, 2) if a[1].overlaps(b[1])]
    assert not clashes, clashes


def test_the_checks_can_fail():
    """The helpers on a figure made to fail: a text past the right edge, and two texts on top of each other."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.set_title("a title much longer than a three-inch canvas can hold, by far")
    ax.text(0.5, 0.5, "one", transform=ax.transAxes)
    ax.text(0.5, 0.5, "two", transform=ax.transAxes)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    assert fig.get_tightbbox(renderer).x1 > 3.02
    boxes = _texts(fig, renderer)
    assert any(a[1].overlaps(b[1]) for a, b in itertools.combinations(boxes, 2))
