"""Figures for the notebooks: one white publication template, one colour per mixer, and saving.

Importing this module registers the plotly template ``workbench`` (white background, light
grid, a readable font, the mixer palette as the colour way) and makes it the default, so every
figure a notebook draws - static or ``FigureWidget`` - looks the same. ``mixer_colour`` gives
the colour of a mixer everywhere (variants such as ``inverted:refractory=false`` or
``inverted@d_model=64`` take their mixer's colour).

``save_figure`` writes ``figures/<name>.html`` (self-contained) and, when a headless
Chrome/Chromium is usable, ``<name>.png`` at scale 3 and ``<name>.svg`` (kaleido). Figures go
to ``<repo>/figures`` or ``$WORKBENCH_FIGURES_DIR`` (which the tests and smoke runs use).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

REPO_ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("html", "png", "svg")
PNG_SCALE = 3  # publication resolution: a 1000-px-wide figure becomes 3000 px

# One colour per mixer, the same in every notebook (Okabe-Ito based: distinguishable with the
# common colour-vision deficiencies). Softmax attention and its windowed variant share a hue;
# the inverted mixer, the subject of the workbench, gets the strongest one.
MIXER_COLOURS: dict[str, str] = {
    "transformer": "#0072B2",
    "sliding_window": "#56B4E9",
    "based": "#009E73",
    "mamba": "#E69F00",
    "gated_deltanet": "#CC79A7",
    "deltanet": "#882255",
    "gsa": "#8C8C2A",
    "inverted": "#D55E00",
}
MIXER_ORDER = tuple(MIXER_COLOURS)
# Mixers added later (not in the palette yet) get these, in order of first request.
EXTRA_COLOURS = ("#332288", "#117733", "#44AA99", "#AA4499", "#661100", "#6699CC", "#888888")
_extra: dict[str, str] = {}
GREY = "#7F7F7F"
FONT = "Helvetica, Arial, sans-serif"

# Set after the first failed image export so later figures do not retry (and re-print).
_image_unavailable: str | None = None


def base_mixer(label: str) -> str:
    """``inverted:refractory=false`` / ``inverted@d_model=64`` -> ``inverted``."""
    return re.split(r"[:@]", label, maxsplit=1)[0]


def mixer_colour(label: str) -> str:
    """The colour of a mixer (or of a variant, by its mixer); unknown mixers get a stable extra colour."""
    name = base_mixer(label)
    if name in MIXER_COLOURS:
        return MIXER_COLOURS[name]
    if name not in _extra:
        _extra[name] = EXTRA_COLOURS[len(_extra) % len(EXTRA_COLOURS)]
    return _extra[name]


def mixer_order(labels: Iterable[str]) -> list[str]:
    """Labels in the palette's order of their mixers (transformer first, inverted last), then the rest."""
    labels = list(dict.fromkeys(labels))
    rank = {name: i for i, name in enumerate(MIXER_ORDER)}
    return sorted(labels, key=lambda x: (rank.get(base_mixer(x), len(rank)), base_mixer(x), x))


def _template() -> go.layout.Template:
    axis = dict(showgrid=True, gridcolor="#E5E5E5", gridwidth=1, zeroline=False, linecolor="#444444", ticks="outside",
                tickcolor="#444444", showline=True, mirror=False, title=dict(standoff=8), automargin=True)
    template = go.layout.Template(pio.templates["simple_white"])
    template.layout.update(
        font=dict(family=FONT, size=13, color="#222222"),
        title=dict(font=dict(size=16), x=0.0, xanchor="left", xref="paper", y=0.985, yanchor="top", yref="container"),
        colorway=list(MIXER_COLOURS.values()) + list(EXTRA_COLOURS),
        xaxis=axis, yaxis=axis, paper_bgcolor="white", plot_bgcolor="white",
        legend=dict(bgcolor="rgba(255,255,255,0.85)", borderwidth=0, font=dict(size=12)),
        margin=dict(l=70, r=30, t=80, b=60), hoverlabel=dict(font=dict(family=FONT)),
        # simple_white draws shapes with zero-width lines: reference lines (add_hline/add_vline) would vanish.
        shapedefaults=dict(line=dict(width=1.5, color=GREY), opacity=1),
        annotationdefaults=dict(font=dict(size=11, color="#444444")),
    )
    return template


pio.templates["workbench"] = _template()
pio.templates.default = "workbench"


def figures_dir() -> Path:
    """``$WORKBENCH_FIGURES_DIR`` if set, else ``<repo>/figures``."""
    override = os.environ.get("WORKBENCH_FIGURES_DIR")
    return Path(override).expanduser() if override else REPO_ROOT / "figures"


def browser_path() -> str | None:
    """A Chrome/Chromium for kaleido: ``$BROWSER_PATH``, else one on the PATH (Debian's ``chromium``)."""
    explicit = os.environ.get("BROWSER_PATH")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def save_figure(fig: Any, name: str, formats: Iterable[str] | None = None) -> list[Path]:
    """Write a plotly figure as ``figures/<name>.<fmt>``; return the paths actually written.

    ``formats`` defaults to ``$WORKBENCH_FIGURE_FORMATS`` (comma-separated; smoke runs set
    ``html``) or html, png and svg. HTML embeds plotly.js, so each file opens offline on its own
    (~5 MB each: the HTML files are git-ignored; the PNG and SVG are committed). PNG is written at
    scale 3. An image that cannot be made (no Chrome/Chromium for kaleido) is skipped with one
    clear line, never an exception.
    """
    global _image_unavailable
    if formats is None:
        chosen = os.environ.get("WORKBENCH_FIGURE_FORMATS", "")
        formats = tuple(f.strip() for f in chosen.split(",") if f.strip()) or FORMATS
    formats = tuple(formats)
    unknown = set(formats) - {"html", "png", "svg", "pdf", "jpeg", "webp"}
    if unknown:
        raise ValueError(f"unknown figure formats {sorted(unknown)}; use html, png, svg, pdf, jpeg or webp")
    if not name or "/" in name or "\\" in name:
        raise ValueError(f"figure name must be a plain file stem, got {name!r}")
    out_dir = figures_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    browser = browser_path()
    if browser and not os.environ.get("BROWSER_PATH"):
        os.environ["BROWSER_PATH"] = browser  # kaleido looks there first
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        if fmt == "html":
            fig.write_html(path, include_plotlyjs=True, full_html=True)
            written.append(path)
            continue
        if _image_unavailable is not None:
            continue
        try:
            fig.write_image(path, format=fmt, scale=PNG_SCALE if fmt in ("png", "jpeg", "webp") else 1)
        except Exception as exc:  # kaleido raises RuntimeError/ChromeNotFound-like errors without a browser
            text = str(exc).strip()
            _image_unavailable = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
            print(f"{fmt.upper()} export skipped (and the other image formats): kaleido needs a headless "
                  f"Chrome/Chromium (`apt-get install chromium`, or set BROWSER_PATH) [{_image_unavailable}]")
            continue
        written.append(path)
    return written
