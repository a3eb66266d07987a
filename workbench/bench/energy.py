"""ESTIMATED energy per token: counted FLOPs and bytes moved, and measured time x a stated power.

Nothing in this file is measured with a power meter. Two independent estimates per point:

1. **analytic** = FLOPs/token x J/FLOP + bytes/token x J/byte. The FLOPs and the bytes come
   from the project's one cost model, ``workbench.bench.costs`` (one term per operation of each
   mixer and of ``workbench.model.Block``; the bytes are a rough traffic model). The J/FLOP and
   J/byte figures are ASSUMPTIONS stated in ``DeviceEnergy.assumptions``.
2. **time x power** = measured median time per token x a stated power figure (CPU: an
   ASSUMED package power per busy core; CUDA: the board's published TDP, an upper bound).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from workbench.bench.costs import LABEL

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


def energy_per_token(costs: dict[str, Any], seconds_per_token: float | None, profile: DeviceEnergy) -> dict[str, Any]:
    """Both ESTIMATES in joules per token, with the figures used."""
    analytic = None
    if costs.get("flops_per_token") is not None and costs.get("bytes_per_token") is not None:
        analytic = costs["flops_per_token"] * profile.joules_per_flop + costs["bytes_per_token"] * profile.joules_per_byte
    out: dict[str, Any] = {
        "label": LABEL,
        "flops_per_token": costs.get("flops_per_token"),
        "bytes_per_token": costs.get("bytes_per_token"),
        "analytic_j_per_token": analytic,
        "analytic_formula": "flops_per_token x joules_per_flop + bytes_per_token x joules_per_byte",
        "time_x_power_j_per_token": None,
    }
    if seconds_per_token is not None and math.isfinite(seconds_per_token):
        out["time_x_power_j_per_token"] = seconds_per_token * profile.power_w
        out["time_x_power_formula"] = f"measured median s/token x {profile.power_w:g} W"
    return out
