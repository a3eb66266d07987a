"""The scaling benchmark: JSON produced, limits turn into 'skipped', fits and crossovers, constant state.

Behaviour only - no assertion here depends on how fast this machine is.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import pytest
import torch

from workbench.bench import energy
from workbench.bench import scaling as sc


def _finite_numbers(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite_numbers(v) for v in value)
    return True


TINY = dict(d_model=16, tokens_per_batch=128, repeats=1, decode_steps=2, threads=1, device="cpu", progress=False)


def test_run_scaling_tiny_writes_complete_json(tmp_path):
    result = sc.run_scaling(lengths=(32, 64), out=tmp_path, min_fit_n=32, time_limit_s=120, **TINY)
    path = tmp_path / "scaling-cpu-1thread.json"
    assert path.is_file() and result["path"] == str(path)
    data = json.loads(path.read_text())
    for key in ("device", "machine", "torch", "unit", "methods", "settings", "mixers", "points", "slopes",
                "crossover", "energy"):
        assert key in data, key
    assert data["complete"] and data["device"] == "cpu-1thread" and data["torch"] == torch.__version__
    assert _finite_numbers(data)
    assert len(data["points"]) == 4
    for point in data["points"]:
        assert point["batch"] == max(1, 128 // point["n"])
        for phase in ("train", "prefill", "decode"):
            res = point[phase]
            assert res["status"] == "ok", (point["mixer"], point["n"], phase, res)
            assert res["median_s"] > 0 and res["tokens_per_s"] > 0
            assert res["peak_mem_bytes"] is not None and res["peak_mem_bytes"] >= 0
            e = point["energy"][phase]
            assert "ESTIMATE" in e["label"]
            assert e["flops_per_token"] > 0 and e["bytes_per_token"] > 0
            assert e["analytic_j_per_token"] > 0 and e["time_x_power_j_per_token"] > 0
        # the analytic count agrees with torch's FlopCounterMode (run in the child), which counts
        # matmul-class ops only and not the CPU attention kernel; ours adds the element-wise terms
        terms = point["energy"]["prefill"]["flops_per_token"]
        if point["mixer"] == "transformer":
            options = data["mixers"]["transformer"]["options"]
            terms -= sum(v for k, v in energy.transformer_forward_terms(point["n"], 16, options).items()
                         if k.startswith("attention:"))
        counted = point["prefill"]["torch_flop_counter_per_token"]
        assert counted <= terms <= 1.25 * counted, (point["mixer"], point["n"], counted, terms)
        assert point["energy"]["train"]["flops_per_token"] >= 0.8 * point["train"]["torch_flop_counter_per_token"]
    decode = {(p["mixer"], p["n"]): p["decode"]["state_bytes"] for p in data["points"]}
    assert decode[("inverted", 32)] == decode[("inverted", 64)]  # constant-size state
    assert decode[("transformer", 64)] > decode[("transformer", 32)]  # the KV cache grows
    for mixer in ("inverted", "transformer"):
        assert math.isfinite(data["slopes"][mixer]["train_s_per_batch"]["slope"])
    assert set(data["crossover"]) == {"train", "prefill", "decode"}
    assert "ASSUMED" in json.dumps(data["energy"]["device_figures"]["assumptions"])
    assert data["mixers"]["inverted"]["options"]["n_units"] > 0

    table = sc.format_scaling_table(result)
    assert table.row_count == 4
    markdown = sc.scaling_markdown(result)
    assert markdown.count("\n| inverted |") == 2 and "crossover, train" in markdown and "ESTIMATES" in markdown


def test_time_limit_records_skipped_instead_of_crashing(tmp_path):
    result = sc.run_scaling(lengths=(32, 64), mixers=("transformer",), out=tmp_path, time_limit_s=1e-6, **TINY)
    first, second = sorted(result["points"], key=lambda p: p["n"])
    for phase in ("train", "prefill", "decode"):
        assert first[phase]["status"] == "skipped" and first[phase]["reason"].startswith("out of time")
        assert second[phase]["status"] == "skipped" and "not run at larger n" in second[phase]["reason"]
    assert "skipped (time)" in sc.scaling_markdown(result)
    assert (tmp_path / "scaling-cpu-1thread.json").is_file()


def test_supervisor_stops_a_hung_child():
    started = time.monotonic()
    run = sc.supervise(sc._selftest_sleep, (60.0,), time_limit_s=0.2, memory_limit_bytes=None)
    assert run["stopped"] == {"phase": "train", "reason": "out of time (> 0.2 s)"}
    assert time.monotonic() - started < 30


def test_supervisor_stops_a_child_over_the_memory_limit():
    baseline = sc.supervise(sc._selftest_sleep, (0.0,), time_limit_s=30, memory_limit_bytes=None)["ready"]["rss_bytes"]
    limit = baseline + 64 * 2**20
    run = sc.supervise(sc._selftest_allocate, (256 * 2**20, 60.0), time_limit_s=60, memory_limit_bytes=limit)
    assert run["stopped"]["phase"] == "train" and run["stopped"]["reason"].startswith("out of memory")
    assert sc._skip_kind({"status": "skipped", "reason": run["stopped"]["reason"]}) == "memory"


def test_fit_loglog_recovers_a_known_slope():
    ns = [256, 1024, 4096, 16384, 65536]
    fit = sc.fit_loglog(ns, [3.0 * n**1.5 for n in ns], min_n=1024)
    assert fit["slope"] == pytest.approx(1.5, abs=1e-9)
    assert fit["intercept"] == pytest.approx(math.log(3.0), abs=1e-9)
    assert fit["ns"] == [1024, 4096, 16384, 65536]  # n < min_n left out
    noisy = sc.fit_loglog(ns, [n**0.5 * (1.1 if i % 2 else 0.9) for i, n in enumerate(ns)], min_n=1)
    assert noisy["slope"] == pytest.approx(0.5, abs=0.15)
    assert sc.fit_loglog([256, 1024], [1.0, None])["slope"] is None  # one usable point: no fit


def _point(mixer, n, seconds):
    return {"mixer": mixer, "n": n, "batch": 1, "train": {"status": "ok", "median_s": seconds}}


def test_crossover_interpolates_and_handles_skips():
    ns = [256, 1024, 4096, 16384]
    points = [_point("inverted", n, 2.0) for n in ns] + [_point("transformer", n, n / 1000) for n in ns]
    cross = sc.find_crossover(points, "train")
    assert cross["n"] == pytest.approx(2000.0, rel=1e-9) and cross["bracket"] == [1024, 4096]
    points[-1]["train"] = {"status": "skipped", "reason": "out of time (> 1 s)"}  # transformer at 16384
    assert sc.find_crossover(points, "train")["n"] == pytest.approx(2000.0, rel=1e-9)
    slow = [_point("inverted", n, 10.0) for n in ns] + [_point("transformer", n, n / 1000) for n in ns[:3]]
    slopes = sc.fit_slopes(slow, ["inverted", "transformer"], min_n=256)
    never = sc.find_crossover(slow, "train", slopes=slopes)
    assert never["n"] is None and never["n_extrapolated"] == pytest.approx(10000.0, rel=1e-6)
    fast = [_point("inverted", n, 1e-6) for n in ns] + [_point("transformer", n, 1.0) for n in ns]
    assert sc.find_crossover(fast, "train")["bracket"] == [None, 256]


def test_long_recurrent_state_is_constant(tmp_path):
    result = sc.run_long_recurrent(n_tokens=2000, d_model=16, chunk=500, out=tmp_path, threads=1, progress=False)
    assert (tmp_path / "long-context-cpu-1thread.json").is_file()
    windows = result["windows"]
    assert [w["tokens_done"] for w in windows] == [500, 1000, 1500, 2000]
    summary = result["summary"]
    assert summary["state_bytes_constant"] and summary["state_shapes_constant"]
    assert {w["state_bytes"] for w in windows} == {summary["state_bytes"]}
    assert all(w["s_per_token"] > 0 and w["rss_bytes"] > 0 for w in windows)
    assert all(w["occupied_units"] <= summary["state_shapes"]["keys"][1] for w in windows)
    assert summary["transformer_kv_cache_bytes_at_same_n_for_contrast"] == 2 * 2000 * 16 * 4
    assert not result["stopped_early"] and _finite_numbers(result)
    assert summary["all_outputs_finite"] and set(summary["max_state_norms"]) == {"conv", "ema", "keys", "values"}
    assert windows[-1]["counters_max"]["count"] <= 2000


def test_long_recurrent_bfloat16_writes_its_own_file(tmp_path):
    result = sc.run_long_recurrent(n_tokens=300, d_model=16, chunk=100, out=tmp_path, threads=1, progress=False,
                                   dtype="bfloat16")
    assert result["path"].endswith("long-context-cpu-1thread-bf16.json") and result["settings"]["dtype"] == "bfloat16"
    assert result["summary"]["all_outputs_finite"]
    with pytest.raises(ValueError, match="dtype"):
        sc.run_long_recurrent(n_tokens=10, out=None, dtype="float16")


def test_decode_flops_constant_for_inverted_growing_for_transformer():
    for mixer in ("inverted", "transformer"):
        options = sc.mixer_options_used(mixer, 32, {})
        decode = [energy.counted_costs(mixer, "decode", m, 32, options)["flops_per_token"] for m in (1000, 100_000)]
        assert (decode[0] == decode[1]) == (mixer == "inverted")
    with pytest.raises(ValueError):
        energy.counted_costs("inverted", "sideways", 64, 32, {})


def test_device_energy_figures_are_labelled():
    cpu = energy.device_energy("cpu", threads=2)
    assert cpu.power_w == 30.0 and all("ASSUMED" in v for v in cpu.assumptions.values())
    h100 = energy.device_energy("cuda", gpu_name="NVIDIA H100 80GB HBM3")
    assert h100.power_w == 700.0 and "TDP" in h100.assumptions["power_w"]
    assert sc.device_slug("cuda", 1, "NVIDIA H100 80GB HBM3") == "cuda-h100"
    assert sc.device_slug("cpu", 2) == "cpu-2threads"


def test_cli_arguments_run_both_benchmarks(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    sc.add_scaling_arguments(parser)
    args = parser.parse_args(["--lengths", "16", "--repeats", "1", "--device", "cpu", "--d-model", "16",
                              "--tokens-per-batch", "32", "--decode-steps", "2", "--threads", "1", "--long", "40",
                              "--out", str(tmp_path)])
    sc.run_scaling_cli(args)
    assert (tmp_path / "scaling-cpu-1thread.json").is_file() and (tmp_path / "long-context-cpu-1thread.json").is_file()
    assert "long context (float32): 40 tokens" in capsys.readouterr().out
    with pytest.raises(ValueError):
        sc.run_scaling(lengths=(0,), out=None, progress=False)


def test_the_long_run_honours_time_limit_from_the_command_line(tmp_path):
    """Issue 22: `bench scaling --long N --time-limit S` stops the long run after S seconds (before:
    --time-limit reached only the scaling points, and a window ran to its end even past the limit)."""
    parser = argparse.ArgumentParser()
    sc.add_scaling_arguments(parser)
    args = parser.parse_args(["--no-scaling", "--long", "50000000", "--time-limit", "0.5", "--device", "cpu",
                              "--d-model", "16", "--threads", "1", "--out", str(tmp_path)])
    started = time.perf_counter()
    sc.run_scaling_cli(args)
    assert time.perf_counter() - started < 60  # 50M tokens would take hours
    result = json.loads((tmp_path / "long-context-cpu-1thread.json").read_text())
    assert result["stopped_early"] and result["settings"]["time_limit_s"] == 0.5
    assert 0 < result["settings"]["tokens_done"] < 5_000_000  # stopped inside the first window (5M tokens)
    assert sum(w["window_tokens"] for w in result["windows"]) == result["settings"]["tokens_done"]
