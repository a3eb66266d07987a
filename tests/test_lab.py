"""``make lab``: the project's JupyterLab settings open ``notebooks/NN_name.py`` as notebooks (headless)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("jupyterlab")
pytest.importorskip("jupytext")

from workbench.lab.jupyterlab import FACTORY, SETTINGS_DIR, check_lab, lab_arguments  # noqa: E402


def test_make_lab_uses_the_project_settings():
    arguments = lab_arguments()
    assert f"--LabApp.app_settings_dir={SETTINGS_DIR}" in arguments
    assert (SETTINGS_DIR / "overrides.json").is_file()
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    assert "-m workbench.lab.jupyterlab" in makefile


def test_py_notebooks_open_as_notebooks():
    """Server-side: the default viewer, the extension and the contents API; in Chromium: notebook cells."""
    check = check_lab("01_quickstart.py")
    assert check.default_viewer == FACTORY
    assert check.jupytext_extension and check.served_as_notebook and check.cells > 3
    assert check.ok, check.problems
    if check.browser_cells is not None:
        assert check.browser_cells == check.cells
