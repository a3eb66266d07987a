"""One config object for a run: task + model + training. An experiment is a config.

Configs load from JSON or YAML files and take dotted overrides from the CLI
(``--set model.d_model=64``). Every value is checked on construction so a bad
config fails with one clear message instead of a traceback from inside torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config value is missing, unknown or out of range."""


@dataclass
class ModelConfig:
    mixer: str = "transformer"
    d_model: int = 128
    n_layers: int = 1
    mlp_ratio: int = 4
    # Width of the short causal convolution in front of every mixer (0 = none): the same for all.
    short_conv: int = 8
    # Mixer-specific options, validated by the mixer's own options dataclass.
    mixer_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Structure only; the mixer's name and options are checked where it is built (``model.build_mixer``)."""
        for name in ("d_model", "n_layers", "mlp_ratio"):
            _check_int(f"model.{name}", getattr(self, name), minimum=1)
        _check_int("model.short_conv", self.short_conv, minimum=0)
        if not isinstance(self.mixer, str) or not self.mixer:
            raise ConfigError(f"model.mixer must be a mixer name, got {self.mixer!r}")
        if not isinstance(self.mixer_options, dict):
            raise ConfigError(f"model.mixer_options must be a mapping, got {self.mixer_options!r}")


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    grad_clip: float = 1.0
    eval_every: int = 250
    # Stop early once the task's primary metric reaches this value (None: never).
    target_metric: float | None = None
    # Optional wall-clock budget in seconds; the LR schedule then follows elapsed time.
    time_budget_s: float | None = None
    seed: int = 0
    checkpoint_every: int = 250

    def validate(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every"):
            _check_int(f"train.{name}", getattr(self, name), minimum=1)
        _check_int("train.seed", self.seed, minimum=None)
        _check_int("train.warmup_steps", self.warmup_steps, minimum=0)
        _check_number("train.lr", self.lr, above=0.0)
        _check_number("train.weight_decay", self.weight_decay, at_least=0.0)
        _check_number("train.grad_clip", self.grad_clip, at_least=0.0)
        if self.target_metric is not None:
            _check_number("train.target_metric", self.target_metric)
        if self.time_budget_s is not None:
            _check_number("train.time_budget_s", self.time_budget_s, above=0.0)
        if self.lr > 1.0:
            raise ConfigError(f"train.lr={self.lr!r} is above 1: no optimizer setting here trains with that")


@dataclass
class TaskConfig:
    name: str = "copy"
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Structure only; the name and options are checked where the task is built (``tasks.build_task``)."""
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"task.name must be a task name, got {self.name!r}")
        if not isinstance(self.options, dict):
            raise ConfigError(f"task.options must be a mapping, got {self.options!r}")


@dataclass
class RunConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> RunConfig:
        self.task.validate()
        self.model.validate()
        self.train.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a run config must be a mapping, got {type(data).__name__}")
        unknown = set(data) - {"task", "model", "train"}
        if unknown:
            raise ConfigError(f"unknown config sections {sorted(unknown)}; expected task, model, train")
        return cls(
            task=_build(TaskConfig, data.get("task", {}), "task"),
            model=_build(ModelConfig, data.get("model", {}), "model"),
            train=_build(TrainConfig, data.get("train", {}), "train"),
        ).validate()

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        text = path.read_text()
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:  # parse errors from either library
            raise ConfigError(f"cannot parse config {path}: {exc}") from None
        if data is None:
            raise ConfigError(f"config {path} is empty; give at least one section (task, model, train)")
        if isinstance(data, dict) and isinstance(data.get("config"), dict) and "metrics" in data:
            data = data["config"]  # a run's result.json: re-run (or vary) exactly that run's config
        return cls.from_dict(data)

    def with_overrides(self, overrides: list[str]) -> RunConfig:
        """Apply ``section.key=value`` overrides; values are parsed as JSON when possible."""
        data = self.to_dict()
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like section.key=value")
            dotted, raw = item.split("=", 1)
            keys = dotted.strip().split(".")
            if len(keys) < 2 or keys[0] not in data:
                raise ConfigError(f"override {dotted!r} must start with task., model. or train.")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            node = data
            for key in keys[:-1]:
                if not isinstance(node, dict) or key not in node:
                    if isinstance(node, dict) and key in ("options", "mixer_options"):
                        node[key] = {}
                    else:
                        raise ConfigError(f"unknown config key {dotted!r}")
                node = node[key]
            if not isinstance(node, dict):
                raise ConfigError(f"unknown config key {dotted!r}")
            is_free_form = keys[-2] in ("options", "mixer_options")
            if not is_free_form and keys[-1] not in node:
                raise ConfigError(f"unknown config key {dotted!r}")
            node[keys[-1]] = value
        return RunConfig.from_dict(data)


def _check_int(name: str, value: Any, minimum: int | None) -> None:
    """An integer (not a bool, not a float), at least ``minimum`` when given."""
    kind = {None: "an integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
    if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
        raise ConfigError(f"{name} must be {kind}, got {value!r}")


def _check_number(name: str, value: Any, above: float | None = None, at_least: float | None = None) -> None:
    """A finite real number (not a bool), strictly above ``above`` / at least ``at_least`` when given."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if above is not None and not value > above:
        raise ConfigError(f"{name} must be > {above}, got {value!r}")
    if at_least is not None and not value >= at_least:
        raise ConfigError(f"{name} must be >= {at_least}, got {value!r}")


def _build(kind: type, data: Any, section: str):
    if not isinstance(data, dict):
        raise ConfigError(f"config section {section!r} must be a mapping")
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown keys in {section}: {sorted(unknown)}; known: {sorted(names)}")
    try:
        return kind(**data)
    except TypeError as exc:
        raise ConfigError(f"bad {section} config: {exc}") from None
