"""``make lab``: JupyterLab on ``notebooks/`` with the project's settings, and a headless check of them.

The project sets jupytext's notebook view as JupyterLab's default viewer for Python files
(``.jupyter/lab/settings/overrides.json``, read through ``--LabApp.app_settings_dir``), so the
``NN_name.py`` sources open as notebooks with a double click; "Open With -> Editor" still edits the
text. ``check_lab`` starts that server headless and asks it, over its REST API, whether the
default viewer is set, whether the jupytext extension is loaded and whether a ``.py`` notebook is
served as a notebook; with Chromium it also opens one in the Lab page and looks for notebook cells.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SETTINGS_DIR = REPO_ROOT / ".jupyter" / "lab" / "settings"
DOCMANAGER = "@jupyterlab/docmanager-extension:plugin"
FACTORY = "Jupytext Notebook"


def lab_arguments(root: Path | None = None, settings: Path | None = None) -> list[str]:
    """The ``jupyter lab`` arguments ``make lab`` uses: the project's settings, notebooks/ as the root."""
    arguments = [f"--LabApp.app_settings_dir={settings or SETTINGS_DIR}",
                 f"--ServerApp.root_dir={root or REPO_ROOT / 'notebooks'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        arguments.append("--allow-root")  # containers and CI machines run as root
    return arguments


@dataclass
class LabCheck:
    default_viewer: str | None = None  # what the server says .py files open with
    jupytext_extension: bool = False
    served_as_notebook: bool = False  # GET /api/contents/<nb>.py?type=notebook gave a notebook
    cells: int = 0
    browser_cells: int | None = None  # notebook cells in the Lab page (None: not checked)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


@contextmanager
def lab_server(root: Path | None = None, settings: Path | None = None, start_timeout_s: float = 180) -> Iterator[tuple[str, str]]:
    """A headless ``jupyter lab`` as ``make lab`` starts it; yields (base url, token), stops it after."""
    port, token = _free_port(), secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="workbench-lab-") as tmp:
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": tmp, "JUPYTERLAB_SETTINGS_DIR": f"{tmp}/user-settings",
               "JUPYTERLAB_WORKSPACES_DIR": f"{tmp}/workspaces"}  # a fresh user: no settings of the caller's
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
                   f"--IdentityProvider.token={token}", *lab_arguments(root, settings)]
        log = open(Path(tmp) / "lab.log", "w")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + start_timeout_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"jupyter lab exited ({process.returncode}): "
                                       + (Path(tmp) / "lab.log").read_text()[-800:])
                try:
                    if _get(f"{base}/api/status", token)[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"jupyter lab did not answer within {start_timeout_s:.0f}s")
                time.sleep(0.5)
            yield base, token
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()


def check_lab(notebook: str = "01_quickstart.py", browser: bool = True, root: Path | None = None) -> LabCheck:
    """Start the lab as ``make lab`` does and check that ``.py`` notebooks open as notebooks."""
    result = LabCheck()
    with lab_server(root) as (base, token):
        status, body = _get(f"{base}/lab/api/settings/{DOCMANAGER}", token)
        if status == 200:  # the overrides become the schema's defaults; a user's own setting would win
            plugin: dict[str, Any] = json.loads(body)
            default = plugin["schema"]["properties"]["defaultViewers"].get("default", {})
            user = (plugin.get("settings") or {}).get("defaultViewers", {})
            result.default_viewer = {**default, **user}.get("python")
        if result.default_viewer != FACTORY:
            result.problems.append(f"default viewer for Python files is {result.default_viewer!r}, not {FACTORY!r}")
        status, body = _get(f"{base}/lab", token)
        result.jupytext_extension = status == 200 and "jupyterlab-jupytext" in body
        if not result.jupytext_extension:
            result.problems.append("the jupyterlab-jupytext extension is not in the Lab page (pip install jupytext)")
        status, body = _get(f"{base}/api/contents/{notebook}?type=notebook&content=1", token)
        if status == 200:
            model = json.loads(body)
            result.served_as_notebook = model.get("type") == "notebook"
            result.cells = len((model.get("content") or {}).get("cells", []))
        if not (result.served_as_notebook and result.cells):
            result.problems.append(f"{notebook} is not served as a notebook (HTTP {status})")
        if browser:
            result.browser_cells = _cells_in_browser(f"{base}/lab/tree/{notebook}?token={token}")
            if result.browser_cells is not None and result.browser_cells == 0:
                result.problems.append(f"the Lab page opened {notebook} without notebook cells")
    return result


def _cells_in_browser(url: str) -> int | None:
    """Notebook cells in the Lab page after it opened ``url`` (None without Chromium)."""
    from workbench.lab.browser import FLAGS
    from workbench.plotting import browser_path

    chromium = browser_path()
    if chromium is None:
        return None
    with tempfile.TemporaryDirectory(prefix="workbench-lab-browser-") as tmp:
        done = subprocess.run([chromium, *FLAGS, f"--user-data-dir={tmp}", "--virtual-time-budget=60000", "--dump-dom",
                               url], capture_output=True, text=True, timeout=300, check=False)
    return len(re.findall(r'class="(?:[^"]* )?jp-Cell[ "]', done.stdout))


def main() -> None:
    """``python -m workbench.lab.jupyterlab [jupyter lab options]``: what ``make lab`` runs."""
    os.execv(sys.executable, [sys.executable, "-m", "jupyterlab", *lab_arguments(), *sys.argv[1:]])


if __name__ == "__main__":
    main()
