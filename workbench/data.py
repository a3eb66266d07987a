"""Where data comes from: a directory named by WORKBENCH_DATA_DIR, an explicit path, or
(for tiny-shakespeare, online) the canonical source verified by its sha256."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

DATA_DIR_VARIABLE = "WORKBENCH_DATA_DIR"
SHAKESPEARE_FILE = "tinyshakespeare.txt"
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


class DataError(RuntimeError):
    """A data file is missing, empty, unreadable or not what it should be."""


def data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_VARIABLE, Path.home() / ".cache" / "workbench"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shakespeare_path(download: bool = True) -> Path:
    """Path of tiny-shakespeare, downloading and verifying it if it is missing."""
    path = data_dir() / SHAKESPEARE_FILE
    if path.is_file():
        return path
    if download:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".part")
            with urllib.request.urlopen(SHAKESPEARE_URL, timeout=30) as response:
                partial.write_bytes(response.read())
            if sha256(partial) != SHAKESPEARE_SHA256:
                partial.unlink()
                raise DataError(f"downloaded {SHAKESPEARE_URL} but its sha256 does not match; not using it")
            partial.replace(path)
            return path
        except DataError:
            raise
        except Exception as exc:  # offline, DNS, HTTP errors: one clear message below
            reason = f" (download failed: {exc})"
    else:
        reason = ""
    raise DataError(
        f"tiny-shakespeare not found at {path}{reason}. Put the file there, or set "
        f"{DATA_DIR_VARIABLE} to the directory holding {SHAKESPEARE_FILE}, or pass --data PATH "
        f"with any UTF-8 text file."
    )


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text corpus, failing clearly on missing, empty or binary files."""
    return read_corpus(path)[0]


def read_corpus(path: str | Path) -> tuple[str, str]:
    """``(text, sha256 of the file's bytes)`` of a UTF-8 text corpus: the hash is what a checkpoint
    keeps, so a model is never evaluated or resumed on a text it was not trained on."""
    path = Path(path)
    if not path.is_file():
        if path.exists():
            raise DataError(f"data file {path} is not a regular file; give a UTF-8 text file")
        raise DataError(f"data file {path} does not exist")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc.strerror or exc}") from None
    return _decode(path, raw), hashlib.sha256(raw).hexdigest()


def _decode(path: Path, raw: bytes) -> str:
    if not raw:
        raise DataError(f"data file {path} is empty")
    if b"\x00" in raw:
        raise DataError(f"data file {path} looks binary (it contains NUL bytes); expected UTF-8 text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"data file {path} is not valid UTF-8 text ({exc.reason} at byte {exc.start})") from None
