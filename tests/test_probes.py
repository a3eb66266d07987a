"""workbench.lab.probes: the notebooks read the mixer through its hook points (fast)."""

from __future__ import annotations

import torch

from workbench.config import ModelConfig
from workbench.lab.probes import internals, option, unit_count
from workbench.model import Model, TaskIO


def tiny() -> Model:
    torch.manual_seed(0)
    config = ModelConfig(mixer="inverted", d_model=16, mixer_options={"n_units": 8, "read_topk": 2})
    return Model(config, TaskIO(input_kind="tokens", head="lm", vocab_size=11)).eval()


def test_internals_of_the_inverted_mixer():
    model = tiny()
    ids = torch.randint(0, 11, (2, 12))
    record, logits = internals(model, 0, lambda: model(ids))
    assert logits.shape == (2, 12, 11)
    assert {"salience", "unit", "occupant", "read"} <= set(record)
    assert record["unit"].shape == (2, 12) and unit_count(record) == 8
    assert option(model, 0, "n_units") == 8 and option(model, 0, "read_topk") == 2


def test_a_mixer_without_those_hooks_gives_an_empty_record():
    model = Model(ModelConfig(mixer="transformer", d_model=16), TaskIO(input_kind="tokens", head="lm", vocab_size=11))
    record, _ = internals(model, 0, lambda: model(torch.randint(0, 11, (1, 5))))
    assert record == {}
    assert option(model, 0, "n_units", 64) == 64
