"""Open a rendered page in headless Chromium; report JavaScript errors and figures not drawn.

A copy of the page gets a probe script at the top of its ``<head>`` that records uncaught errors,
rejected promises and ``console.error`` calls, then counts what was drawn: plotly figures with an
SVG inside, widget views the renderer filled, typeset formulas. Chromium loads the copy from disk
(``--dump-dom`` after a virtual-time budget, so timers and promises run to completion) and the
probe's findings are read back from the DOM it printed.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from workbench.plotting import browser_path

PROBE = """<script>/* workbench browser check */
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    errors.push("error: " + (e.message || (e.target && (e.target.src || e.target.href)) || String(e)));
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    var r = e.reason; errors.push("unhandled rejection: " + (r && (r.stack || r.message) || String(r)));
  });
  var consoleError = console.error;
  console.error = function () {
    errors.push("console.error: " + Array.prototype.map.call(arguments, String).join(" "));
    consoleError.apply(console, arguments);
  };
  function count() {
    var views = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]');
    var filled = Array.prototype.filter.call(views, function (s) {
      return Array.prototype.some.call(s.parentElement.children, function (c) { return c.tagName !== "SCRIPT"; });
    });
    return {errors: errors, figures: document.querySelectorAll(".wb-figure").length,
            drawn: Array.prototype.filter.call(document.querySelectorAll(".wb-figure"), function (f) {
              return f.querySelector(".main-svg") !== null; }).length,
            widget_views: views.length, widgets_drawn: filled.length,
            math: document.querySelectorAll("mjx-container").length};
  }
  function report() {
    var out = document.getElementById("wb-probe") || document.createElement("pre");
    out.id = "wb-probe"; out.style.display = "none";
    out.textContent = JSON.stringify(count());
    if (!out.parentElement) document.body.appendChild(out);
  }
  window.addEventListener("load", function () { report(); setInterval(report, 250); });
})();
</script>"""
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--allow-file-access-from-files", "--hide-scrollbars", "--window-size=1400,1000"]


class BrowserMissing(RuntimeError):
    """No Chrome/Chromium to run the check with."""


@dataclass
class PageCheck:
    page: Path
    errors: list[str] = field(default_factory=list)
    figures: int = 0  # figure containers in the page
    drawn: int = 0  # of them, with an SVG plot inside
    widget_views: int = 0
    widgets_drawn: int = 0
    math: int = 0  # typeset formulas

    @property
    def problems(self) -> list[str]:
        out = list(self.errors)
        if self.drawn < self.figures:
            out.append(f"{self.figures - self.drawn} of {self.figures} figures were not drawn")
        if self.widgets_drawn < self.widget_views:
            out.append(f"{self.widget_views - self.widgets_drawn} of {self.widget_views} widget views were not drawn")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems


def check_page(page: Path, budget_ms: int = 30_000, timeout_s: float = 600) -> PageCheck:
    """Load ``page`` in headless Chromium and return what the probe saw."""
    browser = browser_path()
    if browser is None:
        raise BrowserMissing("no Chrome/Chromium found (apt-get install chromium, or set BROWSER_PATH)")
    text = Path(page).read_text(encoding="utf-8")
    probed = re.sub(r"<head>", "<head>\n" + PROBE, text, count=1, flags=re.IGNORECASE)
    with tempfile.TemporaryDirectory(prefix="workbench-browser-") as tmp:
        copy = Path(tmp) / Path(page).name
        copy.write_text(probed, encoding="utf-8")
        command = [browser, *FLAGS, f"--user-data-dir={tmp}/profile", f"--virtual-time-budget={budget_ms}",
                   "--dump-dom", copy.as_uri()]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    match = re.search(r'<pre id="wb-probe"[^>]*>(.*?)</pre>', done.stdout, re.DOTALL)
    if match is None:
        tail = (done.stderr or "").strip().splitlines()[-3:]
        return PageCheck(Path(page), errors=[f"the page did not finish loading in Chromium (exit {done.returncode}): "
                                             + " | ".join(tail)])
    found = json.loads(html.unescape(match.group(1)))
    return PageCheck(Path(page), errors=found["errors"], figures=found["figures"], drawn=found["drawn"],
                     widget_views=found["widget_views"], widgets_drawn=found["widgets_drawn"], math=found["math"])
