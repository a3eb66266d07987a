"""Saving notebook figures: self-contained HTML always, PNG when a headless Chrome is usable.

Figures go to ``<repo>/figures`` (or ``$WORKBENCH_FIGURES_DIR`` when set, which the tests
use). PNG export goes through kaleido (v1), which drives a Chrome/Chromium found on the
machine (``BROWSER_PATH`` points it at one); without one the PNG is skipped with a single
printed line and the notebook carries on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("html", "png")

# Set after the first failed PNG export so later figures do not retry (and re-print).
_png_unavailable: str | None = None


def figures_dir() -> Path:
    """``$WORKBENCH_FIGURES_DIR`` if set, else ``<repo>/figures``."""
    override = os.environ.get("WORKBENCH_FIGURES_DIR")
    return Path(override).expanduser() if override else REPO_ROOT / "figures"


def save_figure(fig: Any, name: str, formats: Iterable[str] = FORMATS) -> list[Path]:
    """Write a plotly figure as ``figures/<name>.<fmt>``; return the paths actually written.

    HTML embeds plotly.js, so each file opens offline on its own (~5 MB each: the HTML files are
    not committed, the PNGs are). A PNG that cannot be made (no
    Chrome/Chromium for kaleido) is skipped with one clear line, never an exception.
    """
    global _png_unavailable
    formats = tuple(formats)
    unknown = set(formats) - {"html", "png", "svg", "pdf", "jpeg", "webp"}
    if unknown:
        raise ValueError(f"unknown figure formats {sorted(unknown)}; use html, png, svg, pdf, jpeg or webp")
    if not name or "/" in name or "\\" in name:
        raise ValueError(f"figure name must be a plain file stem, got {name!r}")
    out_dir = figures_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        if fmt == "html":
            fig.write_html(path, include_plotlyjs=True, full_html=True)
            written.append(path)
            continue
        if _png_unavailable is not None:
            continue
        try:
            fig.write_image(path, format=fmt)
        except Exception as exc:  # kaleido raises RuntimeError/ChromeNotFound-like errors without a browser
            _png_unavailable = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            print(
                f"{fmt.upper()} export skipped: kaleido needs a headless Chrome/Chromium "
                f"(install one, or set BROWSER_PATH to its binary) [{_png_unavailable}]"
            )
            continue
        written.append(path)
    return written
