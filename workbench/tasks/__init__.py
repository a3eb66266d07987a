"""Tasks by name. Every generator is deterministic given its seed."""

from __future__ import annotations

import inspect
from typing import Any

from workbench.config import ConfigError, TaskConfig
from workbench.tasks.base import Batch, Task, step_generator
from workbench.tasks.charlm import CharLMTask
from workbench.tasks.copy import CopyTask
from workbench.tasks.majority import MajorityTask
from workbench.tasks.mqar import MQARTask
from workbench.tasks.multistream import MultiStreamTask
from workbench.tasks.tabular import DiabetesTask, DigitsTask

TASKS: dict[str, type[Task]] = {
    "copy": CopyTask,
    "mqar": MQARTask,
    "multistream": MultiStreamTask,
    "charlm": CharLMTask,
    "digits": DigitsTask,
    "diabetes": DiabetesTask,
    "majority": MajorityTask,
}


def register_task(name: str, task_class: type[Task]) -> None:
    """Add a task to the registry (packages beside the core, such as System 2, call this)."""
    TASKS[name] = task_class


def check_task(config: TaskConfig) -> None:
    """The task exists and takes these options (their values are checked when it is built)."""
    config.validate()
    if config.name not in TASKS:
        raise ConfigError(f"unknown task {config.name!r}; choose one of {sorted(TASKS)}")
    parameters = inspect.signature(TASKS[config.name].__init__).parameters
    unknown = sorted(set(config.options) - set(parameters) - {"self"})
    if unknown:
        known = sorted(set(parameters) - {"self"})
        raise ConfigError(f"unknown options {unknown} for task {config.name!r}; known: {known}")


def build_task(name: str, options: dict[str, Any] | None = None) -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    try:
        return TASKS[name](**(options or {}))
    except TypeError as exc:
        raise ConfigError(f"bad options for task {name!r}: {exc}") from None


__all__ = ["TASKS", "Batch", "Task", "build_task", "step_generator"]
