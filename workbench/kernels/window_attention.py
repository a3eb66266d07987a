"""Causal sliding-window (banded) softmax attention: three forms of one op.

Definition, for queries, keys and values of one head (keys already carry their positions, e.g.
rotary; nothing here knows about positions)::

    y_t = sum_{s = max(0, t-W+1)}^{t} softmax_s(scale * <q_t, k_s>) v_s

Token t sees itself and the W - 1 tokens before it: W tokens, the window of Longformer's local
attention made causal (Beltagy, Peters & Cohan 2020, "Longformer: The Long-Document Transformer",
arXiv 2004.05150) and the sliding-window baseline of Zoology (Arora et al. 2023, "Zoology: Measuring
and Improving Recall in Efficient Language Models", arXiv 2312.04927). ``scale`` defaults to
``d_head ** -0.5``.

Forms (same contract: q, k (B, H, T, E), v (B, H, T, D) -> (B, H, T, D)):

* ``window_attention_naive``: a loop over t (tests and clarity only);
* ``window_attention_chunked``: the training form. T is cut into blocks of W queries; block i
  attends to keys of blocks i-1 and i (2W keys) under a band mask ``0 <= t - s <= W - 1``, so the
  score tensor is (B, H, T/W, W, 2W): O(T * W) memory, never T x T. The blocks run as one fused
  ``scaled_dot_product_attention`` call with a boolean mask (its CPU flash kernel is ~3x faster
  than writing out scores, softmax and product, forward + backward). When T <= W the window
  covers everything and it is plain causal attention.
* ``window_attention_step``: one recurrent step on a ring buffer of exactly W (key, value)
  slots: the token at position p is written to slot p mod W (overwriting position p - W, which
  has just left the window) and the query reads the filled slots. Constant state 2 * W * (E + D)
  numbers per head. The ring's slot order differs from time order; softmax does not care.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _scale(q: torch.Tensor, scale: float | None) -> float:
    return q.shape[-1] ** -0.5 if scale is None else scale


def window_attention_naive(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, scale: float | None = None
) -> torch.Tensor:
    """The definition, one query at a time."""
    scale = _scale(q, scale)
    outputs = []
    for t in range(q.shape[2]):
        lo = max(0, t - window + 1)
        scores = torch.einsum("bhe,bhse->bhs", q[:, :, t], k[:, :, lo : t + 1]) * scale
        outputs.append(torch.einsum("bhs,bhsd->bhd", scores.softmax(-1), v[:, :, lo : t + 1]))
    return torch.stack(outputs, dim=2)


def band_mask(window: int, device=None) -> torch.Tensor:
    """(2, W, 2W) boolean: query a of a block may see column c of [previous block; own block].

    Column c is position (block start - W + c); allowed iff 0 <= a + W - c <= W - 1, i.e.
    a + 1 <= c <= a + W. Index 0 is the mask of the first block, whose previous block does not
    exist (its W columns are padding and stay masked); index 1 is every later block's.
    """
    a = torch.arange(window, device=device)[:, None]
    c = torch.arange(2 * window, device=device)[None, :]
    later = (c >= a + 1) & (c <= a + window)
    first = later & (c >= window)
    return torch.stack([first, later])


def window_attention_chunked(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, scale: float | None = None
) -> torch.Tensor:
    """Blocked banded attention: blocks of W queries against 2W keys; no T x T tensor."""
    b, h, t, e = q.shape
    d = v.shape[-1]
    scale = _scale(q, scale)
    if t <= window:  # every earlier token is inside the window
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    w = window
    n = -(-t // w)
    pad = n * w - t
    if pad:  # padded keys lie after every real query (masked by causality); padded queries are dropped
        q, k, v = (F.pad(z, (0, 0, 0, pad)) for z in (q, k, v))
    # Blocks as the "head" axis of a 4-d SDPA call: (B*H, n, W, .).
    qb = q.reshape(b * h, n, w, e)
    kb = k.reshape(b * h, n, w, e)
    vb = v.reshape(b * h, n, w, d)
    keys = torch.cat([F.pad(kb, (0, 0, 0, 0, 1, 0))[:, :n], kb], dim=2)  # (B*H, n, 2W, E): [block i-1; block i]
    values = torch.cat([F.pad(vb, (0, 0, 0, 0, 1, 0))[:, :n], vb], dim=2)
    masks = band_mask(w, q.device)
    # (1, n, W, 2W): given 4-d, the mask keeps SDPA on its fused CPU kernel (a 3-d one sends it to the math path)
    mask = torch.cat([masks[:1], masks[1:].expand(n - 1, w, 2 * w)])[None]
    y = F.scaled_dot_product_attention(qb, keys, values, attn_mask=mask, scale=scale)
    y = y.reshape(b, h, n * w, d)
    return y if not pad else y[:, :, :t]


def window_attention_step(
    q_t: torch.Tensor,
    k_t: torch.Tensor,
    v_t: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    position: int | torch.Tensor,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token at absolute ``position``: write it to slot ``position % W``, read the filled slots.

    ``position`` is an int, or a 0-d int64 tensor (``workbench.fast``'s traced step: then the mask
    of unwritten slots is always applied, empty once the ring is full).

    q_t, k_t (B, H, E), v_t (B, H, D); caches (B, H, W, .) with W the window. Returns
    ``(y_t (B, H, D), k_cache, v_cache)``; the caches are new tensors (differentiable, no
    in-place write), so a loop of steps can be back-propagated through.
    """
    w = k_cache.shape[2]
    scale = _scale(q_t, scale)
    slot = position % w
    here = torch.arange(w, device=k_cache.device) == slot
    k_cache = torch.where(here[:, None], k_t[:, :, None], k_cache)
    v_cache = torch.where(here[:, None], v_t[:, :, None], v_cache)
    scores = torch.einsum("bhe,bhse->bhs", q_t, k_cache) * scale
    if not isinstance(position, int) or position + 1 < w:  # slots past the position were never written
        scores = scores.masked_fill(torch.arange(w, device=scores.device) > position, float("-inf"))
    y = torch.einsum("bhs,bhsd->bhd", scores.softmax(-1), v_cache)
    return y, k_cache, v_cache
