"""The example configs in configs/ load, validate, and say the truth about the defaults they show."""

from dataclasses import asdict
from pathlib import Path

import pytest

from workbench.config import RunConfig
from workbench.mixers import MIXERS
from workbench.train import check_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_loads_and_validates(path: Path):
    check_config(RunConfig.load(path))


@pytest.mark.parametrize("path", [p for p in CONFIGS if "defaults shown" in p.read_text()], ids=lambda p: p.name)
def test_config_that_shows_defaults_shows_the_current_ones(path: Path):
    config = RunConfig.load(path)
    defaults = asdict(MIXERS[config.model.mixer].Options())
    shown = config.model.mixer_options
    assert shown, "a config that says it shows defaults must list some"
    assert {k: defaults[k] for k in shown} == shown
