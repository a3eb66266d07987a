"""Mamba: the selective state-space model S6 in its Mamba block (a peer of the inverted mixer).

Gu & Dao (2023), "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", arXiv 2312.00752
(section 3, Algorithm 2, Figure 3). For an input x (B, T, d_model), with E = expand * d_model:

    (u, z) = in_proj(x)                                   two branches of width E
    u      = SiLU(conv_k(u))                              conv_k: causal depthwise, width k (optional, below)
    (dt, B, C) = x_proj(u)                                dt of rank R = ceil(d_model / 16), B and C of size N
    delta  = softplus(dt_proj(dt))                        (B, T, E) step sizes, one per channel
    A      = -exp(A_log)                                  (E, N), real and negative (S4D-real init: -(1..N))
    y      = selective_scan(u, delta, A, B, C, D)         h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t,
                                                          y_t = C_t . h_t + D u_t
    out    = out_proj(y * SiLU(z))

The scan is ``workbench.kernels.selective_scan`` (naive / chunked / step). The recurrent state is
h (E x N numbers) plus, when the inner convolution is on, its window of the last k - 1 inputs u.

Differences from the paper, all deliberate:

* The inner depthwise convolution (the paper's d_conv = 4) is off by default (``inner_conv = 0``):
  the protocol's ``Block`` gives every mixer the same short causal convolution in front, so a
  second one inside would give this mixer two. ``inner_conv = 4`` restores the paper's block.
* Scaled to the protocol's d_model = 128: E = 256, R = 8, N = 16 (the paper's defaults, which
  depend on d_model only through E and R).
* No residual, normalisation or MLP here: the surrounding ``Block`` provides them (the paper's
  Mamba LM stacks Mamba blocks without MLPs; the protocol keeps every mixer in the same block).
* B is discretised as ``delta B`` (Euler), as in the authors' code, not eq. (4)'s ZOH (see the kernel).
* A_log is stored flat, (E * N,), so that the project's optimizer (which decays every parameter of
  two or more dimensions) leaves it undecayed, as the paper's code does; ``_A()`` gives A as (E, N).
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
from workbench.kernels.selective_scan import DEFAULT_CHUNK, selective_scan_chunked, selective_scan_step
from workbench.mixers.base import Mixer


@dataclass
class MambaOptions:
    d_state: int = 16  # N: the paper's default state size; the state knob (with expand): E * N numbers
    expand: int = 2  # E = expand * d_model = 256 channels at d_model 128 (the paper's expansion 2)
    dt_rank: int | None = None  # R of the low-rank delta projection; None: ceil(d_model / 16) = 8 (the paper's)
    inner_conv: int = 0  # width k of the paper's depthwise conv on u (d_conv = 4); 0: off, the Block has one
    dt_min: float = 1e-3  # delta starts log-uniform in [dt_min, dt_max] (the paper's init)
    dt_max: float = 1e-1
    chunk_size: int = DEFAULT_CHUNK  # tokens per chunk of the parallel scan (memory and speed only, not maths)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """x with softplus(x) = y, for y > 0: x = y + log(1 - exp(-y))."""
    return y + torch.log(-torch.expm1(-y))


class Mamba(Mixer):
    Options = MambaOptions

    @classmethod
    def check_options(cls, o: MambaOptions, d_model: int) -> None:
        for name in ("d_state", "expand", "chunk_size"):
            if not _positive_int(getattr(o, name)):
                raise ConfigError(f"mamba.{name} must be a positive integer, got {getattr(o, name)!r}")
        if o.dt_rank is not None and not _positive_int(o.dt_rank):
            raise ConfigError(f"mamba.dt_rank must be a positive integer or null (auto), got {o.dt_rank!r}")
        if isinstance(o.inner_conv, bool) or not isinstance(o.inner_conv, int) or o.inner_conv < 0:
            raise ConfigError(f"mamba.inner_conv must be an integer >= 0 (0: off), got {o.inner_conv!r}")
        for name in ("dt_min", "dt_max"):
            value = getattr(o, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"mamba.{name} must be a finite number > 0, got {value!r}")
        if o.dt_min > o.dt_max:
            raise ConfigError(f"mamba.dt_min={o.dt_min!r} cannot exceed dt_max={o.dt_max!r}")

    def __init__(self, d_model: int, options: MambaOptions | None = None) -> None:
        super().__init__()
        o = options or MambaOptions()
        self.check_options(o, d_model)
        self.o, self.d_model = o, d_model
        self.d_inner = e = o.expand * d_model
        self.d_state = n = o.d_state
        self.dt_rank = r = o.dt_rank if o.dt_rank is not None else math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * e, bias=False)
        if o.inner_conv:
            self.conv = nn.Conv1d(e, e, o.inner_conv, groups=e)  # causal by left padding (forward)
        self.x_proj = nn.Linear(e, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, e)
        self.out_proj = nn.Linear(e, d_model, bias=False)
        # The paper's initialisation of the selective parameters.
        with torch.no_grad():
            bound = r**-0.5
            self.dt_proj.weight.uniform_(-bound, bound)
            log_dt = torch.rand(e) * (math.log(o.dt_max) - math.log(o.dt_min)) + math.log(o.dt_min)
            self.dt_proj.bias.copy_(_inverse_softplus(log_dt.exp().clamp_min(1e-4)))  # floor: the reference code's
        # A = -exp(A_log) = -(1, ..., N) in every channel (S4D-real). Stored flat, (E * N,): the paper keeps A_log
        # (and D) out of weight decay, and the project's optimizer decays exactly the parameters of 2 or more
        # dimensions; _no_weight_decay marks both as the reference code does, for optimizers that read it.
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(e))
        self.D = nn.Parameter(torch.ones(e))
        self.A_log._no_weight_decay = self.D._no_weight_decay = True
        # Hook points for the notebooks.
        self.hook_u = HookPoint()  # (B, T, E) the scan's input, after the activation
        self.hook_delta = HookPoint()  # (B, T, E) step sizes: large = reset to the present, small = keep the past
        self.hook_B = HookPoint()  # (B, T, N) how each token is written into the state
        self.hook_C = HookPoint()  # (B, T, N) how each token reads the state
        self.hook_gate = HookPoint()  # (B, T, E) SiLU(z), the output gate
        # No self.stats: the step sizes are read at hook_delta (tests/test_train.py expects none from peers).

    # ------------------------------------------------------------------ pieces shared by both forms

    def _selective(self, u: torch.Tensor):
        """delta (softplus of the low-rank projection), B and C of the activated input u."""
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        # dt_proj(dt), written as dt @ W^T so that autograd forms W's gradient as (R x BT) @ (BT x E), the
        # fast orientation on CPU (F.linear's (E x BT) @ (BT x R) took 5x longer at batch 64, T 256).
        delta = F.softplus(torch.matmul(dt, self.dt_proj.weight.t()) + self.dt_proj.bias)
        return self.hook_delta(delta), self.hook_B(B), self.hook_C(C)

    def _A(self) -> torch.Tensor:
        """A (E, N), negative."""
        return -torch.exp(self.A_log).view(self.d_inner, self.d_state)

    def _branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, z) = in_proj(x), as two products with the halves of its weight: each comes out contiguous
        (no strided views into one (..., 2E) tensor, and no concatenation of their gradients)."""
        weight = self.in_proj.weight
        return F.linear(x, weight[: self.d_inner]), F.linear(x, weight[self.d_inner :])

    # ------------------------------------------------------------------ parallel form

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, z = self._branches(x)
        if self.o.inner_conv:
            k = self.o.inner_conv
            u = F.conv1d(F.pad(u.transpose(1, 2), (k - 1, 0)), self.conv.weight, self.conv.bias, groups=self.d_inner)
            u = u.transpose(1, 2)
        u = self.hook_u(F.silu(u))
        delta, B, C = self._selective(u)
        y = selective_scan_chunked(u, delta, self._A(), B, C, self.D, chunk_size=self.o.chunk_size)
        return self.out_proj(y * self.hook_gate(F.silu(z)))

    # ------------------------------------------------------------------ recurrent form

    def init_state(self, batch_size: int, device=None, dtype=None) -> dict[str, Any]:
        state = {"h": torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=dtype)}
        if self.o.inner_conv > 1:  # the last k - 1 inputs of the convolution
            state["window"] = torch.zeros(batch_size, self.d_inner, self.o.inner_conv - 1, device=device, dtype=dtype)
        return state

    def step(self, x_t: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        u, z = self._branches(x_t)
        new_state: dict[str, Any] = {}
        if self.o.inner_conv:
            window = u[..., None]
            if "window" in state:
                window = torch.cat([state["window"], window], dim=-1)  # (batch, E, k): oldest first
                new_state["window"] = window[..., 1:]
            u = (window * self.conv.weight[:, 0, :]).sum(-1) + self.conv.bias
        u = F.silu(u)
        delta, B, C = self._selective(u)
        y, new_state["h"] = selective_scan_step(u, delta, self._A(), B, C, state["h"], self.D)
        return self.out_proj(y * F.silu(z)), new_state
