"""Executed notebooks -> self-contained HTML pages under ``docs/site/`` (readable without running).

Each page inlines what it needs once, so it opens offline from disk: plotly.js (one copy for all
the page's figures), the standalone widget renderer with the saved widget state, and MathJax.

* ``fig.show()`` outputs (``application/vnd.plotly.v1+json``, which nbconvert would drop) become a
  ``<div class="wb-figure">`` drawn by ``Plotly.newPlot``.
* A plotly ``FigureWidget`` (an anywidget whose state carries its own 4.6 MB copy of plotly.js) is
  drawn the same way from its saved ``_widget_data`` / ``_widget_layout``: the figure as it was
  when the notebook finished. Its model leaves the widget state.
* The other widgets (sliders, dropdowns, buttons) keep their saved state and are drawn by the
  widget renderer; they cannot re-run the model without a kernel, which a note says. Without the
  renderer (no npm), each becomes a one-line description of its controls and values.

``render_site`` writes one page per executed notebook and a small ``index.html``.
"""

from __future__ import annotations

import copy
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.lab.assets import Asset, inline_safe, npm_asset, plotly_js

FIGURE_MIME = "application/vnd.plotly.v1+json"
VIEW_MIME = "application/vnd.jupyter.widget-view+json"
STATE_MIME = "application/vnd.jupyter.widget-state+json"
TEMPLATES = Path(__file__).resolve().parent / "templates"
LIVE_NOTE = ("<p class='wb-note'>Interactive in JupyterLab (<code>make lab</code>): the controls re-run the model "
             "there; this page shows them as they were saved.</p>")


@dataclass
class Page:
    """What one rendered page holds: the check compares the browser's view against it."""

    notebook: str
    path: Path
    figures: int = 0  # plotly figures drawn (fig.show() and FigureWidgets)
    widget_views: int = 0  # widget views left for the renderer
    math: bool = False
    bytes: int = 0
    notes: list[str] = field(default_factory=list)


def _figure_html(figure: dict[str, Any], div_id: str) -> str:
    from plotly.utils import PlotlyJSONEncoder

    payload = json.dumps({"data": figure.get("data", []), "layout": figure.get("layout", {}),
                          "config": {"responsive": True, "displaylogo": False, **figure.get("config", {})}},
                         cls=PlotlyJSONEncoder)
    return (f'<div class="wb-figure" id="{div_id}"></div>\n<script>(function () {{ var f = {inline_safe(payload)};'
            f' Plotly.newPlot("{div_id}", f.data, f.layout, f.config); }})();</script>')


def _figure_widget(model: dict[str, Any]) -> dict[str, Any] | None:
    """The figure a saved plotly FigureWidget showed, or None for any other widget."""
    state = model.get("state", {})
    if "FigureWidget" not in str(state.get("_anywidget_id", "")):
        return None
    layout = state.get("_widget_layout", {})
    return {"data": state.get("_widget_data", []), "layout": json.loads(layout) if isinstance(layout, str) else layout}


def _controls_text(model_id: str, state: dict[str, Any], seen: set[str] | None = None) -> list[str]:
    """``description = value`` of every control under a widget (for a page without the renderer)."""
    seen = seen if seen is not None else set()
    if model_id in seen or model_id not in state:
        return []
    seen.add(model_id)
    fields = state[model_id].get("state", {})
    out = []
    if fields.get("description") and "value" in fields:
        value = fields["value"]
        if "_options_labels" in fields and isinstance(value, int) and "index" in fields:
            value = fields["_options_labels"][fields["index"]]
        out.append(f"{fields['description']} = {value}")
    elif fields.get("description") and fields.get("_model_name") == "ButtonModel":
        out.append(f"[{fields['description']}]")
    for child in fields.get("children", []):
        out += _controls_text(str(child).removeprefix("IPY_MODEL_"), state, seen)
    return out


def prepare(nb: Any, with_widget_renderer: bool) -> tuple[Any, Page]:
    """A copy of ``nb`` whose outputs render offline (see the module docstring), and what it holds."""
    import nbformat

    nb = copy.deepcopy(nb)
    page = Page(notebook="", path=Path())
    widgets = nb.metadata.get("widgets", {}).get(STATE_MIME, {})
    state: dict[str, Any] = widgets.get("state", {})
    figure_models = {mid: fig for mid, model in state.items() if (fig := _figure_widget(model)) is not None}
    other_anywidgets = {mid for mid, model in state.items() if model.get("model_module") == "anywidget"} - set(figure_models)
    dropped = set(figure_models) | other_anywidgets
    for model in state.values():  # containers must not point at models that leave the state
        children = model.get("state", {}).get("children")
        if isinstance(children, list):
            model["state"]["children"] = [c for c in children if str(c).removeprefix("IPY_MODEL_") not in dropped]
    for mid in dropped:
        state.pop(mid, None)

    counter = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown" and re.search(r"\$[^$\n]+\$", cell.source):
            page.math = True
        outputs = []
        for output in cell.get("outputs", []):
            outputs.append(output)
            data = output.get("data")
            if not data:
                continue
            if FIGURE_MIME in data:
                counter += 1
                output["data"] = {"text/html": _figure_html(data[FIGURE_MIME], f"wb-figure-{counter}")}
                page.figures += 1
            elif VIEW_MIME in data:
                model_id = data[VIEW_MIME].get("model_id", "")
                if model_id in figure_models:
                    counter += 1
                    output["data"] = {"text/html": _figure_html(figure_models[model_id], f"wb-figure-{counter}")}
                    page.figures += 1
                elif model_id in other_anywidgets or model_id not in state:
                    output["data"] = {"text/html": "<p class='wb-note'>(a widget that needs a running kernel)</p>"}
                elif with_widget_renderer:
                    page.widget_views += 1
                    outputs.append({"output_type": "display_data", "metadata": {}, "data": {"text/html": LIVE_NOTE}})
                else:
                    controls = " · ".join(html.escape(c) for c in _controls_text(model_id, state)) or "widgets"
                    output["data"] = {"text/html": f"<div class='wb-controls'>{controls}</div>{LIVE_NOTE}"}
        if cell.cell_type == "code":
            cell.outputs = [nbformat.from_dict(o) for o in outputs]
    if widgets and not (with_widget_renderer and page.widget_views):
        nb.metadata.pop("widgets", None)
    return nb, page


def render_notebook(executed: Path, out: Path, assets: dict[str, Asset] | None = None) -> Page:
    """Render one executed notebook to ``out`` (a self-contained HTML page)."""
    import nbformat
    from nbconvert import HTMLExporter

    assets = assets if assets is not None else load_assets()
    nb = nbformat.read(executed, as_version=4)
    widget_js = assets["widgets"].text
    nb, page = prepare(nb, with_widget_renderer=widget_js is not None)
    page.notebook, page.path = Path(executed).stem, Path(out)
    exporter = HTMLExporter(template_name="site", extra_template_basedirs=[str(TEMPLATES)])
    resources = {
        "metadata": {"name": title_of(nb) or page.notebook},
        "wb_plotly_js": inline_safe(assets["plotly"].text or "") if page.figures else "",
        "wb_widgets_js": inline_safe(widget_js) if widget_js and page.widget_views else "",
        "wb_mathjax_js": inline_safe(assets["mathjax"].text) if page.math and assets["mathjax"].text else "",
    }
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body, encoding="utf-8")
    page.bytes = out.stat().st_size
    page.notes = [a.source for a in assets.values() if a.text is None]
    return page


def load_assets() -> dict[str, Asset]:
    return {"plotly": plotly_js(), "widgets": npm_asset("widgets"), "mathjax": npm_asset("mathjax")}


def title_of(nb: Any) -> str:
    """The first markdown heading of a notebook (its title)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^#\s+(.+)$", cell.source, re.MULTILINE)
            if match:
                return match.group(1).strip()
    return ""


def summary_of(nb: Any) -> str:
    """The first sentence after the title (the notebook's own description), as plain text."""
    for cell in nb.cells:
        if cell.cell_type == "markdown" and re.search(r"^#\s", cell.source, re.MULTILINE):
            paragraphs = [p.strip() for p in re.split(r"\n\s*\n", cell.source) if p.strip() and not p.startswith("#")]
            if not paragraphs:
                return ""
            text = " ".join(paragraphs[0].split())
            return re.split(r"(?<=\.)\s", text, maxsplit=1)[0]
    return ""


def _inline(text: str) -> str:
    """Escaped text with markdown's `code` and **bold** / *emphasis* turned into HTML."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)
    return re.sub(r"\*([^*]+)\*", r"<i>\1</i>", out)


def index_html(entries: list[tuple[str, str, str]]) -> str:
    """A small page listing (file, title, description) of every rendered notebook."""
    items = "\n".join(f'<li><a href="{html.escape(f)}">{html.escape(t)}</a><br><span>{_inline(d)}</span></li>'
                      for f, t, d in entries)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Workbench notebooks</title>\n"
            "<style>body{font-family:Helvetica,Arial,sans-serif;max-width:52em;margin:2em auto;color:#222;line-height:1.45}"
            "li{margin:0 0 1em 0}span{color:#555}</style>\n</head>\n<body>\n<h1>Workbench notebooks</h1>\n"
            "<p>Each page is a notebook as <code>make notebooks</code> last executed it, with its figures and saved "
            "widgets; it opens offline. Run them live with <code>make lab</code>.</p>\n"
            f"<ul>\n{items}\n</ul>\n</body>\n</html>\n")


def render_site(executed: list[Path], site: Path, sources: Path | None = None) -> list[Page]:
    """Render every executed notebook into ``site``; write ``site/index.html`` from the notebook sources.

    The index lists every ``NN_*.py`` source (its title and first paragraph) so it does not depend on
    which notebooks were run; ``sources`` defaults to the repository's ``notebooks/``.
    """
    import jupytext

    from workbench.notebooks import NOTEBOOKS_DIR, list_notebooks

    assets = load_assets()
    pages = [render_notebook(path, site / f"{Path(path).stem}.html", assets) for path in executed]
    sources = sources or NOTEBOOKS_DIR
    entries = []
    for name in list_notebooks(sources):
        nb = jupytext.read(sources / f"{name}.py", fmt="py:percent")
        entries.append((f"{name}.html", title_of(nb) or name, summary_of(nb)))
    site.mkdir(parents=True, exist_ok=True)
    (site / "index.html").write_text(index_html(entries), encoding="utf-8")
    return pages
