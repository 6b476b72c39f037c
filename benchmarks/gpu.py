"""GPU against CPU: one warm solve, and sweeps of 256, 4 096 and 65 536 instances (`benchmarks/gpu.sh` runs this on a
machine with a GPU, in under 8 minutes; it writes benchmarks/GPU.md).

Each row is timed on the device named, warm (its programs compiled by a first call on a few instances), float64.
The CPU runs the largest sweep only if the smaller ones say it fits the budget; a row that would not is marked so.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)  # the benchmarks are float64, as linnet's tests of the theory

import linnet  # noqa: E402

SHAPE = (60, 3, 20)  # (d, k, n): the sweeps' instances, stiff (default generator)
SMALL = (500, 5, 100)  # the single solve: the benchmark's small stiff problem


def _single(device) -> float:
    d, k, n = SMALL
    with jax.default_device(device):
        p = linnet.subspace_shift(jax.random.PRNGKey(0), d=d, k=k, n=n, eps=0.1)
        v0 = linnet.random_head(jax.random.PRNGKey(1), k, 1.0)
        jax.block_until_ready(linnet.fine_tune(p, v0, [np.inf]).ood_error)
        t = time.perf_counter()
        for _ in range(3):
            jax.block_until_ready(linnet.fine_tune(p, v0, [np.inf]).ood_error)
        return (time.perf_counter() - t) / 3


# how each platform's sweep batches. An accelerator runs a batch as one program, so every member of it is vmapped
# together (`chunk` = the batch), or the batch is one stacked ODE with a shared step-size controller; the CPU keeps
# the sweep's defaults (host threads, chunks of 8 stiff members)
SWEEPS = {
    "gpu": (("vmap", {"batching": "map", "chunk": "batch"}), ("stacked", {"batching": "stacked"})),
    "cpu": (("map", {"batching": "map"}),),
}


def _sweep(device, n_instances: int, batching: str = "map", chunk=None) -> float:
    """Seconds for a warm `linnet.sweep` of FT to t = ∞ over `n_instances` on `device` alone (`devices=[device]`:
    by default a sweep shards over every device of the default backend, which on a GPU machine is the GPU)."""
    d, k, n = SHAPE
    with jax.default_device(device):
        keys = jax.random.split(jax.random.PRNGKey(2), n_instances)
        problems = linnet.subspace_shifts(keys, 0.1, d=d, k=k, n=n)
        heads = jax.random.normal(jax.random.PRNGKey(3), (n_instances, k))
        batch = min(n_instances, 4096)
        kw = dict(methods=("ft",), batch_size=batch, batching=batching, progress=False, devices=[device],
                  chunk=batch if chunk == "batch" else chunk)  # fmt: skip
        few = jax.tree_util.tree_map(lambda a: a[:batch], problems)
        linnet.sweep(few, heads[:batch], [np.inf], **kw)  # compiles the batch program
        t = time.perf_counter()
        jax.block_until_ready(linnet.sweep(problems, heads, [np.inf], **kw).ood_error)
        return time.perf_counter() - t


def run(out: Path, budget: float = 360.0, sizes=(256, 4096, 65536), settings_of: str | None = None) -> str:
    """Time the rows and write the table to `out`. `settings_of`: run that platform's sweep settings (`SWEEPS`) on
    every device found (the tests run the GPU rows' settings on a CPU this way)."""
    t0 = time.perf_counter()
    devices = {"cpu": jax.devices("cpu")[0]}
    try:
        devices = {"gpu": jax.devices("gpu")[0], **devices}
    except RuntimeError:
        pass
    rows = []
    for name, dev in devices.items():
        rows.append((name, "single FT solve to t = ∞ (d = 500, k = 5, n = 100), warm", _single(dev), 1))
    for name, dev in devices.items():
        for label, kw in SWEEPS[settings_of or name]:
            per = None
            for size in sizes:
                left = budget - (time.perf_counter() - t0)
                if per is not None and per * size > left / 2:
                    rows.append((name, f"sweep of {size} ({label})", float("nan"), size))
                    continue
                s = _sweep(dev, size, **kw)
                per = s / size
                rows.append((name, f"sweep of {size} ({label})", s, size))
    lines = [
        "# GPU against CPU",
        "",
        f"Devices: {', '.join(f'{k}: {v.device_kind}' for k, v in devices.items())}; jax {jax.__version__}. "
        f"Sweeps: FT to t = ∞ on `subspace_shifts(d={SHAPE[0]}, k={SHAPE[1]}, n={SHAPE[2]}, eps=0.1)`, metrics only.",
        "",
        "| device | what | seconds | instances/s |",
        "|---|---|---:|---:|",
    ]
    for dev, what, s, n in rows:
        rate = "—" if not np.isfinite(s) else f"{n / s:.0f}"
        secs = "not run (over the budget)" if not np.isfinite(s) else f"{s:.3f}"
        lines.append(f"| {dev} | {what} | {secs} | {rate} |")
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    return text


def main():
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__)
    ap.add_argument("--out", default=str(Path(__file__).with_name("GPU.md")))
    ap.add_argument("--budget", type=float, default=360.0, help="seconds for the sweeps, all devices together")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 4096, 65536])
    ap.add_argument(
        "--settings-of",
        choices=sorted(SWEEPS),
        default=None,
        help="run this platform's sweep settings on every device found (a check of the script)",
    )
    args = ap.parse_args()
    print(run(Path(args.out), args.budget, tuple(args.sizes), args.settings_of))


if __name__ == "__main__":
    main()
