"""Rendering executed notebooks to self-contained pages, and the headless-Chromium check of them (fast)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from workbench.lab.render import FIGURE_MIME, STATE_MIME, VIEW_MIME, index_html, prepare, render_notebook, title_of
from workbench.plotting import browser_path

FIGURE = {"data": [{"type": "scatter", "x": [1, 2, 3], "y": [3, 1, 2]}], "layout": {"title": {"text": "t"}}}


def widget_notebook() -> nbformat.NotebookNode:
    """A notebook as papermill saves one: a fig.show() output, a FigureWidget and a slider in a box."""
    figure_widget = {"model_module": "anywidget", "model_name": "AnyModel", "model_module_version": "~0.11.*",
                     "state": {"_anywidget_id": "plotly.graph_objs._figurewidget.FigureWidget", "_esm": "x" * 1000,
                               "_widget_data": FIGURE["data"], "_widget_layout": json.dumps(FIGURE["layout"])}}
    slider = {"model_module": "@jupyter-widgets/controls", "model_name": "IntSliderModel", "model_module_version": "2.0.0",
              "state": {"description": "M (units)", "value": 16, "min": 4, "max": 64}}
    box = {"model_module": "@jupyter-widgets/controls", "model_name": "VBoxModel", "model_module_version": "2.0.0",
           "state": {"children": ["IPY_MODEL_slider", "IPY_MODEL_fw"]}}
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {STATE_MIME: {"version_major": 2, "version_minor": 0,
                                           "state": {"fw": figure_widget, "slider": slider, "box": box}}}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 99 · A title\n\nWhat it is about, with $x^2$.\n\nMore."),
        nbformat.v4.new_code_cell("fig.show()", outputs=[nbformat.v4.new_output("display_data", {FIGURE_MIME: FIGURE})]),
        nbformat.v4.new_code_cell("display(box); display(fw)", outputs=[
            nbformat.v4.new_output("display_data", {VIEW_MIME: {"model_id": "box", "version_major": 2}}),
            nbformat.v4.new_output("display_data", {VIEW_MIME: {"model_id": "fw", "version_major": 2}}),
        ]),
    ]
    return nb


def test_prepare_draws_figures_and_drops_the_figure_widget_model():
    nb, page = prepare(widget_notebook(), with_widget_renderer=True)
    assert page.figures == 2 and page.widget_views == 1 and page.math
    state = nb.metadata["widgets"][STATE_MIME]["state"]
    assert "fw" not in state  # its 4.6 MB copy of plotly.js stays out of the page
    assert state["box"]["state"]["children"] == ["IPY_MODEL_slider"]
    html = [o["data"].get("text/html", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert sum("Plotly.newPlot" in h for h in html) == 2


def test_without_the_widget_renderer_controls_become_text():
    nb, page = prepare(widget_notebook(), with_widget_renderer=False)
    assert page.widget_views == 0 and "widgets" not in nb.metadata
    html = " ".join(o["data"].get("text/html", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "M (units) = 16" in html


def test_index_lists_titles():
    nb = widget_notebook()
    assert title_of(nb) == "99 · A title"
    page = index_html([("99_a.html", title_of(nb), "What it is about.")])
    assert 'href="99_a.html"' in page and "What it is about." in page


needs_browser = pytest.mark.skipif(browser_path() is None, reason="no Chromium (apt-get install chromium)")


@needs_browser
def test_rendered_page_passes_the_browser_check(tmp_path: Path):
    from workbench.lab.browser import check_page

    source = tmp_path / "99_demo.ipynb"
    nbformat.write(widget_notebook(), source)
    page = render_notebook(source, tmp_path / "99_demo.html")
    check = check_page(page.path)
    assert check.ok, check.problems
    assert check.figures == check.drawn == 2


@needs_browser
def test_browser_check_catches_errors_and_missing_figures(tmp_path: Path):
    from workbench.lab.browser import check_page

    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><head></head><body><div class='wb-figure'></div>"
                    "<script>undefinedFunction();</script><script>console.error('bad');</script></body></html>")
    check = check_page(page)
    assert not check.ok
    assert any("undefinedFunction" in e for e in check.errors) and any("bad" in e for e in check.errors)
    assert check.figures == 1 and check.drawn == 0

