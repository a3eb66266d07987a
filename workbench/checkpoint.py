"""Checkpoints: written atomically, loaded without running code (``weights_only``), checked before use.

A checkpoint is self-contained: besides the weights it holds the run config, the task's I/O
contract (``io``) and the task's state (``task_state``: for char-LM the vocabulary, ``chars``, and
the sha256 of the text it came from, ``data_sha256``). So ``generate`` needs no data at all, and
``eval`` and ``--resume`` rebuild the task from the data and refuse when it is not the text the
model was trained on (a checkpoint's data path is only a hint: the hash decides).

Every part of the payload is checked (keys, types, shapes, finiteness) before it is used; anything
wrong is one ``CheckpointError`` naming the file and the fix.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any

import torch

from workbench.config import ConfigError, RunConfig
from workbench.data import DataError
from workbench.mixers import MIXERS
from workbench.model import Model, TaskIO
from workbench.storage import write_atomic
from workbench.tasks import Task, build_task

CHECKPOINT_FORMAT = 1
# What ``eval`` and ``generate`` need; ``io`` is optional (checkpoints written before it rebuild it from the task).
REQUIRED_KEYS = ("format", "config", "model", "task_state")
# What a kept model (``workbench compare --keep-models``) holds: enough to evaluate and look inside, not to resume.
MODEL_KEYS = (*REQUIRED_KEYS, "io", "mixer_options_resolved", "step", "history")
# What ``train --resume`` needs on top.
RESUME_KEYS = ("optimizer", "rng", "step", "history", "train_time", "tokens")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or belongs to another model."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temp file, fsync it, rename it, fsync the directory: a kill mid-write never
    leaves a half checkpoint, and a power cut never loses the rename."""
    write_atomic(Path(path), lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | Path, resume: bool = False) -> dict[str, Any]:
    """The payload, its structure checked (``resume``: also what resuming needs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist" if not path.exists() else
                              f"checkpoint {path} is not a file; give the path of a checkpoint.pt")
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the error below says all there is to say
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, random bytes, a pickle that wants to run code: never executed
        raise CheckpointError(f"checkpoint {path} is corrupt or not a workbench checkpoint ({type(exc).__name__}); "
                              f"use another checkpoint or train again") from None
    if not isinstance(payload, dict) or not _is_int(payload.get("format")) or payload["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a workbench checkpoint (format {CHECKPOINT_FORMAT})")
    check_payload(payload, path, resume=resume)
    return payload


def _bad(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} is damaged: {what}; use another checkpoint or train again")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_payload(payload: dict[str, Any], path: str | Path, resume: bool = False) -> None:
    """Keys and types of a loaded payload, before anything uses it."""
    path = Path(path)
    required = REQUIRED_KEYS + (RESUME_KEYS if resume else ())
    missing = [key for key in required if key not in payload]
    if missing:
        raise _bad(path, f"it lacks {', '.join(missing)}")
    config_of(payload, path)
    weights = payload["model"]
    if not isinstance(weights, dict) or not weights or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise _bad(path, "its model weights are not a mapping of names to tensors")
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise _bad(path, f"weight {name} holds NaN or infinite values")
    state = payload["task_state"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise _bad(path, "its task_state is not a mapping")
    if "chars" in state:
        chars = state["chars"]
        if not isinstance(chars, str) or not chars or len(set(chars)) != len(chars):
            raise _bad(path, "its vocabulary (task_state.chars) is not a string of distinct characters")
    if "data_sha256" in state:
        digest = state["data_sha256"]
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise _bad(path, "its data hash (task_state.data_sha256) is not a sha256")
    if payload.get("io") is not None:
        io_of(payload, path)
    if resume:
        _check_resume_fields(payload, path)


def _check_resume_fields(payload: dict[str, Any], path: Path) -> None:
    step, history = payload["step"], payload["history"]
    if not _is_int(step) or step < 0:
        raise _bad(path, f"its step is {step!r}, not a count")
    if not _is_int(payload["tokens"]) or payload["tokens"] < 0:
        raise _bad(path, "its token count is not a count")
    if not _is_number(payload["train_time"]) or payload["train_time"] < 0:
        raise _bad(path, "its train_time is not a number of seconds")
    if not isinstance(history, list) or not all(
            isinstance(h, dict) and _is_int(h.get("step")) and isinstance(h.get("metrics"), dict)
            and all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                    for k, v in h["metrics"].items()) for h in history):
        raise _bad(path, "its history is not a list of evaluations")
    rng = payload["rng"]
    expected = torch.get_rng_state()
    if not isinstance(rng, torch.Tensor) or rng.dtype != expected.dtype or rng.shape != expected.shape:
        raise _bad(path, "its RNG state is not a CPU generator state")
    optimizer = payload["optimizer"]
    if not (isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict)
            and isinstance(optimizer.get("param_groups"), list)):
        raise _bad(path, "its optimizer state is not an optimizer's state_dict")


def built_with(payload: dict[str, Any], mixer: str, path: str | Path) -> dict[str, Any] | None:
    """Every mixer option the checkpoint's model was built with (None for a checkpoint older than that
    record); an option taken out since and recorded at the value where it did nothing is left out, and
    one added since is filled in with the value that does what the code did before it existed."""
    resolved = payload.get("mixer_options_resolved")
    if resolved is None:
        return None
    if not (isinstance(resolved, dict) and all(isinstance(k, str) for k in resolved)):
        raise _bad(Path(path), "its mixer_options_resolved is not a mapping of option names")
    cls = MIXERS.get(mixer)
    removed, added = getattr(cls, "options_removed", {}), getattr(cls, "options_added_later", {})
    return {**added, **{k: v for k, v in resolved.items() if not (k in removed and v == removed[k])}}


def config_of(payload: dict[str, Any], path: str | Path) -> RunConfig:
    """The run config a checkpoint holds, checked like a user's (``train.check_config``).

    Where the checkpoint records every mixer option it was built with (``mixer_options_resolved``),
    those replace the config's overrides, so a default that moved since does not change the model.
    """
    from workbench.train import check_config

    try:
        config = RunConfig.from_dict(payload["config"])
        built = built_with(payload, config.model.mixer, path)
        if built is not None:
            config.model.mixer_options = built
        return check_config(config)
    except ConfigError as exc:
        raise _bad(Path(path), f"its config is invalid ({exc})") from None


def io_of(payload: dict[str, Any], path: str | Path) -> TaskIO:
    data = payload["io"]
    fields = {f.name for f in dataclasses.fields(TaskIO)}
    try:
        if not isinstance(data, dict) or set(data) - fields:
            raise TypeError
        io = TaskIO(**data)
        if not all(isinstance(getattr(io, name), str) for name in ("input_kind", "head")) or not all(
                _is_int(getattr(io, name)) for name in ("vocab_size", "input_dim", "n_outputs")):
            raise TypeError
        io.validate()
    except (TypeError, ConfigError):
        raise _bad(Path(path), f"its task I/O record is invalid ({data!r:.80})") from None
    return io


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict``; a mismatch is one CheckpointError."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} does not match its model config: {first}") from None


def load_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any], path: str | Path) -> None:
    """Restore the optimizer's moments from ``saved``; its hyper-parameters stay the config's (resume
    checks the config is the same), so no value from the file reaches the update unchecked."""
    hyper = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    try:
        optimizer.load_state_dict(saved)
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise _bad(Path(path), f"its optimizer state does not fit the model ({type(exc).__name__})") from None
    for group, values in zip(optimizer.param_groups, hyper):
        group.update(values)
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if not isinstance(value, torch.Tensor):
                    raise _bad(Path(path), f"optimizer state {name!r} is not a tensor")
                if name == "step":
                    ok = value.numel() == 1 and bool(torch.isfinite(value).all()) and float(value) >= 0
                else:
                    ok = (value.shape == param.shape and value.is_floating_point()
                          and bool(torch.isfinite(value).all()))
                if not ok:
                    raise _bad(Path(path), f"optimizer state {name!r} does not fit its parameter")


def load_rng(state: torch.Tensor, path: str | Path) -> None:
    try:
        torch.set_rng_state(state)
    except (RuntimeError, TypeError, ValueError):
        raise _bad(Path(path), "its RNG state is invalid") from None


def model_from_checkpoint(
    path: str | Path, data: str | Path | None = None, need_task: bool = True
) -> tuple[Model, RunConfig, Task | None, dict[str, Any]]:
    """Rebuild model, config and task from a checkpoint.

    The task is rebuilt from its saved options (``data``: the text file to use instead of the one
    the checkpoint names, e.g. after it moved) and must match the saved ``task_state`` (for char-LM:
    the same text, by sha256). ``need_task=False`` (``generate``) builds the model from the saved
    ``io`` without reading any data, and returns None for the task.
    """
    path = Path(path)
    payload = load_checkpoint(path)
    config = config_of(payload, path)
    if data is not None:
        if config.task.name != "charlm":
            raise ConfigError(f"--data applies to char-LM checkpoints; {path} is a {config.task.name!r} checkpoint")
        config.task.options["path"] = str(data)
    task: Task | None = None
    saved_io = io_of(payload, path) if payload.get("io") is not None else None
    if need_task or saved_io is None:
        try:
            task = build_task(config.task.name, config.task.options)
        except DataError as exc:
            hint = "" if data is not None else " (pass --data PATH to use the text it was trained on where it is now)"
            raise DataError(f"{exc}{hint}") from None
        task.check_state(payload["task_state"], source=f"checkpoint {path}")
        if saved_io is not None and saved_io != task.io:
            raise CheckpointError(f"checkpoint {path} was trained for another task I/O ({saved_io}) than its task "
                                  f"gives now ({task.io}); use the data and options it was trained with")
    io = saved_io or task.io
    model = Model(config.model, io)
    load_weights(model, payload["model"], path)
    model.eval()
    return model, config, task, payload
