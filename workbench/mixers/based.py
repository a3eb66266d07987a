"""Based: Taylor linear attention plus a small sliding-window softmax attention, in one mixer.

Arora, Eyuboglu, Zhang, Timalsina, Alberti, Zinsley, Zou, Rudra & Ré 2024, "Simple linear
attention language models balance the recall-throughput tradeoff" (arXiv 2402.18668).

(a) Linear attention with the 2nd-order Taylor feature map, H heads, feature size f (paper: 16)::

    q_t^h = f^(-1/4) W_q^h x_t,   k_s^h = f^(-1/4) W_k^h x_s     (f numbers each)
    v_s^h = W_v^h x_s                                           (d_model / H numbers)
    phi(u) = [1, u, (u_i u_j)_{i<=j} / (sqrt 2 if i = j else 1)]  (d_phi = 1 + f + f(f+1)/2 = 153)
    a_t^h = sum_{s<=t} phi(q_t).phi(k_s) v_s / (sum_{s<=t} phi(q_t).phi(k_s) + eps)

so phi(q).phi(k) = 1 + q.k + (q.k)^2 / 2, the Taylor expansion of exp(q.k) at the paper's scale
(its TaylorExp divides u by f^(1/4) and u u^T by sqrt(f), i.e. q.k / sqrt(f) in the exponent).
The symmetric products are kept once (153 features instead of the paper's 1 + 16 + 256 = 273:
same inner products, same outputs, smaller state). No positional encoding (as in the paper: order
comes from the short convolutions, here the Block's shared front end).

(b) Sliding-window softmax attention over the last W = 64 tokens, H_w heads, rotary positions,
exactly the ``sliding_window`` mixer's op (``workbench.kernels.window_attention``)::

    b_t^h = sum_{s = t-W+1}^{t} softmax_s(<R(t) q'_t, R(s) k'_s> / sqrt(d_head)) v'_s

Output: ``W_o [a_t^1; ...; a_t^H; b_t^1; ...; b_t^{H_w}]``: one output map over the two branches'
concatenated heads, which is the sum of the two branches' own output projections
(W_o [a; b] = W_oa a + W_ob b). That is what the paper's layer mix amounts to in one block: there
the linear-attention layers and the sliding-window layers are separate full-width layers, each
adding its own projected output to the residual stream; here both read the same normalized input
and add to the residual together (in parallel rather than one after the other: the one departure).
The paper's third ingredient, the gated short convolutions (BaseConv layers), is the project's
shared short-convolution front end, so this mixer has none of its own.

Forms: training = ``linear_attention_chunked`` (intra-chunk C x C products, inter-chunk states by a
cumulative sum) + ``window_attention_chunked`` (banded blocks); recurrent = per head the state
(d_phi x d_head) and the normalizer (d_phi), plus the window's ring buffer of W rotated keys and
values: H * d_phi * (d_head + 1) + 2 * d_model * W numbers (36,274 at d_model 128), constant.
State knobs: ``feature_dim`` (d_phi grows as f^2/2; the paper sweeps 8, 16, 24) and ``window``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workbench.config import ConfigError
from workbench.hooks import HookPoint
from workbench.kernels.linear_attention import (
    linear_attention_chunked,
    linear_attention_step,
    taylor_feature_dim,
)
from workbench.kernels.window_attention import window_attention_chunked, window_attention_step
from workbench.mixers.base import Mixer
from workbench.mixers.sliding_window import positive_int
from workbench.mixers.transformer import rotate


@dataclass
class BasedOptions:
    feature_dim: int = 16  # f: the paper's feature dimension (d_phi = 153)
    n_heads: int = 2  # linear-attention heads; the paper's value head size 64 (16 heads at d_model 1024)
    window: int = 64  # W of the sliding-window branch (paper: 64); 0 = no window branch (pure linear attention)
    window_heads: int = 2  # heads of the window branch, head size 64 as the paper's attention layers
    eps: float = 1e-12  # added to the normalizer (the paper's code); it is >= (t+1)/2 anyway
    chunk_size: int = 128  # C of the chunked linear attention (speed only: 128 beat 64 and 256 at T = 256 on CPU)


class BasedMixer(Mixer):
    Options = BasedOptions

    @classmethod
    def check_options(cls, o: BasedOptions, d_model: int) -> None:
        for name in ("feature_dim", "n_heads", "window_heads", "chunk_size"):
            if not positive_int(getattr(o, name)):
                raise ConfigError(f"based.{name} must be a positive integer, got {getattr(o, name)!r}")
        if not isinstance(o.window, int) or isinstance(o.window, bool) or o.window < 0:
            raise ConfigError(f"based.window must be an integer >= 0 (0 = no window branch), got {o.window!r}")
        if isinstance(o.eps, bool) or not isinstance(o.eps, (int, float)) or not math.isfinite(o.eps) or o.eps < 0:
            raise ConfigError(f"based.eps must be a finite number >= 0, got {o.eps!r}")
        if d_model % o.n_heads:
            raise ConfigError(f"based: d_model={d_model} must split into n_heads={o.n_heads} equal heads")
        if o.window and (d_model % o.window_heads or (d_model // o.window_heads) % 2):
            raise ConfigError(f"based: d_model={d_model} must split into window_heads={o.window_heads} heads of even size")

    def __init__(self, d_model: int, options: BasedOptions | None = None) -> None:
        super().__init__()
        o = options or BasedOptions()
        self.check_options(o, d_model)
        self.o, self.d_model = o, d_model
        self.n_heads, self.d_head, self.f = o.n_heads, d_model // o.n_heads, o.feature_dim
        self.d_phi = taylor_feature_dim(o.feature_dim)
        self.window = o.window
        self.w_heads = o.window_heads if o.window else 0
        self.w_head = d_model // o.window_heads if o.window else 0
        # Every input map in one matrix: linear q, k features (H f each), linear v (d), window q, k, v (d each).
        self.widths = [o.n_heads * o.feature_dim] * 2 + [d_model] * (4 if o.window else 1)
        self.proj = nn.Linear(d_model, sum(self.widths), bias=False)
        self.out = nn.Linear(d_model * (2 if o.window else 1), d_model, bias=False)
        self.hook_q_feat = HookPoint()  # (B, H, T, f): scaled linear-attention query features, before phi
        self.hook_k_feat = HookPoint()  # (B, H, T, f)
        self.hook_linear = HookPoint()  # (B, H, T, d_head): linear branch read, per head
        self.hook_window = HookPoint()  # (B, H_w, T, d_head_w): window branch read, per head

    def _split(self, x: torch.Tensor, positions: torch.Tensor):
        """Heads of both branches for x (B, T, d): (q feat, k feat, v) and the window's (q, k, v)."""
        b, t, _ = x.shape
        parts = self.proj(x).split(self.widths, dim=-1)
        scale = self.f**-0.25

        def heads(z: torch.Tensor, n: int) -> torch.Tensor:
            return z.view(b, t, n, -1).transpose(1, 2)

        q = self.hook_q_feat(heads(parts[0], self.n_heads) * scale)
        k = self.hook_k_feat(heads(parts[1], self.n_heads) * scale)
        linear = (q, k, heads(parts[2], self.n_heads))
        if not self.window:
            return linear, None
        wq, wk, wv = (heads(z, self.w_heads) for z in parts[3:])
        return linear, (rotate(wq, positions), rotate(wk, positions), wv)

    def _combine(self, linear: torch.Tensor, window: torch.Tensor | None) -> torch.Tensor:
        """Per-head reads (B, H, T, .) of both branches -> W_o [linear heads; window heads]."""
        b, _, t, _ = linear.shape
        y = self.hook_linear(linear).transpose(1, 2).reshape(b, t, self.d_model)
        if window is not None:
            y = torch.cat([y, self.hook_window(window).transpose(1, 2).reshape(b, t, self.d_model)], dim=-1)
        return self.out(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        (q, k, v), win = self._split(x, torch.arange(t, device=x.device))
        linear = linear_attention_chunked(q, k, v, self.o.chunk_size, self.o.eps)
        window = window_attention_chunked(*win, self.window) if win is not None else None
        return self._combine(linear, window)

    def init_state(self, batch_size: int, device=None, dtype=None) -> dict[str, Any]:
        zeros = {"device": device, "dtype": dtype}
        state: dict[str, Any] = {
            "kv": torch.zeros(batch_size, self.n_heads, self.d_phi, self.d_head, **zeros),
            "z": torch.zeros(batch_size, self.n_heads, self.d_phi, **zeros),
            "position": 0,
        }
        if self.window:
            ring = torch.zeros(batch_size, self.w_heads, self.window, self.w_head, **zeros)
            state.update(k=ring, v=ring.clone())
        return state

    def step(self, x_t: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        position = state["position"]
        (q, k, v), win = self._split(x_t[:, None], torch.as_tensor(position, device=x_t.device).reshape(1))
        q, k, v = (z[:, :, 0] for z in (q, k, v))
        linear, kv, z = linear_attention_step(q, k, v, state["kv"], state["z"], self.o.eps)
        new = {"kv": kv, "z": z, "position": position + 1}
        window = None
        if win is not None:
            wq, wk, wv = (u[:, :, 0] for u in win)
            window, new["k"], new["v"] = window_attention_step(wq, wk, wv, state["k"], state["v"], position)
            window = window[:, :, None]
        return self._combine(linear[:, :, None], window)[:, 0], new
