"""The rest scan on the CPU: the reference loop run by NumPy on the tensors' memory (``reference.py`` states
the op). Each token costs a handful of NumPy calls on (R, M) arrays instead of a dozen torch ops with
their dispatch; the arithmetic and the argmax tie rule (the lowest index; the sink only when strictly
ahead) are the reference's, so the winners are the same. No gradient, as the op.
"""

from __future__ import annotations

import numpy as np
import torch

_NUMPY_DTYPES = (torch.float32, torch.float64)


@torch.no_grad()
def rest_scan_numpy(logits: torch.Tensor, salience: torch.Tensor, sink: torch.Tensor | None,
                    keep: torch.Tensor | float, strength: float | torch.Tensor, hard: bool,
                    load: torch.Tensor | None = None):
    """As ``reference.rest_scan_naive``, for CPU tensors; other dtypes run in float32 and come back cast."""
    if logits.device.type != "cpu":
        raise ValueError(f"rest_scan_numpy runs on CPU tensors (got {logits.device})")
    out_dtype = logits.dtype
    work = out_dtype if out_dtype in _NUMPY_DTYPES else torch.float32
    rows, steps, m = logits.shape
    lg = logits.detach().to(work).contiguous().numpy()
    sal = salience.detach().to(work).contiguous().numpy()
    acc = lg.dtype.type
    ld = np.zeros((rows, m), lg.dtype) if load is None else load.detach().to(work).numpy().copy()
    sk = None if sink is None else sink.detach().to(work).numpy()
    kp = acc(float(keep))
    fresh = acc(1) - kp
    if torch.is_tensor(strength):  # one per row
        neg_strength = -strength.detach().to(work).reshape(rows, 1).numpy()
    else:
        neg_strength = acc(-strength)
    rest = np.empty_like(lg)
    winner = np.empty((rows, steps), np.int64) if hard else None
    index = np.arange(rows)
    for t in range(steps):
        r = rest[:, t]
        np.multiply(ld, neg_strength, out=r)
        chosen = lg[:, t] + r
        ld *= kp
        if hard:
            w = chosen.argmax(-1)
            if sk is not None:  # the sink (index M) wins only when strictly ahead of the best unit
                w = np.where(sk > chosen[index, w], m, w)
                took = w < m
                ld[index[took], w[took]] += fresh * sal[took, t]
            else:
                ld[index, w] += fresh * sal[:, t]
            winner[:, t] = w
        else:
            top = chosen.max(-1) if sk is None else np.maximum(chosen.max(-1), sk)
            e = np.exp(chosen - top[:, None])
            total = e.sum(-1) + (0 if sk is None else np.exp(sk - top))
            ld += fresh * (sal[:, t, None] * (e / total[:, None]))
    return (torch.from_numpy(rest).to(out_dtype), None if winner is None else torch.from_numpy(winner),
            torch.from_numpy(ld).to(out_dtype))
