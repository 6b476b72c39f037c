"""Execute every notebook in place, storing its outputs (figures included), so that a reader on a code host sees
them:  python notebooks/execute.py  (the tests execute the notebooks again, in a fresh kernel, without writing)."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

if __name__ == "__main__":
    here = Path(__file__).parent
    for path in sorted(here.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(here)}}).execute()
        for cell in nb.cells:  # execution counts and timings differ run to run; keep the diff to real changes
            cell.get("metadata", {}).pop("execution", None)
        nbformat.write(nb, path)
        print("executed", path.name)
