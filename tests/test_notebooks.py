"""Every notebook runs end to end at its smoke parameters, writes its figures, and renders to a page
that headless Chromium opens without JavaScript errors and with every figure drawn."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest

from workbench.notebooks import (
    NOTEBOOKS_DIR,
    NotebookError,
    _environ,
    execute_notebook,
    list_notebooks,
    render_notebooks,
    run_notebooks,
)

pytest.importorskip("papermill")
pytest.importorskip("jupytext")
pytest.importorskip("plotly")

NOTEBOOK_SOURCES = sorted(NOTEBOOKS_DIR.glob("*.py"))
PARAMETERS_CELL = re.compile(r'^# %%.*\btags\s*=\s*\[[^\]]*["\']parameters["\']', re.MULTILINE)
# These notebooks must run at smoke size with no data at all (a generated text stands in for
# tiny-shakespeare), so their kernels get a data directory that cannot exist.
NEEDS_NO_DATA = ("00_design", "01_quickstart", "02_routing", "03_refractory", "04_benchmarks", "06_heads")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Callable[[str], tuple[Path, Path]]:
    """``smoke_run(name)`` -> (executed copy, its figures dir); each notebook runs once per session."""
    root = tmp_path_factory.mktemp("smoke")
    done: dict[str, tuple[Path, Path]] = {}

    def run(name: str) -> tuple[Path, Path]:
        if name not in done:
            figures = root / name / "figures"
            env = {"WORKBENCH_FIGURES_DIR": str(figures), "OMP_NUM_THREADS": "1"}
            if name in NEEDS_NO_DATA:
                (root / "no-data").write_text("")  # a file: no data directory can be made there
                env["WORKBENCH_DATA_DIR"] = str(root / "no-data" / "data")
            with _environ(**env):
                [executed] = run_notebooks([name], smoke=True, out_dir=root / name, progress=False)
            done[name] = (executed, figures)
        return done[name]

    return run


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """Figures into a temp dir; one torch thread (tiny models, and a shared 2-core machine)."""
    figures = tmp_path / "figures"
    monkeypatch.setenv("WORKBENCH_FIGURES_DIR", str(figures))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return figures


def error_outputs(nb: dict) -> list[str]:
    errors = []
    for index, cell in enumerate(nb["cells"]):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                errors.append(f"cell {index}: {output.get('ename')}: {output.get('evalue')}")
    return errors


def test_there_are_notebooks():
    assert list_notebooks(), f"no NN_*.py notebooks in {NOTEBOOKS_DIR}"


@pytest.mark.parametrize("source", NOTEBOOK_SOURCES, ids=lambda p: p.name)
def test_notebook_has_parameters_cell(source: Path):
    text = source.read_text()
    assert PARAMETERS_CELL.search(text), f'{source.name} needs a cell marked # %% tags=["parameters"]'
    assert re.search(r"^smoke\s*=\s*False\b", text, re.MULTILINE), (
        f"{source.name}: the parameters cell must set smoke = False"
    )


@pytest.mark.parametrize("name", list_notebooks())
def test_notebook_runs_at_smoke_parameters(name: str, smoke_run):
    executed, figures_dir = smoke_run(name)
    assert executed.name == f"{name}.ipynb" and executed.is_file()
    nb = nbformat.read(executed, as_version=4)
    assert not error_outputs(nb), error_outputs(nb)
    injected = [c for c in nb["cells"] if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "smoke = True" in injected[0].source
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    figures = sorted(p.name for p in figures_dir.glob(f"{name}_*.html"))
    assert figures, f"{name} wrote no figures/{name}_*.html"
    for figure in figures:
        html = (figures_dir / figure).read_text()
        assert len(html) > 100_000 and "Plotly.newPlot" in html, f"{figure} should embed plotly.js (self-contained)"


@pytest.mark.parametrize("name", list_notebooks())
def test_rendered_page_in_browser(name: str, smoke_run, tmp_path: Path):
    """The smoke run's page: self-contained (no external script), no JS errors, every figure drawn."""
    from workbench.lab.browser import check_page
    from workbench.plotting import browser_path

    if browser_path() is None:
        pytest.skip("no Chromium for the browser check (apt-get install chromium; .ci/run does)")
    executed, _ = smoke_run(name)
    [page] = render_notebooks([executed], tmp_path / "site", progress=False)
    html = page.path.read_text()
    assert not re.search(r"<script[^>]+src=[\"']https?:", html), "the page loads a script from the network"
    assert page.figures > 0, f"{name}'s page has no figure"
    check = check_page(page.path)
    assert check.figures == page.figures, (check.figures, page.figures)
    assert check.ok, check.problems


def test_failing_cell_is_named(tmp_path: Path, kernel_env: Path):
    """A failure names the notebook, the cell and the error - and the kernel is this venv."""
    source = tmp_path / "99_broken.py"
    source.write_text(
        '# %% tags=["parameters"]\nsmoke = False\n\n'
        "# %%\nimport sys\nimport workbench.notebooks as wn\n"
        "print('EXE', sys.executable)\nprint('PKG', wn.REPO_ROOT)\n\n"
        "# %%\nraise ValueError('boom in cell two')\n"
    )
    output = tmp_path / "out" / "99_broken.ipynb"
    with pytest.raises(NotebookError, match=r"99_broken\.py failed in cell \d+ .*ValueError: boom in cell two"):
        execute_notebook(source, output, {"smoke": True}, progress=False)
    nb = nbformat.read(output, as_version=4)
    printed = "".join(o.get("text", "") for c in nb["cells"] for o in c.get("outputs", []) if o.get("name") == "stdout")
    assert f"EXE {sys.executable}" in printed
    assert f"PKG {NOTEBOOKS_DIR.parent}" in printed


def test_unknown_notebook_name_is_a_clear_error():
    with pytest.raises(ValueError, match="matches no notebook"):
        run_notebooks(["no_such_notebook"], smoke=True)


def test_executed_copy_is_trusted(smoke_run):
    """JupyterLab shows an executed copy's widgets and HTML only if the notebook is trusted."""
    from nbformat.sign import NotebookNotary

    executed, _ = smoke_run("01_quickstart")
    assert NotebookNotary().check_signature(nbformat.read(executed, as_version=4))
