"""Fits over the measured points: log-log slopes vs n and the crossover length between two mixers."""

from __future__ import annotations

import math
from typing import Any

from workbench.bench.supervisor import skip_kind


def fit_loglog(ns: list[float], values: list[float | None], min_n: float = 1024) -> dict[str, Any]:
    """Slope and intercept of log(value) vs log(n) (numpy.polyfit, degree 1) over n >= min_n."""
    import numpy as np

    pairs = [(float(n), float(v)) for n, v in zip(ns, values)
             if n >= min_n and v is not None and math.isfinite(v) and v > 0]
    if len(pairs) < 2:
        return {"slope": None, "intercept": None, "n_points": len(pairs), "ns": [p[0] for p in pairs],
                "reason": f"fewer than 2 measured points with n >= {min_n:g}"}
    x = np.log([p[0] for p in pairs])
    y = np.log([p[1] for p in pairs])
    slope, intercept = np.polyfit(x, y, 1)
    return {"slope": float(slope), "intercept": float(intercept), "n_points": len(pairs),
            "ns": [int(p[0]) for p in pairs]}


def _metric(point: dict[str, Any], phase: str, key: str) -> float | None:
    result = point.get(phase) or {}
    return result.get(key) if result.get("status") == "ok" else None


SLOPE_METRICS = {
    "train_s_per_batch": ("train", "median_s"),
    "train_s_per_sequence": ("train", "median_s"),  # divided by the batch in _metric
    "train_peak_mem": ("train", "peak_mem_bytes"),
    "prefill_s_per_batch": ("prefill", "median_s"),
    "prefill_peak_mem": ("prefill", "peak_mem_bytes"),
    "decode_s_per_token": ("decode", "median_s"),
    "decode_fused_s_per_token": ("decode_fused", "median_s"),
    "decode_state_bytes": ("decode", "state_bytes"),
}


def fit_slopes(points: list[dict[str, Any]], mixers: list[str], min_n: float = 1024) -> dict[str, Any]:
    slopes: dict[str, Any] = {}
    for mixer in mixers:
        rows = sorted((p for p in points if p["mixer"] == mixer), key=lambda p: p["n"])
        slopes[mixer] = {}
        for name, (phase, key) in SLOPE_METRICS.items():
            values = []
            for p in rows:
                v = _metric(p, phase, key)
                if v is not None and name == "train_s_per_sequence":
                    v = v / p["batch"]
                values.append(v)
            slopes[mixer][name] = fit_loglog([p["n"] for p in rows], values, min_n)
    return slopes


EXTRAPOLATE_AT_MOST = 100  # a crossover extrapolated past 100x the longest measured length is not reported


def find_crossover(points: list[dict[str, Any]], phase: str = "train", a: str = "inverted", b: str = "transformer",
                   slopes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Smallest n from which ``a`` stays faster than ``b`` (median time of ``phase``).

    Between two measured lengths the crossover is interpolated on log(time_a / time_b) vs
    log(n). A length where ``b`` was skipped for time or memory and ``a`` was measured counts
    as ``a`` faster (no ratio). Not reached: extrapolated from the log-log fits when possible.
    """
    by = {(p["mixer"], p["n"]): p for p in points}
    known = []  # (n, a_faster, log ratio or None)
    for n in sorted({p["n"] for p in points}):
        pa, pb = by.get((a, n)), by.get((b, n))
        if not pa or not pb:
            continue
        ta, tb = _metric(pa, phase, "median_s"), _metric(pb, phase, "median_s")
        if ta is not None and tb is not None:
            known.append((n, ta < tb, math.log(ta / tb)))
        elif ta is not None and skip_kind(pb.get(phase)):
            known.append((n, True, None))
        elif tb is not None and skip_kind(pa.get(phase)):
            known.append((n, False, None))
    out: dict[str, Any] = {"phase": phase, "faster": a, "than": b,
                           "ratios": [{"n": n, "time_ratio": math.exp(lr) if lr is not None else None,
                                       f"{a}_faster": f} for n, f, lr in known]}
    if not known:
        return out | {"n": None, "bracket": None, "method": "no length where both were measured"}
    slower = [i for i, (_, faster, _) in enumerate(known) if not faster]
    if not slower:
        return out | {"n": None, "bracket": [None, known[0][0]],
                      "method": f"{a} faster at every measured n (crossover <= {known[0][0]})"}
    j = slower[-1]
    if j == len(known) - 1:
        extra: dict[str, Any] = {"n": None, "bracket": [known[-1][0], None],
                                 "method": f"not reached up to n={known[-1][0]}"}
        key = f"{phase}_s_per_token" if phase.startswith("decode") else f"{phase}_s_per_batch"
        fa, fb = (slopes or {}).get(a, {}).get(key, {}), (slopes or {}).get(b, {}).get(key, {})
        if fa.get("slope") is not None and fb.get("slope") is not None and fb["slope"] > fa["slope"]:
            log_n = (fa["intercept"] - fb["intercept"]) / (fb["slope"] - fa["slope"])
            if log_n <= math.log(EXTRAPOLATE_AT_MOST * known[-1][0]):
                extra |= {"n_extrapolated": math.exp(log_n),
                          "method": f"not reached up to n={known[-1][0]}; EXTRAPOLATED from the log-log fits"}
            else:  # nearly parallel fits cross absurdly far out (n ~ 1e150): no number is better than that one
                extra["method"] += f"; the log-log fits do not cross below n={EXTRAPOLATE_AT_MOST * known[-1][0]:,}"
        return out | extra
    (n0, _, r0), (n1, _, r1) = known[j], known[j + 1]
    if r0 is None or r1 is None or r1 == r0:
        return out | {"n": None, "bracket": [n0, n1], "method": f"between n={n0} and n={n1} (no ratio to interpolate)"}
    x0, x1 = math.log(n0), math.log(n1)
    n_star = math.exp(x0 + (0.0 - r0) * (x1 - x0) / (r1 - r0))
    return out | {"n": n_star, "bracket": [n0, n1], "method": "log-log interpolation of the time ratio"}
