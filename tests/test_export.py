"""Edge export: the ONNX graph of ``Model.step`` against PyTorch, the torch-free runtime, clear errors.

Three small char-LM checkpoints of today's model (every block with its short-conv front end, state
{"conv", "mixer"}): inverted with 8 units, so its ring wraps many times in 300 steps; seeking (the
round-2 mechanism: units that bid and rest, constant-size slot memories); and the transformer, whose
KV cache is a growing input. Each is trained for a few steps on a made-up corpus, its weights
scrambled (gates flip, units get evicted), and exported once per module.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_text, scramble

from workbench.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from workbench.cli import main
from workbench.config import RunConfig
from workbench.train import train

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from workbench.export.manifest import ExportError, read_manifest  # noqa: E402
from workbench.export.onnx_export import describe_state, export_checkpoint, state_to_arrays  # noqa: E402
from workbench.export.runtime import OnnxStepper, bits_per_char, generate  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
N_UNITS = 8
OPTIONS = {
    "inverted": {"n_units": N_UNITS, "read_topk": 2, "chunk_size": 6, "d_key": 8, "n_freq": 4},
    "seeking": {"n_heads": 2, "n_units": 6, "chunk_size": 4, "recovery": 4.0},
    "transformer": {"n_heads": 2},
}
EXPORTED_MIXERS = ("inverted", "seeking", "transformer")


def _checkpoint(root: Path, mixer: str) -> Path:
    corpus = root / "corpus.txt"
    if not corpus.exists():
        corpus.write_text(make_text(6000, seed=3), encoding="utf-8")
    config = RunConfig.from_dict({
        "task": {"name": "charlm", "options": {"path": str(corpus), "context": 32}},
        "model": {"mixer": mixer, "d_model": 16, "n_layers": 2, "mlp_ratio": 2, "mixer_options": OPTIONS[mixer]},
        "train": {"steps": 2, "batch_size": 4, "warmup_steps": 1, "eval_every": 2, "checkpoint_every": 2},
    })
    out = root / mixer
    train(config, out_dir=out, progress=False)
    path = out / "checkpoint.pt"
    payload = load_checkpoint(path)
    model, _, _, _ = model_from_checkpoint(path)
    scramble(model, std=0.4, seed=1)
    payload["model"] = model.state_dict()
    save_checkpoint(path, payload)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{mixer: (checkpoint, export directory)} for every mixer in EXPORTED_MIXERS, fp32."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("edge")
    out = {}
    for mixer in EXPORTED_MIXERS:
        ckpt = _checkpoint(root, mixer)
        directory = root / f"{mixer}-onnx"
        export_checkpoint(ckpt, directory)
        out[mixer] = (ckpt, directory)
    return out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("workbench: error: ")
    return lines[0]


# ----------------------------------------------------------------------------- round trip


@torch.no_grad()
@pytest.mark.parametrize("mixer,steps", [("inverted", 300), ("seeking", 300), ("transformer", 60)])
def test_onnx_step_equals_model_step(exported, mixer, steps):
    """Every step's logits and every state leaf, from the initial state, within 1e-5; the
    inverted ring (8 units) wraps many times, the seeking units' load and slots stay constant-size,
    the transformer's cache grows from empty; every block's short-conv window is part of the state."""
    ckpt, directory = exported[mixer]
    model, _, _, _ = model_from_checkpoint(ckpt)
    stepper = OnnxStepper(directory, threads=1)
    entries = stepper.manifest["state"]
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, model.io.vocab_size, size=steps)
    state, arrays = model.init_state(1), stepper.init_state(1)
    for t, token in enumerate(tokens):
        logits, state = model.step(torch.tensor([int(token)]), state)
        onnx_logits, arrays = stepper.step(np.array([token]), arrays)
        np.testing.assert_allclose(onnx_logits, logits.numpy(), atol=1e-5, rtol=0, err_msg=f"logits at step {t}")
        expected = state_to_arrays(state, entries)
        assert len(arrays) == len(expected)
        for entry, ours, theirs in zip([e for e in entries if e["kind"] != "none"], arrays, expected):
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, entry["name"]
            if ours.dtype == bool:
                assert (ours == theirs).all(), f"{entry['name']} at step {t}"
            else:
                np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0, err_msg=f"{entry['name']} at step {t}")
    names = [e["name"] for e in entries if e["kind"] != "none"]
    assert model.config.short_conv > 1 and "0.conv" in names and "1.conv" in names  # today's front end
    if mixer == "inverted":  # the ring wrapped: more writes than units, in every block
        counts = [a for e, a in zip(entries, arrays) if e["name"].endswith("count")]
        assert counts and all(float(c.max()) > 2 * N_UNITS for c in counts)
        assert all(e["dtype"] == "float64" for e in entries if e["name"].endswith(("count", "pointer", "fired_at")))
    elif mixer == "seeking":  # constant-size state; the units' load moved off zero
        assert all(e.get("growing_axis") is None for e in entries)
        loads = [a for e, a in zip([e for e in entries if e["kind"] != "none"], arrays) if e["name"].endswith("load")]
        assert len(loads) == 2 and all(float(a.max()) > 0 for a in loads)
    else:  # the KV cache grew by one per step
        grown = [(e, a) for e, a in zip([e for e in entries if e["kind"] != "none"], arrays)
                 if e.get("growing_axis") is not None]
        assert grown and all(a.shape[e["growing_axis"]] == steps for e, a in grown)


def test_manifest_describes_the_state(exported):
    ckpt, directory = exported["inverted"]
    manifest = read_manifest(directory)
    model, _, _, payload = model_from_checkpoint(ckpt)
    entries, _ = describe_state(model)
    assert [e["name"] for e in manifest["state"]] == [e["name"] for e in entries]
    assert manifest["vocabulary"]["chars"] == payload["task_state"]["chars"]
    assert manifest["model_config"]["mixer"] == "inverted" and manifest["graph"]["quantize"] is None
    assert manifest["data"]["sha256"] and manifest["checkpoint"]["sha256"]
    assert manifest["verification"]["max_abs_diff_logits"] < 1e-5
    assert all(e["batch_axis"] == 0 for e in manifest["state"] if e["kind"] == "tensor")
    _, tr_dir = exported["transformer"]
    growing = [e for e in read_manifest(tr_dir)["state"] if e.get("growing_axis") is not None]
    assert growing and all(e["shape"][e["growing_axis"]] == "context" for e in growing)
    assert any(e["kind"] == "int" for e in read_manifest(tr_dir)["state"])  # the position counter


def test_batched_bpc_equals_pytorch(exported):
    """The recurrent graph at batch > 1 scores the validation windows as the parallel PyTorch form."""
    ckpt, directory = exported["inverted"]
    model, _, task, _ = model_from_checkpoint(ckpt)
    windows = task.val_windows()
    ours = bits_per_char(OnnxStepper(directory), windows.inputs.numpy(), windows.targets.numpy(), batch=7)
    assert ours["bpc"] == pytest.approx(task.evaluate(model)["bpc"], abs=1e-5)


# ----------------------------------------------------------------------------- generation


@pytest.mark.parametrize("mixer", EXPORTED_MIXERS)
def test_greedy_generation_identical_across_runtimes(exported, mixer, capsys):
    ckpt, directory = exported[mixer]
    common = ["--prompt", "the king ", "--n", "80", "--temperature", "0"]
    assert main(["generate", str(ckpt), *common]) == 0
    torch_text = capsys.readouterr().out
    assert main(["generate", str(directory), "--runtime", "onnx", *common]) == 0
    assert capsys.readouterr().out == torch_text
    assert len(torch_text.rstrip("\n")) == len("the king ") + 80


def test_sampling_options_on_the_onnx_runtime(exported):
    _, directory = exported["inverted"]
    stepper = OnnxStepper(directory)
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    a = generate(stepper, prompt, 40, temperature=0.8, top_k=3, seed=5)
    b = generate(stepper, prompt, 40, temperature=0.8, top_k=3, seed=5)
    assert a.shape == (2, 43) and (a == b).all() and (a[:, :3] == prompt).all()
    assert not (generate(stepper, prompt, 40, temperature=5.0, seed=6) == a).all()
    with pytest.raises(ValueError, match="temperature"):
        generate(stepper, prompt, 3, temperature=-1)


def test_onnx_generate_does_not_import_torch(exported):
    _, directory = exported["transformer"]
    code = ("import sys; from workbench.cli import main; "
            f"rc = main(['generate', {str(directory)!r}, '--runtime', 'onnx', '--n', '5', '--prompt', 'the']); "
            "assert rc == 0, rc; assert 'torch' not in sys.modules, 'torch was imported'; print('OK')")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("OK")


# ----------------------------------------------------------------------------- int8


def test_int8_export_runs_and_is_smaller(exported, tmp_path, capsys):
    ckpt, directory = exported["inverted"]
    out = tmp_path / "int8"
    assert main(["export", str(ckpt), "--format", "onnx", "--quantize", "int8", "--out", str(out)]) == 0
    assert "exported" in capsys.readouterr().out
    manifest = read_manifest(out)
    assert manifest["graph"]["quantize"] == "int8" and manifest["graph"]["quantization"]["weight_type"] == "QInt8"
    # tiny d_model: the int8 weights are a smaller part of the file, but it still shrinks
    assert manifest["graph"]["bytes"] < read_manifest(directory)["graph"]["bytes"]
    fp32, int8 = OnnxStepper(directory), OnnxStepper(out)
    tokens = np.array([3])
    (a, _), (b, _) = fp32.step(tokens, fp32.init_state(1)), int8.step(tokens, int8.init_state(1))
    assert np.isfinite(b).all() and np.abs(a - b).max() < 0.5 * np.abs(a).max() + 1e-3


# ----------------------------------------------------------------------------- clear errors


def test_bad_export_directories_get_one_clear_line(exported, tmp_path, capsys):
    _, inv_dir = exported["inverted"]
    _, tr_dir = exported["transformer"]

    def fails(directory, *match):
        assert main(["generate", str(directory), "--runtime", "onnx", "--n", "3"]) == 2
        line = _error_line(capsys)
        for m in match:
            assert m in line, line

    fails(tmp_path / "nowhere", "does not exist")
    (tmp_path / "empty").mkdir()
    fails(tmp_path / "empty", "no manifest.json", "workbench export")
    broken = tmp_path / "broken"
    shutil.copytree(inv_dir, broken)
    (broken / "manifest.json").write_text("{not json")
    fails(broken, "not valid JSON")

    swapped = tmp_path / "swapped"  # another export's graph dropped in
    shutil.copytree(inv_dir, swapped)
    shutil.copy(tr_dir / "model.onnx", swapped / "model.onnx")
    fails(swapped, "does not match its manifest", "another export")
    manifest = json.loads((swapped / "manifest.json").read_text())  # ... and the hash edited to match
    manifest["graph"]["sha256"] = __import__("hashlib").sha256((swapped / "model.onnx").read_bytes()).hexdigest()
    (swapped / "manifest.json").write_text(json.dumps(manifest))
    fails(swapped, "do not match the manifest", "different exports")

    incomplete = tmp_path / "incomplete"
    shutil.copytree(inv_dir, incomplete)
    (incomplete / "init_state.npz").unlink()
    fails(incomplete, "incomplete")
    other = tmp_path / "other-runtime"
    shutil.copytree(inv_dir, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["runtime"] = "executorch"
    (other / "manifest.json").write_text(json.dumps(manifest))
    fails(other, "runtime 'executorch'")

    assert main(["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in _error_line(capsys)
    with pytest.raises(ExportError):
        read_manifest(inv_dir / "model.onnx")


def test_state_leaves_that_are_not_tensors_are_handled_or_refused():
    from workbench.export.onnx_export import leaf_kind
    from workbench.model import Model, TaskIO

    assert leaf_kind(None, "x") == "none" and leaf_kind(3, "x") == "int" and leaf_kind(0.5, "x") == "float"
    with pytest.raises(ExportError, match="'x' is a str"):
        leaf_kind("text", "x")
    config = RunConfig.from_dict({"model": {"mixer": "inverted", "d_model": 16, "mixer_options": {
        "n_units": 4, "read_topk": 2, "timescales": []}}}).model
    entries, _ = describe_state(Model(config, TaskIO("tokens", "lm", vocab_size=5)))
    assert any(e["kind"] == "none" and "input" not in e for e in entries)  # ema is None without timescales


# ----------------------------------------------------------------------------- ExecuTorch (optional extra)


def test_executorch_target(exported, tmp_path, capsys):
    """Skipped unless the optional executorch package is installed (pip install -e '.[executorch]')."""
    pytest.importorskip("executorch.exir")
    from workbench.export.executorch_export import ExecutorchStepper

    ckpt, _ = exported["inverted"]
    out = tmp_path / "et"
    assert main(["export", str(ckpt), "--format", "executorch", "--out", str(out)]) == 0
    capsys.readouterr()
    model, _, _, _ = model_from_checkpoint(ckpt)
    stepper = ExecutorchStepper(out, threads=1)
    state, arrays = model.init_state(1), stepper.init_state(1)
    with torch.no_grad():
        for t in range(300):  # across ring wraps, as the ONNX graph
            logits, state = model.step(torch.tensor([t % model.io.vocab_size]), state)
            ours, arrays = stepper.step(np.array([t % model.io.vocab_size]), arrays)
            np.testing.assert_allclose(ours, logits.numpy(), atol=1e-5, rtol=0, err_msg=f"step {t}")
    common = ["--prompt", "the ", "--n", "40", "--temperature", "0"]
    assert main(["generate", str(ckpt), *common]) == 0
    torch_text = capsys.readouterr().out
    assert main(["generate", str(out), "--runtime", "executorch", *common]) == 0
    assert capsys.readouterr().out == torch_text
    tr_ckpt, _ = exported["transformer"]
    assert main(["export", str(tr_ckpt), "--format", "executorch", "--out", str(tmp_path / "et-tr")]) == 2
    assert "constant-size states only" in _error_line(capsys)


@torch.no_grad()
def test_nested_state_layout_is_named_by_key_paths(tmp_path):
    """The model's state (per block {"conv": window, "mixer": mixer state}, an int position inside the
    transformer's) exports and round-trips: names come from the key paths, not from known keys."""
    from workbench.export.onnx_export import export_model
    from workbench.model import Model, TaskIO

    config = RunConfig.from_dict({"model": {"mixer": "transformer", "d_model": 16, "n_layers": 2, "short_conv": 3,
                                            "mixer_options": OPTIONS["transformer"]}}).model
    model = scramble(Model(config, TaskIO("tokens", "lm", vocab_size=9)), seed=2).eval()
    manifest = export_model(model, tmp_path / "nested")
    names = [e["name"] for e in manifest["state"]]
    assert names == ["0.conv", "0.mixer.k", "0.mixer.v", "0.mixer.position",
                     "1.conv", "1.mixer.k", "1.mixer.v", "1.mixer.position"]
    stepper = OnnxStepper(tmp_path / "nested")
    state, arrays = model.init_state(1), stepper.init_state(1)
    for t in range(20):
        logits, state = model.step(torch.tensor([t % 9]), state)
        ours, arrays = stepper.step(np.array([t % 9]), arrays)
        np.testing.assert_allclose(ours, logits.numpy(), atol=1e-5, rtol=0)
    assert int(arrays[names.index("0.mixer.position")]) == 20


# ----------------------------------------------------------------------------- bench edge


def test_bench_cells_run_in_fresh_processes(exported, tmp_path):
    """One ONNX per-token cell (no torch in its process) and one context sweep of the transformer
    (its KV cache grows with the context, the state bytes say so)."""
    from workbench.export.bench import _spawn

    inv_ckpt, inv_dir = exported["inverted"]
    tr_ckpt, tr_dir = exported["transformer"]
    np.save(tmp_path / "tokens.npy", np.arange(64) % 9)
    common = {"tokens": str(tmp_path / "tokens.npy"), "work": str(tmp_path), "warmup": 2, "threads": 1}
    cell = _spawn({**common, "kind": "per_token", "runtime": "onnx-fp32", "checkpoint": str(inv_ckpt),
                   "export": str(inv_dir), "context": 256, "steps": 5}, timeout_s=120)
    assert cell["status"] == "ok", cell
    assert cell["torch_imported"] is False and cell["steps"] == 5 and cell["median_us"] > 0
    assert cell["peak_rss_bytes"] >= cell["rss_after_import_bytes"] > 0
    sweep = _spawn({**common, "kind": "by_context", "runtime": "eager", "checkpoint": str(tr_ckpt),
                    "export": str(tr_dir), "contexts": [4, 16], "steps": 3}, timeout_s=120)
    assert sweep["status"] == "ok", sweep
    assert sweep["torch_imported"] is True
    small, large = sweep["points"]
    assert large["state_bytes"] > small["state_bytes"] > 0
    paired = _spawn({**common, "kind": "paired", "models": ["inverted", "transformer"], "exports": [str(inv_dir), str(tr_dir)],
                     "contexts": [4, 16], "steps": 4}, timeout_s=120)
    assert paired["status"] == "ok", paired
    assert paired["torch_imported"] is False and [p["context"] for p in paired["points"]] == [4, 16]
    for point in paired["points"]:
        assert point["inverted"]["steps"] == point["transformer"]["steps"] == 25  # one block each, the minimum
        assert point["blocks"] == 1 and point["inverted_faster_blocks"] in (0, 1)
    profile = _spawn({**common, "kind": "profile", "export": str(inv_dir), "context": 256, "steps": 4}, timeout_s=120)
    assert profile["status"] == "ok", profile
    assert profile["torch_imported"] is False and profile["nodes_per_step"] > 10
    assert sum(v["nodes_per_step"] for v in profile["per_op"].values()) == pytest.approx(profile["nodes_per_step"])


def test_edge_report_block_renders(tmp_path):
    from workbench.export.bench import edge_markdown
    from workbench.report import render_blocks

    committed = sorted((REPO / "results").glob("edge-*.json"))
    assert committed, "results/edge-cpu.json (make bench-edge) is committed and must render"
    data = json.loads(committed[0].read_text())
    text = edge_markdown(data)
    assert "onnx-fp32" in text and "Targets:" in text and "load average" in text
    shutil.copy(committed[0], tmp_path / committed[0].name)
    assert render_blocks(tmp_path)[committed[0].stem] == text
