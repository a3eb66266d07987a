"""Sequence mixers, swappable by name (Zoology style): ``MIXERS[name](d_model, options)``.

Every mixer maps (batch, time, d_model) -> (batch, time, d_model) causally, and
offers a recurrent form: ``init_state(batch)`` then ``step(x_t, state)``.
"""

from __future__ import annotations

from workbench.mixers.base import Mixer
from workbench.mixers.based import BasedMixer
from workbench.mixers.gated_deltanet import DeltaNet, GatedDeltaNet
from workbench.mixers.gsa import GatedSlotAttention
from workbench.mixers.inverted import InvertedMixer
from workbench.mixers.mamba import Mamba
from workbench.mixers.seeking import SeekingUnits
from workbench.mixers.sliding_window import SlidingWindowAttention
from workbench.mixers.transformer import SoftmaxAttention

MIXERS: dict[str, type[Mixer]] = {
    "transformer": SoftmaxAttention,
    "sliding_window": SlidingWindowAttention,
    "based": BasedMixer,
    "gated_deltanet": GatedDeltaNet,
    "deltanet": DeltaNet,
    "mamba": Mamba,
    "gsa": GatedSlotAttention,
    "inverted": InvertedMixer,
    "seeking": SeekingUnits,
}

__all__ = ["MIXERS", "BasedMixer", "DeltaNet", "GatedDeltaNet", "GatedSlotAttention", "InvertedMixer", "Mamba", "Mixer", "SeekingUnits",
           "SlidingWindowAttention", "SoftmaxAttention"]
