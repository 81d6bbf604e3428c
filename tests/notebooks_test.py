"""Runs the code cells of every notebook (slow: a few full trainings)."""

import glob
import json
import os

import matplotlib
import pytest

matplotlib.use("Agg")


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(glob.glob("notebooks/*.ipynb")))
def test_notebook_runs(path, monkeypatch):
    nb = json.load(open(path))
    monkeypatch.chdir(os.path.dirname(path))
    scope: dict = {}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            src = "".join(cell["source"])
            src = "\n".join(l for l in src.splitlines() if not l.lstrip().startswith("!"))
            exec(compile(src, path, "exec"), scope)
