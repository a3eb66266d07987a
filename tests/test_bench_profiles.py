"""``workbench bench memory`` and ``workbench bench decode``: what they measure, at toy sizes."""

from __future__ import annotations

import json

import pytest

from workbench.bench.decode_pair import decode_markdown, format_decode_table, run_decode_pair
from workbench.bench.memory_profile import live_peak, profile_point
from workbench.cli import main

TOY = dict(d_model=16, mlp_ratio=2, tokens_per_batch=256)


def test_live_peak_counts_the_tensors_alive_at_once():
    import torch

    def two_then_one():
        a = torch.empty(2**20, dtype=torch.uint8)  # 1 MiB
        b = torch.empty(2**20, dtype=torch.uint8)
        del a
        c = torch.empty(2**19, dtype=torch.uint8)  # fits where a was: the peak stays 2 MiB
        return b, c

    result = live_peak(two_then_one)
    assert result["peak_live_bytes"] == 2 * 2**20
    assert sum(group["tensors"] for group in result["at_peak"]) == 2


def test_inverted_training_peak_is_below_its_plain_forms_and_prefill_below_training():
    train = profile_point("inverted", 64, "train", **TOY)
    plain = profile_point("inverted", 64, "train", plain=True, **TOY)
    prefill = profile_point("inverted", 64, "prefill", **TOY)
    assert (train["variant"], plain["variant"], train["batch"]) == ("default", "plain_forms", 4)
    assert 0 < prefill["peak_live_bytes"] < train["peak_live_bytes"] < plain["peak_live_bytes"]


def test_memory_command_writes_every_point(tmp_path):
    main(["bench", "memory", "--mixers", "inverted,transformer", "--lengths", "32", "--phases", "prefill",
          "--d-model", "16", "--mlp-ratio", "2", "--tokens-per-batch", "64", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "memory-profile-cpu-1thread.json").read_text())
    assert [(p["mixer"], p["variant"]) for p in result["points"]] == [
        ("inverted", "default"), ("inverted", "plain_forms"), ("transformer", "default")]
    assert result["complete"] and all(p["peak_live_bytes"] > 0 for p in result["points"])


@pytest.mark.parametrize("argv, message", [
    (["--mixers", "nope"], "unknown mixer"),
    (["--phases", "decode"], "--phases"),
    (["--lengths", "1,x"], "--lengths"),
])
def test_memory_command_rejects_bad_arguments(argv, message, capsys):
    assert main(["bench", "memory", *argv]) == 2  # one line, no traceback
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_decode_side_by_side_times_each_variant_in_rounds(tmp_path):
    """The inverted step with its state written in place against the same step with it copied (two quick compiles)."""
    quick = {"cpp_wrapper": False, "max_autotune": False, "freezing": False}
    result = run_decode_pair(("inverted",), 8, 2, 3, d_model=16, mlp_ratio=2, backend="compile", out=tmp_path,
                             options=quick, reference="inverted", batch=2)  # fmt: skip
    variants = result["variants"]
    assert list(variants) == ["inverted", "inverted (state copied)"]
    assert variants["inverted"]["state_in_place"] and not variants["inverted (state copied)"]["state_in_place"]
    for record in variants.values():
        assert record["max_abs_diff_vs_plain"] < 1e-5 and len(record["round_median_s"]) == 2
    ratio = variants["inverted (state copied)"]["ratio_vs_inverted"]
    assert ratio["rounds"] == 2 and ratio["min"] <= ratio["median"] <= ratio["max"]
    assert "state copied" in format_decode_table(result)
    assert (tmp_path / "decode-side-by-side-cpu-1thread-n8-batch2.json").exists()  # n and batch in the name
    table = decode_markdown(result).splitlines()  # the report block: a row per variant, the reference named
    assert len(table) == 2 + 2 + 2 and "| reference |" in "".join(table) and "batch 2" in table[-1]


def test_the_price_of_the_memory_saving_forms_is_timed_side_by_side():
    from workbench.bench.memory_profile import time_inverted_forms

    timing = time_inverted_forms(32, 2, d_model=16, mlp_ratio=2, tokens_per_batch=64)
    assert [len(timing["times_s"][k]) for k in ("default", "plain_forms")] == [2, 2]
    ratio = timing["ratio_default_over_plain"]
    assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"]
