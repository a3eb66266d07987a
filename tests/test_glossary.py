"""The glossary cannot rot: every path resolves to a live object, every identifier of the
inverted mixer (functions, methods, options, hook points, state tensors) has an entry, and so
does every public class and function of System 2 and every step of its Russian pseudocode."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from typing import Any

import pytest
from torch import nn

from workbench.config import ModelConfig
from workbench.glossary import GLOSSARY, GLOSSARY_RU
from workbench.hooks import HookPoint
from workbench.mixers import inverted
from workbench.mixers.inverted import InvertedMixer, InvertedOptions
from workbench.mixers.transformer import AttentionOptions, SoftmaxAttention
from workbench.model import Block, Model, TaskIO

STATE_KEY = re.compile(r"^(?P<path>.+)\['(?P<key>\w+)'\]$")


def instance_of(cls: type) -> nn.Module:
    """A small instance with every optional part switched on (router, conv, EMA, ordinal read)."""
    if cls is InvertedMixer:
        return InvertedMixer(16, InvertedOptions(n_units=4, n_pools=2, d_key=8, n_freq=4))
    if cls is SoftmaxAttention:
        return SoftmaxAttention(16, AttentionOptions(n_heads=2))
    if cls is Block:
        return Block(ModelConfig(d_model=16))
    if cls is Model:
        return Model(ModelConfig(d_model=16), TaskIO(input_kind="tokens", head="lm", vocab_size=5))
    raise AssertionError(f"no test instance for {cls!r}; add one to instance_of")


def import_longest_module(parts: list[str]) -> tuple[Any, list[str]]:
    for i in range(len(parts), 0, -1):
        try:
            return importlib.import_module(".".join(parts[:i])), parts[i:]
        except ModuleNotFoundError:
            continue
    raise AssertionError(f"no importable module in {'.'.join(parts)!r}")


def resolve(path: str) -> Any:
    """Return the object a glossary path names, or fail the test with the reason."""
    state = STATE_KEY.match(path)
    if state:
        path = state["path"]
    obj, rest = import_longest_module(path.split("."))
    assert rest or not state, path
    for index, name in enumerate(rest):
        last = index == len(rest) - 1
        if last and isinstance(obj, type) and dataclasses.is_dataclass(obj) and not callable(getattr(obj, name, None)):
            # an options field (a method of a dataclass, e.g. RuleLearner.fit, resolves below)
            assert name in {f.name for f in dataclasses.fields(obj)}, f"{path}: no option field {name!r}"
            return dataclasses.fields(obj)
        if hasattr(obj, name):
            owner, obj = obj, getattr(obj, name)
            continue
        # Not on the class: an attribute set in __init__ (hook point, sub-layer, buffer).
        assert last and isinstance(obj, type) and issubclass(obj, nn.Module), f"{path}: no attribute {name!r}"
        module = instance_of(obj)
        assert hasattr(module, name), f"{path}: {obj.__name__} instances have no attribute {name!r}"
        value = getattr(module, name)
        if name.startswith("hook_"):
            assert isinstance(value, HookPoint), f"{path} is not a HookPoint"
        return value
    if state:
        assert rest[-1] == "init_state", f"{path}: state keys must hang off init_state"
        keys = instance_of(owner).init_state(1)
        assert state["key"] in keys, f"{path}: init_state() has no key {state['key']!r}"
        return keys[state["key"]]
    return obj


@pytest.mark.parametrize("identifier", sorted(GLOSSARY))
def test_every_path_resolves(identifier: str):
    path, explanation = GLOSSARY[identifier]
    resolve(path)
    assert explanation.strip() and "\n" not in explanation, identifier


@pytest.mark.parametrize(
    "path",
    [
        "workbench.mixers.inverted.no_such_function",
        "workbench.mixers.inverted.InvertedOptions.no_such_option",
        "workbench.mixers.inverted.InvertedMixer.hook_no_such_hook",
        "workbench.mixers.inverted.InvertedMixer.init_state['no_such_key']",
        "workbench.no_such_module.thing",
    ],
)
def test_resolver_rejects_bad_paths(path: str):
    with pytest.raises(AssertionError):
        resolve(path)


def test_the_user_names_are_there():
    for name in ("attention_compress", "memory_state_update", "compute_weights", "adaptive_scale"):
        assert GLOSSARY[name][0] == f"workbench.mixers.inverted.{name}"
        assert callable(resolve(GLOSSARY[name][0]))


def test_every_function_and_method_of_the_inverted_mixer_is_defined():
    functions = {
        name
        for name, value in inspect.getmembers(inverted, inspect.isfunction)
        if value.__module__ == inverted.__name__
    }
    methods = {
        name
        for name, value in vars(InvertedMixer).items()
        if (inspect.isfunction(value) or isinstance(value, classmethod)) and not name.startswith("__")
    }
    missing = sorted((functions | methods) - set(GLOSSARY))
    assert not missing, f"add these to workbench/glossary.py: {missing}"


def test_every_option_hook_point_and_state_tensor_is_defined():
    mixer = instance_of(InvertedMixer)
    options = {f.name for f in dataclasses.fields(InvertedOptions)}
    hooks = {name for name, module in mixer.named_children() if isinstance(module, HookPoint)}
    state = set(mixer.init_state(1))
    missing = sorted((options | hooks | state) - set(GLOSSARY))
    assert not missing, f"add these to workbench/glossary.py: {missing}"
    for name in hooks:
        assert GLOSSARY[name][0] == f"workbench.mixers.inverted.InvertedMixer.{name}"


SYSTEM2_MODULES = ("store", "concepts", "rules", "executor", "policy", "tasks")


def test_every_public_class_and_function_of_system2_is_defined():
    missing = []
    for name in SYSTEM2_MODULES:
        module = importlib.import_module(f"workbench.symbolic.{name}")
        public = {
            n
            for n, v in vars(module).items()
            if (inspect.isfunction(v) or inspect.isclass(v)) and v.__module__ == module.__name__ and not n.startswith("_")
        }
        missing += sorted(f"{name}.{n}" for n in public - set(GLOSSARY))
    import workbench.symbolic

    missing += sorted(set(workbench.symbolic.__all__) - set(GLOSSARY))
    assert not missing, f"add these to workbench/glossary.py: {missing}"
    assert "run_system2" in GLOSSARY


def test_system2_pseudocode_names_its_steps_and_they_are_defined():
    """§ 7.2 of the design notebook: each numbered step names the code that does it, in parentheses."""
    from workbench.notebooks import NOTEBOOKS_DIR

    text = (NOTEBOOKS_DIR / "00_design.py").read_text()
    start = text.index("АЛГОРИТМ Система2")
    block = text[start : text.index("КОНЕЦ АЛГОРИТМА", start)]
    headers = re.findall(r"//\s*\d+[а-я]?\.[^(\n]*\(([^)]*)\)", block)
    named = [name.strip() for header in headers for name in header.split(",")]
    assert len(headers) >= 7, headers  # facts, grounding, propose, keep/drop, parser, controller, execute, trade-off
    for step in ("Store.from_tokens", "codebook_inventory", "propose", "RuleLearner.fit", "Controller.decide",
                 "Executor.run", "tradeoff_curve"):
        assert step in named, f"§ 7.2 has no step naming {step}"
    missing = [name for name in named if name not in GLOSSARY]
    assert not missing, f"add these to workbench/glossary.py: {missing}"
    for name in named:
        resolve(GLOSSARY[name][0])


def test_russian_readings_name_glossary_entries():
    assert set(GLOSSARY_RU) <= set(GLOSSARY)
    assert all(text.strip() and "\n" not in text for text in GLOSSARY_RU.values())
