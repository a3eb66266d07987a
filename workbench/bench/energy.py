"""ESTIMATED energy per token: counted FLOPs and bytes moved, and measured time x a stated power.

Nothing in this file is measured with a power meter. Two independent estimates per point:

1. **analytic** = FLOPs/token x J/FLOP + bytes/token x J/byte. The FLOPs are counted from
   the code of the two mixers and of ``workbench.model.Block`` (one term per operation,
   named in ``terms``); the bytes are a rough traffic model (every major intermediate
   tensor written once and read once, weights read once per pass). The J/FLOP and J/byte
   figures are ASSUMPTIONS stated in ``DeviceEnergy.assumptions``.
2. **time x power** = measured median time per token x a stated power figure (CPU: an
   ASSUMED package power per busy core; CUDA: the board's published TDP, an upper bound).

Conventions: a multiply-add is 2 FLOPs; an element-wise op, compare, exp or trig is
counted as 1 FLOP (so the small terms are order-of-magnitude only); fp32 is 4 bytes,
int64 8, bool 1. ``n`` is the sequence length, ``D`` d_model, ``r`` the MLP ratio.
Training = forward (in training mode) + backward, counted as 3 x forward (the usual
"backward = 2 x forward" rule: gradients w.r.t. inputs and weights), except the fused
attention of the transformer whose backward also recomputes the scores (flash-style):
its attention terms are counted 4 x; and the inverted mixer's write surrogate, which is
zero forward and only runs in backward: counted 1 x.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

LABEL = "ESTIMATE - not measured with a power meter; every assumption is listed alongside"

FP32, INT64, BOOL = 4, 8, 1


# ----------------------------------------------------------------------------- device figures


@dataclass
class DeviceEnergy:
    """Per-FLOP, per-byte and power figures for one device, with the assumptions behind them."""

    name: str
    joules_per_flop: float
    joules_per_byte: float
    power_w: float
    assumptions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"label": LABEL}


# Published board figures (vendor datasheets): TDP, peak dense fp32 (non-tensor-core), memory bandwidth.
_GPUS = {
    "h100": {"tdp_w": 700.0, "fp32_flops": 67e12, "mem_bw": 3.35e12, "board": "H100 SXM5"},
    "h200": {"tdp_w": 700.0, "fp32_flops": 67e12, "mem_bw": 4.8e12, "board": "H200 SXM"},
    "a100": {"tdp_w": 400.0, "fp32_flops": 19.5e12, "mem_bw": 2.0e12, "board": "A100 SXM4 80GB"},
}

CPU_WATTS_PER_CORE = 15.0  # ASSUMED package power share per busy core
CPU_FP32_FLOPS_PER_CORE = 100e9  # ASSUMED peak: ~3 GHz x 2 FMA units x 8 fp32 lanes (AVX2) x 2
DRAM_JOULES_PER_BYTE = 100e-12  # ASSUMED DDR4/DDR5-class traffic, including I/O
HBM_JOULES_PER_BYTE = 30e-12  # ASSUMED HBM3-class traffic (~4 pJ/bit)


def device_energy(device: str, threads: int = 1, gpu_name: str | None = None) -> DeviceEnergy:
    """Energy figures for ``device`` ("cpu" or "cuda[:i]"); ``gpu_name`` picks the board figures."""
    if device.startswith("cuda"):
        name = (gpu_name or "").lower()
        key = next((k for k in _GPUS if k in name), None)
        if key is None:
            return DeviceEnergy(
                name=gpu_name or "unknown GPU",
                joules_per_flop=20e-12,
                joules_per_byte=HBM_JOULES_PER_BYTE,
                power_w=300.0,
                assumptions={
                    "power_w": "ASSUMED 300 W board power (unknown GPU; no published figure looked up)",
                    "joules_per_flop": "ASSUMED 20 pJ/FLOP (generic datacenter GPU, fp32)",
                    "joules_per_byte": "ASSUMED 30 pJ/byte, HBM-class memory traffic",
                },
            )
        g = _GPUS[key]
        return DeviceEnergy(
            name=g["board"],
            joules_per_flop=g["tdp_w"] / g["fp32_flops"],
            joules_per_byte=HBM_JOULES_PER_BYTE,
            power_w=g["tdp_w"],
            assumptions={
                "power_w": f"published TDP {g['tdp_w']:.0f} W of the {g['board']} board; an UPPER BOUND "
                "(small kernels do not draw TDP)",
                "joules_per_flop": f"TDP / published peak dense fp32 {g['fp32_flops'] / 1e12:.0f} TFLOP/s = "
                f"{g['tdp_w'] / g['fp32_flops'] * 1e12:.1f} pJ/FLOP (whole board at full rate; ASSUMED "
                "attribution)",
                "joules_per_byte": "ASSUMED 30 pJ/byte (~4 pJ/bit, HBM-class) for every byte in the traffic model",
            },
        )
    return DeviceEnergy(
        name=f"CPU, {threads} thread{'s' if threads != 1 else ''}",
        joules_per_flop=CPU_WATTS_PER_CORE / CPU_FP32_FLOPS_PER_CORE,
        joules_per_byte=DRAM_JOULES_PER_BYTE,
        power_w=CPU_WATTS_PER_CORE * threads,
        assumptions={
            "power_w": f"ASSUMED {CPU_WATTS_PER_CORE:.0f} W package power per busy core x {threads} "
            "thread(s); not measured (no RAPL access assumed)",
            "joules_per_flop": f"ASSUMED {CPU_WATTS_PER_CORE:.0f} W / {CPU_FP32_FLOPS_PER_CORE / 1e9:.0f} GFLOP/s "
            f"peak fp32 per core (AVX2 FMA) = {CPU_WATTS_PER_CORE / CPU_FP32_FLOPS_PER_CORE * 1e12:.0f} pJ/FLOP, "
            "a 0.1-nJ/FLOP-class figure",
            "joules_per_byte": "ASSUMED 100 pJ/byte, DRAM-class, for EVERY byte of the traffic model although "
            "much of it hits caches (so the data term is an upper bound)",
        },
    )


# ----------------------------------------------------------------------------- counted FLOPs and bytes


def _get(options: dict[str, Any], name: str, default: Any) -> Any:
    value = options.get(name, default)
    return default if value is None else value


def _block_terms(d: int, r: int) -> dict[str, float]:
    """Per-token forward FLOPs of Block around the mixer: two LayerNorms, MLP, residuals."""
    return {
        "block: layer norms (2 x ~7 ops/element)": 14.0 * d,
        "block: MLP up D->rD (+bias)": 2.0 * d * r * d + r * d,
        "block: GELU (~8 ops/element)": 8.0 * r * d,
        "block: MLP down rD->D (+bias)": 2.0 * r * d * d + d,
        "block: residual adds": 2.0 * d,
    }


def _block_activation_floats(d: int, r: int) -> float:
    # two LayerNorm outputs, MLP hidden before and after GELU, MLP output, two residual sums
    return (5 + 2 * r) * d


def _inverted_dims(options: dict[str, Any], d: int, n: int) -> dict[str, float]:
    from workbench.mixers.inverted import InvertedOptions  # the mixer's defaults, in one place

    options = {**asdict(InvertedOptions()), **{k: v for k, v in options.items() if v is not None}}
    m = options["n_units"]
    n_freq = options["n_freq"] if options["ordinal_read"] else 0
    d_key = options["d_key"]
    timescales = tuple(options["timescales"])
    refractory = options["refractory"]
    pools = options["n_pools"]
    return {
        "M": m,
        "C": min(options["chunk_size"], n),
        "k": options["read_topk"],
        "dk": d_key,
        "F": n_freq,
        "E": d_key + 2 * n_freq,  # key width: content + ordinal code
        "w": options.get("short_conv", 8),  # the block's shared front end (ModelConfig.short_conv)
        "Df": d * (2 if timescales else 1),
        "ema": 1 if timescales else 0,
        "route": pools if refractory else m,
        "P": pools,
    }


# Zero in the forward pass (SurrogateRead returns the read untouched); its backward recomputes the
# C x C chunk scores and exp, and forms W^T @ grad: counted once in training, not 3x.
SURROGATE_TERM = "surrogate (training only, backward only): C x C chunk scores, exp, W^T @ grad"


def inverted_forward_terms(n: int, d: int, options: dict[str, Any], training: bool) -> dict[str, float]:
    """Per-token forward FLOPs of InvertedMixer.forward (chunked parallel form) at length n."""
    z = _inverted_dims(options, d, n)
    m, c, e, f, df = z["M"], z["C"], z["E"], z["F"], z["Df"]
    chunks = math.ceil(n / c)
    sweeps = math.ceil(math.log2(chunks)) if chunks > 1 else 0
    route = (2.0 * df * z["route"] + 3 * z["route"]) if z["route"] > 1 else 0.0
    terms = {
        "conv: depthwise causal conv, width w": 2.0 * z["w"] * d,
        "ema: (C, C) decay matmul per chunk + carry scan over n/C chunk ends": z["ema"] * (2.0 * c * d + 2.0 * d
                                                                                      + 2.0 * d * sweeps / c),
        "features: h = x + local": float(d),
        "gates: Linear Df->2 + sigmoid + threshold": 4.0 * df + 6,
        "router: Linear Df->pools + softmax + argmax": route,
        "allocation: cumsum of writes, pool one-hot cumsum, ring pointer": 3.0 * z["P"] + 6,
        "candidate tables: scatter last/first write per unit per chunk, compares": 2.0 + (m + c) / c + 2.0 * c,
        "key: Linear D->d_key, 1/sqrt(d_key)": 2.0 * d * z["dk"] + z["dk"],
        "ordinal code: F cos + F sin of the write count": 3.0 * f,
        "value: Linear D->D": 2.0 * d * d,
        "message scale: key, value x write x route scale": float(e + d),
        "query: Linear D->d_key": 2.0 * d * z["dk"],
        "ordinal query: Linear Df->2F + rotation by the read pointer": (4.0 * df * f + 2 * f + 6.0 * f) if f else 0.0,
        "scores: q . k over M unit keys + C chunk keys (width E)": 2.0 * e * (m + c),
        "candidate masks: state_ok (M compares), chunk_ok (C compares)": 2.0 * m + 3.0 * c,
        "read: mask, top-k over M+C, softmax over k, scatter": 3.0 * (m + c) + 5.0 * z["k"],
        "read mix: the k kept values, weighted and summed (embedding_bag; dense (M+C) mix when k >= M+C)": (
            2.0 * z["k"] * d if z["k"] < m + c else 2.0 * (m + c) * d),
        "output: Linear D->D + local": 2.0 * d * d + d,
    }
    if training and _get(options, "write_surrogate", True):
        surrogate = 2.0 * c * e + 3.0 * c + 2.0 * c * d
        terms[SURROGATE_TERM] = surrogate
    return terms


def transformer_forward_terms(n: int, d: int, options: dict[str, Any]) -> dict[str, float]:
    """Per-token forward FLOPs of SoftmaxAttention.forward (SDPA, causal) at length n."""
    heads = _get(options, "n_heads", 4)
    keys = (n + 1) / 2  # causal: token t sees t+1 keys; mean over the sequence
    return {
        "qkv: Linear D->3D": 6.0 * d * d,
        "rotary: q and k (~3 ops/element)": 6.0 * d,
        "attention: QK^T over (n+1)/2 keys on average (causal blocks skipped)": 2.0 * d * keys,
        "attention: online softmax (~5 ops per score per head)": 5.0 * heads * keys,
        "attention: PV over (n+1)/2 keys": 2.0 * d * keys,
        "output: Linear D->D": 2.0 * d * d,
    }


def inverted_decode_terms(d: int, options: dict[str, Any]) -> dict[str, float]:
    """Per-token FLOPs of InvertedMixer.step (recurrent form): independent of the context."""
    z = _inverted_dims(options, d, 10**9)
    m, e, f, df = z["M"], z["E"], z["F"], z["Df"]
    return {
        "conv: window x weight, sum over w": 2.0 * z["w"] * d + d,
        "ema: decay*state + (1-decay)*x": 3.0 * d * z["ema"],
        "features + gates: h, Linear Df->2, sigmoid": d + 4.0 * df + 6,
        "router": (2.0 * df * z["route"] + 3 * z["route"]) if z["route"] > 1 else 0.0,
        "key + ordinal code: Linear D->d_key": 2.0 * d * z["dk"] + 3.0 * f,
        "value: Linear D->D": 2.0 * d * d,
        "state update: keys/values*keep + slot*new (3 ops x M x (E+D)), one-hot": 3.0 * m * (e + d) + m,
        "query + ordinal query": 2.0 * d * z["dk"] + ((4.0 * df * f + 8.0 * f) if f else 0.0),
        "scores: keys @ query (M x E)": 2.0 * m * e,
        "read: mask, top-k over M, softmax over k": 3.0 * m + 5.0 * z["k"],
        "read mix: k values": 2.0 * z["k"] * d,
        "output: Linear D->D + local": 2.0 * d * d + d,
    }


def transformer_decode_terms(n: int, d: int, options: dict[str, Any]) -> dict[str, float]:
    """Per-token FLOPs of SoftmaxAttention.step with a KV cache of n tokens (attends to n+1)."""
    heads = _get(options, "n_heads", 4)
    keys = n + 1
    return {
        "qkv: Linear D->3D": 6.0 * d * d,
        "rotary: q and k": 6.0 * d,
        "attention: q . K over n+1 cached keys": 2.0 * d * keys,
        "attention: softmax": 5.0 * heads * keys,
        "attention: weights @ V over n+1 values": 2.0 * d * keys,
        "output: Linear D->D": 2.0 * d * d,
    }


def _training_multiplier(mixer: str, term: str) -> float:
    """Training FLOPs per forward FLOP of a term: 3 (forward + backward), 4 for the fused attention
    (its backward recomputes the scores), 1 for the backward-only write surrogate."""
    if term == SURROGATE_TERM:
        return 1.0
    return 4.0 if (mixer == "transformer" and _attention_term(term)) else 3.0


def _attention_term(name: str) -> bool:
    return name.startswith("attention:")


def counted_costs(
    mixer: str,
    phase: str,
    n: int,
    d_model: int,
    options: dict[str, Any],
    mlp_ratio: int = 4,
    parameters: int = 0,
    tokens_per_pass: int = 1,
) -> dict[str, Any]:
    """Counted FLOPs and ESTIMATED bytes per token for one Block of ``mixer``.

    ``phase`` is "train" (forward + backward, training mode), "prefill" (forward, no grad)
    or "decode" (one recurrent step, batch 1, context n). ``parameters`` is the block's
    parameter count and ``tokens_per_pass`` the tokens of one forward pass (batch x n); the
    weights are counted as read once per pass.
    """
    d, r = d_model, mlp_ratio
    if phase not in ("train", "prefill", "decode"):
        raise ValueError(f"unknown phase {phase!r}")
    if mixer not in ("inverted", "transformer"):
        raise ValueError(f"no FLOP formulas for mixer {mixer!r}")
    weight_bytes = parameters * FP32
    if phase == "decode":
        if mixer == "inverted":
            terms = inverted_decode_terms(d, options)
            z = _inverted_dims(options, d, n)
            state = z["M"] * (z["E"] + d) * FP32
            data = 4.0 * state + z["M"] * z["E"] * FP32  # state read and rewritten (~2x each), keys re-read
            data_note = "weights once per step + unit state (M x (E+D) fp32) read and rewritten ~twice"
        else:
            terms = transformer_decode_terms(n, d, options)
            kv = 2.0 * n * d * FP32
            data = 3.0 * kv  # torch.cat copies the cache (read + write), attention reads it again
            data_note = "weights once per step + KV cache (2 n D fp32) x3: cat copy (read, write) and attention read"
        terms |= _block_terms(d, r)
        flops = sum(terms.values())
        bytes_ = weight_bytes + data + 2.0 * FP32 * (_block_activation_floats(d, r) + 10 * d)
        return {"flops_per_token": flops, "bytes_per_token": bytes_, "terms": terms,
                "bytes_note": data_note, "label": LABEL}

    training = phase == "train"
    if mixer == "inverted":
        terms = inverted_forward_terms(n, d, options, training)
        z = _inverted_dims(options, d, n)
        m, c, e = z["M"], z["C"], z["E"]
        floats = d * (8 + 2 * z["ema"]) + 2 * e + 3 * (m + c)
        if training and _get(options, "write_surrogate", True):
            floats += 2 * c + d
        act = 2.0 * (FP32 * floats + INT64 * (2 * c + 2 * m / c) + BOOL * (2 * m + 2 * c))
        act += 2.0 * FP32 * m * (e + d) / c  # unit keys/values gathered at every chunk start
        note = ("activations: each intermediate written once, read once: ~8 D-vectors, the EMA scan's "
                "chunked matmul, the (M+C)-wide scores/weights and boolean candidate masks, int64 write tables; "
                "plus the unit state gathered once per chunk")
    else:
        terms = transformer_forward_terms(n, d, options)
        keys = (n + 1) / 2
        block_q = 128  # ASSUMED query-block size of the fused attention kernel
        act = 2.0 * FP32 * 8 * d + 2.0 * FP32 * d * keys / block_q
        note = ("activations: x, qkv (3D), rotated q, k (2D), attention output, projection; plus K and V "
                "re-read once per query block of 128 (ASSUMED kernel tiling)")
    terms |= _block_terms(d, r)
    act += 2.0 * FP32 * _block_activation_floats(d, r)
    if training:
        flops = sum(v * _training_multiplier(mixer, k) for k, v in terms.items())
        bytes_ = 3.0 * act + 3.0 * weight_bytes / max(tokens_per_pass, 1)  # weights read x2, gradients written
        note += "; training: activations saved, re-read and their gradients written (x3), weight grads written"
    else:
        flops = sum(terms.values())
        bytes_ = act + weight_bytes / max(tokens_per_pass, 1)
    return {"flops_per_token": flops, "bytes_per_token": bytes_, "terms": terms, "bytes_note": note, "label": LABEL}


def energy_per_token(costs: dict[str, Any], seconds_per_token: float | None, profile: DeviceEnergy) -> dict[str, Any]:
    """Both ESTIMATES in joules per token, with the figures used."""
    analytic = costs["flops_per_token"] * profile.joules_per_flop + costs["bytes_per_token"] * profile.joules_per_byte
    out: dict[str, Any] = {
        "label": LABEL,
        "flops_per_token": costs["flops_per_token"],
        "bytes_per_token": costs["bytes_per_token"],
        "analytic_j_per_token": analytic,
        "analytic_formula": "flops_per_token x joules_per_flop + bytes_per_token x joules_per_byte",
        "time_x_power_j_per_token": None,
    }
    if seconds_per_token is not None and math.isfinite(seconds_per_token):
        out["time_x_power_j_per_token"] = seconds_per_token * profile.power_w
        out["time_x_power_formula"] = f"measured median s/token x {profile.power_w:g} W"
    return out
