"""The machine's limit: peak FLOP/s measured with large matmuls, and each point's achieved fraction of it.

``measure_peak`` runs in its own supervised process (as every point does), with the run's thread
count: square float32 matmuls of a few sizes, the best of several repeats per size; the peak is the
best rate seen. On CUDA, TF32 is off (the mixers run in float32). ``roofline_fractions`` divides the
FLOPs a phase executed (``workbench.bench.costs``; torch's FlopCounterMode where a mixer has no
formula) by its measured time and by that peak.
"""

from __future__ import annotations

import os
import time
import traceback
from typing import Any

SIZES = (1024, 2048, 4096)
ROOFLINE_PHASES = ("train", "prefill", "decode", "decode_fused")


def peak_child(conn, spec: dict[str, Any]) -> None:
    """Supervised target: ``ready``, then one phase ``peak`` whose result holds the measured rates."""
    import torch

    from workbench.bench.phases import emit

    try:
        torch.set_num_threads(spec["threads"])
        device = torch.device(spec["device"])
        emit(conn, {"event": "ready", "pid": os.getpid(), "threads": torch.get_num_threads()})
        emit(conn, {"event": "start", "phase": "peak"})
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            sync = lambda: torch.cuda.synchronize(device)  # noqa: E731
        else:
            sync = lambda: None  # noqa: E731
        rates: dict[str, float] = {}
        budget = time.perf_counter() + spec.get("time_budget_s", 60.0)
        for size in spec.get("sizes", SIZES):
            a = torch.randn(size, size, device=device)
            b = torch.randn(size, size, device=device)
            out = torch.empty(size, size, device=device)
            torch.mm(a, b, out=out)  # warm-up
            sync()
            best = float("inf")
            for _ in range(spec.get("repeats", 5)):
                t = time.perf_counter()
                torch.mm(a, b, out=out)
                sync()
                best = min(best, time.perf_counter() - t)
                if time.perf_counter() > budget:
                    break
            rates[str(size)] = 2.0 * size**3 / best
            if time.perf_counter() > budget:
                break
        emit(conn, {"event": "result", "phase": "peak", "status": "ok", "flops_per_s_by_size": rates,
                    "peak_flops_per_s": max(rates.values())})
    except Exception as exc:
        emit(conn, {"event": "result", "phase": "peak", "status": "error", "reason": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc()[-2000:]})
    finally:
        conn.close()


def measure_peak(device: str, threads: int, sizes: tuple[int, ...] = SIZES, repeats: int = 5,
                 time_budget_s: float = 60.0) -> dict[str, Any]:
    """Peak float32 matmul FLOP/s of this device with ``threads`` threads (a fresh process)."""
    from workbench.bench.supervisor import supervise

    spec = {"device": device, "threads": threads, "sizes": list(sizes), "repeats": repeats,
            "time_budget_s": time_budget_s}
    run = supervise(peak_child, (spec,), time_limit_s=time_budget_s * 3 + 30, memory_limit_bytes=None)
    result = run["results"].get("peak") or {"status": "error", "reason": (run["stopped"] or {}).get("reason")}
    return result | {"method": f"best of {repeats} square float32 torch.mm per size {list(sizes)}, "
                               f"{threads} thread(s); 2 n^3 FLOPs each", "created": time.strftime("%H:%M:%S")}


def achieved(point: dict[str, Any], phase: str, flops_per_token: float | None) -> dict[str, Any] | None:
    """FLOP/s a phase achieved: FLOPs per token x tokens per second (decode: per step, batch 1 and batched)."""
    res = point.get(phase) or {}
    if res.get("status") != "ok" or not flops_per_token:
        return None
    out = {"flops_per_s": flops_per_token * res["tokens_per_s"]}
    batched = res.get("batched")
    if batched and batched.get("status", "ok") == "ok" and batched.get("tokens_per_s"):
        out["batched_flops_per_s"] = flops_per_token * batched["tokens_per_s"]
    return out


def roofline_fractions(result: dict[str, Any]) -> None:
    """Adds ``roofline`` to every point: achieved FLOP/s and its fraction of the measured peak, per phase."""
    peaks = [p.get("peak_flops_per_s") for p in (result.get("peak") or {}).values() if isinstance(p, dict)]
    peak = max((p for p in peaks if p), default=None)
    result["peak_flops_per_s"] = peak
    for point in result["points"]:
        roof = {}
        for phase in ROOFLINE_PHASES:
            costs = (point.get("costs") or {}).get("decode" if phase == "decode_fused" else phase) or {}
            got = achieved(point, phase, costs.get("flops_per_token"))
            if got is None:
                continue
            if peak:
                got["fraction_of_peak"] = got["flops_per_s"] / peak
                if "batched_flops_per_s" in got:
                    got["batched_fraction_of_peak"] = got["batched_flops_per_s"] / peak
            got["flops_source"] = costs.get("flops_source")
            roof[phase] = got
        point["roofline"] = roof
