"""The scaling benchmark: JSON produced, limits turn into 'skipped', fits and crossovers, the cost model,
the roofline, the long run of every constant-state mixer.

Behaviour only - no assertion here depends on how fast this machine is.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import pytest
import torch

from workbench.bench import common, costs, energy, fits, long_context, roofline, supervisor, tables
from workbench.bench import scaling as sc
from workbench.bench.common import proc_status
from workbench.mixers import MIXERS


def _finite_numbers(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite_numbers(v) for v in value)
    return True


TINY = dict(d_model=16, tokens_per_batch=128, repeats=1, decode_steps=2, threads=1, device="cpu", progress=False,
            peak_sizes=(128, 256))
PLAIN = ("decode", "prefill", "train")  # the fused decode compiles (seconds): its own test below


# ----------------------------------------------------------------------------- supervisor self-test targets


def selftest_sleep(conn, seconds: float) -> None:
    """Starts a phase and hangs in it."""
    conn.send({"event": "ready", "rss_bytes": proc_status().get("VmRSS")})
    conn.send({"event": "start", "phase": "train"})
    time.sleep(seconds)


def selftest_allocate(conn, n_bytes: int, seconds: float) -> None:
    """Starts a phase, touches ``n_bytes`` of memory, and holds it."""
    conn.send({"event": "ready", "rss_bytes": proc_status().get("VmRSS")})
    conn.send({"event": "start", "phase": "train"})
    block = bytearray(n_bytes)
    for i in range(0, n_bytes, 4096):
        block[i] = 1
    time.sleep(seconds)


def test_supervisor_stops_a_hung_child():
    started = time.monotonic()
    run = supervisor.supervise(selftest_sleep, (60.0,), time_limit_s=0.2, memory_limit_bytes=None)
    assert run["stopped"] == {"phase": "train", "reason": "out of time (> 0.2 s)"}
    assert time.monotonic() - started < 30


def test_supervisor_stops_a_child_over_the_memory_limit():
    baseline = supervisor.supervise(selftest_sleep, (0.0,), time_limit_s=30, memory_limit_bytes=None)["ready"]
    limit = baseline["rss_bytes"] + 64 * 2**20
    run = supervisor.supervise(selftest_allocate, (256 * 2**20, 60.0), time_limit_s=60, memory_limit_bytes=limit)
    assert run["stopped"]["phase"] == "train" and run["stopped"]["reason"].startswith("out of memory")
    assert supervisor.skip_kind({"status": "skipped", "reason": run["stopped"]["reason"]}) == "memory"


# ----------------------------------------------------------------------------- the run


def test_run_scaling_tiny_writes_complete_json(tmp_path):
    result = sc.run_scaling(lengths=(32, 64), mixers=("inverted", "transformer"), out=tmp_path, min_fit_n=32,
                            time_limit_s=120, phases=PLAIN, **TINY)
    path = tmp_path / "scaling-cpu-1thread.json"
    assert path.is_file() and result["path"] == str(path)
    data = json.loads(path.read_text())
    for key in ("device", "machine", "torch", "unit", "methods", "settings", "mixers", "points", "slopes",
                "crossover", "energy", "peak", "peak_flops_per_s", "git_commit"):
        assert key in data, key
    assert data["complete"] and data["device"] == "cpu-1thread" and data["torch"] == torch.__version__
    assert data["machine"]["load_average_start"] and data["machine"]["load_average_end"]
    assert data["peak_flops_per_s"] > 0 and data["peak"]["start"]["status"] == "ok"
    assert _finite_numbers(data)
    assert len(data["points"]) == 4
    for point in data["points"]:
        assert point["batch"] == max(1, 128 // point["n"])
        for phase in PLAIN:
            res = point[phase]
            assert res["status"] == "ok", (point["mixer"], point["n"], phase, res)
            assert res["median_s"] > 0 and res["tokens_per_s"] > 0
            assert res["peak_mem_bytes"] is not None and res["peak_mem_bytes"] >= 0
            e = point["energy"][phase]
            assert "ESTIMATE" in e["label"]
            assert e["flops_per_token"] > 0 and e["bytes_per_token"] > 0
            assert e["analytic_j_per_token"] > 0 and e["time_x_power_j_per_token"] > 0
            roof = point["roofline"][phase]
            assert roof["flops_per_s"] > 0 and 0 < roof["fraction_of_peak"]
        assert point["energy"]["train"]["flops_per_token"] >= 0.8 * point["train"]["torch_flop_counter_per_token"]
    decode = {(p["mixer"], p["n"]): p["decode"]["state_bytes"] for p in data["points"]}
    assert decode[("inverted", 32)] == decode[("inverted", 64)]  # constant-size state
    assert decode[("transformer", 64)] > decode[("transformer", 32)]  # the KV cache grows
    for mixer in ("inverted", "transformer"):
        assert math.isfinite(data["slopes"][mixer]["train_s_per_batch"]["slope"])
    assert set(data["crossover"]) == {"transformer"} and set(data["crossover"]["transformer"]) == set(PLAIN)
    assert "ASSUMED" in json.dumps(data["energy"]["device_figures"]["assumptions"])
    assert data["mixers"]["inverted"]["options"]["n_units"] > 0

    table = tables.format_scaling_table(result)
    assert table.row_count == 4
    markdown = tables.scaling_markdown(result)
    assert markdown.count("\n| inverted |") == 4  # the main table and the energy table
    assert "inverted faster than transformer" in markdown and "ESTIMATES" in markdown and "GFLOP/s" in markdown


def test_every_registered_mixer_runs_side_by_side(tmp_path):
    result = sc.run_scaling(lengths=(32,), out=None, time_limit_s=120, phases=PLAIN, measure_peak_flops=False, **TINY)
    assert result["settings"]["mixers"] == list(MIXERS)  # new mixers join by registering
    for point in result["points"]:
        for phase in PLAIN:
            assert point[phase]["status"] == "ok", (point["mixer"], phase, point[phase])
        assert point["costs"]["train"]["flops_per_token"] > 0  # a formula, or torch's FlopCounterMode
    assert set(result["crossover"]) == set(MIXERS) - {"inverted"}


@pytest.mark.slow  # two compiles per point (tests/test_fast.py checks the fused step itself by default)
def test_fused_decode_phase_matches_the_plain_step(tmp_path):
    result = sc.run_scaling(lengths=(32,), mixers=("inverted", "transformer"), out=None, time_limit_s=300,
                            phases=("decode", "decode_fused"), decode_batch=3, fused_backend="compile",
                            measure_peak_flops=False, **TINY)
    for point in result["points"]:
        fused = point["decode_fused"]
        assert fused["status"] == "ok", fused
        assert fused["max_abs_diff_vs_plain"] < 1e-4 and fused["compile_s"] > 0
        assert fused["batched"]["batch"] == 3 and fused["batched"]["max_abs_diff_vs_plain"] < 1e-4
        assert fused["batched"]["tokens_per_s"] > 0
        assert "decode_fused" in point["energy"] and point["roofline"]["decode_fused"]["flops_per_s"] > 0


def test_time_limit_records_skipped_instead_of_crashing(tmp_path):
    result = sc.run_scaling(lengths=(32, 64), mixers=("transformer",), out=tmp_path, time_limit_s=1e-6, phases=PLAIN,
                            measure_peak_flops=False, **TINY)
    first, second = sorted(result["points"], key=lambda p: p["n"])
    for phase in PLAIN:
        assert first[phase]["status"] == "skipped" and first[phase]["reason"].startswith("out of time")
        assert second[phase]["status"] == "skipped" and "not run at larger n" in second[phase]["reason"]
    assert "skipped (time)" in tables.scaling_markdown(result)
    assert (tmp_path / "scaling-cpu-1thread.json").is_file()


# ----------------------------------------------------------------------------- fits


def test_fit_loglog_recovers_a_known_slope():
    ns = [256, 1024, 4096, 16384, 65536]
    fit = fits.fit_loglog(ns, [3.0 * n**1.5 for n in ns], min_n=1024)
    assert fit["slope"] == pytest.approx(1.5, abs=1e-9)
    assert fit["intercept"] == pytest.approx(math.log(3.0), abs=1e-9)
    assert fit["ns"] == [1024, 4096, 16384, 65536]  # n < min_n left out
    noisy = fits.fit_loglog(ns, [n**0.5 * (1.1 if i % 2 else 0.9) for i, n in enumerate(ns)], min_n=1)
    assert noisy["slope"] == pytest.approx(0.5, abs=0.15)
    assert fits.fit_loglog([256, 1024], [1.0, None])["slope"] is None  # one usable point: no fit


def _point(mixer, n, seconds):
    return {"mixer": mixer, "n": n, "batch": 1, "train": {"status": "ok", "median_s": seconds}}


def test_crossover_interpolates_and_handles_skips():
    ns = [256, 1024, 4096, 16384]
    points = [_point("inverted", n, 2.0) for n in ns] + [_point("transformer", n, n / 1000) for n in ns]
    cross = fits.find_crossover(points, "train")
    assert cross["n"] == pytest.approx(2000.0, rel=1e-9) and cross["bracket"] == [1024, 4096]
    points[-1]["train"] = {"status": "skipped", "reason": "out of time (> 1 s)"}  # transformer at 16384
    assert fits.find_crossover(points, "train")["n"] == pytest.approx(2000.0, rel=1e-9)
    slow = [_point("inverted", n, 10.0) for n in ns] + [_point("transformer", n, n / 1000) for n in ns[:3]]
    slopes = fits.fit_slopes(slow, ["inverted", "transformer"], min_n=256)
    never = fits.find_crossover(slow, "train", slopes=slopes)
    assert never["n"] is None and never["n_extrapolated"] == pytest.approx(10000.0, rel=1e-6)
    # Nearly parallel fits would cross at an absurd n: beyond 100x the measured range none is reported.
    parallel = [_point("inverted", n, 10.0 * (n / 256) ** 0.5) for n in ns] + \
        [_point("transformer", n, (n / 256) ** 0.5001) for n in ns]
    slopes = fits.fit_slopes(parallel, ["inverted", "transformer"], min_n=256)
    far = fits.find_crossover(parallel, "train", slopes=slopes)
    assert "n_extrapolated" not in far and "do not cross below n=1,638,400" in far["method"]
    fast = [_point("inverted", n, 1e-6) for n in ns] + [_point("transformer", n, 1.0) for n in ns]
    assert fits.find_crossover(fast, "train")["bracket"] == [None, 256]


# ----------------------------------------------------------------------------- the cost model and the roofline


@pytest.mark.parametrize("mixer", sorted(costs.FORMULAS))
@pytest.mark.parametrize("n", [32, 200])
def test_cost_model_matmuls_agree_with_torch_flop_counter(mixer, n):
    """The formulas' multiply-adds (softmax attention aside: torch does not count the CPU SDPA kernel)
    are what torch's FlopCounterMode counts in the block's forward, within 10 %."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    block = common.build_block(mixer, 16, 4, {}).eval()
    options = common.mixer_options_used(mixer, 16, {})
    x = torch.randn(2, n, 16)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        block(x)
    counted = counter.get_total_flops() / x.shape[0] / n
    terms = costs.FORMULAS[mixer]("prefill", n, 16, options) + costs.block_terms(16, 4, block.short_conv.width)
    formula = sum(2 * t.macs for t in terms if "attention:" not in t.name)
    assert formula == pytest.approx(counted, rel=0.1), (mixer, n, formula, counted)


def test_cost_model_decode_constant_for_constant_states_growing_for_the_transformer():
    for mixer in costs.FORMULAS:
        options = common.mixer_options_used(mixer, 32, {})
        decode = [costs.counted_costs(mixer, "decode", m, 32, options)["flops_per_token"] for m in (1000, 100_000)]
        assert (decode[0] == decode[1]) == common.constant_state(mixer), mixer
    with pytest.raises(ValueError):
        costs.counted_costs("inverted", "sideways", 64, 32, {})
    with pytest.raises(KeyError):
        costs.counted_costs("no-such-mixer", "train", 64, 32, {})


def test_adaptive_scale_reads_the_cost_model():
    from workbench.mixers.inverted import InvertedOptions, adaptive_scale

    options = InvertedOptions(n_units=8, read_topk=2, n_pools=2)
    scale = adaptive_scale(512, options, 32)
    macs = costs.inverted_macs(512, 32, common.mixer_options_used("inverted", 32, {"n_units": 8, "read_topk": 2,
                                                                                     "n_pools": 2}))
    assert scale["macs_per_token_step"] == macs["macs_per_token_step"]
    assert scale["macs_per_token_parallel"] == macs["macs_per_token_parallel"]
    prefill = costs.counted_costs("inverted", "prefill", 512, 32, {"n_units": 8, "read_topk": 2, "n_pools": 2})
    block_macs = sum(t.macs for t in costs.block_terms(32, 4, 8))
    assert prefill["macs_per_token"] == pytest.approx(scale["macs_per_token_parallel"] + block_macs)


def test_measured_peak_and_roofline_fractions():
    peak = roofline.measure_peak("cpu", 1, sizes=(64, 128), repeats=2, time_budget_s=10)
    assert peak["status"] == "ok" and peak["peak_flops_per_s"] > 0 and set(peak["flops_per_s_by_size"]) == {"64", "128"}
    result = {"peak": {"start": {"peak_flops_per_s": 1e9}, "end": {"peak_flops_per_s": 2e9}},
              "points": [{"train": {"status": "ok", "tokens_per_s": 1000.0},
                          "decode_fused": {"status": "ok", "tokens_per_s": 10.0,
                                           "batched": {"tokens_per_s": 100.0}},
                          "costs": {"train": {"flops_per_token": 1e5}, "decode": {"flops_per_token": 1e6}}}]}
    roofline.roofline_fractions(result)
    roof = result["points"][0]["roofline"]
    assert result["peak_flops_per_s"] == 2e9
    assert roof["train"]["fraction_of_peak"] == pytest.approx(0.05)
    assert roof["decode_fused"]["fraction_of_peak"] == pytest.approx(0.005)
    assert roof["decode_fused"]["batched_fraction_of_peak"] == pytest.approx(0.05)


def test_device_energy_figures_are_labelled():
    cpu = energy.device_energy("cpu", threads=2)
    assert cpu.power_w == 30.0 and all("ASSUMED" in v for v in cpu.assumptions.values())
    h100 = energy.device_energy("cuda", gpu_name="NVIDIA H100 80GB HBM3")
    assert h100.power_w == 700.0 and "TDP" in h100.assumptions["power_w"]
    assert common.device_slug("cuda", 1, "NVIDIA H100 80GB HBM3") == "cuda-h100"
    assert common.device_slug("cpu", 2) == "cpu-2threads"


# ----------------------------------------------------------------------------- the long run


def test_long_recurrent_state_is_constant(tmp_path):
    result = long_context.run_long_recurrent(n_tokens=2000, d_model=16, chunk=500, out=tmp_path, threads=1,
                                             progress=False, mixers=("inverted",))
    assert (tmp_path / "long-context-cpu-1thread.json").is_file()
    run = result["runs"]["inverted"]
    assert run["status"] == "ok" and run["step"] == "plain Block.step"
    windows = run["windows"]
    assert [w["tokens_done"] for w in windows] == [500, 1000, 1500, 2000]
    summary = run["summary"]
    assert summary["state_bytes_constant"] and summary["state_shapes_constant"]
    assert {w["state_bytes"] for w in windows} == {summary["state_bytes"]}
    assert all(w["s_per_token"] > 0 and w["rss_bytes"] > 0 for w in windows)
    assert all(w["occupied_units"] <= summary["state_shapes"]["keys"][1] for w in windows)
    assert summary["transformer_kv_cache_bytes_at_same_n_for_contrast"] == 2 * 2000 * 16 * 4
    assert not run["stopped_early"] and _finite_numbers(result)
    assert summary["all_outputs_finite"] and set(summary["max_state_norms"]) == {"conv", "ema", "keys", "values"}
    assert windows[-1]["counters_max"]["count"] <= 2000


def test_long_run_takes_every_constant_state_mixer_in_bfloat16(tmp_path):
    result = long_context.run_long_recurrent(n_tokens=300, d_model=16, chunk=100, out=tmp_path, threads=1,
                                             progress=False, dtype="bfloat16")
    assert result["path"].endswith("long-context-cpu-1thread-bf16.json") and result["settings"]["dtype"] == "bfloat16"
    assert set(result["runs"]) == {m for m in MIXERS if common.constant_state(m)}
    for mixer, run in result["runs"].items():
        assert run["status"] == "ok", (mixer, run)
        assert run["summary"]["all_outputs_finite"] and run["summary"]["state_bytes_constant"], mixer
    assert "| inverted | 300 | bfloat16 | plain |" in tables.long_context_markdown(result)
    with pytest.raises(ValueError, match="dtype"):
        long_context.run_long_recurrent(n_tokens=10, out=None, dtype="float16")
    with pytest.raises(ValueError, match="constant-state"):
        long_context.run_long_recurrent(n_tokens=10, out=None, mixers=("transformer",))


def test_cli_arguments_run_both_benchmarks(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    sc.add_scaling_arguments(parser)
    args = parser.parse_args(["--lengths", "16", "--repeats", "1", "--device", "cpu", "--d-model", "16",
                              "--mixers", "inverted,transformer", "--phases", "decode,prefill", "--peak-sizes", "64",
                              "--tokens-per-batch", "32", "--decode-steps", "2", "--threads", "1", "--long", "40",
                              "--long-plain", "--out", str(tmp_path)])
    sc.run_scaling_cli(args)
    assert (tmp_path / "scaling-cpu-1thread.json").is_file() and (tmp_path / "long-context-cpu-1thread.json").is_file()
    assert "long context (float32) inverted: 40 tokens" in capsys.readouterr().out
    with pytest.raises(ValueError):
        sc.run_scaling(lengths=(0,), out=None, progress=False)


def test_the_long_run_honours_time_limit_from_the_command_line(tmp_path):
    """Issue 22: `bench scaling --long N --time-limit S` stops the long run after S seconds (before:
    --time-limit reached only the scaling points, and a window ran to its end even past the limit)."""
    parser = argparse.ArgumentParser()
    sc.add_scaling_arguments(parser)
    args = parser.parse_args(["--no-scaling", "--long", "50000000", "--time-limit", "0.5", "--device", "cpu",
                              "--mixers", "inverted", "--long-plain", "--d-model", "16", "--threads", "1",
                              "--out", str(tmp_path)])
    started = time.perf_counter()
    sc.run_scaling_cli(args)
    assert time.perf_counter() - started < 60  # 50M tokens would take hours
    result = json.loads((tmp_path / "long-context-cpu-1thread.json").read_text())
    run = result["runs"]["inverted"]
    assert run["stopped_early"] and result["settings"]["time_limit_s_per_mixer"] == 0.5
    assert 0 < run["tokens_done"] < 5_000_000  # stopped inside the first window (5M tokens)
    assert sum(w["window_tokens"] for w in run["windows"]) == run["tokens_done"]
