"""Sequence mixers, swappable by name (Zoology style): ``MIXERS[name](d_model, options)``.

Every mixer maps (batch, time, d_model) -> (batch, time, d_model) causally, and
offers a recurrent form: ``init_state(batch)`` then ``step(x_t, state)``.
"""

from __future__ import annotations

from workbench.mixers.base import Mixer
from workbench.mixers.gsa import GatedSlotAttention
from workbench.mixers.inverted import InvertedMixer
from workbench.mixers.transformer import SoftmaxAttention

MIXERS: dict[str, type[Mixer]] = {
    "transformer": SoftmaxAttention,
    "inverted": InvertedMixer,
    "gsa": GatedSlotAttention,
}

__all__ = ["MIXERS", "Mixer", "GatedSlotAttention", "InvertedMixer", "SoftmaxAttention"]
