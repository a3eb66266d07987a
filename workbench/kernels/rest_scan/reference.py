"""The rest scan, reference form (no gradient: rest steers the writes, the softmax teaches the bids).

Per row (a batch element and head) and token t, with ``logits`` the bids plus every other gain::

    rest_t   = -strength * load_{t-1}                      (strength = beta M, one number or one per row;
                                                            load_{-1} = 0)
    winner_t = argmax([logits_t + rest_t, sink])           (the sink column only when given)
    taken_t  = salience_t * onehot(winner_t)               (hard; soft: the softmax of the same row)
    load_t   = keep * load_{t-1} + (1 - keep) * taken_t    (the sink's column is written nowhere)

Returns rest (R, T, M), winner (R, T) (hard; None for soft) and the last load (R, M).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def rest_step(logits: torch.Tensor, salience: torch.Tensor, load: torch.Tensor, sink: torch.Tensor | None,
              keep: torch.Tensor | float, strength: float | torch.Tensor, hard: bool):
    """One token: logits (..., M), salience (...), load (..., M) before it, sink (...) or None; strength a
    number or (...), one per row."""
    rest = -(strength[..., None] if torch.is_tensor(strength) else strength) * load
    chosen = logits + rest
    if sink is not None:
        chosen = torch.cat([chosen, sink[..., None].to(chosen.dtype)], -1)
    winner = chosen.argmax(-1) if hard else None
    taken = F.one_hot(winner, chosen.shape[-1]).to(chosen.dtype) if hard else chosen.softmax(-1)
    taken = salience[..., None] * (taken[..., :-1] if sink is not None else taken)
    return rest, winner, keep * load + (1 - keep) * taken


@torch.no_grad()
def rest_scan_naive(logits: torch.Tensor, salience: torch.Tensor, sink: torch.Tensor | None,
                    keep: torch.Tensor | float, strength: float | torch.Tensor, hard: bool,
                    load: torch.Tensor | None = None):
    """The loop over tokens: logits (R, T, M), salience (R, T), sink (R,) or None, strength a number or (R,)."""
    load = torch.zeros_like(logits[:, 0]) if load is None else load
    rests, winners = [], []
    for t in range(logits.shape[1]):
        rest, winner, load = rest_step(logits[:, t], salience[:, t], load, sink, keep, strength, hard)
        rests.append(rest)
        winners.append(winner)
    rest = torch.stack(rests, 1) if rests else torch.zeros_like(logits)
    winner = (torch.stack(winners, 1) if winners else logits.new_zeros(logits.shape[:2], dtype=torch.long)) \
        if hard else None
    return rest, winner, load
