"""One config object for a run: task + model + training. An experiment is a config.

Configs load from JSON or YAML files and take dotted overrides from the CLI
(``--set model.d_model=64``). Every value is checked on construction so a bad
config fails with one clear message instead of a traceback from inside torch.
"""

from __future__ import annotations

import dataclasses
import json
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
    # Mixer-specific options, validated by the mixer's own options dataclass.
    mixer_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        for name in ("d_model", "n_layers", "mlp_ratio"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")
        from workbench.mixers import MIXERS

        if not isinstance(self.mixer, str) or self.mixer not in MIXERS:
            raise ConfigError(f"unknown mixer {self.mixer!r}; choose one of {sorted(MIXERS)}")
        if not isinstance(self.mixer_options, dict):
            raise ConfigError(f"model.mixer_options must be a mapping, got {self.mixer_options!r}")
        try:
            MIXERS[self.mixer].options_from(self.mixer_options, self.d_model)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:  # e.g. a string where a number belongs
            raise ConfigError(f"bad model.mixer_options for mixer {self.mixer!r}: {exc}") from None


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
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"train.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"train.seed must be an integer, got {self.seed!r}")
        for name in ("lr", "weight_decay", "warmup_steps", "grad_clip", "target_metric", "time_budget_s"):
            value = getattr(self, name)
            if value is None and name in ("target_metric", "time_budget_s"):
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"train.{name} must be a number, got {value!r}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr!r}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("train.warmup_steps, weight_decay and grad_clip must be >= 0")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ConfigError(f"train.time_budget_s must be > 0, got {self.time_budget_s!r}")


@dataclass
class TaskConfig:
    name: str = "copy"
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        from workbench.tasks import TASKS

        if not isinstance(self.name, str) or self.name not in TASKS:
            raise ConfigError(f"unknown task {self.name!r}; choose one of {sorted(TASKS)}")
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

                data = yaml.safe_load(text) or {}
            else:
                data = json.loads(text)
        except Exception as exc:  # parse errors from either library
            raise ConfigError(f"cannot parse config {path}: {exc}") from None
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
