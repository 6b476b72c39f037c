"""`python -m benchmarks --smoke` runs every competitor and every section of the benchmark at a tiny size and writes
its report: the benchmarks cannot rot unnoticed between the (long) real runs. It checks that they run, not speed."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # about 95 s on 2 cores: each section compiles its programs
def test_every_benchmark_section_runs_at_a_tiny_size(tmp_path):
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for heading in ("## tiny", "## Sweep throughput", "## Batch size", "## Per-step profile", "## Setup profile",
                    "## Scaling in d", "## Latency", "## Accuracy per tolerance", "## `linnet reproduce`",
                    "## linnet.testing.search", "## Targets"):  # fmt: skip
        assert heading in text, heading
    assert "scipy solve_ivp LSODA" in text and "NumPy gradient descent" in text and "diffrax Tsit5" in text


@pytest.mark.slow  # compiles a single solve and a sweep (about 20 s)
def test_the_gpu_benchmark_runs_on_cpu_alone(tmp_path):
    """`benchmarks/gpu.sh`'s script, on a machine without a GPU, at tiny sizes: it times the CPU rows and writes
    its table (the GPU rows appear only where a GPU is)."""
    out = tmp_path / "GPU.md"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--sizes", "4", "8", "--budget", "60", "--out",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "| cpu | single FT solve" in text and "| cpu | sweep of 8 (map) |" in text


@pytest.mark.slow  # compiles a single solve and the two batched programs (about 30 s)
def test_the_gpu_rows_sweep_settings_run(tmp_path):
    """The GPU rows' sweeps (every member of a batch vmapped, and the batch as one stacked ODE, each pinned to its
    device), run on a CPU through `--settings-of gpu`: a GPU machine's one lent run must not be the first time
    this code runs."""
    out = tmp_path / "GPU.md"
    args = ["--sizes", "4", "8", "--budget", "120", "--out", str(out), "--settings-of", "gpu"]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for label in ("vmap", "stacked"):
        for size in (4, 8):
            row = next(line for line in text.splitlines() if f"| cpu | sweep of {size} ({label}) |" in line)
            assert float(row.split("|")[3]) > 0, row


def test_the_reproduce_target_is_scaled_by_the_machines_yardstick():
    """`reproduce_profile.at_yardstick`: the main job's wall time times the ratio of two Robertson yardsticks
    (100 s where the yardstick took 3 s is 50 s where it took 1.5 s, by hand), None without both; the README's
    run (`readme`) is the one scaled where present."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.reproduce_profile import at_yardstick

    prof = {"readme": {"wall_s": 100.0}, "cli": {"wall_s": 80.0}, "robertson_s": 3.0}
    assert at_yardstick(prof, 1.5) == pytest.approx(50.0, rel=1e-12)
    assert at_yardstick({"cli": {"wall_s": 80.0}, "robertson_s": 2.0}, 1.0) == pytest.approx(40.0, rel=1e-12)
    assert at_yardstick(prof, None) is None
    assert at_yardstick({"readme": {"wall_s": 100.0}}, 1.5) is None
