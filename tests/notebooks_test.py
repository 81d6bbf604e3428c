"""The notebooks in notebooks/: their conventions, and a smoke run of each.

The convention tests are fast and run by default. The smoke runs execute every
notebook in a Jupyter kernel with ``FLJAX_SMOKE=1`` (each shrinks to seconds of
work, about 25 s of CPU mostly compiling); they are marked ``notebooks`` and
CI runs them as their own step (``pytest -m notebooks``), so a notebook that no
longer runs fails CI.

A notebook is committed with the outputs of a real run. To run one with its
full settings and keep its outputs (add ``--smoke`` for the shrunken ones):

  python tests/notebooks_test.py notebooks/byzantine.ipynb
"""

import ast
import glob
import os
import sys

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
_IDS = [os.path.basename(p) for p in NOTEBOOKS]


def execute(path: str, smoke: bool, timeout: int | None = None, tmpdir: str | None = None):
    """Runs every cell of the notebook at ``path`` in a fresh kernel started in
    its folder; returns the notebook with its outputs (raises
    ``nbclient.exceptions.CellExecutionError`` on the first failing cell)."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    env.pop("FLJAX_SMOKE", None)
    if smoke:
        env["FLJAX_SMOKE"] = "1"
    # The kernel imports this checkout's fljax whatever is installed.
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    if tmpdir:
        env["TMPDIR"] = str(tmpdir)
    client = NotebookClient(nb, timeout=timeout or -1, kernel_name="python3",
                            record_timing=False,
                            resources={"metadata": {"path": os.path.dirname(path)}})
    client.execute(env=env)
    return nb


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _python(source: str) -> str:
    """A cell's source as plain Python (``!cmd`` and magics translated)."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_IDS)
def test_first_code_cell_is_the_shared_setup(path):
    # One setup cell, the same everywhere: the Colab install (REPO placeholder), the
    # repository root as working directory, SMOKE from FLJAX_SMOKE.
    setup = _code_cells(nbformat.read(NOTEBOOKS[0], as_version=4))[0].source
    assert "google.colab" in setup and "pip install" in setup and "FLJAX_SMOKE" in setup
    first = _code_cells(nbformat.read(path, as_version=4))[0].source
    assert first == setup, f"{path}: the first code cell differs from {NOTEBOOKS[0]}'s setup cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_IDS)
def test_defines_no_library_code(path):
    # A helper a notebook needs goes into fljax, with a test.
    for cell in _code_cells(nbformat.read(path, as_version=4)):
        for node in ast.walk(ast.parse(_python(cell.source))):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)), (
                f"{path}: a code cell defines {node.name!r}; library code belongs in fljax")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_IDS)
def test_committed_with_outputs_ending_in_a_plot(path):
    cells = _code_cells(nbformat.read(path, as_version=4))
    for i, cell in enumerate(cells):
        assert cell.execution_count is not None, f"{path}: code cell {i} was not run"
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"{path}: code cell {i} failed: {errors[0].get('ename')}"
    assert any("image/png" in o.get("data", {}) for o in cells[-1].outputs), (
        f"{path}: the last code cell shows no plot")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_IDS)
def test_readme_section_and_main_plot(path):
    name = os.path.splitext(os.path.basename(path))[0]
    image = f"notebooks/img/{name}.png"
    assert os.path.isfile(os.path.join(ROOT, image)), f"{image} (the notebook's main plot) is missing"
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert f"notebooks/{name}.ipynb" in readme and image in readme, (
        f"README.md needs a section on notebooks/{name}.ipynb showing {image}")


def test_library_plots_leave_the_notebook_backend_alone(tmp_path):
    """Catches: fljax switching matplotlib to Agg while it writes its PNGs (a
    notebook's own ``plt.show()`` after a sweep or a leak run then shows nothing)."""
    import matplotlib
    import numpy as np

    from fljax import leak, results, sweep

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # stands in for a notebook's inline backend
    try:
        results.plot_history([{"round": 0, "main_accuracy": 0.1},
                              {"round": 1, "main_accuracy": 0.5}], str(tmp_path / "a.png"))
        leak._save_grid(str(tmp_path / "g.png"), np.zeros((2, 1, 8, 8, 1)),
                        [("run", np.ones((2, 1, 8, 8, 1)))], 2)
        (tmp_path / "results.csv").write_text("cell,lr,main_accuracy\n0,0.1,0.5\n1,0.2,0.7\n")
        sweep.write_tables(str(tmp_path), ["lr"], ["main_accuracy"])
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    for name in ("a.png", "g.png", "heatmap_main_accuracy.png"):
        assert (tmp_path / name).stat().st_size > 1000, name


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_IDS)
def test_runs_in_smoke_mode(path, tmp_path):
    nb = execute(path, smoke=True, timeout=1200, tmpdir=tmp_path)
    images = [o for c in _code_cells(nb) for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{path}: no plot in smoke mode"


if __name__ == "__main__":
    args = sys.argv[1:]
    smoke = "--smoke" in args
    for p in [a for a in args if a != "--smoke"]:
        nbformat.write(execute(os.path.abspath(p), smoke=smoke), p)
        print(f"{p}: executed ({'smoke' if smoke else 'full'} settings), outputs written")
