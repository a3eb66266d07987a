"""Sliding-window attention: causal multi-head softmax attention over the last W tokens only.

Beltagy, Peters & Cohan 2020, "Longformer: The Long-Document Transformer" (arXiv 2004.05150),
local windowed attention, made causal; the sliding-window baseline of Zoology (Arora et al. 2023,
arXiv 2312.04927). Per head h, with rotary positions (RoFormer; exactly as in ``transformer.py``,
whose ``rotate`` is reused)::

    q_t = R(t) W_q^h x_t,   k_s = R(s) W_k^h x_s,   v_s = W_v^h x_s
    y_t^h = sum_{s = max(0, t-W+1)}^{t} softmax_s(<q_t, k_s> / sqrt(d_head)) v_s
    out_t = W_o [y_t^1; ...; y_t^H]

Token t sees itself and the W - 1 tokens before it. Training form: blocked banded attention
(``workbench.kernels.window_attention.window_attention_chunked``), O(T * W) time and memory.
Recurrent form: a ring buffer of exactly W rotated keys and values per head plus a position
counter: 2 * d_model * W numbers whatever the context (the state knob is ``window``); keys are
stored already rotated at their absolute positions, so ``step`` equals ``forward``.

Differences from the papers: no dilation and no global tokens (Longformer's task-specific global
attention has no causal LM counterpart); Zoology's window mask lets a token see W + 1 tokens
(t-W..t), ours W (t-W+1..t), so that the ring buffer holds exactly W entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workbench.config import ConfigError
from workbench.hooks import HookPoint
from workbench.kernels.window_attention import window_attention_chunked, window_attention_step
from workbench.mixers.base import Mixer
from workbench.mixers.transformer import rotate


def positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass
class SlidingWindowOptions:
    n_heads: int = 4  # as the transformer baseline: head size 32 at d_model 128
    window: int = 128  # W, tokens seen (itself included); 128 = the inverted mixer's units: equal state


class SlidingWindowAttention(Mixer):
    Options = SlidingWindowOptions

    @classmethod
    def check_options(cls, o: SlidingWindowOptions, d_model: int) -> None:
        for name in ("n_heads", "window"):
            if not positive_int(getattr(o, name)):
                raise ConfigError(f"sliding_window.{name} must be a positive integer, got {getattr(o, name)!r}")
        if d_model % o.n_heads or (d_model // o.n_heads) % 2:
            raise ConfigError(f"sliding_window: d_model={d_model} must split into {o.n_heads} heads of even size")

    def __init__(self, d_model: int, options: SlidingWindowOptions | None = None) -> None:
        super().__init__()
        o = options or SlidingWindowOptions()
        self.check_options(o, d_model)
        self.o = o
        self.n_heads, self.d_head, self.window = o.n_heads, d_model // o.n_heads, o.window
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.hook_q = HookPoint()  # (B, H, T, d_head), rotated
        self.hook_k = HookPoint()  # (B, H, T, d_head), rotated
        self.hook_v = HookPoint()  # (B, H, T, d_head)
        self.hook_heads = HookPoint()  # (B, H, T, d_head): each head's read, before the output map

    def _heads(self, x: torch.Tensor, positions: torch.Tensor):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        return self.hook_q(rotate(q, positions)), self.hook_k(rotate(k, positions)), self.hook_v(v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self._heads(x, torch.arange(t, device=x.device))
        y = self.hook_heads(window_attention_chunked(q, k, v, self.window))
        return self.out(y.transpose(1, 2).reshape(b, t, d))

    def init_state(self, batch_size: int, device=None, dtype=None) -> dict[str, Any]:
        ring = torch.zeros(batch_size, self.n_heads, self.window, self.d_head, device=device, dtype=dtype)
        return {"k": ring, "v": ring.clone(), "position": 0}

    def step(self, x_t: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        b, d = x_t.shape
        position = state["position"]
        q, k, v = (z[:, :, 0] for z in self._heads(x_t[:, None], torch.as_tensor(position, device=x_t.device).reshape(1)))
        y, keys, values = window_attention_step(q, k, v, state["k"], state["v"], position)
        y = self.hook_heads(y[:, :, None])[:, :, 0]
        return self.out(y.reshape(b, d)), {"k": keys, "v": values, "position": position + 1}
