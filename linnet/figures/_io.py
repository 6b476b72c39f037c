"""Shared pieces of the figures: palette, style (applied per figure by `rc_context`), JSON and file output."""

from __future__ import annotations

import functools
import json
import math
import platform
from pathlib import Path

import jax
import numpy as np

# Okabe–Ito colour-blind-safe palette, one colour per method everywhere
COLORS = {"LP": "#0072B2", "FT": "#D55E00", "LP-FT": "#009E73", "FT (zero head)": "#E69F00", "bound": "#000000"}
STYLE = {
    "figure.figsize": (3.4, 2.6),
    "figure.dpi": 150,
    "savefig.dpi": 200,
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "lines.linewidth": 1.3,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,
    "figure.constrained_layout.use": True,
}


class _Canvas:
    """What the figure functions need of pyplot, without pyplot: `subplots` makes a `matplotlib.figure.Figure`
    (no backend is selected and no global figure manager holds it), drawn under `STYLE` by `_styled`."""

    @staticmethod
    def subplots(*args, figsize=None, layout=None, **kwargs):
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, layout=layout)
        return fig, fig.subplots(*args, **kwargs)


def _styled(fn):
    """Run a figure function under `matplotlib.rc_context(STYLE)`: the style applies to its figure only, and the
    caller's rcParams and backend are left as they were."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(STYLE):  # pyright: ignore[reportArgumentType]
            return fn(*args, **kwargs)

    return wrapper


def _style():
    return _Canvas


def _versions():
    import diffrax
    import matplotlib
    import scipy

    from .._version import __version__

    return {
        "linnet": __version__,
        "jax": jax.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "diffrax": diffrax.__version__,
        "matplotlib": matplotlib.__version__,
        "python": platform.python_version(),
    }


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, jax.Array | np.ndarray):
        return _jsonable(np.asarray(x).tolist())
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else str(float(x))
    if isinstance(x, np.integer):
        return int(x)
    return x


def _save(fig, name: str, out, data: dict) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # "tight" grows the canvas to whatever text reaches past it (a long title or an outer axis label), which the
    # constrained layout alone does not: nothing drawn is cut off at the edge
    fig.savefig(out / f"{name}.png", bbox_inches="tight", pad_inches=0.05)
    fig.savefig(out / f"{name}.pdf", metadata={"CreationDate": None}, bbox_inches="tight", pad_inches=0.05)
    data = dict(data, figure=name, versions=_versions())
    (out / f"{name}.json").write_text(json.dumps(_jsonable(data), indent=1))
    return data


def _shape(quick: bool) -> dict:
    return dict(d=60, k=2, n=15) if quick else dict(d=200, k=3, n=40)


def _slope(x, y) -> float:
    good = (y > 0) & np.isfinite(y)
    return float(np.polyfit(np.log(x[good]), np.log(y[good]), 1)[0])
