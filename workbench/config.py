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


# Seeds: torch and numpy take unsigned 64-bit seeds; the stream mixes seed and step (seed * 1_000_003
# + step), so seeds stay below 2**32 to keep that in range.
MAX_SEED = 2**32 - 1
# Every integer in a config or an option: sizes and counts far beyond any machine are refused here
# rather than overflowing inside torch (whose sizes are 64-bit) with a TypeError.
MAX_INT = 2**31 - 1


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
        _check_int("train.seed", self.seed, minimum=0, maximum=MAX_SEED)
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
            raise ConfigError(f"config file {path} does not exist" if not path.exists() else
                              f"config {path} is not a file; give a JSON or YAML file")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"config {path} is not UTF-8 text; give a JSON or YAML file") from None
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:  # parse errors from either library
            raise ConfigError(f"cannot parse config {path}: {exc}") from None
        if data is None or data == {}:
            raise ConfigError(f"config {path} is empty; give at least one section (task, model, train)")
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} must be a mapping of sections (task, model, train), "
                              f"got {type(data).__name__}")
        if isinstance(data.get("config"), dict) and "metrics" in data:
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
            except (ValueError, RecursionError):  # not JSON (or absurdly nested): the raw text
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


def _check_int(name: str, value: Any, minimum: int | None, maximum: int | None = None) -> None:
    """An integer (not a bool, not a float), at least ``minimum`` / at most ``maximum`` (default
    ``MAX_INT``; and at least ``-MAX_INT`` without a minimum)."""
    kind = {None: "an integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
    if maximum is not None:
        kind = f"an integer in [{minimum}, {maximum}]"
    if (not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum)
            or (maximum is not None and value > maximum)):
        raise ConfigError(f"{name} must be {kind}, got {_shown(value)}")
    if abs(value) > MAX_INT:
        raise ConfigError(f"{name}={_shown(value)} is beyond any machine: at most {MAX_INT}")


def _check_number(name: str, value: Any, above: float | None = None, at_least: float | None = None) -> None:
    """A finite real number (not a bool), strictly above ``above`` / at least ``at_least`` when given."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {_shown(value)}")
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


check_int = _check_int  # for the tasks' and mixers' own option checks
check_number = _check_number


def _shown(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (an error message stays one line)."""
    text = repr(value).replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- options of mixers and tasks


def option_spec_of_dataclass(kind: type) -> dict[str, tuple[Any, str]]:
    """``{name: (default, annotation)}`` of an options dataclass (a mixer's ``Options``)."""
    spec = {}
    for f in dataclasses.fields(kind):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        spec[f.name] = (default, str(f.type))
    return spec


def option_spec_of_signature(function: Any) -> dict[str, tuple[Any, str]]:
    """``{name: (default, annotation)}`` of a constructor's keyword options (a task's ``__init__``)."""
    import inspect

    spec = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = None if parameter.default is parameter.empty else parameter.default
        annotation = "" if parameter.annotation is parameter.empty else str(parameter.annotation)
        spec[name] = (default, annotation)
    return spec


_ANNOTATED_KINDS: dict[str, Any] = {"bool": False, "int": 0, "float": 0.0, "str": ""}


def check_option_values(owner: str, values: dict[str, Any], spec: dict[str, tuple[Any, str]]) -> None:
    """Every given option has its default's kind: true/false where the default is a bool, an integer
    (never a bool) where it is an int, a finite number where it is a float, text where it is a str,
    a list where it is a list or tuple (each item like the default's first item). ``None`` only where
    the annotation allows it. Names ``spec`` does not know are left to the owner (it names them)."""
    for name, value in values.items():
        if name not in spec:
            continue
        default, annotation = spec[name]
        nullable = default is None or "None" in annotation or "Optional" in annotation
        like = default
        if like is None:  # the annotation says what it holds: "int | None" -> an integer
            first = annotation.replace("Optional[", "").split("|")[0].strip(" ]")
            like = _ANNOTATED_KINDS.get(first)
        _check_like(f"{owner}.{name}", value, like, nullable)


def _check_like(name: str, value: Any, like: Any, nullable: bool) -> None:
    if value is None:
        if nullable:
            return
        raise ConfigError(f"{name} must not be null; leave it out for its default {_shown(like)}")
    if like is None:
        return
    if isinstance(like, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {_shown(value)}")
    elif isinstance(like, int):
        _check_int(name, value, minimum=None)
    elif isinstance(like, float):
        _check_number(name, value)
    elif isinstance(like, str):
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be text, got {_shown(value)}")
    elif isinstance(like, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {_shown(value)}")
        if like:
            for i, item in enumerate(value):
                _check_like(f"{name}[{i}]", item, like[0], nullable=False)
    elif isinstance(like, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {_shown(value)}")
