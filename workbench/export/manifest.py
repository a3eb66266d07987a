"""The export directory's manifest: what a runtime needs besides the graph (torch-free).

An export directory holds ``model.onnx`` (one graph: embedding, every block's ``step``, final
norm, head), ``init_state.npz`` (the state at position 0, batch 1) and ``manifest.json``:

* ``graph``: file name, sha256, opset, quantization;
* ``inputs`` / ``outputs``: the token input and the logits output;
* ``state``: one entry per leaf of the model's state pytree, in ``tree_flatten`` order, with its
  graph input and output names, dtype, shape (``"batch"`` and ``"context"`` for the axes that vary),
  its batch axis and its growing axis (a KV cache's length); ``state_treespec`` is the
  ``torch.utils._pytree`` spec (``treespec_dumps``) that rebuilds the nested state in PyTorch;
* ``vocabulary`` (char-LM: the characters, in id order), ``model_config``, ``task``,
  ``checkpoint`` and ``data`` (sha256 of both), ``verification`` (ONNX vs PyTorch at export).

Everything a user can get wrong about a directory (missing, not an export, edited, another
export's graph) raises :class:`ExportError` with one line; the CLI prints it and exits with 2.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from workbench.config import ConfigError

MANIFEST = "manifest.json"
INIT_STATE = "init_state.npz"
FORMAT = "workbench-edge-export"
FORMAT_VERSION = 1
TOKEN_INPUT = "token"
LOGITS_OUTPUT = "logits"
IGNORE = -100  # workbench.model.IGNORE, repeated here so this module never imports torch


class ExportError(ConfigError):
    """An export cannot be made, or an export directory is missing, broken or mismatched."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_vocabulary(payload: dict[str, Any]) -> str | None:
    """The characters of a char-LM checkpoint, in id order; None for tasks without a vocabulary.

    The one place that knows where a checkpoint keeps its vocabulary (today the task's saved
    state, ``payload["task_state"]["chars"]``); adapt here when checkpoints carry it elsewhere.
    """
    task_state = payload.get("task_state") or {}
    chars = task_state.get("chars") if isinstance(task_state, dict) else None
    if chars is not None and not isinstance(chars, str):
        raise ExportError(f"the checkpoint's vocabulary is a {type(chars).__name__}, expected a string of characters")
    return chars or None


def read_manifest(directory: str | Path, runtime: str = "onnx") -> dict[str, Any]:
    """Load and check ``directory/manifest.json``: every structural problem is one clear line."""
    directory = Path(directory)
    how = f"make one with `workbench export CHECKPOINT --format {runtime} --out {directory}`"
    if not directory.exists():
        raise ExportError(f"export directory {directory} does not exist; {how}")
    if not directory.is_dir():
        raise ExportError(f"{directory} is a file, not an export directory; {how}")
    path = directory / MANIFEST
    if not path.is_file():
        raise ExportError(f"{directory} has no {MANIFEST}: it is not a workbench export; {how}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path} is not valid JSON ({exc}); re-export the checkpoint") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ExportError(f"{path} is not a workbench export manifest (no format {FORMAT!r}); {how}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ExportError(f"{path} has format version {version!r}; this workbench reads version {FORMAT_VERSION}; "
                          "re-export the checkpoint with this version")
    if manifest.get("runtime") != runtime:
        raise ExportError(f"{directory} holds an export for runtime {manifest.get('runtime')!r}, not {runtime!r}; "
                          f"pick the matching --runtime or {how}")
    for key in ("graph", "state", "inputs", "outputs"):
        if key not in manifest:
            raise ExportError(f"{path} lacks the {key!r} section; re-export the checkpoint")
    for name in (manifest["graph"].get("file"), manifest.get("init_state", {}).get("file")):
        if not name or not (directory / name).is_file():
            raise ExportError(f"{directory} lacks {name or 'a file named in its manifest'}: the export is incomplete; "
                              "re-export the checkpoint")
    for section in ("graph", "init_state"):
        entry = manifest[section]
        actual = file_sha256(directory / entry["file"])
        if actual != entry.get("sha256"):
            raise ExportError(f"{directory / entry['file']} does not match its manifest (sha256 {actual[:12]} != "
                              f"{str(entry.get('sha256'))[:12]}): it was replaced or belongs to another export; "
                              "re-export the checkpoint")
    return manifest


def manifest_vocabulary(manifest: dict[str, Any]) -> str:
    """The characters of an exported char-LM, or one clear error when the export has none."""
    vocab = manifest.get("vocabulary") or {}
    chars = vocab.get("chars")
    if not chars:
        raise ExportError("this export has no vocabulary (it was not trained on char-LM); text generation needs one")
    return chars
