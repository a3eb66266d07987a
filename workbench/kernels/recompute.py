"""Memory-saving forms of three pieces of the inverted mixer: same values, same gradients, fewer saved bytes.

A training step's peak comes early in backward, while everything the forward saved is still alive;
each function here keeps a smaller tensor alive instead and recomputes a cheap piece in backward:

* ``projected_context``: ``F.linear(context(h), weight)``, the gates' view of the multi-timescale
  EMA; keeps ``h`` (saved anyway) instead of the (B, T, d) EMA, recomputed in backward
  (``torch.utils.checkpoint``): one more chunked EMA pass.
* ``scaled_linear``: ``F.linear(x, weight) * scale[..., None]``, the gated message value; keeps
  ``x`` (saved anyway) and ``scale`` instead of the (B, T, d) unscaled value that ``scale``'s gradient
  reads, recomputed in backward: one more (T, d) x (d, d) GEMM.
* ``candidate_scores``: ``q @ keys[positions]^T``, the chunked read's scores of the M + C candidates
  (the units' keys at each chunk start and the chunk's own); keeps the (B, T, E) keys and the position
  table instead of the gathered (B, n, M + C, E) candidates (3x the keys at M = 2C), gathered again in
  backward. Forward it gathers them in one ``index_select`` (no separate unit-key tensor, no ``cat``).

Each is 32-48 MiB per 65,536 tokens at d_model 128 (``workbench bench scaling``'s batch). Under
``plain_forms()`` all three run as plain autograd compositions (the tests' reference, and the "before"
of ``workbench bench memory``, which writes ``results/memory-profile-<device>.json``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

_PLAIN = False  # set by plain_forms()


@contextlib.contextmanager
def plain_forms() -> Iterator[None]:
    """Within this block the three functions keep what plain autograd keeps (no recomputation)."""
    global _PLAIN
    before, _PLAIN = _PLAIN, True
    try:
        yield
    finally:
        _PLAIN = before


def _project(h: torch.Tensor, weight: torch.Tensor, context: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    return F.linear(context(h), weight)


def projected_context(h: torch.Tensor, weight: torch.Tensor,
                      context: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:  # fmt: skip
    """``F.linear(context(h), weight)``; with autograd on, ``context(h)`` is recomputed in backward, not kept."""
    if _PLAIN or not torch.is_grad_enabled() or not (h.requires_grad or weight.requires_grad):
        return _project(h, weight, context)  # no graph: the context is a temporary, freed at once
    return checkpoint(_project, h, weight, context, use_reentrant=False, preserve_rng_state=False)


class _ScaledLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight, scale)
        return F.linear(x, weight).mul_(scale[..., None])  # in place: the unscaled value is never kept

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, scale = ctx.saved_tensors
        grad_unscaled = grad * scale[..., None]
        grad_x = grad_unscaled @ weight if ctx.needs_input_grad[0] else None
        grad_weight = grad_unscaled.flatten(0, -2).T @ x.flatten(0, -2) if ctx.needs_input_grad[1] else None
        grad_scale = (grad * F.linear(x, weight)).sum(-1) if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_scale


def scaled_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight) * scale[..., None]`` (no bias); backward recomputes ``F.linear(x, weight)``."""
    if _PLAIN:
        return F.linear(x, weight) * scale[..., None]
    return _ScaledLinear.apply(x, weight, scale)


def candidate_rows(start: torch.Tensor, length: int, chunk: int) -> torch.Tensor:
    """(B, n, M + C) rows of the flattened (B * length, E) keys: each unit's key at the chunk start, then the chunk's.

    ``start`` (B, n, M): the position each unit holds at each chunk start (-1: empty; row 0 stands in,
    its score is masked by the caller); ``length`` = n * C, the padded sequence length.
    """
    b, n, _ = start.shape
    chunk_positions = (torch.arange(n, device=start.device) * chunk)[:, None] + torch.arange(chunk, device=start.device)
    positions = torch.cat([start.clamp_min(0), chunk_positions.expand(b, n, chunk)], dim=-1)
    return torch.arange(b, device=start.device)[:, None, None] * length + positions


class _CandidateScores(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: torch.Tensor, keys: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(q, keys, rows)
        return q @ _gather(keys, rows).transpose(-1, -2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        q, keys, rows = ctx.saved_tensors
        grad_q = grad @ _gather(keys, rows) if ctx.needs_input_grad[0] else None
        grad_keys = None
        if ctx.needs_input_grad[1]:
            grad_candidates = grad.transpose(-1, -2) @ q  # (B, n, M + C, E)
            flat = keys.new_zeros(keys.numel() // keys.shape[-1], keys.shape[-1])
            grad_keys = flat.index_add_(0, rows.reshape(-1), grad_candidates.reshape(-1, keys.shape[-1])).view_as(keys)
        return grad_q, grad_keys, None


def _gather(keys: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The (B, n, M + C, E) candidate keys, ``keys`` flattened to rows."""
    return keys.reshape(-1, keys.shape[-1]).index_select(0, rows.reshape(-1)).view(*rows.shape, keys.shape[-1])


def candidate_scores(q: torch.Tensor, keys: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(B, n, C, M + C) scores ``q @ candidates^T``; q (B, n, C, E), keys (B, n * C, E), rows from ``candidate_rows``.

    Backward gathers the candidates again instead of keeping them (module docstring).
    """
    if _PLAIN:
        return q @ _gather(keys, rows).transpose(-1, -2)
    return _CandidateScores.apply(q, keys, rows)
