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


def test_ratio_maps_take_their_colour_limits_from_the_data():
    """The maps' colour limits are the 98th percentile of |log10 ratio| outside the u ≈ 0 strip, and each colour
    bar's label states the limit actually used (it once said "±3" where the limit was ±0.47). Reference: NumPy's
    percentile on the committed JSON."""
    import numpy as np

    from linnet.figures._draw_paper import colour_limit

    for name in ("phase", "phase_nd"):
        data = figures.load(name)
        x = np.asarray(data["u"] if name == "phase" else data["n_over_d"])
        exclude = x < 0.01 if name == "phase" else None
        fig = figures.draw(name, data)
        labels = [ax.get_ylabel() for ax in fig.axes if "decades" in ax.get_ylabel()]
        assert len(labels) == 2
        for key, label in zip(("log10_ft_over_lp", "log10_lpft_over_lp"), labels, strict=True):
            z = np.asarray(data[key])
            keep = np.ones(z.shape, bool) if exclude is None else np.broadcast_to(~exclude[None, :], z.shape)
            want = max(float(np.percentile(np.abs(z[keep]), 98.0)), 1e-3)
            lim, clipped = colour_limit(z, exclude)
            assert lim == want and (f"±{lim:.3g}" in label) == (clipped > 0), (name, key, label)
