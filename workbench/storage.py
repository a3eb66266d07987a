"""Files that must never be half-written: checkpoints, JSON records and aggregates, written atomically.

Every write goes to a temp file of its own beside the target (``<name>.<random>.tmp``), which is
flushed and fsynced, renamed over the target, and then the directory is fsynced: a reader sees the
old file or the new one, never a mix; a kill leaves at most a stale ``.tmp`` (removed by
``remove_stale_temps``); two processes writing the same file never share a temp file.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"


def fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """``write(handle)`` into a temp file beside ``path``, fsync it, rename it over ``path``, fsync the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=TEMP_SUFFIX, dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets the mode open() would give
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    remove_stale_temps(path.parent, path.name, older_than_s=600.0)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temp file, fsync it, rename it over ``path``, fsync the directory."""
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def remove_stale_temps(directory: Path, name: str | None = None, older_than_s: float = 0.0) -> list[Path]:
    """Remove the temp files a killed writer left in ``directory`` (those of target ``name`` only,
    ``<name>.tmp`` or ``<name>.<random>.tmp``, when given; only those older than ``older_than_s``, so a
    concurrent writer's file is left alone). Returns what was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    pattern = f"{name}.*{TEMP_SUFFIX}" if name else f"*{TEMP_SUFFIX}"
    legacy = [directory / f"{name}{TEMP_SUFFIX}"] if name else []  # the fixed name older versions used
    now, removed = time.time(), []
    for tmp in [*directory.glob(pattern), *legacy]:
        try:
            if tmp.is_file() and now - tmp.stat().st_mtime >= older_than_s:
                tmp.unlink()
                removed.append(tmp)
        except OSError:  # gone meanwhile (another process cleaned it): nothing to do
            continue
    return removed
