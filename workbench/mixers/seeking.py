"""Seeking units: M units per head bid for each message, rest after they absorb one, keep it until rewritten.

The inverted-attention mechanism written without hard decisions. A token posts a message (key
k_t, value v_t) with a salience s_t in (0, 1) (how much it has to say); the M units of a head bid
for it with their learned interests, and the units compete - the normalization runs over the
*units* (Slot Attention's inverted softmax, Locatello et al. 2020) - so the message goes mostly to
one unit. A unit that has just absorbed messages rests: its bid is damped by a refractory gain that
recovers over about ``recovery`` tokens, so the next message goes elsewhere and no unit dominates.
Per head h, token t (x_t the mixer's input)::

    q_t, k_t = W_q x_t / |W_q x_t|, W_k x_t / |W_k x_t|  (key_dim numbers, unit length);  v_t = swish(W_v x_t)
    s_t = sigmoid(w_s . x_t + b_s)                                   salience (demand)
    b_t[m] = tau_h u_m . (W_k x_t) / sqrt(key_dim)                   unit m's bid: its interest u_m
                                                                     matched against the message's key
    a_t = s_t onehot(argmax_m(b_t - beta M L_{t-1}))                 the message goes whole to the unit
                                                                     that wins it, rest counted (backward:
                                                                     the gradient of s_t softmax_m(...))
    L_t = lambda L_{t-1} + (1 - lambda) a_t                          each unit's recent load: the writes
                                                                     it took
    K~_t = diag(1 - a_t) K~_{t-1} + a_t k_t^T,   V~_t likewise        a unit keeps its message until
                                                                     it absorbs another
    o_t = V~_t^T softmax(rho_h K~_t^T q_t);  y_t = W_o RMSNorm(swish([o_t^1; ...; o_t^H]))
                                                                     a cosine read, rho_h a learned read
                                                                     temperature per head (from 8)

A unit's interest u_m lives in the key space, so what a unit seeks is written in the same terms as
what a message offers, and the units' interests cost M key_dim numbers per head (a bid projection
from x would cost d_model M). Keys and queries are three quarters of a head wide by default, so that
with the interests the mixer has fewer parameters than softmax attention's four d_model x d_model
matrices (64,136 against 65,536 at d_model 128 with 64 units; narrower keys cost accuracy, narrower
values far more: docs/changelog.md).

The bid temperature tau_h is learned per head and starts sharp (8): at 1/sqrt(key_dim) alone a fresh
model's bids are nearly equal and every message is smeared over all M units, a blur the task must first
learn its way out of; starting sharp, a message lands mostly in one unit from the first step.

Hold and sink (``hold`` > 0, ``sink``; off by default until measured at the full budget): rest
recovers within ``recovery`` tokens, so on a sequence far longer than those trained on, every
unit is rewritten many times by messages of little salience and what it held is lost. With hold,
a unit that holds a message bids less by gamma times the share of it already written,
-gamma (1 - prod_{s<t} (1 - a0_s[m])); with the sink, a null unit with a learned bid joins the
competition and what it wins is written nowhere. Together: a message goes to a free unit, and once
every unit holds one, a message must outbid the sink to displace anything. A held unit also
refuses the newer value of the key it holds, which recall of the latest value needs, so
``hold_heads`` limits hold to the first heads and the others rest and refresh (docs/changelog.md).

Hard writes (``hard_writes``, on by default; every default's measurements: docs/changelog.md): a message
goes whole to the unit that wins it (salience x one-hot in the forward pass, the softmax's gradient in
the backward), because a soft write leaves a unit holding a blend of the new message and the old, and
recall tracks how much of the queried message its best unit still holds. Three more options, off by
default until measured (docs/changelog.md). ``match``: a unit bids more for a message whose key matches
the key it holds, +gamma_h k_t . K1_{t-1}[:, m] / sqrt(key_dim), so a key seen again (a query, a new
value of a key) goes to the unit that holds it instead of evicting another; K1 is the memory the writes
before the match make (one more chunked pass, and its key slots as one more piece of state).
``write_cost``: a loss per unit of salience, so that writing is never free. ``write_jitter`` (with hard
writes): the winner is argmax(logits + g), g a Gumbel noise fixed by (position, head, unit) through a
hash - so no table and no max_len, the same at training and at inference (the recurrent state counts
positions); it goes with rest from the writes by content alone (``rest_on_wins=False``), under which the
messages a rested favourite loses all go to the same runner-up, which never rests; drawn like the
softmax's shares, the units take turns again. Rest on wins (``rest_on_wins``, on by default with
``rest_strength`` 8) is the cure the default takes: rest counts the writes each unit actually took, so
the runner-up rests too, and a unit that has just taken a message steps aside for about a recovery time.
That recurrence is not linear (the winner depends on the load), so it runs as a scan token by token over
M numbers per head (no matmul, no gradient: rest steers, the softmax teaches); everything else stays
chunked.

Occupancy scale (``occupancy_scale``, off until measured): trained on 16 pairs, a head's read meets 16
occupied units; at 64 pairs it meets 64, and the softmax spreads over four times as many rivals. As
scalable softmax does for attention (Nakanishi 2025, arXiv 2501.19399), the read's scores are multiplied
by s_h log(1 + n_t), n_t the units occupied (sum_m 1 - prod_{s<=t}(1 - a_s[m]), M more numbers of state
per head), so the top score keeps its weight as the memory fills. Signed keys (``signed_keys``, on by
default with ``qk_norm``): queries and keys skip the swish, so two unrelated keys score near 0 rather
than near the product of two positive vectors' norms.

QK-norm (``qk_norm``, on by default; Henry et al. 2020, arXiv 2010.04245): queries and keys are scaled
to unit length and the read's scores multiplied by a learned temperature per head (starting at
``read_temperature``), so a query scores its own key's unit near the temperature and an unrelated unit
near 0 (with ``signed_keys``) however many units hold a message; a raw dot product of two positive
vectors leaves every rival a sizeable score, and trained on 16 pairs the read meets 64 at (1024, 64).

Read before write (``read_before_write``, off until measured): token t reads the slots as they were
after token t - 1, so no token reads its own message back. With the read after the write a token can
pass itself through the memory (its own key matches the unit it has just written), which rewards
writing at queries and filler - and every such write wears a unit that holds an older message; the
token's own content still reaches the output through the block's residual and short convolution.

Rest strength per head (``rest_learned``; off until measured): beta sets where a head sits between
seeking by content (beta -> 0: the bids alone choose) and taking turns (beta -> inf: the least
recently loaded unit takes the message, a ring). With ``rest_learned`` each head learns its own,
starting from ``rest_strength`` (log beta_h a parameter). The scan has no
gradient, but its rest enters the writes' softmax beside the bids, so d rest / d beta_h = rest / beta_h
carries the loss's preference for a rested or a favoured unit back to beta_h, as the straight-through
share does for the bids.

Pools (``n_pools`` P > 1; off until measured): one rest for all M units lets a frequent kind of
message, whose units are all resting, spill into the units of a rare kind, evicting what they hold.
With pools the content alone chooses a pool of M / P units (argmax_p of logsumexp of its units'
bids) and rest picks the unit inside it, so units take turns among their own kind (a FIFO per kind),
and a kind's messages never displace another's. The writes' softmax still runs over every unit (the
straight-through gradient), so the bids learn which pool a message belongs to.

Top-k read (``read_topk`` k > 0; off until measured): a query's softmax runs over its k best-scoring
units only, so it meets k - 1 rivals whatever the memory holds (trained on 16 pairs and read at 64, the
full softmax meets four times as many). The gradient reaches the k read units.

Recency reads (``recency_reads`` n > 0; off until measured): a unit's message carries no position, so a
read cannot prefer the latest of several matching messages, or the last few tokens, as a language model
reads. The reads of the first n heads add -slope x (the age of each unit's message) to its score,
ALiBi over units (Press et al. 2022, arXiv 2108.12409), with learned slopes starting at ALiBi's geometric
ones; the others read by content alone, since a slope would cost recall far beyond the trained length. The age is
one more key number: the message's position, which a slope in the query turns into the bias (the
softmax ignores the shift by the query's own position); the state gains M numbers per head.

Shared salience (``head_share``; off until measured): each head decides alone how much of a message to
write, and every head of the default writes nearly every message, so H heads of M units hold M distinct
messages H times over. With the share a message's saliences are divided by their sum over the heads
where it exceeds 1, meant to make the heads compete for it as the units of a head do. Trained on MQAR
(one seed) every salience saturated instead and every head wrote every token at 1 / H: a slow,
unselective write, not a competition (docs/changelog.md).

With ``rest_on_wins=False`` (the first design) the load is computed from the writes by content
alone, a0_t = s_t softmax_m(b_t) - the demand each unit faces - which is one Jacobi sweep of the
refractory recurrence (further sweeps alternate between concentrating and spreading the writes rather
than converge, so there is one); ``refractory=False`` switches rest off (and rest on wins with it).
The held share is computed from the writes by content alone. Both forms compute the same quantities
exactly and the parallel form stays parallel but for the rest scan (M numbers per head per token, no
matmul): the load by content and the held share are linear scans, and the slot
memories are gated linear recurrences run as two chunked passes of gated linear attention
(``workbench.kernels.gla``), as Gated Slot Attention does. The difference from GSA (Zhang et al.
2024, arXiv 2409.07146): there every slot forgets by its own sigmoid gate at every token, so every
token is written into every slot; here a message goes where the units' competition and rest send it,
a unit that does not win keeps its message unchanged, and the salience decides how much is written
at all. Parallel form: O(T (C + log C) M d) per head, no T x T tensor; recurrent form: a state of
heads * M * (key_dim + d_head + 1) numbers, whatever the context.
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
from workbench.kernels.dispatch import get_impl
from workbench.kernels.ema import ema_chunked
from workbench.kernels.gla import gla_chunked, gla_step
from workbench.kernels.hard_write import HardWrite, LogKeep, position_gumbel
from workbench.kernels.rest_scan import rest_step
from workbench.mixers.base import Mixer

_MAX_WRITE = 1.0 - 1e-6  # a unit never forgets entirely in one step: log(1 - a) stays finite
_OUT_OF_REACH = -1e9  # the logit of a unit outside the chosen pool: finite, so rest added to it stays finite


def _ahead(x: torch.Tensor) -> torch.Tensor:
    """(..., T, D) -> x_{t+1} at t (zero at the end)."""
    return F.pad(x[..., 1:, :], (0, 0, 0, 1))


def _behind(x: torch.Tensor) -> torch.Tensor:
    """(..., T, D) -> x_{t-1} at t (zero at the start): with :func:`_ahead`, a read of the state before t."""
    return F.pad(x[..., :-1, :], (0, 0, 1, 0))


@dataclass
class SeekingOptions:
    n_units: int = 64  # M units per head (the state knob); state = heads * M * (key_dim + d_head + 1)
    n_heads: int = 4
    key_dim: int = 0  # numbers per key, query and interest in a head; 0: three quarters of d_head
    value_dim: int = 0  # numbers per value in a head; 0: d_head
    bid_rank: int = 0  # 0: units bid on the message's key; r > 0: on an r-number routing code of x of its own
    bid_temperature: float = 8.0  # tau: a learned per-head bid scale starting here; 0: fixed at 1 (the first design)
    recovery: float = 64.0  # tokens for a unit's load to decay by e (lambda = exp(-1 / recovery))
    rest_strength: float = 8.0  # beta: how strongly a unit's recent load damps its bids
    rest_learned: bool = False  # beta_h learned per head (from rest_strength), its gradient through the writes' softmax
    refractory: bool = True  # rest after absorbing (False: bids by content alone, the ablation)
    hold: float = 0.0  # gamma: how strongly a unit that holds a message refuses the next (0: off)
    hold_heads: int = 0  # heads that hold (the first ones; the others rest and refresh); 0: every head
    hold_learned: bool = False  # gamma learned per head (starting at ``hold``), so a head can give hold up
    sink: bool = False  # a null unit joins the competition: what it wins is written nowhere
    hard_writes: bool = True  # each message goes whole to its top unit (straight-through gradient of the softmax)
    write_jitter: bool = False  # hard writes pick the winner by Gumbel-max with a fixed noise per (position, head, unit)
    rest_on_wins: bool = True  # rest from the writes a unit actually took (a sequential scan of M numbers per head)
    match: float = 0.0  # a unit bids more for a message whose key matches what it holds (learned per head; 0: off)
    salience_bias: float = 2.0  # initial salience logit: start by writing, let the task teach restraint
    write_cost: float = 0.0  # loss per unit of salience, every token: writing is never free (0: off)
    occupancy_scale: bool = False  # read scores times s_h log(1 + units occupied): sharper as the memory fills
    signed_keys: bool = True  # queries and keys without the swish: signed, so unrelated keys score near 0
    qk_norm: bool = True  # queries and keys of unit length, the read's scores times a learned temperature per head
    read_temperature: float = 8.0  # with qk_norm: where that temperature starts
    read_before_write: bool = False  # a token reads the units as they were before it wrote: its own message is not read back
    n_pools: int = 1  # P > 1: the bids by content choose a pool of M / P units, rest picks the unit inside it
    read_topk: int = 0  # k > 0: a query's softmax runs over its k best-scoring units only (0: over all M)
    recency_reads: int = 0  # n > 0: the first n heads' reads score a unit down by a learned slope x its message's age
    head_share: bool = False  # a message's saliences over the heads sum to at most 1: heads compete, not copy
    norm_eps: float = 1e-5
    chunk_size: int = 64  # tokens per chunk of the chunked passes (a power of two; speed only)


class SeekingUnits(Mixer):
    Options = SeekingOptions
    options_added_later = {"bid_rank": 0, "bid_temperature": 0.0, "hold": 0.0, "hold_heads": 0, "hold_learned": False,
                           "sink": False, "hard_writes": False, "match": 0.0, "write_cost": 0.0,
                           "write_jitter": False, "rest_on_wins": False, "occupancy_scale": False,
                           "signed_keys": False, "rest_learned": False, "qk_norm": False,
                           "read_temperature": 8.0, "read_before_write": False, "n_pools": 1,
                           "read_topk": 0, "recency_reads": 0, "head_share": False}
    options_removed = {"rest_spread": 1.0, "binary_salience": False, "rest_ratio": 1.0,  # tried, tied or lost:
                       "read_heads": 1}  # docs/changelog.md

    @classmethod
    def check_options(cls, o: SeekingOptions, d_model: int) -> None:
        for name in ("refractory", "sink", "hold_learned", "hard_writes", "write_jitter", "rest_on_wins",
                     "occupancy_scale", "signed_keys", "rest_learned", "qk_norm", "read_before_write", "head_share"):
            if not isinstance(getattr(o, name), bool):
                raise ConfigError(f"seeking.{name} must be true or false, got {getattr(o, name)!r}")
        for name, minimum in (("n_units", 1), ("n_heads", 1), ("chunk_size", 1), ("key_dim", 0),
                               ("value_dim", 0), ("bid_rank", 0), ("hold_heads", 0), ("n_pools", 1),
                               ("read_topk", 0), ("recency_reads", 0)):
            value = getattr(o, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ConfigError(f"seeking.{name} must be an integer >= {minimum}, got {value!r}")
        if o.write_jitter and not o.hard_writes:
            raise ConfigError("seeking.write_jitter picks the winner of a hard write: it needs seeking.hard_writes=true")
        if o.refractory and o.rest_on_wins and (o.match or o.write_jitter):
            raise ConfigError("seeking.match and seeking.write_jitter go with rest from the demand: give "
                              "seeking.rest_on_wins=false with them")
        if o.rest_learned and not (o.refractory and o.rest_strength > 0):
            raise ConfigError("seeking.rest_learned learns the rest strength: it needs seeking.refractory=true and "
                              "seeking.rest_strength > 0")
        if o.read_before_write and (o.match or o.occupancy_scale):
            raise ConfigError("seeking.read_before_write does not go with seeking.match or seeking.occupancy_scale "
                              "(both count the token's own write)")
        if o.n_pools > 1 and o.n_units % o.n_pools:
            raise ConfigError(f"seeking.n_pools={o.n_pools} must divide seeking.n_units={o.n_units}")
        if o.n_pools > 1 and (not o.hard_writes or o.match or o.write_jitter):
            raise ConfigError("seeking.n_pools > 1 chooses a pool, then a unit in it: it needs seeking.hard_writes=true "
                              "and goes without seeking.match and seeking.write_jitter")
        if o.recency_reads > o.n_heads:
            raise ConfigError(f"seeking.recency_reads={o.recency_reads} is more than seeking.n_heads={o.n_heads}")
        if o.read_topk > o.n_units:
            raise ConfigError(f"seeking.read_topk={o.read_topk} is more than seeking.n_units={o.n_units}")
        if o.hold_heads > o.n_heads:
            raise ConfigError(f"seeking.hold_heads={o.hold_heads} is more than seeking.n_heads={o.n_heads}")
        if o.chunk_size & (o.chunk_size - 1):
            raise ConfigError(f"seeking.chunk_size must be a power of two, got {o.chunk_size!r}")
        if d_model % o.n_heads:
            raise ConfigError(f"d_model={d_model} must split into seeking.n_heads={o.n_heads} equal heads")
        for name, positive in (("recovery", True), ("rest_strength", False), ("salience_bias", None),
                               ("norm_eps", True), ("bid_temperature", False), ("hold", False),
                               ("write_cost", False), ("match", False), ("read_temperature", True)):
            value = getattr(o, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"seeking.{name} must be a finite number, got {value!r}")
            if positive is True and value <= 0 or positive is False and value < 0:
                raise ConfigError(f"seeking.{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")

    def __init__(self, d_model: int, options: SeekingOptions | None = None) -> None:
        super().__init__()
        o = options or SeekingOptions()
        self.check_options(o, d_model)
        self.o = o
        self.n_heads, self.n_units, self.d_head = o.n_heads, o.n_units, d_model // o.n_heads
        self.key_dim = o.key_dim or max(1, 3 * self.d_head // 4)
        self.value_dim = o.value_dim or self.d_head
        # One matmul: q, k (H key_dim each), v (H value_dim), the salience (H) and the routing code (bid_rank).
        self.proj = nn.Linear(d_model, o.n_heads * (2 * self.key_dim + self.value_dim + 1) + o.bid_rank, bias=False)
        # What each unit seeks, in the key space (or the routing code's): a bid is the interest's match.
        self.interests = nn.Parameter(torch.randn(o.n_heads, o.n_units, o.bid_rank or self.key_dim))
        if o.bid_temperature:
            self.bid_log_scale = nn.Parameter(torch.full((o.n_heads, 1, 1), math.log(o.bid_temperature)))
        self.salience_bias = nn.Parameter(torch.full((o.n_heads,), float(o.salience_bias)))
        holding = torch.zeros(o.n_heads)
        holding[: o.hold_heads or o.n_heads] = o.hold
        self.register_buffer("hold_strength", holding, persistent=False)  # (H,): gamma per head
        if o.hold_learned:
            self.hold_log_scale = nn.Parameter(torch.zeros(o.n_heads))
        if o.sink:
            self.sink_bid = nn.Parameter(torch.zeros(o.n_heads, 1, 1))
        if o.match:
            self.match_strength = nn.Parameter(torch.full((o.n_heads, 1, 1), float(o.match)))
        if o.occupancy_scale:  # s_h starts at 1 / log(1 + M): scale 1 when every unit holds a message
            self.occupancy_log_scale = nn.Parameter(torch.full((o.n_heads, 1), -math.log(math.log1p(o.n_units))))
        self.register_buffer("keep", torch.tensor(math.exp(-1.0 / o.recovery)), persistent=False)
        if o.qk_norm:  # log of the read's temperature per head
            self.read_log_scale = nn.Parameter(torch.full((o.n_heads, 1, 1), math.log(o.read_temperature)))
        if o.recency_reads:  # log of each recency read's slope, ALiBi's geometric start (Press et al. 2022)
            starts = [-8.0 * (i + 1) / o.recency_reads * math.log(2) for i in range(o.recency_reads)]
            self.recency_log_slope = nn.Parameter(torch.tensor(starts))
        if o.rest_learned:  # log of beta_h over its starting value
            self.rest_log_scale = nn.Parameter(torch.zeros(o.n_heads))
        self.rest_on_wins = o.refractory and o.rest_on_wins  # no rest (the ablation): nothing to count wins for
        self.norm_weight = nn.Parameter(torch.ones(o.n_heads * self.value_dim))
        self.out = nn.Linear(o.n_heads * self.value_dim, d_model, bias=False)
        self.hook_salience = HookPoint()  # (B, H, T): s_t
        self.hook_bids = HookPoint()  # (B, H, T, M): the units' bids, before rest
        self.hook_gain = HookPoint()  # (B, H, T, M): the refractory gain exp(-beta M L_{t-1}) in (0, 1]
        self.hook_writes = HookPoint()  # (B, H, T, M): a_t, how much of message t each unit absorbs
        self.hook_read_weights = HookPoint()  # (B, H, T, M): softmax over the units
        self.hook_read = HookPoint()  # (B, T, d_model)

    # ------------------------------------------------------------------ shared pieces

    def _project(self, x: torch.Tensor):
        """x (B, T, d) -> q, k (B, H, T, key_dim), v (B, H, T, value_dim), bids (B, H, T, M), salience (B, H, T)."""
        h, dk, dv = self.n_heads, self.key_dim, self.value_dim
        qk, v, sal, code = self.proj(x).split([2 * h * dk, h * dv, h, self.o.bid_rank], dim=-1)
        qk = qk.unflatten(-1, (2, h, dk)).movedim(-3, 0).transpose(-2, -3)  # (2, B, H, T, dk)
        q, k = (qk if self.o.signed_keys else F.silu(qk)).unbind(0)
        if self.o.qk_norm:  # a cosine read: how many units hold a message no longer sets how sharp it is
            q = F.normalize(q, dim=-1) * self.read_log_scale.exp()
            k = F.normalize(k, dim=-1)
        v = F.silu(v.unflatten(-1, (h, dv)).transpose(-2, -3))
        # The bid scale tau / sqrt(dim) goes on the (H, M, dim) interests, not on the (B, H, T, M) bids.
        interests = self.interests * self.interests.shape[-1] ** -0.5
        if self.o.bid_temperature:
            interests = interests * self.bid_log_scale.exp()
        if self.o.bid_rank:
            bids = torch.einsum("btr,hmr->bhtm", code, interests)
        else:
            bids = torch.einsum("bhtk,hmk->bhtm", qk[1], interests)
        bids = self.hook_bids(bids)
        # Contiguous (B, H, T): the writes it scales take its layout, and the chunked passes want (B, H, T, M) in order.
        salience = torch.sigmoid(sal.transpose(-1, -2).contiguous() + self.salience_bias[:, None])
        if self.o.head_share:  # the heads share one message: what one head takes, the others cannot
            salience = salience / salience.sum(-2, keepdim=True).clamp_min(1.0)
        # At most _MAX_WRITE, so no write (salience times a share <= 1) needs a clamp of its own.
        salience = self.hook_salience(salience.clamp(max=_MAX_WRITE))
        return q, k, v, bids, salience

    def _writes(self, bids: torch.Tensor, salience: torch.Tensor, log_gain: torch.Tensor | None,
                hard: bool = False, noise: torch.Tensor | None = None, winner: torch.Tensor | None = None,
                closed: torch.Tensor | None = None) -> torch.Tensor:
        logits = bids if log_gain is None else bids + log_gain
        if self.o.sink:
            sink = self.sink_bid.view(-1, *[1] * (logits.dim() - 2)).expand(*logits.shape[:-1], 1)
            logits = torch.cat([logits, sink], -1)
        if hard:  # forward: the whole message to the top unit; backward: the softmax's gradient
            if winner is None and closed is not None:  # the best unit of the pool the content chose
                winner = self._in_pool(logits.detach(), closed).argmax(-1)
            if winner is None:
                winner = (logits.detach() if noise is None else logits.detach() + noise.to(logits.dtype)).argmax(-1)
            return HardWrite.apply(logits, salience, winner, self.o.sink)
        share = logits.softmax(-1)
        return salience[..., None] * (share[..., :-1] if self.o.sink else share)

    def _closed_pools(self, bids: torch.Tensor) -> torch.Tensor | None:
        """(..., P) True for every pool but the one the content chose, argmax_p logsumexp of the pool's bids;
        None with one pool. No gradient: the writes' softmax over every unit teaches the bids."""
        if self.o.n_pools == 1:
            return None
        pooled = bids.detach().unflatten(-1, (self.o.n_pools, -1)).logsumexp(-1)
        return torch.arange(self.o.n_pools, device=bids.device) != pooled.argmax(-1, keepdim=True)

    def _in_pool(self, logits: torch.Tensor, closed: torch.Tensor) -> torch.Tensor:
        """logits (..., M) with the closed pools' units out of reach (a copy; a sink column, if any, stays)."""
        m = self.n_units
        units = logits[..., :m].unflatten(-1, (self.o.n_pools, -1)).masked_fill(closed[..., None], _OUT_OF_REACH)
        return torch.cat([units.flatten(-2), logits[..., m:]], -1) if logits.shape[-1] > m else units.flatten(-2)

    def _finish(self, read: torch.Tensor) -> torch.Tensor:
        read = self.hook_read(read)
        normed = F.rms_norm(F.silu(read), (read.shape[-1],), self.norm_weight, self.o.norm_eps)
        return self.out(normed)

    def _rest(self, load_before: torch.Tensor) -> torch.Tensor:
        """log gain from the load before this token: -beta_h * M * L_{t-1} (0 for an unused unit)."""
        return -self._strength(load_before.shape[:2], load_before.dim()) * load_before

    def _strength(self, rows: torch.Size, dim: int) -> float | torch.Tensor:
        """beta_h M: a number (every head alike, the scan's arithmetic as before rest_learned), or with
        rest_learned (B, H) broadcast to ``dim`` dims."""
        if not self.o.rest_learned:
            return self.o.rest_strength * self.n_units
        strengths = self.o.rest_strength * self.n_units * self.rest_log_scale.exp()
        return strengths.expand(rows).reshape(*rows, *[1] * (dim - 2))

    def _rest_grad(self, rest: torch.Tensor, strength: float | torch.Tensor) -> torch.Tensor:
        """The scan's rest (no gradient), with a learned beta_h's gradient attached: the value is unchanged,
        d rest / d beta_h = rest / beta_h, so beta_h learns through the writes' softmax like the bids."""
        if not self.o.rest_learned:
            return rest
        scale = strength / strength.detach()
        return rest * scale.view(*scale.shape, *[1] * (rest.dim() - scale.dim()))

    def _sink_row(self, shape: torch.Size) -> torch.Tensor | None:
        """The sink's bid broadcast to (B, H[, T]) rows, or None without a sink."""
        if not self.o.sink:
            return None
        return self.sink_bid.detach().view(-1, *[1] * (len(shape) - 2)).expand(shape)

    def _held(self, log_free_before: torch.Tensor) -> torch.Tensor:
        """log gain of holding: -gamma * (1 - prod(1 - a0)), the share of the unit already written."""
        gamma = self.hold_strength * self.hold_log_scale.exp() if self.o.hold_learned else self.hold_strength
        gamma = gamma.view(-1, *[1] * (log_free_before.dim() - 2))
        return -gamma * (1 - log_free_before.exp())

    def _match(self, match_scores: torch.Tensor) -> torch.Tensor:
        """log gain of matching: gamma_h k_t . K1_{t-1}[:, m] / sqrt(key_dim), K1 the keys written before the match."""
        strength = self.match_strength.view(-1, *[1] * (match_scores.dim() - 2))
        return strength * match_scores * self.key_dim ** -0.5

    def _read_scale(self, log_empty: torch.Tensor) -> torch.Tensor:
        """s_h log(1 + n_t), n_t the units occupied (sum over units of 1 - prod(1 - a)): (..., H, T) or (..., H).

        Scalable softmax (Nakanishi 2025, arXiv 2501.19399) scales attention logits by log n so the
        top score keeps its weight as n grows; here n is what the memory holds, not the context.
        The count steers, it is not trained through (the writes' gradient goes by the read itself).
        """
        occupied = -torch.expm1(log_empty.detach()).sum(-1)
        scale = self.occupancy_log_scale.exp()
        return (scale if occupied.dim() == 3 else scale.squeeze(-1)) * torch.log1p(occupied)

    def _top_k(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores below a query's k-th best set to -inf, so its read meets k - 1 rivals at any length."""
        if not self.o.read_topk or self.o.read_topk >= self.n_units:
            return scores
        kth = scores.topk(self.o.read_topk, dim=-1).values[..., -1:]
        return scores.masked_fill(scores < kth, float("-inf"))

    def _with_age(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor):
        """q and k (B, H, T, dk) with one more number each: the head's recency slope and the message's
        position, so a unit's score gains slope x the position of what it holds - up to a shift the softmax
        ignores, -slope x its age. ``positions`` (B or 1, T)."""
        if not self.o.recency_reads:
            return q, k
        slopes = F.pad(self.recency_log_slope.exp(), (0, self.n_heads - self.o.recency_reads))
        ages = positions.to(k.dtype)[:, None, :, None].expand(*k.shape[:-1], 1)
        return torch.cat([q, slopes.view(-1, 1, 1).expand(*q.shape[:-1], 1)], -1), torch.cat([k, ages], -1)

    def _stats(self, writes: torch.Tensor) -> None:
        """How evenly the units share the writes: entropy of each head's total write mass, in bits."""
        mass = writes.detach().sum(2)  # (B, H, M)
        share = mass / mass.sum(-1, keepdim=True).clamp_min(1e-12)
        entropy = -(share * share.clamp_min(1e-12).log2()).sum(-1).mean()
        self.stats = {"unit_load_entropy_bits": float(entropy), "write_mass": float(writes.detach().sum(-1).mean())}
        if self.o.rest_learned:  # where each head settled between seeking by content and taking turns
            for h, beta in enumerate((self.o.rest_strength * self.rest_log_scale.detach().exp()).tolist()):
                self.stats[f"rest_strength_head{h}"] = beta

    # ------------------------------------------------------------------ parallel form

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v, bids, salience = self._project(x)
        # The writes by content alone feed the demand's rest and hold; rest on wins alone does not need them.
        writes = None if self.rest_on_wins and not self.o.hold else self._writes(bids, salience, None)
        gain, winner = None, None
        closed = self._closed_pools(bids)
        if self.o.refractory and not self.rest_on_wins:
            flat = writes.flatten(0, 1)  # (B H, T, M): the scan runs along dim 1
            load = ema_chunked(flat, self.keep.expand(self.n_units), self.o.chunk_size).unflatten(0, (b, self.n_heads))
            before = F.pad(load, (0, 0, 1, 0))[:, :, :t]  # L_{t-1}, zero before the first token
            gain = self._rest(before)
        if self.o.hold:  # log of each unit's free share before this token: sum of log(1 - a0) so far
            free = torch.log1p(-writes.clamp(max=_MAX_WRITE)).cumsum(2)
            held = self._held(F.pad(free, (0, 0, 1, 0))[:, :, :t])
            gain = held if gain is None else gain + held
        if self.rest_on_wins:  # the rest scan runs token by token: M numbers per head, no matmul
            logits = bids.detach() if gain is None else (bids + gain).detach()
            if closed is not None:
                logits = self._in_pool(logits, closed)
            sink = self._sink_row(salience.shape[:2])
            scan = get_impl("rest_scan", x.device)
            strength = self._strength(salience.shape[:2], 2)
            rest, winner, _ = scan(logits.flatten(0, 1), salience.detach().flatten(0, 1),
                                   None if sink is None else sink.flatten(), self.keep,
                                   strength.detach().flatten() if self.o.rest_learned else strength, self.o.hard_writes)
            rest = self._rest_grad(rest.unflatten(0, (b, self.n_heads)), strength)
            winner = None if winner is None else winner.unflatten(0, (b, self.n_heads))
            gain = rest if gain is None else rest + gain
            del logits, rest
        if gain is not None and self.hook_gain.active:  # an exp over (B, H, T, M) only when someone looks
            self.hook_gain(gain.exp())
        noise = None if not self.o.write_jitter else \
            position_gumbel(torch.arange(t, device=x.device), self.n_heads, bids.shape[-1] + self.o.sink)
        if gain is not None or self.o.hard_writes:
            writes = self._writes(bids, salience, gain, self.o.hard_writes and not self.o.match, noise, winner, closed)
        if self.o.match:  # K1_{t-1}^T k_t: read the memory these writes make with the *next* token's key
            first = writes.clamp(max=_MAX_WRITE)
            k_next = F.pad(k[:, :, 1:], (0, 0, 0, 1))
            ahead, _ = gla_chunked(k_next, k, first, torch.log1p(-first), gate="value", chunk_size=self.o.chunk_size)
            matched = self._match(F.pad(ahead, (0, 0, 1, 0))[:, :, :t])
            writes = self._writes(bids, salience, matched if gain is None else gain + matched, self.o.hard_writes,
                                  noise)
        writes = self.hook_writes(writes)
        del bids, gain  # (B, H, T, M) each: a prefill's peak memory is the arrays still referenced here
        log_keep = LogKeep.apply(writes)
        chunk = self.o.chunk_size
        q, k = self._with_age(q, k, torch.arange(t, device=x.device)[None])
        if self.o.read_before_write:  # token t reads S_{t-1}: the query of t + 1 against S_t, moved one on
            scores, _ = gla_chunked(_ahead(q), k, writes, log_keep, gate="value", chunk_size=chunk)
            scores = _behind(scores)
        else:
            scores, _ = gla_chunked(q, k, writes, log_keep, gate="value", chunk_size=chunk)
        if self.o.occupancy_scale:
            scores = scores * self._read_scale(log_keep.cumsum(2))[..., None]
        weights = self.hook_read_weights(self._top_k(scores).softmax(-1))
        del scores, q, k
        if self.o.read_before_write:
            read, _ = gla_chunked(_ahead(weights), writes, v, log_keep, gate="key", chunk_size=chunk)
            read = _behind(read)
        else:
            read, _ = gla_chunked(weights, writes, v, log_keep, gate="key", chunk_size=chunk)
        if self.training:
            self._stats(writes)
        del writes, log_keep, weights
        self.aux_loss = self.o.write_cost * salience.mean() if self.o.write_cost and self.training else None
        return self._finish(read.transpose(1, 2).reshape(b, t, -1))

    # ------------------------------------------------------------------ recurrent form

    def init_state(self, batch_size: int, device=None, dtype=None) -> dict[str, Any]:
        shape = (batch_size, self.n_heads)

        def zeros(*tail: int) -> torch.Tensor:
            return torch.zeros(*shape, *tail, device=device, dtype=dtype)

        ages = 1 if self.o.recency_reads else 0  # the key slots' last row: the position of what each unit holds
        state = {"key_slots": zeros(self.key_dim + ages, self.n_units), "value_slots": zeros(self.n_units, self.value_dim)}
        # Entries only where their option is on (a fused step needs tensors, not placeholders):
        if self.o.refractory:  # each unit's recent load from the writes by content alone
            state["load"] = zeros(self.n_units)
        if self.o.hold:  # log of each unit's share not yet written by content alone
            state["log_free"] = zeros(self.n_units)
        if self.o.match:  # the keys as written before the match, which a message's key is matched against
            state["match_keys"] = zeros(self.key_dim, self.n_units)
        if self.o.write_jitter or self.o.recency_reads:  # tokens seen: the jitter and the ages go by position
            state["position"] = torch.zeros(batch_size, dtype=torch.long, device=device)
        if self.o.occupancy_scale:  # log of each unit's share never written (0: empty)
            state["log_empty"] = zeros(self.n_units)
        return state

    def step(self, x_t: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        b, d = x_t.shape
        q, k, v, bids, salience = (z.squeeze(2) for z in self._project(x_t[:, None]))
        writes = None if self.rest_on_wins and not self.o.hold else self._writes(bids, salience, None)
        load, log_free, gain = state.get("load"), state.get("log_free"), None
        closed = self._closed_pools(bids)
        if self.o.refractory and not self.rest_on_wins:
            gain = self._rest(load)
            load = self.keep * load + (1 - self.keep) * writes
        if self.o.hold:
            held = self._held(log_free)
            gain = held if gain is None else gain + held
            log_free = log_free + torch.log1p(-writes.clamp(max=_MAX_WRITE))
        winner = None
        if self.rest_on_wins:
            logits = bids.detach() if gain is None else (bids + gain).detach()
            if closed is not None:
                logits = self._in_pool(logits, closed)
            strength = self._strength(salience.shape, 2)
            rest, winner, load = rest_step(logits, salience.detach(), load, self._sink_row(salience.shape), self.keep,
                                           strength.detach() if self.o.rest_learned else strength, self.o.hard_writes)
            rest = self._rest_grad(rest, strength)
            gain = rest if gain is None else rest + gain
        position, noise = state.get("position"), None
        if self.o.write_jitter:
            noise = position_gumbel(position[:, None], self.n_heads, bids.shape[-1] + self.o.sink).squeeze(-2)
        slot_keys = k  # with recency reads, the keys and the position they carry into the key slots
        if self.o.recency_reads:
            q, slot_keys = (z.squeeze(-2) for z in self._with_age(q[..., None, :], k[..., None, :], position[:, None]))
        if position is not None:
            position = position + 1
        if gain is not None or self.o.hard_writes:
            writes = self._writes(bids, salience, gain, self.o.hard_writes and not self.o.match, noise, winner, closed)
        match_keys = state.get("match_keys")
        if self.o.match:
            first = writes.clamp(max=_MAX_WRITE)
            matched = self._match((k[..., None, :] @ match_keys).squeeze(-2))
            _, match_keys = gla_step(k, k, first, torch.log1p(-first), match_keys, gate="value")
            writes = self._writes(bids, salience, matched if gain is None else gain + matched, self.o.hard_writes,
                                  noise)
        log_keep = torch.log1p(-writes)
        scores, key_slots = gla_step(q, slot_keys, writes, log_keep, state["key_slots"], gate="value")
        if self.o.read_before_write:  # the slots as they were before this token's write
            scores = (q[..., None, :] @ state["key_slots"]).squeeze(-2)
        log_empty = state.get("log_empty")
        if self.o.occupancy_scale:
            log_empty = log_empty + log_keep
            scores = scores * self._read_scale(log_empty)[..., None]
        weights = self.hook_read_weights(self._top_k(scores).softmax(-1))
        read, value_slots = gla_step(weights, writes, v, log_keep, state["value_slots"], gate="key")
        if self.o.read_before_write:
            read = (weights[..., None, :] @ state["value_slots"]).squeeze(-2)
        new = {"key_slots": key_slots, "value_slots": value_slots, "load": load, "log_free": log_free,
               "match_keys": match_keys, "position": position, "log_empty": log_empty}
        return self._finish(read.reshape(b, -1)), {name: new[name] for name in state}
