"""The documentation site builds strictly (warnings are errors: a broken link, a missing page or a reference
mkdocstrings cannot resolve fails), documents every public name, renders the notebooks with their figures and
shows every figure; and pyright (basic mode) finds no error in the package."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import linnet
from linnet import figures

pytestmark = pytest.mark.slow  # builds the docs site and runs pyright (about 40 s)

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "-d", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_every_public_name_has_an_api_entry(site):
    api = "".join(p.read_text() for p in (site / "api").rglob("index.html"))
    # the package's own modules are documented as modules; every other public name has its own heading
    missing = [n for n in linnet.__all__ if n not in ("figures", "stress", "testing", "theory", "__version__")
               and f'id="linnet.{n}"' not in api]  # fmt: skip
    assert not missing, missing
    assert 'id="linnet.theory"' in api


def test_notebooks_render_with_their_figures(site):
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        html = (site / "notebooks" / nb.stem / "index.html").read_text()
        assert "data:image/png" in html, nb.name


def test_gallery_shows_every_figure_and_the_images_exist(site):
    html = (site / "gallery" / "index.html").read_text()
    for name in figures.FIGURES:
        assert f'src="../figures/{name}.png"' in html, name
        assert (site / "figures" / f"{name}.png").exists(), name


def test_included_pages_carry_their_source(site):
    """paper_repro.md, benchmarks/RESULTS.md, the README's commands and its Design section are included, not
    copied."""
    arch = (site / "architecture" / "index.html").read_text()
    assert "Where things go" in arch and "diffrax_internals" in arch
    assert "Verdicts at a glance" in (site / "paper_repro" / "index.html").read_text()
    assert "pip install" in (site / "index.html").read_text()
    first = (ROOT / "benchmarks" / "RESULTS.md").read_text().splitlines()[0].lstrip("# ").strip()
    assert first and first in (site / "benchmarks" / "index.html").read_text()


def test_pyright_basic_finds_no_errors():
    proc = subprocess.run([str(BIN / "pyright"), "--pythonpath", sys.executable, "linnet"], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0 and "0 errors" in proc.stdout, proc.stdout[-4000:]
