"""Gated Slot Attention (GSA): m slots per head, written by a learned forget gate, read by softmax.

Zhang, Yang, Zhu, Zhang, Cui, Wang, Wang, Shi, Wang, Bi, Zhou, Fu (2024), "Gated Slot Attention
for Efficient Linear-Time Sequence Modeling", arXiv 2409.07146. GSA is ABC (Peng et al. 2022,
"ABC: Attention with Bounded-memory Control", arXiv 2110.02488) - a bounded memory of m slots
read by softmax attention - with ABC's write weights replaced by GLA's data-dependent forget gate
(Yang et al. 2023, arXiv 2312.06635). Per head h, token t (x_t the mixer's input)::

    q_t, k_t, v_t = swish(W_q x_t), swish(W_k x_t), swish(W_v x_t)      (d_k = d_v = d_model / heads)
    alpha_t = sigmoid(W_alpha x_t) ** (1 / tau)                         (m forget gates, tau = 8)
    K~_t = diag(alpha_t) K~_{t-1} + (1 - alpha_t) k_t^T                  (m x d_k key slots)
    V~_t = diag(alpha_t) V~_{t-1} + (1 - alpha_t) v_t^T                  (m x d_v value slots)
    o_t = V~_t^T softmax(K~_t q_t)                                       (softmax over the m slots)
    y_t = W_o RMSNorm(swish([o_t^1; ...; o_t^H]))

Computed as the paper does, as two passes of gated linear attention with the slots as GLA's gated
dimension (``workbench.kernels.gla``): pass 1 (``gate="value"``, queries q, keys k, values
1 - alpha) gives the slot scores s_t = K~_t q_t; pass 2 (``gate="key"``, queries softmax(s_t), keys
1 - alpha, values v) reads V~_t. log(alpha) = logsigmoid(W_alpha x) / tau is computed in log space,
so every decay is exp of a sum of log-gates and 1 - alpha = -expm1(log alpha) keeps its precision.

The layer follows the paper and its reference code (flash-linear-attention's
``GatedSlotAttention``): swish on q, k and v; no 1/sqrt(d) on the slot scores (the slots are
convex combinations of keys); no output gate; RMSNorm (with a learned scale) over all heads of
swish(o) before W_o; no short convolution (the project's Block gives every mixer the same one).
Parallel form: O(T (C + log C) m d) time per head, no T x T tensor; recurrent form: a state of
heads * m * (d_k + d_v) numbers, whatever the context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import ConfigError
from workbench.hooks import HookPoint
from workbench.kernels.gla import gla_chunked, gla_step
from workbench.mixers.base import Mixer


@dataclass
class GSAOptions:
    # The state knob (the Pareto sweep's axis): slots per head; state = heads * n_slots * 2 * d_head.
    # 64 is the paper's experimental setting (and fla's GSA configs).
    n_slots: int = 64
    # 4 heads is the paper's setting (and fla's default) at every model size it trains; at d_model
    # 128 that is 32 dimensions per head, the same split as the transformer baseline here. (The state
    # does not depend on it: heads * d_head = d_model.)
    n_heads: int = 4
    # tau, the damping of the forget gate alpha = sigmoid(.)^(1/tau): the paper (after GLA) uses 8,
    # which keeps alpha near 1 (long memories) at initialisation.
    gate_temperature: float = 8.0
    # Rank of W_alpha: 0 = full rank d_model -> heads * n_slots, as the paper. A rank r > 0 factors it
    # (d_model -> r -> heads * n_slots, GLA's low-rank gate), for a parameter count that does not grow
    # with n_slots; not the paper's layer.
    gate_rank: int = 0
    norm_eps: float = 1e-5  # the output RMSNorm's epsilon (fla's default)
    chunk_size: int = 64  # tokens per chunk of the chunked GLA passes (a power of two; speed only)


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"gsa.{name} must be {kind}, got {value!r}")


def _positive_float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"gsa.{name} must be a finite number > 0, got {value!r}")


class GatedSlotAttention(Mixer):
    Options = GSAOptions

    @classmethod
    def check_options(cls, options: GSAOptions, d_model: int) -> None:
        _positive_int("n_slots", options.n_slots)
        _positive_int("n_heads", options.n_heads)
        _positive_int("gate_rank", options.gate_rank, minimum=0)
        _positive_int("chunk_size", options.chunk_size)
        if options.chunk_size & (options.chunk_size - 1):
            raise ConfigError(f"gsa.chunk_size must be a power of two, got {options.chunk_size!r}")
        if d_model % options.n_heads:
            raise ConfigError(f"d_model={d_model} must split into gsa.n_heads={options.n_heads} equal heads")
        _positive_float("gate_temperature", options.gate_temperature)
        _positive_float("norm_eps", options.norm_eps)

    def __init__(self, d_model: int, options: GSAOptions | None = None) -> None:
        super().__init__()
        options = options or GSAOptions()
        self.check_options(options, d_model)
        self.options = options
        self.n_heads, self.n_slots = options.n_heads, options.n_slots
        self.d_head = d_model // options.n_heads
        n_gates = options.n_heads * options.n_slots
        # One matmul for q, k, v and (full rank) the gate logits; a low-rank gate has its own two.
        self.proj = nn.Linear(d_model, 3 * d_model + (0 if options.gate_rank else n_gates), bias=False)
        if options.gate_rank:
            self.gate = nn.Sequential(
                nn.Linear(d_model, options.gate_rank, bias=False), nn.Linear(options.gate_rank, n_gates, bias=False)
            )
        self.norm_weight = nn.Parameter(torch.ones(d_model))
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.hook_log_forget = HookPoint()  # (B, H, T, m): log alpha, the slots' log forget gates
        self.hook_slot_scores = HookPoint()  # (B, H, T, m): K~_t q_t, before the softmax
        self.hook_read_weights = HookPoint()  # (B, H, T, m): softmax over the slots
        self.hook_read = HookPoint()  # (B, T, d_model): the heads' reads o_t, before swish and the norm

    def _project(self, x: torch.Tensor, head_major: bool):
        """x (B, [T,] d_model) -> q, k, v (B, H, [T,] d_head), log alpha and 1 - alpha (B, H, [T,] m).

        ``head_major`` (a sequence): the heads are moved in front of time before the elementwise
        maps, so every array the GLA passes read is contiguous without a copy of its own.
        """
        if self.options.gate_rank:
            qkv, logits = self.proj(x), self.gate(x)
        else:  # split, not slices: its backward concatenates instead of filling zeros and adding
            qkv, logits = self.proj(x).split([3 * self.n_heads * self.d_head, self.n_heads * self.n_slots], dim=-1)
        qkv = qkv.unflatten(-1, (3, self.n_heads, self.d_head))
        logits = logits.unflatten(-1, (self.n_heads, self.n_slots))
        if head_major:  # (B, T, 3, H, D) -> (3, B, H, T, D); (B, T, H, m) -> (B, H, T, m)
            qkv, logits = qkv.permute(2, 0, 3, 1, 4).contiguous(), logits.transpose(1, 2).contiguous()
        else:
            qkv = qkv.movedim(-3, 0)
        q, k, v = F.silu(qkv).unbind(0)
        # Hooked before 1 - alpha is taken from it: a patched gate moves the writes with it.
        log_alpha = self.hook_log_forget(F.logsigmoid(logits) / self.options.gate_temperature)
        return q, k, v, log_alpha, -torch.expm1(log_alpha)

    def _finish(self, read: torch.Tensor) -> torch.Tensor:
        read = self.hook_read(read)
        normed = F.rms_norm(F.silu(read), (read.shape[-1],), self.norm_weight, self.options.norm_eps)
        return self.out(normed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v, log_alpha, write = self._project(x, head_major=True)  # (B, H, T, .)
        chunk = self.options.chunk_size
        scores, _ = gla_chunked(q, k, write, log_alpha, gate="value", chunk_size=chunk)
        weights = self.hook_read_weights(self.hook_slot_scores(scores).softmax(-1))
        read, _ = gla_chunked(weights, write, v, log_alpha, gate="key", chunk_size=chunk)
        return self._finish(read.transpose(1, 2).reshape(b, t, d))

    def init_state(self, batch_size: int, device=None, dtype=None) -> dict[str, Any]:
        shape = (batch_size, self.n_heads)
        return {
            # K~ stored transposed (d_k x m): the state of pass 1, whose gated side is its value side.
            "key_slots": torch.zeros(*shape, self.d_head, self.n_slots, device=device, dtype=dtype),
            "value_slots": torch.zeros(*shape, self.n_slots, self.d_head, device=device, dtype=dtype),
        }

    def step(self, x_t: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        b, d = x_t.shape
        q, k, v, log_alpha, write = self._project(x_t, head_major=False)  # (B, H, .)
        scores, key_slots = gla_step(q, k, write, log_alpha, state["key_slots"], gate="value")
        weights = self.hook_read_weights(self.hook_slot_scores(scores).softmax(-1))
        read, value_slots = gla_step(weights, write, v, log_alpha, state["value_slots"], gate="key")
        return self._finish(read.reshape(b, d)), {"key_slots": key_slots, "value_slots": value_slots}
