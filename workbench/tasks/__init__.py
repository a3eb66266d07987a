"""Tasks by name. Every generator is deterministic given its seed."""

from __future__ import annotations

import inspect
from typing import Any

from workbench.config import ConfigError, TaskConfig, check_option_values, option_spec_of_signature
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
    """The task exists, takes these options, and every value is one it can use: the kind of each
    option's default (``config.check_option_values``), then the task's own ranges
    (``Task.check_options``), all before any data is read."""
    config.validate()
    if config.name not in TASKS:
        raise ConfigError(f"unknown task {config.name!r}; choose one of {sorted(TASKS)}")
    kind = TASKS[config.name]
    parameters = inspect.signature(kind.__init__).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    unknown = sorted(set(config.options) - set(parameters) - {"self"})
    if unknown and not takes_any:
        known = sorted(set(parameters) - {"self"})
        raise ConfigError(f"unknown options {unknown} for task {config.name!r}; known: {known}")
    spec = option_spec_of_signature(kind.__init__)
    check_option_values("task.options", config.options, spec)
    options = {name: default for name, (default, _) in spec.items()} | dict(config.options)
    try:
        kind.check_options(options)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad options for task {config.name!r}: {exc}") from None


def build_task(name: str, options: dict[str, Any] | None = None) -> Task:
    check_task(TaskConfig(name=name, options=dict(options or {})))
    try:
        return TASKS[name](**(options or {}))
    except TypeError as exc:
        raise ConfigError(f"bad options for task {name!r}: {exc}") from None


__all__ = ["TASKS", "Batch", "Task", "build_task", "step_generator"]
