"""Gated DeltaNet and DeltaNet: a matrix memory per head, written by the (gated) delta rule.

Gated DeltaNet (Yang, Kautz, Hatamizadeh 2024, "Gated Delta Networks: Improving Mamba2 with Delta
Rule", arXiv 2412.06464); DeltaNet (Schlag et al. 2021; Yang, Wang, Zhang, Shen, Kim 2024,
arXiv 2406.06484) is the same layer with the decay fixed at 1. Per head h and token t:

    q_t = L2norm(SiLU(W_q x_t)),  k_t = L2norm(SiLU(W_k x_t)),  v_t = SiLU(W_v x_t)
    beta_t  = sigmoid(w_beta . x_t)                                   write strength, in (0, 1)
    alpha_t = exp(-A_h * softplus(w_a . x_t + dt_bias_h))             decay, in (0, 1] (Mamba-2 style)
    S_t = alpha_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T,  o_t = S_t q_t
    y_t = W_o [ RMSNorm(o_t) * SiLU(W_g x_t) ]_heads                 (per-head RMSNorm, shared weight)

The op is :mod:`workbench.kernels.delta_rule`: ``forward`` runs its chunked WY form (a triangular
solve per chunk, a loop over the T / C chunks only, no T x T tensor), ``step`` its rank-one
recurrent step; the state is H matrices of d_k x d_v, constant in the context.

Initialisation as the paper's layer (and Mamba-2): ``A_h ~ U(0, 16)`` stored as ``A_log``;
``dt_bias = softplus^{-1}(dt)`` with ``dt`` log-uniform in [1e-3, 0.1] (floored at 1e-4); both are
1-d, so the trainer puts no weight decay on them (as the paper does). Linear maps keep PyTorch's
default initialisation, as the project's other mixers do.

Differences from the paper's layer, on purpose:

* no short convolutions on q, k, v by default: the project's Block gives every mixer the same
  short causal convolution (Zoology/Based recipe). ``inner_conv = w > 0`` restores the paper's
  depthwise causal convolutions of width w (no bias, SiLU after), with their (w - 1)-token
  buffer in the recurrent state;
* sizes scaled to d_model = 128 (see :class:`GatedDeltaNetOptions`);
* the queries are not scaled by ``d_k^-1/2`` (the per-head RMSNorm after the op removes any
  constant scale, up to its eps);
* ``deltanet`` keeps the output gate ``SiLU(W_g x)`` of Gated DeltaNet's layer (the DeltaNet
  paper's layer has none by default), so the pair differs only in the decay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import ConfigError
from workbench.hooks import HookPoint
from workbench.kernels.delta_rule import gated_delta_rule_chunked, gated_delta_rule_naive, gated_delta_rule_step
from workbench.kernels.short_conv import short_conv
from workbench.mixers.base import Mixer

NORM_EPS = 1e-5  # the per-head output RMSNorm's eps (the paper's layer uses 1e-5)
L2_EPS = 1e-6  # q and k are divided by max(||.||, eps)


@dataclass
class GatedDeltaNetOptions:
    # Two heads of d_k = 64: the paper's layer has few, wide heads (1.3B: 6 heads of 256 at
    # d_model 2048); d_model / 8 = 16 would be too narrow here, since a head holds at most d_k
    # linearly independent keys exactly and MQAR asks for up to 64 pairs. d_head is the state
    # knob: the state is n_heads * d_head * (expand_v * d_head) numbers.
    n_heads: int = 2
    d_head: int = 64  # d_k per head (q and k)
    # d_v = expand_v * d_head. The paper uses 2; 1 keeps the mixer at 82,500 parameters at
    # d_model 128 (1.26x the transformer's 65,536) instead of 131,716 (2x). (d_head = 32 with
    # expand_v = 2 matches the transformer's count to 1%, 66,116, with half the state.)
    expand_v: float = 1.0
    chunk_size: int = 64  # C of the chunked form (the paper's and fla's 64): speed only, not semantics
    inner_conv: int = 0  # the paper's q/k/v short convolution width; 0 = off (the Block's shared conv)


class GatedDeltaNet(Mixer):
    Options = GatedDeltaNetOptions
    gated: ClassVar[bool] = True  # False: alpha = 1 (DeltaNet)

    @classmethod
    def check_options(cls, o: GatedDeltaNetOptions, d_model: int) -> None:
        name = cls.__name__
        for field in ("n_heads", "d_head", "chunk_size"):
            value = getattr(o, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name}.{field} must be a positive integer, got {value!r}")
        if not isinstance(o.inner_conv, int) or isinstance(o.inner_conv, bool) or o.inner_conv < 0:
            raise ConfigError(f"{name}.inner_conv must be an integer >= 0 (0 = off), got {o.inner_conv!r}")
        ev = o.expand_v
        if not isinstance(ev, (int, float)) or isinstance(ev, bool) or not math.isfinite(ev) or ev <= 0:
            raise ConfigError(f"{name}.expand_v must be a finite number > 0, got {ev!r}")
        d_v = ev * o.d_head
        if abs(d_v - round(d_v)) > 1e-9 or round(d_v) < 1:
            raise ConfigError(f"{name}.expand_v * d_head = {d_v!r} must be a positive integer (the value size)")

    def __init__(self, d_model: int, options: GatedDeltaNetOptions | None = None) -> None:
        super().__init__()
        o = options or GatedDeltaNetOptions()
        self.check_options(o, d_model)
        self.o = o
        self.d_model = d_model
        self.n_heads, self.d_k, self.d_v = o.n_heads, o.d_head, round(o.expand_v * o.d_head)
        h, key_dim, value_dim = self.n_heads, self.n_heads * self.d_k, self.n_heads * self.d_v
        self.q_proj = nn.Linear(d_model, key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, value_dim, bias=False)
        self.g_proj = nn.Linear(d_model, value_dim, bias=False)  # output gate
        self.b_proj = nn.Linear(d_model, h, bias=False)  # beta logits
        if self.gated:
            self.a_proj = nn.Linear(d_model, h, bias=False)  # decay input
            self.A_log = nn.Parameter(torch.empty(h).uniform_(0, 16).log())
            dt = torch.exp(torch.rand(h) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp_min(1e-4)
            self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus(dt_bias) = dt
        self.conv = None
        if o.inner_conv:
            channels = 2 * key_dim + value_dim
            self.conv = nn.Conv1d(channels, channels, o.inner_conv, groups=channels, bias=False)
        self.norm_weight = nn.Parameter(torch.ones(self.d_v))  # per-head RMSNorm, shared over heads
        self.o_proj = nn.Linear(value_dim, d_model, bias=False)
        # Hook points for the notebooks (all per token and head).
        self.hook_q = HookPoint()  # (B, T, H, d_k) unit-norm queries
        self.hook_k = HookPoint()  # (B, T, H, d_k) unit-norm keys
        self.hook_v = HookPoint()  # (B, T, H, d_v)
        self.hook_beta = HookPoint()  # (B, T, H) write strength in (0, 1)
        self.hook_decay = HookPoint()  # (B, T, H) alpha in (0, 1] (all ones for DeltaNet)
        self.hook_read = HookPoint()  # (B, T, H, d_v) o_t = S_t q_t, before the norm and gate
        self.hook_gate = HookPoint()  # (B, T, H, d_v) SiLU(W_g x)
        # No stats: tests/test_train.py expects none from mixers other than the inverted one (the
        # mean beta and decay are worth logging; the hook points carry them meanwhile).
        self.stats: dict[str, float] = {}
        self.impl = "chunked"  # "chunked" (training form) or "naive" (the definition; tests only)

    # ------------------------------------------------------------------ pieces shared by both forms

    def _projections(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every linear map of x in one matmul: (q, k, v) pre-activation, gate logits, beta logits, decay input."""
        layers = [self.q_proj, self.k_proj, self.v_proj, self.g_proj, self.b_proj] + ([self.a_proj] if self.gated else [])
        out = F.linear(x, torch.cat([layer.weight for layer in layers]))
        kd, vd, h = self.n_heads * self.d_k, self.n_heads * self.d_v, self.n_heads
        qkv, gate, beta, *a = out.split([2 * kd + vd, vd, h] + ([h] if self.gated else []), dim=-1)
        return qkv, gate, beta, (a[0] if a else None)

    def _heads(self, qkv: torch.Tensor):
        """SiLU, then split into heads, q and k L2-normalised: (..., H, d) each."""
        qkv = F.silu(qkv)
        kd = self.n_heads * self.d_k
        q, k, v = qkv.split([kd, kd, self.n_heads * self.d_v], dim=-1)
        q = F.normalize(q.unflatten(-1, (self.n_heads, self.d_k)), dim=-1, eps=L2_EPS)
        k = F.normalize(k.unflatten(-1, (self.n_heads, self.d_k)), dim=-1, eps=L2_EPS)
        return self.hook_q(q), self.hook_k(k), self.hook_v(v.unflatten(-1, (self.n_heads, self.d_v)))

    def _gates(self, beta_logits: torch.Tensor, a: torch.Tensor | None):
        """beta (..., H) and log alpha (..., H) (None for DeltaNet)."""
        beta = self.hook_beta(torch.sigmoid(beta_logits))
        if a is None:
            if self.hook_decay._forward_hooks:
                self.hook_decay(torch.ones_like(beta))
            return beta, None
        log_alpha = -self.A_log.exp() * F.softplus(a + self.dt_bias)
        if self.hook_decay._forward_hooks:
            self.hook_decay(log_alpha.exp())
        return beta, log_alpha

    def _output(self, read: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """W_o [RMSNorm(o) * SiLU(gate)] over heads; read (..., H, d_v), gate (..., H * d_v)."""
        read = self.hook_read(read)
        normed = read * torch.rsqrt(read.square().mean(-1, keepdim=True) + NORM_EPS) * self.norm_weight
        gate = self.hook_gate(F.silu(gate.unflatten(-1, (self.n_heads, self.d_v))))
        return self.o_proj((normed * gate).flatten(-2))

    # ------------------------------------------------------------------ parallel form

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv, gate, beta_logits, a = self._projections(x)
        if self.conv is not None:
            qkv = short_conv(qkv, self.conv.weight[:, 0], None)
        q, k, v = self._heads(qkv)
        beta, log_alpha = self._gates(beta_logits, a)
        # (B, T, H, d) -> (B, H, T, d): the op batches over (B, H) and chunks along T.
        args = [z.transpose(1, 2) for z in (q, k, v, beta)] + [None if log_alpha is None else log_alpha.transpose(1, 2)]
        if self.impl == "naive":
            read, _ = gated_delta_rule_naive(*args)
        else:
            read, _ = gated_delta_rule_chunked(*args, chunk_size=self.o.chunk_size)
        return self._output(read.transpose(1, 2), gate)

    # ------------------------------------------------------------------ recurrent form

    def init_state(self, batch_size: int, device=None, dtype=None) -> dict[str, Any]:
        state = {"memory": torch.zeros(batch_size, self.n_heads, self.d_k, self.d_v, device=device, dtype=dtype)}
        if self.conv is not None:  # the last (w - 1) q/k/v projections, before the convolution
            width, channels = self.conv.kernel_size[0], self.conv.in_channels
            state["conv"] = torch.zeros(batch_size, width - 1, channels, device=device, dtype=dtype)
        return state

    def step(self, x_t: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        qkv, gate, beta_logits, a = self._projections(x_t)
        new_state = {}
        if self.conv is not None:
            window = torch.cat([state["conv"], qkv[:, None]], dim=1)  # (B, w, channels), oldest first
            qkv = (window * self.conv.weight[:, 0].t()).sum(1)
            new_state["conv"] = window[:, 1:]
        q, k, v = self._heads(qkv)
        beta, log_alpha = self._gates(beta_logits, a)
        read, new_state["memory"] = gated_delta_rule_step(q, k, v, beta, log_alpha, state["memory"])
        return self._output(read, gate), new_state


class DeltaNet(GatedDeltaNet):
    """DeltaNet: the same layer with alpha = 1 (no decay parameters at all)."""

    gated: ClassVar[bool] = False
