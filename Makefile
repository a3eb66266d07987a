# Two set-up commands on a fresh machine: `make demo` and `make test`.
# Every target creates the virtual environment first when it is missing.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Data directory: an explicit WORKBENCH_DATA_DIR wins; else ../shared/data when it exists.
ifeq ($(origin WORKBENCH_DATA_DIR), undefined)
  ifneq ($(wildcard ../shared/data),)
    export WORKBENCH_DATA_DIR := $(abspath ../shared/data)
  endif
endif

.PHONY: venv demo test test-slow lab notebooks notebooks-smoke figures bench ablation bench-scaling bench-memory bench-decode bench-edge lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch pinned: this machine's on-disk CPU build (a bare `torch` would pull CUDA).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[notebooks,kernels,dev,edge]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

demo: venv  ## the main comparison, small, trained fresh into runs/demo-<time> and printed beside the reference
	$(PY) -m workbench.cli demo

test: venv  ## the full default suite (slow-marked tests excluded)
	$(PY) -m pytest -q

test-slow: venv
	$(PY) -m pytest -q -m slow

lab: venv  ## JupyterLab on notebooks/: the NN_name.py sources open as notebooks (project settings: .jupyter/lab/settings)
	$(PY) -m workbench.lab.jupyterlab

notebooks: venv  ## run every notebook at full parameters, render each to docs/site/<name>.html (offline), check the pages in headless Chromium
	$(PY) -m workbench.cli notebooks run --html
	$(PY) -m workbench.cli notebooks check

notebooks-smoke: venv  ## the same at smoke size, into notebooks/executed/ (minutes; numbers meaningless)
	OMP_NUM_THREADS=1 $(PY) -m workbench.cli notebooks run --smoke --html
	$(PY) -m workbench.cli notebooks check --site notebooks/executed/site

figures: notebooks  ## figures/*.png (scale 3) and *.svg come from the full notebook runs

EXPERIMENT ?= v2
BENCH_ARGS = --experiment $(EXPERIMENT) --budget full
JOBS ?= 1
bench: venv  ## the full protocol, 3 seeds; resumable (finished runs are skipped); JOBS=2: two single-threaded processes share the runs
	@if [ "$(JOBS)" -le 1 ]; then $(PY) -m workbench.cli compare $(BENCH_ARGS); else \
	  for i in $$(seq 2 $(JOBS)); do \
	    echo "bench job $$i: log in results/bench-job-$$i.log"; \
	    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m workbench.cli compare $(BENCH_ARGS) --quiet \
	      > results/bench-job-$$i.log 2>&1 & sleep 2; \
	  done; \
	  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m workbench.cli compare $(BENCH_ARGS); \
	  wait; $(PY) -m workbench.cli compare $(BENCH_ARGS) --quiet; fi

ablation: venv  ## the inverted mixer's switches at protocol v2's full budget -> results/compare-ablation-full.json
	$(MAKE) bench EXPERIMENT=ablation

SCALING_ARGS ?= --long 1000000 --long-dtypes float32,bfloat16

bench-scaling: venv  ## every mixer side by side: time, memory, fused decode, roofline, ESTIMATED energy vs length; a million tokens through every constant-state mixer -> results/scaling-<device>.json, results/long-context-<device>[-bf16].json (run it on a quiet machine: the JSON records the load average)
	@echo "load average now: $$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null) (times are only comparable on a quiet machine)"
	$(PY) -m workbench.cli bench scaling $(SCALING_ARGS)

bench-memory: venv  ## where an inverted and a transformer block's peak memory goes (live tensors by op, deterministic), and what the inverted's memory-saving forms cost in time -> results/memory-profile-<device>.json
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m workbench.cli bench memory --time-rounds 5

bench-decode: venv  ## fused decode, every mixer against the transformer at n = 256, in one process (alternating rounds), batch 1 and 64, and n = 4096 -> results/decode-side-by-side-<device>[-n4096][-batch64].json
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m workbench.cli bench decode --n 256 --rounds 20 --steps 64
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m workbench.cli bench decode --n 256 --rounds 10 --steps 32 --batch 64
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m workbench.cli bench decode --mixers transformer,seeking --n 4096 --rounds 10 --steps 32

# Two small char-LM checkpoints (trained here when missing, one thread, a few minutes each), then
# the edge benchmark: exported ONNX fp32/int8 vs eager PyTorch per token, and inverted vs
# transformer by context, in one run -> results/edge-<device>.json (`workbench report` renders it).
EDGE_CKPT ?= results/checkpoints/edge
EDGE_TRAIN = --task charlm --steps 300 --set train.eval_every=300 --set train.checkpoint_every=300 --quiet
EDGE_ARGS ?=

bench-edge: venv  ## per-token latency + peak memory: ONNX (fp32, int8) vs eager, inverted vs transformer at 256/4K/64K
	test -f $(EDGE_CKPT)-inverted/checkpoint.pt || OMP_NUM_THREADS=1 $(PY) -m workbench.cli train --mixer inverted $(EDGE_TRAIN) --out $(EDGE_CKPT)-inverted
	test -f $(EDGE_CKPT)-transformer/checkpoint.pt || OMP_NUM_THREADS=1 $(PY) -m workbench.cli train --mixer transformer $(EDGE_TRAIN) --out $(EDGE_CKPT)-transformer
	$(PY) -m workbench.cli bench edge --inverted $(EDGE_CKPT)-inverted/checkpoint.pt --transformer $(EDGE_CKPT)-transformer/checkpoint.pt $(EDGE_ARGS)

lint: venv
	$(VENV)/bin/ruff check workbench tests notebooks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache notebooks/executed
	rm -f docs/site/[0-9][0-9]_*.html
