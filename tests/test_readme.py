"""Every Python block of the README runs alone, in a fresh process, as a new user would paste it."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.slow  # each block compiles in a fresh process (10-30 s)
@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_block_runs_alone(i, tmp_path):
    proc = subprocess.run([sys.executable, "-c", BLOCKS[i]], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 2
