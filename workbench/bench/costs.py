"""The cost model: counted FLOPs (and multiply-adds) and ESTIMATED bytes moved per token, for every mixer.

One place for what a mixer's code spends. ``workbench.bench.energy`` turns these counts into
ESTIMATED joules, the scaling benchmark into achieved FLOP/s (the roofline column), and the
inverted mixer's user-facing ``adaptive_scale`` reads its multiply-adds from here
(:func:`inverted_macs`).

Conventions: a multiply-add (MAC) is 2 FLOPs; an element-wise op, compare, exp or trig is
counted as 1 FLOP (so the small terms are order-of-magnitude only); fp32 is 4 bytes, int64 8,
bool 1. ``n`` is the sequence length, ``D`` d_model, ``r`` the MLP ratio, ``w`` the width of the
block's short convolution. Each formula counts what the code *executes* (a masked block of a
banded attention counts in full), one :class:`Term` per operation, named.

Phases: ``prefill`` (forward of the parallel form, no grad), ``train`` (forward in training mode
+ backward: 3 x forward, the usual "backward = 2 x forward" rule; 4 x for fused softmax-attention
terms, whose backward recomputes the scores flash-style; 1 x for the inverted mixer's write
surrogate, which runs in backward only) and ``decode`` (one recurrent step, batch 1, context n).

A mixer without formulas here (a new peer) still gets FLOPs: the benchmark counts them with
torch's ``FlopCounterMode`` (matmul-class ops only) and says so in the JSON (``flops_source``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

LABEL = "ESTIMATE - not measured with a power meter; every assumption is listed alongside"
FP32, INT64, BOOL = 4, 8, 1
PHASES = ("train", "prefill", "decode")


@dataclass(frozen=True)
class Term:
    """One operation's work per token: ``macs`` multiply-adds (matmul-class) and ``other`` element-wise FLOPs."""

    name: str
    macs: float = 0.0
    other: float = 0.0
    train_factor: float = 3.0  # training FLOPs per forward FLOP of this term

    @property
    def flops(self) -> float:
        return 2.0 * self.macs + self.other


def _get(options: dict[str, Any], name: str, default: Any) -> Any:
    value = options.get(name, default)
    return default if value is None else value


# ----------------------------------------------------------------------------- the block around the mixer


def block_terms(d: int, r: int, w: int) -> list[Term]:
    """Per-token forward work of ``workbench.model.Block`` around the mixer (the same for every mixer)."""
    terms = [
        Term("block: layer norms (2 x ~7 ops/element)", other=14.0 * d),
        Term("block: MLP up D->rD (+bias)", macs=r * d * d, other=r * d),
        Term("block: GELU (~8 ops/element)", other=8.0 * r * d),
        Term("block: MLP down rD->D (+bias)", macs=r * d * d, other=d),
        Term("block: residual adds", other=2.0 * d),
    ]
    if w:
        terms.append(Term("block: short causal conv, width w (+bias, two adds of local)", macs=w * d, other=3.0 * d))
    return terms


def _block_activation_floats(d: int, r: int) -> float:
    # two LayerNorm outputs, the conv output, MLP hidden before and after GELU, MLP output, two residual sums
    return (6 + 2 * r) * d


# ----------------------------------------------------------------------------- inverted


def _inverted_dims(options: dict[str, Any], d: int, n: int) -> dict[str, float]:
    from workbench.mixers.inverted import InvertedOptions  # the mixer's defaults, in one place

    o = {**asdict(InvertedOptions()), **{k: v for k, v in options.items() if v is not None}}
    m = o["n_units"]
    f = o["n_freq"] if o["ordinal_read"] else 0
    routes = o["n_pools"] if o["refractory"] else m
    return {
        "M": m, "C": min(o["chunk_size"], n), "k": o["read_topk"], "dk": o["d_key"], "F": f,
        "E": o["d_key"] + 2 * f,  # key width: content + ordinal code
        "Df": d * (2 if o["timescales"] else 1), "ema": 1 if o["timescales"] else 0,
        "route": routes if routes > 1 else 0, "P": o["n_pools"],
        "surrogate": bool(o["write_surrogate"]), "counters": 2 + (o["n_pools"] if o["refractory"] else 1),
    }


PADDING_TERM = "chunk padding: scores and EMA of the padded last chunk (n not a multiple of C)"
SURROGATE_TERM = "surrogate (training only, backward only): C x C chunk scores, exp, W^T @ grad"


def inverted_terms(phase: str, n: int, d: int, options: dict[str, Any]) -> list[Term]:
    """``InvertedMixer.forward`` (chunked parallel form) per token, or one ``step`` (``phase="decode"``)."""
    z = _inverted_dims(options, d, n)
    m, c, e, f, df, k = z["M"], z["C"], z["E"], z["F"], z["Df"], z["k"]
    route = z["route"]
    projections = [
        Term("gates: Linear Df->2 + sigmoid + threshold", macs=2.0 * df, other=6.0),
        Term("router: Linear Df->pools + softmax + argmax", macs=df * route, other=3.0 * route),
        Term("key: Linear D->d_key, 1/sqrt(d_key)", macs=d * z["dk"], other=z["dk"]),
        Term("ordinal code: F cos + F sin of the write count", other=3.0 * f),
        Term("value: Linear D->D", macs=d * d),
        Term("query: Linear D->d_key", macs=d * z["dk"]),
        Term("ordinal query: Linear Df->2F + rotation by the read pointer", macs=2.0 * df * f,
             other=8.0 * f if f else 0.0),
        Term("output: Linear D->D", macs=d * d),
    ]
    if phase == "decode":
        return projections + [
            Term("ema: decay*state + (1-decay)*x", other=3.0 * d * z["ema"]),
            Term("state update: keys/values*keep + slot*new, one-hot", other=3.0 * m * (e + d) + m),
            Term("scores: unit keys @ query (M x E)", macs=m * e),
            Term("read: mask, top-k over M, softmax over k", other=3.0 * m + 5.0 * k),
            Term("read mix: k values", macs=min(k, m) * d),
        ]
    chunks = math.ceil(n / c)
    sweeps = math.ceil(math.log2(chunks)) if chunks > 1 else 0
    terms = projections + [
        Term("ema: (C, C) decay matmul per chunk + carry scan over n/C chunk ends", macs=z["ema"] * c * d,
             other=z["ema"] * (2.0 * d + 2.0 * d * sweeps / c)),
        Term("allocation: cumsum of writes, pool one-hot cumsum, ring pointer", other=3.0 * z["P"] + 6),
        Term("candidate tables: scatter last/first write per unit per chunk, compares", other=2.0 + (m + c) / c + 2.0 * c),
        Term("message scale: key, value x write x route scale", other=float(e + d)),
        Term("scores: q . k over M unit keys + C chunk keys (width E)", macs=e * (m + c)),
        Term("candidate masks: state_ok (M compares), chunk_ok (C compares)", other=2.0 * m + 3.0 * c),
        Term("read: mask, top-k over M+C, softmax over k, scatter", other=3.0 * (m + c) + 5.0 * k),
        Term("read mix: the k kept values (embedding_bag; dense (M+C) mix when k >= M+C)",
             macs=k * d if k < m + c else (m + c) * d),
    ]
    padding = chunks * c / n - 1.0  # the last chunk is padded to C and computed in full
    if padding:
        terms.append(Term(PADDING_TERM, macs=padding * (e * (m + c) + z["ema"] * c * d), other=padding * 3.0 * (m + c)))
    if phase == "train" and z["surrogate"]:
        terms.append(Term(SURROGATE_TERM, macs=(1 + padding) * (c * e + c * d), other=3.0 * c, train_factor=1.0))
    return terms


def inverted_macs(n: int, d: int, options: dict[str, Any]) -> dict[str, Any]:
    """Multiply-adds per token of the inverted mixer (no block): parallel form (eval) and one step, and the
    state in numbers. What ``workbench.mixers.inverted.adaptive_scale`` reports: the mechanism's work per
    token, without the padding of a last partial chunk (which the benchmark's counts include)."""
    z = _inverted_dims(options, d, n)
    parallel = sum(t.macs for t in inverted_terms("prefill", n, d, options) if t.name != PADDING_TERM)
    step = sum(t.macs for t in inverted_terms("decode", n, d, options))
    state = z["M"] * (z["E"] + d + 2) + d * z["ema"] + z["counters"]
    return {"chunk": int(z["C"]), "candidates_per_token": int(z["M"] + z["C"]), "macs_per_token_parallel": int(parallel),
            "macs_per_token_step": int(step), "state_floats": int(state)}


def _inverted_bytes(phase: str, n: int, d: int, options: dict[str, Any]) -> tuple[float, str]:
    z = _inverted_dims(options, d, n)
    m, c, e = z["M"], z["C"], z["E"]
    if phase == "decode":
        state = z["M"] * (e + d) * FP32
        return 4.0 * state + m * e * FP32, "unit state (M x (E+D) fp32) read and rewritten ~twice, keys re-read"
    floats = d * (8 + 2 * z["ema"]) + 2 * e + 3 * (m + c)
    if phase == "train" and z["surrogate"]:
        floats += 2 * c + d
    act = 2.0 * (FP32 * floats + INT64 * (2 * c + 2 * m / c) + BOOL * (2 * m + 2 * c))
    act += 2.0 * FP32 * m * (e + d) / c  # unit keys/values gathered at every chunk start
    return act, ("each intermediate written once, read once: ~8 D-vectors, the EMA's chunked matmul, the (M+C)-wide "
                 "scores/weights and boolean candidate masks, int64 write tables; the unit state gathered per chunk")


# ----------------------------------------------------------------------------- softmax attention: full and windowed


def _attention_terms(prefix: str, d: int, heads: int, keys: float, kind: str) -> list[Term]:
    factor = 4.0 if kind == "fused" else 3.0
    return [
        Term(f"{prefix}attention: QK^T over {keys:,.1f} keys on average", macs=d * keys, train_factor=factor),
        Term(f"{prefix}attention: softmax (~5 ops per score per head)", other=5.0 * heads * keys, train_factor=factor),
        Term(f"{prefix}attention: PV over the same keys", macs=d * keys, train_factor=factor),
    ]


def _window_keys(n: int, window: int, phase: str) -> float:
    """Keys each query scores in ``window_attention_chunked`` (executed, masked included) or one ring step."""
    if phase == "decode":
        return float(window)
    if n <= window:
        return (n + 1) / 2  # plain causal SDPA: its flash kernel skips the blocks above the diagonal
    padded = math.ceil(n / window) * window / n  # the last block is padded and computed in full
    return 2.0 * window * padded  # blocks of W queries against [previous block; own block]


def transformer_terms(phase: str, n: int, d: int, options: dict[str, Any]) -> list[Term]:
    heads = _get(options, "n_heads", 4)
    keys = n + 1 if phase == "decode" else (n + 1) / 2  # causal: token t sees t + 1 keys
    return [
        Term("qkv: Linear D->3D", macs=3.0 * d * d),
        Term("rotary: q and k (~3 ops/element)", other=6.0 * d),
        *_attention_terms("", d, heads, keys, "fused"),
        Term("output: Linear D->D", macs=d * d),
    ]


def sliding_window_terms(phase: str, n: int, d: int, options: dict[str, Any]) -> list[Term]:
    heads, window = _get(options, "n_heads", 4), _get(options, "window", 128)
    return [
        Term("qkv: Linear D->3D", macs=3.0 * d * d),
        Term("rotary: q and k (~3 ops/element)", other=6.0 * d),
        *_attention_terms("window ", d, heads, _window_keys(n, window, phase), "fused"),
        Term("output: Linear D->D", macs=d * d),
    ]


def based_terms(phase: str, n: int, d: int, options: dict[str, Any]) -> list[Term]:
    f, heads = _get(options, "feature_dim", 16), _get(options, "n_heads", 2)
    window, w_heads = _get(options, "window", 64), _get(options, "window_heads", 2)
    chunk = min(_get(options, "chunk_size", 128), n)
    d_phi = 1 + f + f * (f + 1) // 2
    dv = d / heads + 1  # the value head and the normalizer's column of ones
    width = 2 * heads * f + d * (4 if window else 1)
    terms = [
        Term("projections: Linear D -> (2 H f + D [+ 3 D window])", macs=d * width, other=2.0 * heads * f),
        Term("output: Linear (2D or D) -> D", macs=(2 if window else 1) * d * d),
    ]
    if phase == "decode":
        terms += [
            Term("linear: Taylor features of q and k", other=2.0 * heads * (d_phi - f - 1) * 2),
            Term("linear: state kv += phi(k) v^T, z += phi(k)", macs=heads * d_phi * (dv - 1), other=heads * d_phi),
            Term("linear: phi(q) . kv, phi(q) . z, divide", macs=heads * d_phi * dv, other=d),
        ]
    else:
        chunks = math.ceil(n / chunk)
        pad = chunks * chunk / n  # the last chunk is padded and computed in full
        inter = (chunks - 1) * chunk / n  # chunk states of all but the last chunk; queries of all but the first
        terms += [
            Term("linear: chunk scores q k^T (C x C per chunk) + Taylor kernel 1 + s + s^2/2",
                 macs=pad * heads * f * chunk, other=pad * 4.0 * heads * chunk),
            Term("linear: intra-chunk kernel @ [v, 1]", macs=pad * heads * chunk * dv),
            Term("linear: Taylor features of q and k (feature-major rows)", other=inter * 2.0 * heads * (d_phi - f - 1) * 1.5),
            Term("linear: chunk states phi(K)^T [V, 1], cumsum over chunks", macs=inter * heads * d_phi * dv,
                 other=inter * heads * d_phi * dv / chunk),
            Term("linear: phi(Q) @ states", macs=inter * heads * d_phi * dv),
            Term("linear: normalize", other=d),
        ]
    if window:
        terms += [Term("window rotary: q and k", other=6.0 * d),
                  *_attention_terms("window ", d, w_heads, _window_keys(n, window, phase), "fused")]
    return terms


def mamba_terms(phase: str, n: int, d: int, options: dict[str, Any]) -> list[Term]:
    """``Mamba`` (selective scan, Gu & Dao 2023): E = expand x D channels, state N per channel."""
    e, n_state = _get(options, "expand", 2) * d, _get(options, "d_state", 16)
    rank = _get(options, "dt_rank", None) or math.ceil(d / 16)
    width = _get(options, "inner_conv", 0)
    chunk = min(_get(options, "chunk_size", 32), n)
    terms = [
        Term("in_proj: Linear D->2E (u and z)", macs=2.0 * e * d),
        Term("x_proj: Linear E->(R + 2N) (delta rank, B, C)", macs=e * (rank + 2 * n_state)),
        Term("dt_proj: Linear R->E + softplus", macs=rank * e, other=4.0 * e),
        Term("inner conv (width k)", macs=width * e),
        Term("silu of u and z, gate y * silu(z), D u", other=10.0 * e),
        Term("out_proj: Linear E->D", macs=e * d),
    ]
    if phase == "decode":
        return terms + [Term("state update h = exp(delta A) h + delta B u", other=5.0 * e * n_state),
                        Term("read y = h C", macs=e * n_state)]
    sweeps = math.ceil(math.log2(chunk)) if chunk > 1 else 0
    return terms + [
        Term("scan inputs: exp(delta A), delta B u (E x N per token)", other=4.0 * e * n_state),
        Term("scan: log-depth inside chunks of C, carried across chunks", other=2.0 * e * n_state * (sweeps + 1)),
        Term("read y = sum_n C h (a (1 x N) @ (N x E) product per token)", macs=e * n_state),
    ]


def gated_deltanet_terms(phase: str, n: int, d: int, options: dict[str, Any], gated: bool = True) -> list[Term]:
    """(Gated) DeltaNet (Yang, Kautz & Hatamizadeh 2024): H heads, state d_k x d_v each; chunked WY form."""
    heads, d_k = _get(options, "n_heads", 2), _get(options, "d_head", 64)
    d_v = round(_get(options, "expand_v", 1.0) * d_k)
    kd, vd = heads * d_k, heads * d_v
    width = _get(options, "inner_conv", 0)
    terms = [
        Term("projections: Linear D -> (q, k, v, gate, beta[, decay])", macs=d * (2 * kd + 2 * vd + heads * (2 if gated else 1))),
        Term("inner conv (width k) on q, k, v", macs=width * (2 * kd + vd)),
        Term("silu, L2 norms of q and k, gates", other=4.0 * (2 * kd + vd) + 6.0 * kd + 8.0 * heads),
        Term("output: RMSNorm x silu(gate), Linear H d_v -> D", macs=vd * d, other=8.0 * vd),
    ]
    if phase == "decode":
        return terms + [Term("state: S k, S += beta (v - S k) k^T (decayed), S q", macs=3.0 * kd * d_v,
                             other=3.0 * kd * d_v)]
    chunk = min(_get(options, "chunk_size", 64), n)
    chunks = math.ceil(n / chunk)
    pad = chunks * chunk / n
    size = 8
    while size < chunk:
        size *= 2
    inverse = (size / 8) * 2 * 8**3 + sum(size * s * s for s in (8, 16, 32, 64, 128, 256) if s < size)
    return terms + [
        Term("chunk scores [beta k; q] k^T (2 C x C per chunk)", macs=pad * heads * 2 * chunk * d_k,
             other=pad * heads * (4.0 * chunk if gated else chunk)),
        Term("unit-lower inverse of (I + A) per chunk (Neumann blocks, merged)", macs=pad * heads * inverse / chunk),
        Term("solve: inverse @ [beta k, beta v]", macs=pad * heads * size * (d_k + d_v) * size / chunk),
        Term("chunk loop: W S, q S, k_end^T U (d_k x d_v each per token)", macs=pad * 3.0 * kd * d_v),
        Term("chunk loop: P U (C x C by C x d_v)", macs=pad * heads * chunk * d_v),
    ]


def _attention_bytes(phase: str, n: int, d: int, keys: float, state_bytes: float | None) -> tuple[float, str]:
    if phase == "decode":
        cache = state_bytes if state_bytes is not None else 2.0 * keys * d * FP32
        return 3.0 * cache, "KV cache (or ring) x3: copied or rewritten (read, write) and read by attention"
    block_q = 128  # ASSUMED query-block size of the fused attention kernel
    return (2.0 * FP32 * 8 * d + 2.0 * FP32 * d * keys / block_q,
            "x, qkv (3D), rotated q, k (2D), attention output, projection; K and V re-read once per query block "
            "of 128 (ASSUMED kernel tiling)")


# ----------------------------------------------------------------------------- registry

Formula = Callable[[str, int, int, dict[str, Any]], list[Term]]
FORMULAS: dict[str, Formula] = {
    "inverted": inverted_terms,
    "transformer": transformer_terms,
    "sliding_window": sliding_window_terms,
    "based": based_terms,
    "mamba": mamba_terms,
    "gated_deltanet": gated_deltanet_terms,
    "deltanet": lambda phase, n, d, options: gated_deltanet_terms(phase, n, d, options, gated=False),
}


def has_formula(mixer: str) -> bool:
    return mixer in FORMULAS


def _bytes(mixer: str, phase: str, n: int, d: int, options: dict[str, Any], state_bytes: float | None):
    if mixer == "inverted":
        return _inverted_bytes(phase, n, d, options)
    if mixer == "transformer":
        return _attention_bytes(phase, n, d, n + 1 if phase == "decode" else (n + 1) / 2, state_bytes)
    if mixer == "sliding_window":
        window = _get(options, "window", 128)
        return _attention_bytes(phase, n, d, _window_keys(n, window, phase), state_bytes)
    # generic: ~10 D-vectors written and read per token; the state read and rewritten once per step
    if phase == "decode":
        return 2.0 * (state_bytes or 0.0), "recurrent state read and rewritten once per step"
    return 2.0 * FP32 * 10 * d, "ASSUMED ~10 D-wide intermediates written once and read once per token"


def counted_costs(
    mixer: str,
    phase: str,
    n: int,
    d_model: int,
    options: dict[str, Any],
    mlp_ratio: int = 4,
    parameters: int = 0,
    tokens_per_pass: int = 1,
    short_conv: int = 8,
    state_bytes: float | None = None,
) -> dict[str, Any]:
    """Counted FLOPs and ESTIMATED bytes per token for one Block of ``mixer``.

    ``phase``: "train", "prefill" or "decode" (one recurrent step, batch 1, context n).
    ``parameters``: the block's parameter count; the weights are counted as read once per pass of
    ``tokens_per_pass`` tokens (batch x n; 1 for decode). ``state_bytes``: the recurrent state's
    size when measured (decode traffic). Raises ``KeyError`` for a mixer without formulas
    (see ``has_formula``).
    """
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")
    if mixer not in FORMULAS:
        raise KeyError(f"no FLOP formulas for mixer {mixer!r}")
    d, r = d_model, mlp_ratio
    terms = FORMULAS[mixer](phase, n, d, options) + block_terms(d, r, short_conv)
    terms = [t for t in terms if t.flops]
    data, note = _bytes(mixer, phase, n, d, options, state_bytes)
    weights = parameters * FP32 / max(tokens_per_pass, 1)
    if phase == "train":
        flops = sum(t.flops * t.train_factor for t in terms)
        act = data + 2.0 * FP32 * _block_activation_floats(d, r)
        bytes_ = 3.0 * act + 3.0 * weights  # activations saved, re-read, their gradients written; weight grads
        note += "; training: activations saved, re-read and their gradients written (x3), weight grads written"
    else:
        flops = sum(t.flops for t in terms)
        bytes_ = data + weights + 2.0 * FP32 * _block_activation_floats(d, r)
    return {
        "flops_per_token": flops,
        "macs_per_token": sum(t.macs for t in terms) * (3.0 if phase == "train" else 1.0),
        "bytes_per_token": bytes_,
        "terms": {t.name: t.flops for t in terms},
        "bytes_note": note,
        "flops_source": "analytic (workbench.bench.costs)",
        "label": LABEL,
    }
