"""The JavaScript a rendered notebook page inlines, so it opens offline: plotly.js, the widget
renderer and MathJax.

plotly.js comes with the plotly package. The standalone widget renderer
(``@jupyter-widgets/html-manager``'s ``embed.js``, the one ipywidgets 8 documents for static
pages) and MathJax 3 (``tex-svg-full.js``: every TeX extension and the SVG fonts in one file)
come from the npm registry through ``npm pack``, pinned, once, into a cache directory
(``$WORKBENCH_CACHE_DIR`` or ``~/.cache/workbench``). Without npm (or offline with an empty
cache) an asset is reported missing and the page degrades: widgets become a static description,
TeX stays as written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# (npm package, version, file inside the package tarball)
NPM_ASSETS: dict[str, tuple[str, str, str]] = {
    "widgets": ("@jupyter-widgets/html-manager", "1.0.15", "package/dist/embed.js"),
    "mathjax": ("mathjax", "3.2.2", "package/es5/tex-svg-full.js"),
}


@dataclass(frozen=True)
class Asset:
    name: str
    text: str | None  # the JavaScript, or None when it could not be had
    source: str  # where it came from, or why it is missing


def cache_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_CACHE_DIR", Path.home() / ".cache" / "workbench"))


def inline_safe(script: str) -> str:
    """JavaScript that can sit inside ``<script>...</script>``: no literal ``</script`` in it."""
    return script.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")


@cache
def plotly_js() -> Asset:
    import plotly
    from plotly.offline import get_plotlyjs

    return Asset("plotly", get_plotlyjs(), f"plotly {plotly.__version__} (pip package)")


@cache
def npm_asset(name: str) -> Asset:
    """One pinned file of an npm package, from the cache or fetched with ``npm pack``."""
    package, version, member = NPM_ASSETS[name]
    target = cache_dir() / "npm" / f"{package.replace('/', '__')}-{version}" / Path(member).name
    if target.is_file():
        return Asset(name, target.read_text(encoding="utf-8"), f"{package}@{version} (cached at {target})")
    npm = shutil.which("npm")
    if npm is None:
        return Asset(name, None, f"{package}@{version}: npm is not installed and {target} is absent")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            done = subprocess.run([npm, "pack", f"{package}@{version}", "--pack-destination", tmp, "--silent"],
                                  capture_output=True, text=True, timeout=300, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            return Asset(name, None, f"{package}@{version}: npm pack failed ({exc})")
        tarballs = list(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or not tarballs:
            why = (done.stderr or done.stdout).strip().splitlines()
            return Asset(name, None, f"{package}@{version}: npm pack failed ({why[-1] if why else done.returncode})")
        with tarfile.open(tarballs[0]) as archive:
            handle = archive.extractfile(member)
            if handle is None:
                return Asset(name, None, f"{package}@{version} has no {member}")
            text = handle.read().decode("utf-8")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.part")
    partial.write_text(text, encoding="utf-8")
    partial.replace(target)
    return Asset(name, text, f"{package}@{version} (npm registry)")
