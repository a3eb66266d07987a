"""Checkpoints: written atomically, loaded without running code (``weights_only``), checked before use."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from workbench.config import RunConfig
from workbench.model import Model
from workbench.tasks import Task, build_task

CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or belongs to another model."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temp file then rename: a kill mid-write never leaves a half checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a workbench checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a workbench checkpoint (format {CHECKPOINT_FORMAT})")
    return payload


def model_from_checkpoint(path: str | Path) -> tuple[Model, RunConfig, Task, dict[str, Any]]:
    """Rebuild model, config and task from a checkpoint (the task from its saved options)."""
    payload = load_checkpoint(path)
    config = RunConfig.from_dict(payload["config"])
    task = build_task(config.task.name, config.task.options)
    model = Model(config.model, task.io)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not match its model config: {first}") from None
    model.eval()
    return model, config, task, payload


