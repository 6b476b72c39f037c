"""How long `linnet.testing.search` takes: the random part's rate (instances per second in compiled batches, after
the first batch compiles) and a default search (1 024 random instances, 8 Adam starts × 60 steps, shrinking and
the Radau replay) of Theorem 3.1 on (d, k, n) = (12, 2, 8). Writes benchmarks/TESTING_SEARCH.md.

    python -m benchmarks.testing_search [--random N] [--out PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax


def measure(random: int = 256, default_search: bool = True) -> dict:
    jax.config.update("jax_enable_x64", True)
    from linnet import testing as lt

    st = lt.statements.theorem_3_1
    kw = dict(shapes=[(12, 2, 8)], starts=0, progress=False, shrink=False, replay_worst=False)
    t0 = time.perf_counter()
    lt.search(st, key=jax.random.PRNGKey(0), random=random, **kw)
    t1 = time.perf_counter()
    lt.search(st, key=jax.random.PRNGKey(1), random=random, **kw)
    t2 = time.perf_counter()
    out = dict(random=random, first_s=t1 - t0, warm_s=t2 - t1, rate=random / (t2 - t1))
    if default_search:
        t3 = time.perf_counter()
        rep = lt.search(st, key=jax.random.PRNGKey(2), shapes=[(12, 2, 8)], progress=False)
        out.update(default_s=time.perf_counter() - t3, report=str(rep))
    return out


def table(r: dict | None, heading: str = "# linnet.testing.search: time") -> list[str]:
    """The Markdown lines of a `measure` result (its own file's, or a section of RESULTS.md with `heading`)."""
    if not r:
        return []
    lines = [
        heading,
        "",
        "Statement: Theorem 3.1 as printed (`linnet.testing.statements.theorem_3_1`, FT at 7 times, t = ∞ included),",
        "shape (d, k, n) = (12, 2, 8), float64, 2 CPU cores.",
        "",
        "| part | time |",
        "|---|---:|",
        f"| random part, {r['random']} instances, first call (compiles the batched statement) | {r['first_s']:.1f} s |",
        f"| random part, {r['random']} instances, warm | {r['warm_s']:.1f} s ({r['rate']:.0f} instances/s) |",
    ]
    if "default_s" in r:
        part = "default search (1 024 random, 8 starts × 60 Adam steps, shrink, replay)"
        lines += [f"| {part} | {r['default_s']:.0f} s |", "", f"Its report: {r['report']}"]
    return [*lines, ""]


def write(r: dict, out: Path) -> None:
    out.write_text("\n".join(table(r)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--random", type=int, default=256)
    ap.add_argument("--out", default=str(Path(__file__).with_name("TESTING_SEARCH.md")))
    ap.add_argument("--no-default-search", action="store_true")
    args = ap.parse_args()
    r = measure(args.random, not args.no_default_search)
    write(r, Path(args.out))
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
