"""A hypothesis strategy of the search family, for property tests (hypothesis is imported only when used)."""

from __future__ import annotations

import warnings

import jax

from ._instance import check_eps, check_shapes, draw_instance


def instances(*, d: int, k: int, n: int, eps=(0.0, 0.5), m: int | None = None):
    """A hypothesis strategy of `Instance`s of shape (d, k, n) (dim S = `m`, default n), drawn from the family of
    `search` (ε uniform in `eps` and set exactly, ‖v⋆‖ log-uniform over [0.1, 10], zero, random or nearly aligned
    heads). Needs the `hypothesis` package (`pip install 'linnet[test]'`)."""
    from hypothesis import strategies as st

    shape = check_shapes([(d, k, n) if m is None else (d, k, n, m)])[0]
    rng = check_eps(eps)

    def draw(seed: int):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return draw_instance(jax.random.PRNGKey(seed), shape, rng)

    return st.integers(0, 2**32 - 1).map(draw)
