"""Inverted attention: a fixed set of M units seeks messages; each unit rests after it fires.

Tokens *post* messages and a fixed set of M processing units takes them in (round 1 of the
mechanism; ``workbench.mixers.seeking`` is round 2):

1. Input. The block's shared front end (``workbench.model.Block``) hands the mixer ``h = x + conv(x)``:
   order and the predecessor are already in h. Multi-timescale context ``c = EMA_lambda(h)`` (channel
   groups with different lambda) gives the gates a sense of time; ``feat = [h; c]``.
2. Salience (demand-driven). ``p_t = sigmoid(w_s . feat_t)``; the token posts a message
   iff ``p_t > 1/2`` (straight-through gradient). Writing is free while the M units have
   room; past capacity each write evicts a message, so ``write_price * relu(sum_t w_t - M) / T``
   is added to the loss: the units' capacity, not the sequence length, bounds the work. Its
   gradient falls only on the writes ranked below the M most salient of the sequence
   (``price_ranked``): tokens compete for the units' room instead of all sinking together.
3. Seeking by pools (normalization). A posted message goes to the pool (of ``n_pools``) whose
   learned interest bids highest (softmax over pools, straight-through gradient).
4. Refractory gain (amplification). Within the pool the most rested unit takes the
   message: ``gain_m(t) = (writes to m's pool since m last fired) / pool_size``; a unit
   that just fired has gain 0 and recovers as its pool works. The winner is
   ``argmax_m gain_m(t)``, which is exactly a ring pointer ``(pool_count - 1) mod pool_size``:
   so the allocation is a cumulative sum, exact and parallel. ``refractory=False`` ablates
   it: the unit is then chosen by content bids alone and similar messages overwrite.
5. Write. Unit m holds the (key, value) of the last token written to it: key = content ``W_k h_s``
   and the message's ordinal as a rotary code (a sense of time); value = ``W_v x_s``.
6. Read. Token t scores the M units with ``<q_t, k_m>/sqrt(d_k)`` plus an ordinal term that
   compares each unit's ordinal with the token's read pointer ``cumsum(advance gate)``
   (addressing by recency / FIFO); keeps the top ``read_topk`` and mixes their values: ``W_o read``.

Parallel form: O(T (M + C) d) time, O(T (M + C)) memory, no T x T tensor (cumsums, scatters,
chunked matmuls). Recurrent form (``step``): a state of O(M d), equal to the parallel form.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import ConfigError
from workbench.hooks import HookPoint
from workbench.kernels.chunk_read.torch_impl import chunk_read_gather, chunk_tables
from workbench.kernels.dispatch import get_impl, resolve
from workbench.kernels.ema.torch_impl import decayed_cumsum
from workbench.kernels.ordinal import ordinal_code, rotate_by_code, rotate_ordinal_query  # noqa: F401
from workbench.kernels.recompute import projected_context, scaled_linear
from workbench.kernels.surrogate import SurrogateRead, surrogate_weights  # noqa: F401 (tests import them here)
from workbench.mixers.base import Mixer


def _hooked(hook: nn.Module) -> bool:
    """True when someone listens at this hook point (skip work nobody reads)."""
    return bool(hook._forward_hooks)


def _unpad(z: torch.Tensor, t: int) -> torch.Tensor:
    """``z[:, :t]``, skipped when there is no padding (a no-op slice still costs a zero-fill in backward)."""
    return z if z.shape[1] == t else z[:, :t]


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Forward value exactly ``hard``; gradient of ``soft``."""
    return hard + (soft - soft.detach())


def ema_scan(x: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """y_t = decay * y_{t-1} + (1 - decay) * x_t along dim 1, by a log-depth (Hillis-Steele) scan.

    ``decay`` has shape (d,). ceil(log2 T) vectorized sweeps, no loop over positions.
    """
    return decayed_cumsum((1 - decay) * x, decay)


# ----------------------------------------------------------------------------- the mixer


@dataclass
class InvertedOptions:
    n_units: int = 128  # M: fixed, independent of sequence length
    n_pools: int = 1  # normalization pools; messages are routed to a pool by content
    read_topk: int = 4  # k: units each token reads (n_units = dense softmax read); k=4 beat k=2 in `make ablation`
    d_key: int = 32
    refractory: bool = True  # rest-based allocation; False = content-only (ablation)
    timescales: tuple[float, ...] = (0.9, 0.99, 0.999)  # multi-timescale context; () = off
    ordinal_read: bool = True  # address units by ordinal (recency) as well as content
    n_freq: int = 16  # frequencies of the ordinal code
    write_price: float = 1.0  # loss per expected write beyond capacity, per token
    write_bias: float = 2.0  # initial salience logit: start by writing, let the price prune
    chunk_size: int = 64  # chunk length of the chunked parallel form (speed; surrogate window)
    write_surrogate: bool = True  # training-only gradient path for tokens that did not write
    gate_margin: float = 0.0  # loss weight on p(1-p) of both gates: keeps hard gates off the 1/2 threshold
    write_gate: bool = True  # learned salience gate; False = every token writes (ablation: is demand worth it?)
    price_ranked: bool = True  # the excess price falls only on the least salient writes beyond the top M
    write_cost: float = 0.0  # loss per write probability, every token (demand-driven: writing is never free); 0 = off
    pool_balance: float = 0.0  # weight of a load-balance loss over pools (Switch-style); 0 = off
    write_floor: float = 0.05  # the batch's mean write probability is pushed up below this (a gate cannot drift shut)


class InvertedMixer(Mixer):
    Options = InvertedOptions
    fused_state_in_place = True  # workbench.fast.InPlaceState

    @classmethod
    def check_options(cls, o: InvertedOptions, d_model: int) -> None:
        def positive(name: str) -> None:
            value = getattr(o, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"inverted.{name} must be a positive integer, got {value!r}")

        for name in ("n_units", "n_pools", "read_topk", "d_key", "n_freq", "chunk_size"):
            positive(name)
        if o.read_topk > o.n_units:
            raise ConfigError(f"inverted.read_topk={o.read_topk} cannot exceed n_units={o.n_units}")
        if o.n_units % o.n_pools:
            raise ConfigError(f"inverted.n_units={o.n_units} must divide into n_pools={o.n_pools} equal pools")
        if any(isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0 < lam < 1 for lam in o.timescales):
            raise ConfigError(f"inverted.timescales must lie in (0, 1), got {o.timescales!r}")
        if len(o.timescales) > d_model:
            raise ConfigError("inverted.timescales cannot outnumber d_model channels")
        for name in ("write_price", "write_bias", "gate_margin", "write_cost", "pool_balance", "write_floor"):
            value = getattr(o, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"inverted.{name} must be a finite number, got {value!r}")
            if name != "write_bias" and value < 0:
                raise ConfigError(f"inverted.{name} must be >= 0, got {value!r}")
        if o.write_floor >= 1:
            raise ConfigError(f"inverted.write_floor must be < 1, got {o.write_floor!r}")

        for name in ("refractory", "ordinal_read", "write_surrogate", "write_gate", "price_ranked"):
            if not isinstance(getattr(o, name), bool):
                raise ConfigError(f"inverted.{name} must be true or false, got {getattr(o, name)!r}")

    def __init__(self, d_model: int, options: InvertedOptions | None = None) -> None:
        super().__init__()
        o = options or InvertedOptions()
        o.timescales = tuple(o.timescales)
        self.check_options(o, d_model)
        self.o, self.d_model = o, d_model
        self.pool_size = o.n_units // o.n_pools
        self.n_freq = o.n_freq if o.ordinal_read else 0
        if o.timescales:
            groups = torch.arange(d_model) * len(o.timescales) // d_model
            self.register_buffer("decay", torch.tensor(o.timescales)[groups], persistent=False)
        d_feat = d_model * (2 if o.timescales else 1)
        self.gates = nn.Linear(d_feat, 2)  # salience (write) and read-pointer advance
        nn.init.normal_(self.gates.weight, std=0.02)
        nn.init.constant_(self.gates.bias, o.write_bias)
        n_route = o.n_pools if o.refractory else o.n_units
        self.router = nn.Linear(d_feat, n_route, bias=False) if n_route > 1 else None
        self.query = nn.Linear(d_model, o.d_key, bias=False)
        self.key = nn.Linear(d_model, o.d_key, bias=False)
        self.value = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        nn.init.zeros_(self.out.weight)  # reads start harmless, so early noise cannot shut the gate
        if self.n_freq:
            self.ordinal_query = nn.Linear(d_feat, 2 * self.n_freq)
            nn.init.zeros_(self.ordinal_query.weight)
            nn.init.zeros_(self.ordinal_query.bias)
        # Hook points for the notebooks (routing, rest, read-back).
        self.hook_salience = HookPoint()  # (B, T) write probability
        self.hook_unit = HookPoint()  # (B, T) unit written, -1 if none
        self.hook_gain = HookPoint()  # (B, T, M) refractory gain in [0, 1]
        self.hook_occupant = HookPoint()  # (B, T, M) position held by each unit, -1 if empty
        self.hook_read_weights = HookPoint()  # (B, T, M) read-back weights
        self.hook_read_pointer = HookPoint()  # (B, T)
        self.stats: dict[str, float] = {}
        self.impl = "chunked"  # "chunked" (default), "naive" (reference); set by the dispatcher
        self.kernels: str | None = None  # kernel backend: None = $WORKBENCH_KERNELS or auto; "torch", "triton", "naive"

    # ------------------------------------------------------------------ pieces shared by both forms

    def _features(self, h: torch.Tensor, ema: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None):
        """Every linear map of h in one matmul.

        The gates, router and ordinal query read feat = [h; ema]; the content query and key read
        h. All five run as ``W_h h + b`` with their h-weights stacked (one GEMM and one gradient
        GEMM instead of five thin ones), plus ``W_c ema`` for the three that read feat (never built).
        ``ema``: the context, or the function making it from h (then recomputed in backward:
        ``recompute.projected_context``). Returns ``(h, (gate, route, ordinal logits), (query, key))``.
        """
        d = self.d_model
        feat_layers = [self.gates, self.router, self.ordinal_query if self.n_freq else None]
        present = [layer for layer in feat_layers if layer is not None]
        widths = [layer.out_features for layer in present]
        weight = torch.cat([layer.weight[:, :d] for layer in present] + [self.query.weight, self.key.weight])
        bias = torch.cat([layer.bias if layer.bias is not None else weight.new_zeros(layer.out_features)
                          for layer in present] + [weight.new_zeros(2 * self.o.d_key)])  # fmt: skip
        out = F.linear(h, weight, bias)
        logits, query, key = out.split([sum(widths), self.o.d_key, self.o.d_key], dim=-1)
        if ema is not None:
            context_weight = torch.cat([layer.weight[:, d:] for layer in present])
            logits = logits + (F.linear(ema, context_weight) if isinstance(ema, torch.Tensor)
                               else projected_context(h, context_weight, ema))
        parts = iter(logits.split(widths, dim=-1))
        return tuple(next(parts) if layer is not None else None for layer in feat_layers), (query, key)

    def _gates(self, gate_logits: torch.Tensor):
        probs = torch.sigmoid(gate_logits)
        p_write, p_advance = probs[..., 0], probs[..., 1]
        if not self.o.write_gate:  # every token posts; the ring evicts the oldest message
            p_write = torch.ones_like(p_write)
        write = straight_through((p_write > 0.5).to(probs.dtype), p_write)
        advance = straight_through((p_advance > 0.5).to(probs.dtype), p_advance)
        return p_write, write, advance

    def _route(self, route_logits: torch.Tensor | None, like: torch.Tensor):
        """Pool (refractory) or unit (content-only) chosen by learned interest, with ST scale."""
        if route_logits is None:
            choice = torch.zeros(like.shape[:-1], dtype=torch.long, device=like.device)
            return choice, torch.ones(like.shape[:-1], device=like.device, dtype=like.dtype)
        probs = route_logits.softmax(-1)
        choice = probs.argmax(-1)
        chosen = probs.gather(-1, choice[..., None])[..., 0]
        return choice, chosen / chosen.detach()

    def _code(self, ordinal: torch.Tensor) -> torch.Tensor | None:
        """The rotary code of write counts or read pointers (None without the ordinal read)."""
        return ordinal_code(ordinal, self.n_freq, self.o.n_units) if self.n_freq else None

    def _message(self, x: torch.Tensor, key_content: torch.Tensor, code: torch.Tensor | None, scale=None):
        """(key, value) of the message; ``code``: ``_code`` of its ordinal. With ``scale``: W_v x * scale (recomputed)."""
        key = key_content / math.sqrt(self.o.d_key)
        if self.n_freq:
            key = torch.cat([key, code.to(key.dtype)], -1)
        return key, (self.value(x) if scale is None else scaled_linear(x, self.value.weight, scale))

    def _surrogate(self, read, query, raw_key, scaled_value, written, lse):
        """Gradient path for tokens that did not write; leaves the forward pass exactly as it is.

        A hard gate that closes gets no signal from reads it never serves, and dies. Here
        each unwritten token s of t's chunk (s <= t) is offered with the weight it would
        have had, exp(<q_t, k_s> - lse_t), times its value scaled by the straight-through
        gate (0 forward, dp gradient backward): "would writing s have helped t?". The
        offer adds exactly zero forward, so ``SurrogateRead`` returns ``read`` untouched and
        only builds the weights in backward.
        """
        return SurrogateRead.apply(read, scaled_value, query.detach(), raw_key.detach(), written, lse.detach(),
                                   min(self.o.chunk_size, query.shape[1]))  # fmt: skip

    def _query(self, q: torch.Tensor, z: torch.Tensor | None, pointer_code: torch.Tensor | None):
        """Content query, plus the ordinal part rotated to the read pointer (``pointer_code`` = ``_code(pointer)``)."""
        if self.n_freq:
            q = torch.cat([q, rotate_by_code(z, pointer_code, self.n_freq).to(q.dtype)], -1)
        return q

    def _read(self, scores: torch.Tensor, occupied: torch.Tensor):
        """Top-k normalization over units; empty units never read; all-empty reads zero."""
        scores = scores.masked_fill(~occupied, -1e9)
        k = self.o.read_topk
        top = scores.topk(k, dim=-1) if k < scores.shape[-1] else None
        if top is None:
            return scores.softmax(-1) * occupied, None, scores.logsumexp(-1)
        weights = top.values.softmax(-1) * occupied.gather(-1, top.indices)
        return weights, top.indices, top.values.logsumexp(-1)

    # ------------------------------------------------------------------ parallel form

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        o, m = self.o, self.o.n_units
        ema_of = get_impl("ema", x.device, self.kernels)
        ema = partial(ema_of, decay=self.decay) if o.timescales else None
        h = x
        (gate_logits, route_logits, ordinal_z), (query_content, key_content) = self._features(x, ema)
        p_write, write, advance = self._gates(gate_logits)
        self.hook_salience(p_write)

        count = write.cumsum(1)  # writes so far (float; exact integers in the forward pass)
        ordinal = count - 1
        pointer = self.hook_read_pointer(advance.cumsum(1) - 1)
        choice, route_scale = self._route(route_logits, h)
        written = write.detach() > 0.5
        if o.refractory:
            pool_onehot = F.one_hot(choice, o.n_pools).to(x.dtype) * written[..., None]
            pool_counts = pool_onehot.cumsum(1)  # (B, T, n_pools)
            own_count = pool_counts.gather(-1, choice[..., None])[..., 0].long()
            unit = choice * self.pool_size + (own_count - 1) % self.pool_size
        else:
            pool_counts = count.detach()[..., None]
            unit = choice
        unit = torch.where(written, unit, torch.full_like(unit, -1))
        self.hook_unit(unit)

        # Occupant table: for every (t, m), the last position s <= t written to unit m. An
        # O(T * M) integer scan: the naive form and the hooks need it, the chunked form does not.
        occupant = None
        if self.impl == "naive" or _hooked(self.hook_occupant) or _hooked(self.hook_gain):
            positions = torch.arange(t, device=x.device)
            posted = torch.where(unit[..., None] == torch.arange(m, device=x.device), positions[:, None], -1)
            occupant = self.hook_occupant(posted.cummax(dim=1).values)  # (B, T, M) integers
        if _hooked(self.hook_gain):
            self.hook_gain(self._gain(occupant, pool_counts))
        scale = write * route_scale
        raw_key, value = self._message(x, key_content, self._code(ordinal), scale)
        key = raw_key * scale[..., None]
        query = self._query(query_content, ordinal_z, self._code(pointer))
        surrogate = o.write_surrogate and self.training and torch.is_grad_enabled()
        del query_content, key_content  # without autograd unread below (a prefill's peak is in the read)
        raw_key = raw_key if surrogate else None
        if self.impl == "naive":
            read, dense, lse = self._mix_naive(query, key, value, occupant)
        else:
            read, dense, lse = self._mix_chunked(query, key, value, unit)
        if dense is not None:
            self.hook_read_weights(dense)
        if surrogate:
            read = self._surrogate(read, query, raw_key, value, written, lse)

        # Writing is free while the units have room; past capacity every write evicts a
        # message, so the expected excess is priced (per token, averaged over the batch).
        # The count is the hard one (straight-through), so once writes fit the units the price is
        # exactly zero and cannot push the gate shut; beyond capacity every token's p feels it.
        if o.price_ranked and t > m:  # t <= m: no sequence can exceed the units, no sort needed
            # Same value (the written tokens are the top `count` by p, so those ranked M or lower
            # number count - M), but only they feel it: the gate learns an order of salience
            # instead of every token's p sinking together, which at the start of training, when
            # reads are still zero and carry no gradient, shuts the gate for all of them.
            order = p_write.detach().argsort(dim=1, descending=True, stable=True)
            rank = torch.empty_like(order).scatter_(1, order, torch.arange(t, device=x.device).expand(b, t))
            excess = (write * ((rank >= m) & written)).sum(1) / t  # straight-through: mask the silent too
        else:
            excess = (write.sum(1) - m).clamp_min(0) / t
        self.aux_loss = o.write_price * excess.mean() if o.write_price and o.write_gate else None
        extra = []
        if o.gate_margin:
            # A hard gate near its threshold flips under small updates (on copy one flipped write
            # shifts every later ordinal); p(1-p) is largest at 1/2, so this pushes decisions away.
            probs = torch.sigmoid(gate_logits if o.write_gate else gate_logits[..., 1:])
            extra.append(o.gate_margin * (probs * (1 - probs)).mean())
        if o.write_cost and o.write_gate:
            # Every write costs: the gate learns which tokens are worth a unit (values, not filler), which
            # is what keeps a long context from flooding the ring.
            extra.append(o.write_cost * p_write.mean())
        if o.write_floor and o.write_gate:
            # A gate that drifts shut while the reads are still useless never reopens (char-LM seed 2
            # of protocol v1): below the floor every token's write probability is pushed up.
            extra.append((o.write_floor - p_write.mean()).clamp_min(0))
        load = None
        if route_logits is not None and o.refractory:
            load = self._pool_load(route_logits, choice, written)
            if o.pool_balance:
                extra.append(o.pool_balance * load[2])
        for term in extra:
            self.aux_loss = term if self.aux_loss is None else self.aux_loss + term
        self.stats = {
            "write_fraction": float(written.float().mean()),
            "advance_fraction": float((advance.detach() > 0.5).float().mean()),
        }
        if load is not None:
            self.stats["pool_entropy_bits"] = load[1]
        return self.out(read)

    def _pool_load(self, route_logits: torch.Tensor, choice: torch.Tensor, written: torch.Tensor):
        """(fraction of the writes each pool took, its entropy in bits, the Switch balance loss).

        The loss is ``P * sum_p f_p * mean_p(router prob)`` over written tokens (Fedus et al. 2021): 1
        when the load is even, P when one pool takes every write; its gradient reaches the router.
        """
        n_pools = route_logits.shape[-1]
        weight = written.to(route_logits.dtype)[..., None]
        count = weight.sum().clamp_min(1.0)
        fraction = (F.one_hot(choice, n_pools).to(weight.dtype) * weight).sum((0, 1)) / count
        mean_prob = (route_logits.softmax(-1) * weight).sum((0, 1)) / count
        nonzero = fraction[fraction > 0]
        entropy = float(-(nonzero * nonzero.log2()).sum())
        return fraction.detach(), entropy, n_pools * (fraction.detach() * mean_prob).sum()

    def _gain(self, occupant: torch.Tensor, pool_counts: torch.Tensor) -> torch.Tensor:
        """Refractory gain in [0, 1]: writes to the unit's pool since it last fired / pool size."""
        b, t, m = occupant.shape
        arange_m = torch.arange(m, device=occupant.device)
        if self.o.refractory:
            period = self.pool_size
            current = pool_counts.gather(-1, (arange_m // period).expand(b, t, m))
        else:
            period = m
            current = pool_counts.expand(b, t, m)
        batch = torch.arange(b, device=occupant.device)[:, None, None]
        at_fire = current[batch, occupant.clamp_min(0), arange_m]
        gain = ((current - at_fire) / period).clamp(0, 1)
        return torch.where(occupant >= 0, gain, torch.ones_like(gain))

    def _mix_naive(self, query, key, value, occupant):
        """Reference parallel read: gather every unit's message at every step, O(T*M*d) memory."""
        b = query.shape[0]
        batch = torch.arange(b, device=query.device)[:, None, None]
        occupied, held = occupant >= 0, occupant.clamp_min(0)
        scores = torch.einsum("btme,bte->btm", key[batch, held], query)
        weights, top, lse = self._read(scores, occupied)
        if top is None:
            return torch.einsum("btm,btmd->btd", weights, value[batch, held]), weights, lse
        read = torch.einsum("btk,btkd->btd", weights, value[batch, held.gather(-1, top)])
        return read, torch.zeros_like(scores).scatter(-1, top, weights), lse

    def _mix_chunked(self, query, key, value, unit):
        """Chunked parallel read: same result, dense matmuls, gathers only at chunk starts.

        Within chunk j the candidates of token t are (a) the M units as they stood at the
        chunk start, valid while not overwritten inside the chunk up to t, and (b) tokens
        s <= t of the chunk that still occupy their unit at t. Exactly the M occupants.
        All chunks are processed at once (batched), so there is no loop over time; which
        candidate is valid comes from the write table alone (``chunk_tables``). On the
        PyTorch backend the sparse read (k < M + C) fetches its k values by position
        (``chunk_read_gather``) unless the read-weights hook needs the dense weights.
        """
        b, t, e = query.shape
        m, c = self.o.n_units, min(self.o.chunk_size, t)
        start, valid = chunk_tables(unit, m, self.o.chunk_size)
        pad = (-t) % c
        if pad:
            query, key, value = (F.pad(z, (0, 0, 0, pad)) for z in (query, key, value))
        n = (t + pad) // c
        batch = torch.arange(b, device=query.device)[:, None, None]
        hooked = _hooked(self.hook_read_weights)
        if not hooked and self.o.read_topk < m + c and resolve(query.device, self.kernels) == "torch":
            read, lse = chunk_read_gather(query.view(b, n, c, e), key, value, start, valid, self.o.read_topk)
            return _unpad(read.reshape(b, n * c, -1), t), None, _unpad(lse.reshape(b, n * c), t)

        # The units' keys at each chunk start, fetched as embedding rows (its backward is a cheaper
        # scatter than advanced indexing's index_put).
        rows = (torch.arange(b, device=key.device)[:, None, None] * key.shape[1] + start.clamp_min(0)).view(-1)
        state_key = F.embedding(rows, key.reshape(-1, e)).view(b, n, m, e)
        state_value = value[batch, start.clamp_min(0)]
        chunk_read = get_impl("chunk_read", query.device, self.kernels)
        read, lse, weights = chunk_read(
            query.view(b, n, c, e), state_key, key.view(b, n, c, e), state_value, value.view(b, n, c, -1),
            valid, self.o.read_topk, need_weights=hooked,
        )  # fmt: skip
        read = _unpad(read.reshape(b, n * c, -1), t)
        dense = None
        if hooked:  # fold chunk candidates back onto their units
            chunk_unit = F.pad(unit, (0, pad), value=-1).view(b, n, 1, c)
            dense = weights[..., :m].clone()
            dense.scatter_add_(-1, chunk_unit.clamp_min(0).expand(b, n, c, c), weights[..., m:])
            dense = _unpad(dense.reshape(b, n * c, m), t)
        return read, dense, _unpad(lse.reshape(b, n * c), t)

    # ------------------------------------------------------------------ recurrent form

    def init_state(self, batch_size: int, device=None, dtype=None) -> dict[str, Any]:
        o, m, d = self.o, self.o.n_units, self.d_model
        key_dim = o.d_key + 2 * self.n_freq
        zeros = dict(device=device, dtype=dtype or torch.float32)
        # Counters stay float64 whatever the model dtype: bf16 stops counting at 256, fp32 at 2**24.
        counter = dict(device=device, dtype=torch.float64)
        return {
            "ema": torch.zeros(batch_size, d, **zeros) if o.timescales else None,
            "count": torch.zeros(batch_size, **counter),
            "pointer": torch.full((batch_size,), -1.0, **counter),
            "pool_counts": torch.zeros(batch_size, o.n_pools if o.refractory else 1, **counter),
            "keys": torch.zeros(batch_size, m, key_dim, **zeros),
            "values": torch.zeros(batch_size, m, d, **zeros),
            "occupied": torch.zeros(batch_size, m, dtype=torch.bool, device=device),
            "fired_at": torch.zeros(batch_size, m, **counter),
        }

    def step(self, x_t: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        o, m = self.o, self.o.n_units
        # Without autograd (generation, an exported graph) the straight-through carriers go: their
        # forward values are exactly the hard decisions (hard + (soft - soft), chosen / chosen = 1),
        # and in an exported graph every op they cost is a node dispatched per token.
        carry_grad = torch.is_grad_enabled()
        ema = None
        if o.timescales:
            ema = self.decay * state["ema"] + (1 - self.decay) * x_t
        h = x_t
        (gate_logits, route_logits, ordinal_z), (query_content, key_content) = self._features(x_t, ema)
        if carry_grad:
            _, write, advance = self._gates(gate_logits)
            count, pointer = state["count"] + write, state["pointer"] + advance
            ordinals = torch.stack([count - 1, pointer], -1)
            written = (write.detach() > 0.5)[:, None]  # (B, 1)
        else:  # the two counters advance together: one add, and the ordinals straight from it
            fired = torch.sigmoid(gate_logits) > 0.5  # (B, 2): write, advance
            if not o.write_gate:
                fired = fired | torch.tensor([True, False], device=fired.device)
            counters = torch.stack([state["count"], state["pointer"]], -1) + fired
            count, pointer = counters[:, 0], counters[:, 1]  # (indexing: fewer graph nodes than unbind)
            ordinals = counters - counters.new_tensor([1.0, 0.0])
            written = fired[:, :1]  # (B, 1)
        if o.refractory and route_logits is None:  # one pool: no routing, the ring is the pool
            pool_counts = state["pool_counts"] + written
            fired_value = pool_counts[:, 0]
            unit = (fired_value.long() - 1) % self.pool_size
            route_scale = None
        else:
            choice, route_scale = self._route(route_logits, h)
            if o.refractory:
                pool_counts = state["pool_counts"] + F.one_hot(choice, o.n_pools).to(torch.float64) * written
                own = pool_counts.gather(-1, choice[:, None])[:, 0].long()
                unit = choice * self.pool_size + (own - 1) % self.pool_size
                fired_value = pool_counts.gather(-1, choice[:, None])[:, 0]
            else:
                pool_counts = count.detach()[:, None]
                unit = choice
                fired_value = count.detach()
        # One rotary code for both ordinals (the key's write count, the query's read pointer).
        codes = self._code(ordinals)
        key_code, pointer_code = (codes[:, 0], codes[:, 1]) if codes is not None else (None, None)
        raw_key, raw_value = self._message(x_t, key_content, key_code)
        key, value = raw_key, raw_value  # stored only where write = 1 and route scale = 1 (no grad)
        if carry_grad:
            scale = (write if route_scale is None else write * route_scale)[:, None]
            key, value = raw_key * scale, raw_value * scale
        slot = F.one_hot(unit, m).bool() & written  # (B, M)
        keys = torch.where(slot[..., None], key[:, None], state["keys"])  # the ring write, in place of a unit
        values = torch.where(slot[..., None], value[:, None], state["values"])
        occupied = state["occupied"] | slot
        fired_at = torch.where(slot, fired_value[:, None], state["fired_at"])

        query = self._query(query_content, ordinal_z, pointer_code)
        scores = torch.einsum("bme,be->bm", keys, query)
        weights, top, _ = self._read(scores, occupied)
        if top is None:
            read = torch.einsum("bm,bmd->bd", weights, values)
        else:
            read = torch.einsum("bk,bkd->bd", weights, values.gather(1, top[..., None].expand(-1, -1, values.shape[-1])))
        if _hooked(self.hook_read_weights):
            self.hook_read_weights(weights if top is None else torch.zeros_like(scores).scatter(-1, top, weights))
        new_state = {
            "ema": ema,
            "count": count,
            "pointer": pointer,
            "pool_counts": pool_counts,
            "keys": keys,
            "values": values,
            "occupied": occupied,
            "fired_at": fired_at,
        }
        return self.out(read), new_state


# ----------------------------------------------------------------------------- the user's glossary names
# Seed 004 names four functions; each is a thin, tested alias over the mechanism above.


def attention_compress(mixer: InvertedMixer, input_sequence: torch.Tensor, context_length: int | None = None):
    """Core mechanism: read a sequence (B, T, d) through M units; return (outputs, final unit state).

    The state is the compressed context: M messages, whatever T was. ``context_length``
    (optional) keeps only the last ``context_length`` positions, as a prompt window would.
    """
    if context_length is not None:
        if context_length <= 0:
            raise ValueError("context_length must be positive")
        input_sequence = input_sequence[:, -context_length:]
    state = mixer.init_state(input_sequence.shape[0], input_sequence.device, input_sequence.dtype)
    outputs = []
    for t in range(input_sequence.shape[1]):  # the recurrent form, to return the state too
        y, state = mixer.step(input_sequence[:, t], state)
        outputs.append(y)
    return torch.stack(outputs, dim=1), state


def memory_state_update(mixer: InvertedMixer, previous_states: dict[str, Any], new_input: torch.Tensor):
    """State management: one token in, (output, next state) out, at constant cost and size."""
    return mixer.step(new_input, previous_states)


def compute_weights(mixer: InvertedMixer, distributed_context: dict[str, Any], query_input: torch.Tensor):
    """Weight calculation: read-back weights (B, M) of a new token over the units' messages.

    ``distributed_context``: a unit state (``memory_state_update``'s); the top ``read_topk`` occupied
    units are kept and normalized; the state passed in is not modified."""
    from workbench.hooks import capture

    with capture(mixer, ["hook_read_weights"]) as cache:
        mixer.step(query_input, distributed_context)
    return cache["hook_read_weights"]


def adaptive_scale(sequence_length: int, options: InvertedOptions | None = None, d_model: int = 128) -> dict[str, int]:
    """Dynamic complexity: what the mechanism spends for a sequence of this length.

    Multiply-adds per token of the chunked parallel form (forward, eval mode, CPU path) and of one
    recurrent step, and the recurrent state in numbers: per-token work and state do not grow with the
    length, only the total does, linearly. Counted: the projections, the EMA's (C, C) chunk matmul
    (C * d), scoring the M + C candidates and mixing the kept values (k * d with the gather read;
    (M + C) * d for a dense read); not: nonlinearities, the candidate tables, the top-k. From the
    project's one cost model (``workbench.bench.costs.inverted_macs``), as the benchmark's FLOP columns."""
    if sequence_length <= 0:
        raise ValueError("sequence_length must be positive")
    from dataclasses import asdict

    from workbench.bench.costs import inverted_macs  # lazy: the cost model reads this module's options

    scale = inverted_macs(sequence_length, d_model, asdict(options or InvertedOptions()))
    return {
        "chunk": scale["chunk"],
        "candidates_per_token": scale["candidates_per_token"],
        "macs_per_token_parallel": scale["macs_per_token_parallel"],
        "macs_per_token_step": scale["macs_per_token_step"],
        "total_macs_parallel": scale["macs_per_token_parallel"] * sequence_length,
        "state_floats": scale["state_floats"],
    }
