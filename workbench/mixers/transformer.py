"""The baseline: causal multi-head softmax attention with rotary positions (no max_len).

The parallel form uses ``scaled_dot_product_attention`` (FlashAttention/fused kernels
where the device has them); the recurrent form keeps a KV cache, so its state and
its cost per step grow with the context - that is the O(n^2) we want to replace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import ConfigError
from workbench.hooks import HookPoint
from workbench.mixers.base import Mixer


def rotate(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding of ``x`` (..., T, d_head) at float ``positions`` (T,)."""
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None] * freqs[None, :]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


@dataclass
class AttentionOptions:
    n_heads: int = 4


class SoftmaxAttention(Mixer):
    Options = AttentionOptions
    growing_state = True  # the KV cache: 2 * d_model numbers per token seen

    @classmethod
    def check_options(cls, options: AttentionOptions, d_model: int) -> None:
        if not isinstance(options.n_heads, int) or options.n_heads <= 0:
            raise ConfigError(f"n_heads must be a positive integer, got {options.n_heads!r}")
        if d_model % options.n_heads or (d_model // options.n_heads) % 2:
            raise ConfigError(
                f"d_model={d_model} must split into {options.n_heads} heads of even size"
            )

    def __init__(self, d_model: int, options: AttentionOptions | None = None) -> None:
        super().__init__()
        options = options or AttentionOptions()
        self.check_options(options, d_model)
        self.n_heads = options.n_heads
        self.d_head = d_model // options.n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()

    def _heads(self, x: torch.Tensor, positions: torch.Tensor):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        q = self.hook_q(rotate(q, positions))
        k = self.hook_k(rotate(k, positions))
        return q, k, self.hook_v(v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self._heads(x, torch.arange(t, device=x.device))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, d))

    def init_state(self, batch_size: int, device=None, dtype=None) -> dict[str, Any]:
        empty = torch.zeros(batch_size, self.n_heads, 0, self.d_head, device=device, dtype=dtype)
        return {"k": empty, "v": empty.clone(), "position": 0}

    def state_floats(self, context: int) -> int:
        return 2 * self.n_heads * self.d_head * context

    def step(self, x_t: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        b, d = x_t.shape
        position = torch.tensor([state["position"]], device=x_t.device)
        q, k, v = self._heads(x_t[:, None, :], position)
        keys = torch.cat([state["k"], k], dim=2)
        values = torch.cat([state["v"], v], dim=2)
        y = F.scaled_dot_product_attention(q, keys, values)  # one query sees the whole cache
        state = {"k": keys, "v": values, "position": state["position"] + 1}
        return self.out(y.reshape(b, d)), state
