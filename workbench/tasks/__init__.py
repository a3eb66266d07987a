"""Tasks by name. Every generator is deterministic given its seed."""

from __future__ import annotations

from typing import Any

from workbench.config import ConfigError
from workbench.tasks.base import Batch, Task, step_generator
from workbench.tasks.charlm import CharLMTask
from workbench.tasks.copy import CopyTask
from workbench.tasks.majority import MajorityTask
from workbench.tasks.mqar import MQARTask
from workbench.tasks.tabular import DiabetesTask, DigitsTask

TASKS: dict[str, type[Task]] = {
    "copy": CopyTask,
    "mqar": MQARTask,
    "charlm": CharLMTask,
    "digits": DigitsTask,
    "diabetes": DiabetesTask,
    "majority": MajorityTask,
}

# System 2's token-form reasoning tasks (hops, kinship, temporal, concepts): importing the
# module adds them to TASKS (it registers itself, so either import order works).
import workbench.symbolic.tasks  # noqa: E402,F401


def build_task(name: str, options: dict[str, Any] | None = None) -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    try:
        return TASKS[name](**(options or {}))
    except TypeError as exc:
        raise ConfigError(f"bad options for task {name!r}: {exc}") from None


__all__ = ["TASKS", "Batch", "Task", "build_task", "step_generator"]
