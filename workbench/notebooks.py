"""Run the notebooks: jupytext ``py:percent`` sources in ``notebooks/`` -> papermill -> executed copies
-> self-contained HTML pages (``docs/site/``) -> a check of those pages in headless Chromium.

The ``notebooks/NN_name.py`` files are the source of truth. Each is converted to a
notebook in memory, executed with papermill in the repo root (so relative paths such as
``figures/`` and ``results/`` resolve the same as on the command line), and the executed
copy is written to ``notebooks/executed/<name>.ipynb``. ``smoke=True`` passes
``{"smoke": True}`` to the notebook's ``parameters`` cell; otherwise the notebook's own
defaults (the full run) apply. ``workbench.lab.render`` turns executed copies into pages,
``workbench.lab.browser`` checks them.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
DEFAULT_OUT_DIR = Path("notebooks/executed")
SITE_DIR = Path("docs/site")
NOTEBOOK_PATTERN = re.compile(r"^\d\d_.+\.py$")
KERNEL_NAME = "python3"
KERNELSPEC = {"name": KERNEL_NAME, "display_name": "Python 3 (ipykernel)", "language": "python"}


class NotebookError(RuntimeError):
    """A notebook could not be found, converted or executed."""


def list_notebooks(directory: Path | None = None) -> list[str]:
    """Names (stems, e.g. ``01_quickstart``) of the ``NN_*.py`` notebook sources, sorted."""
    directory = directory or NOTEBOOKS_DIR
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.iterdir() if p.is_file() and NOTEBOOK_PATTERN.match(p.name))


def resolve_names(names: list[str] | None, directory: Path | None = None) -> list[str]:
    """Match requested names against the notebooks: ``01_quickstart``, ``01_quickstart.py``,
    ``notebooks/01_quickstart.py``, ``quickstart`` and ``01`` all select the same one."""
    available = list_notebooks(directory)
    if not names:
        return available
    chosen: list[str] = []
    for raw in names:
        key = Path(raw).name
        key = key[: -len(".py")] if key.endswith(".py") else key
        key = key[: -len(".ipynb")] if key.endswith(".ipynb") else key
        matches = [n for n in available if n == key]
        if not matches:
            matches = [n for n in available if n.split("_", 1)[0] == key or n.split("_", 1)[-1] == key]
        if len(matches) != 1:
            what = "matches several notebooks: " + ", ".join(matches) if matches else "matches no notebook"
            raise ValueError(f"notebook {raw!r} {what}; available: {', '.join(available) or '(none)'}")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


def kernel_python(kernel_name: str = KERNEL_NAME) -> str:
    """The interpreter papermill's ``python3`` kernel will run; it must be this one (the venv).

    jupyter_client maps a kernelspec argv of plain ``python``/``python3`` to ``sys.executable``;
    a spec with an absolute path elsewhere (e.g. a stale user-level ``python3`` kernel) would
    run notebooks without this environment's packages, so that is refused with a fix.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        raise NotebookError(
            f"no Jupyter kernel named {kernel_name!r}; install one for this interpreter with "
            f"`{sys.executable} -m pip install ipykernel && {sys.executable} -m ipykernel install --sys-prefix --name python3`"
        ) from None
    exe = spec.argv[0] if spec.argv else ""
    major, minor = sys.version_info[:2]
    if exe in ("python", f"python{major}", f"python{major}.{minor}"):
        return sys.executable
    same = Path(exe).resolve() == Path(sys.executable).resolve()
    if not same and Path(exe).absolute().parent != Path(sys.executable).absolute().parent:
        raise NotebookError(
            f"the Jupyter kernel {kernel_name!r} ({spec.resource_dir}) runs {exe}, not this interpreter "
            f"({sys.executable}); fix with `{sys.executable} -m ipykernel install --sys-prefix --name python3`"
        )
    return exe


def load_notebook(source: Path) -> Any:
    """Read a py:percent source into an nbformat notebook whose kernel is ``python3``."""
    import jupytext

    try:
        nb = jupytext.read(source, fmt="py:percent")
    except Exception as exc:
        raise NotebookError(f"notebook {source.name}: cannot read it as jupytext py:percent: {exc}") from exc
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.setdefault("language_info", {"name": "python"})
    # The pairing info belongs to the source file, not to an executed copy.
    nb.metadata.get("jupytext", {}).pop("formats", None)
    if not any("parameters" in cell.get("metadata", {}).get("tags", []) for cell in nb.cells):
        raise NotebookError(f'notebook {source.name} has no cell tagged parameters (# %% tags=["parameters"])')
    return nb


def execute_notebook(
    source: Path,
    output: Path,
    parameters: dict[str, Any] | None = None,
    progress: bool = True,
    cwd: Path | None = None,
) -> Path:
    """Execute one py:percent notebook with papermill; write the executed copy to ``output``.

    On failure raise ``NotebookError`` naming the notebook, the failing cell and the error;
    the partly executed copy is still written to ``output`` for inspection.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = Path(source)
    output = Path(output)
    nb = load_notebook(source)
    kernel_python()
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(
            nb,
            str(output),
            parameters=parameters or {},
            kernel_name=KERNEL_NAME,
            language="python",
            progress_bar=progress,
            cwd=str(cwd or REPO_ROOT),
        )
    except PapermillExecutionError as exc:
        source_lines = (exc.source or "").strip().splitlines()
        snippet = "\n".join("    " + line for line in source_lines[:8])
        if len(source_lines) > 8:
            snippet += "\n    ..."
        raise NotebookError(
            f"notebook {source.name} failed in cell {exc.cell_index} (In [{exc.exec_count}]): "
            f"{exc.ename}: {exc.evalue}\n{snippet}\n(the partly executed notebook is at {output})"
        ) from None
    except NotebookError:
        raise
    except Exception as exc:  # kernel died, kernel not found, timeouts ...
        raise NotebookError(f"notebook {source.name} could not be executed: {type(exc).__name__}: {exc}") from exc
    trust(output)
    return output


def trust(path: Path) -> bool:
    """Sign an executed copy for this user (``jupyter trust``): JupyterLab then shows its saved
    widgets and HTML outputs instead of text. False when the signature store is unavailable."""
    import nbformat
    from nbformat.sign import NotebookNotary

    try:
        NotebookNotary().sign(nbformat.read(path, as_version=4))
    except Exception:  # a read-only or locked signature database must not fail a run
        return False
    return True


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables for the kernels started inside (they inherit os.environ)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _absolute(path: Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path


def run_notebooks(
    names: list[str] | None = None,
    smoke: bool = False,
    out_dir: Path = DEFAULT_OUT_DIR,
    progress: bool = True,
    site_dir: Path | None = None,
) -> list[Path]:
    """Execute ``notebooks/NN_*.py`` (all, sorted, or only ``names``); return the executed copies.

    ``smoke=True`` runs each at its tiny parameters (what the tests do). ``out_dir`` is
    relative to the repo root unless absolute. Stops at the first failing notebook. With
    ``site_dir`` each executed copy is also rendered there as an HTML page (``render_notebooks``).

    Figures go to ``figures/`` (or ``$WORKBENCH_FIGURES_DIR``). A smoke run's figures are
    meaningless, so unless ``$WORKBENCH_FIGURES_DIR`` is set they go to ``<out_dir>/figures``
    instead and never overwrite the real ones, as HTML only (no PNG/SVG export). Smoke kernels
    also get ``OMP_NUM_THREADS=1`` unless it is set.
    """
    chosen = resolve_names(names)
    if not chosen:
        raise FileNotFoundError(f"no notebooks (NN_*.py) found in {NOTEBOOKS_DIR}")
    out_dir = _absolute(out_dir)
    parameters = {"smoke": True} if smoke else {}
    env = {}
    if smoke and not os.environ.get("WORKBENCH_FIGURES_DIR"):
        env["WORKBENCH_FIGURES_DIR"] = str(out_dir / "figures")
    if smoke and not os.environ.get("WORKBENCH_FIGURE_FORMATS"):
        env["WORKBENCH_FIGURE_FORMATS"] = "html"
    if smoke and not os.environ.get("OMP_NUM_THREADS"):
        # Smoke models are tiny: one thread is fastest, and on a busy machine two threads
        # per kernel spin against other work (measured 6x slower on a shared 2-core box).
        env["OMP_NUM_THREADS"] = "1"
    written = []
    with _environ(**env):
        for name in chosen:
            if progress:
                print(f"running {name}{' (smoke)' if smoke else ''} with {kernel_python()}", file=sys.stderr)
            source, output = NOTEBOOKS_DIR / f"{name}.py", out_dir / f"{name}.ipynb"
            written.append(execute_notebook(source, output, parameters, progress))
            if site_dir is not None:
                render_notebooks([written[-1]], site_dir, progress)
    return written


def render_notebooks(executed: list[Path], site_dir: Path = SITE_DIR, progress: bool = True) -> list[Any]:
    """Render executed notebooks to ``site_dir/<name>.html`` and rewrite ``site_dir/index.html``."""
    from workbench.lab.render import render_site

    pages = render_site([_absolute(p) for p in executed], _absolute(site_dir))
    for page in pages:
        if progress:
            print(f"rendered {page.path} ({page.bytes / 1e6:.1f} MB, {page.figures} figures, "
                  f"{page.widget_views} widget views)" + "".join(f"\n  note: {n}" for n in page.notes), file=sys.stderr)
    return pages


def check_site(site_dir: Path = SITE_DIR, names: list[str] | None = None) -> list[Any]:
    """Open every rendered page (or those of ``names``) in headless Chromium; return the checks."""
    from workbench.lab.browser import check_page

    site_dir = _absolute(site_dir)
    pages = [site_dir / f"{name}.html" for name in resolve_names(names)] if names else sorted(
        p for p in site_dir.glob("*.html") if NOTEBOOK_PATTERN.match(p.stem + ".py"))
    missing = [p for p in pages if not p.is_file()]
    if missing or not pages:
        raise FileNotFoundError(f"no rendered page(s) {', '.join(str(p) for p in missing) or 'at all'} in {site_dir}; "
                                "run `workbench notebooks run --html` first")
    return [check_page(page) for page in pages]


def add_arguments(sub: Any, parents: list | None = None) -> None:
    """The ``workbench notebooks`` subcommands: run, render, check (``parents``: shared flags such as --debug)."""
    parents = parents or []
    p = sub.add_parser("notebooks", parents=parents, help="notebook tools")
    nb = p.add_subparsers(dest="notebooks_command", required=True)
    run = nb.add_parser("run", parents=parents, help="execute notebooks with papermill (and render them with --html)")
    run.add_argument("names", nargs="*", help="notebook names (default: all)")
    run.add_argument("--smoke", action="store_true", help="tiny parameters (what the tests use)")
    run.add_argument("--html", action="store_true", help=f"also render each to {SITE_DIR}/ (smoke: notebooks/executed/site/)")
    run.set_defaults(func=_cmd_run)
    render = nb.add_parser("render", parents=parents, help=f"executed notebooks -> self-contained HTML pages in {SITE_DIR}/")
    render.add_argument("names", nargs="*", help="notebook names (default: every executed one)")
    render.add_argument("--executed", default=str(DEFAULT_OUT_DIR), help="where the executed .ipynb are")
    render.add_argument("--site", default=str(SITE_DIR))
    render.set_defaults(func=_cmd_render)
    check = nb.add_parser("check", parents=parents, help="open the rendered pages in headless Chromium; fail on JS errors or figures not drawn")
    check.add_argument("names", nargs="*", help="notebook names (default: every rendered page)")
    check.add_argument("--site", default=str(SITE_DIR))
    check.set_defaults(func=_cmd_check)


def _cmd_run(args: argparse.Namespace) -> None:
    try:
        resolve_names(args.names or None)
    except ValueError as exc:  # a name that matches no notebook, or several
        raise NotebookError(str(exc)) from None
    site = (DEFAULT_OUT_DIR / "site" if args.smoke else SITE_DIR) if args.html else None
    for path in run_notebooks(args.names or None, smoke=args.smoke, site_dir=site):
        print(f"executed {path}")


def _cmd_render(args: argparse.Namespace) -> None:
    executed = _absolute(Path(args.executed))
    names = resolve_names(args.names or None) if args.names else sorted(p.stem for p in executed.glob("*.ipynb"))
    paths = [executed / f"{name}.ipynb" for name in names]
    missing = [p for p in paths if not p.is_file()]
    if missing or not paths:
        raise FileNotFoundError(f"no executed notebook(s) {', '.join(map(str, missing)) or 'at all'} in {executed}; "
                                "run `workbench notebooks run` first")
    for page in render_notebooks(paths, Path(args.site)):
        print(f"wrote {page.path}")


def _cmd_check(args: argparse.Namespace) -> int:
    failed = 0
    for check in check_site(Path(args.site), args.names or None):
        line = (f"{check.page.name}: {check.drawn}/{check.figures} figures drawn, {check.widgets_drawn}/"
                f"{check.widget_views} widget views, {check.math} formulas")
        print(("ok    " if check.ok else "FAIL  ") + line + "".join(f"\n      {p}" for p in check.problems))
        failed += not check.ok
    return 1 if failed else 0
