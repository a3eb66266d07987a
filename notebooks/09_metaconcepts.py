# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 09 · Metaconcepts: grounded in System 1, learned by System 2 through reinforcement
#
# The VCML question (Han et al., NeurIPS 2019): can a learner that has *seen* a concept, but
# never been told how it relates to other concepts, answer metaconcept questions about it -
# is `w62` a synonym of `w92`? are `w1` and `w72` the same kind of attribute? - from what its
# perception grounded? And the proof-depth question of the issue: trained on is-a chains of
# one or two hops, does it answer chains of six?
#
# * **The world** (`workbench/symbolic/metaconcept_world.py`): perceptual words (attribute
#   values, leaf categories; some with a second name) that System 1 sees in observations
#   `p3 p9 p0 p12 ? w17 yes ? w4 no ...`, and abstract categories known only through `x is-a y`
#   facts. Held-out words appear in observations but in no fact and no training query.
# * **System 1** is a small `workbench.model` with the seeking mixer, trained by backprop on the
#   token sequences. An **extractor** (a small MLP, backprop) reads its hidden state at a word
#   asked about an instance and says whether the word applies; applied to a fixed set of probe
#   instances it gives every word a *denotation* - what System 2 knows about a word.
# * **System 2** (`workbench/symbolic/metaconcept_policy.py`) proves with primitive actions -
#   `hop` (follow an is-a fact), `alias` (move to the word System 1 grounds most alike),
#   `compare` (look at the overlap of two denotations), `yes`, `no` - chosen step by step by a
#   policy trained by REINFORCE with a learned baseline, rewarded only at the end of a proof.
#   No metaconcept rule is given, and the policy never sees how many steps it has taken.
#
# Rows beside every number: the same policy on the generator's true denotations (oracle facts),
# the untrained policy, the simplest fixed rule (a depth-2 proof; "no" for the other
# metaconcepts), "always no", and System 1 alone answering `? kind a b` directly. Numbers come
# from `results/system2-metaconcepts-<budget>.json`, written by
# `python -m workbench.symbolic.metaconcepts --budget full --seeds 3 --results results`.
# With `smoke = True` (the tests) the experiment runs live at its smoke budget in a temporary
# directory: the numbers are then meaningless, only the path is exercised.

# %% tags=["parameters"]
smoke = False  # True: run the experiment live at the smoke budget in a temp dir (numbers meaningless)
results_dir = "results"  # where `python -m workbench.symbolic.metaconcepts` wrote system2-metaconcepts-<budget>.json
budget = "full"  # the budget to show; falls back to demo, then smoke, when its file is missing

# %%
import json
import tempfile
import time
from pathlib import Path

import plotly.graph_objects as go
from IPython.display import Markdown, display

from workbench.plotting import save_figure
from workbench.symbolic.metaconcept_world import CATEGORY_KIND, make_world
from workbench.symbolic.metaconcepts import run_metaconcepts

notebook_started = time.perf_counter()
FORMATS = ("html",) if smoke else ("html", "png")  # PNG export takes seconds a figure: not in smoke runs
PALETTE = {"system2 (S1-grounded)": "#2ca02c", "system2 (oracle facts)": "#98df8a",
           "system2 untrained (S1-grounded)": "#7f7f7f", "fixed depth-2 proof": "#ff7f0e", "always no": "#c7c7c7",
           "system1 alone": "#d62728"}


def markdown_table(header, rows) -> None:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    display(Markdown("\n".join(lines)))


if smoke:
    results_path = Path(tempfile.mkdtemp(prefix="workbench-09-"))
    started = time.perf_counter()
    summary = run_metaconcepts("smoke", 1, results_path)
    print(f"smoke: ran the metaconcept experiment live into {results_path} in {time.perf_counter() - started:.1f}s")
else:
    results_path = Path(results_dir)
    candidates = [budget] + [b for b in ("demo", "smoke") if b != budget]
    found = [b for b in candidates if (results_path / f"system2-metaconcepts-{b}.json").is_file()]
    if not found:
        raise FileNotFoundError(
            f"no system2-metaconcepts-<budget>.json in {results_path.resolve()}; run `python -m "
            f"workbench.symbolic.metaconcepts --budget {budget} --seeds 3 --results {results_dir}` or set smoke = True")
    if found[0] != budget:
        display(Markdown(f"**No `system2-metaconcepts-{budget}.json` in `{results_path}`**: showing `{found[0]}`."))
    summary = json.loads((results_path / f"system2-metaconcepts-{found[0]}.json").read_text())
print(f"budget {summary['budget']}, {summary['seeds']} seed(s), {summary['seconds']:.0f}s on {summary['device']}, "
      f"commit {str(summary['git_commit'])[:10]}")
rows = {row["system"]: row for row in summary["rows"]}
SLICES = summary["slices"]
HELDOUT = [s for s in SLICES if s.startswith("heldout")]
DEPTHS = [s for s in SLICES if s.startswith("is-a depth")]
MAIN, ORACLE, UNTRAINED, FIXED, NO_ROW, S1 = (row["system"] for row in summary["rows"])


def mean(system: str, s: str) -> float:
    return rows[system]["accuracy"][s]["mean"]


def cell(system: str, s: str) -> str:
    acc = rows[system]["accuracy"][s]
    text = f"{acc['mean']:.2f}" + (f" ± {acc['std']:.2f}" if acc["n"] > 1 else "")
    steps = rows[system]["steps"][s]["mean"]
    return text + (f" ({steps:.1f})" if steps else "")


# %% [markdown]
# ## 1 · Every row on every slice
#
# Accuracy (mean ± std over seeds; in parentheses the mean proof steps). Every slice is balanced
# (half "yes"), so 0.50 is chance; "always no" shows it. Held-out slices ask about words that
# were never in a fact or a training query; `is-a depth d` asks whether a concept is a kind of
# the category d levels above it (training: d = 1-2 only).

# %%
markdown_table(["system"] + SLICES, [[name] + [cell(name, s) for s in SLICES] for name in rows])
print("trained on:", ", ".join(summary["train_slices"]))
print("grounding (System 1 + extractor):",
      ", ".join(f"{k} {v['mean']:.3f}" for k, v in summary["grounding"].items()))
print("world (seed 0):", json.dumps(summary["per seed"][0]["world"]))

# %% [markdown]
# ## 2 · Held-out metaconcepts (the VCML test)

# %%
fig = go.Figure()
for name in rows:
    fig.add_trace(go.Bar(x=HELDOUT, y=[mean(name, s) for s in HELDOUT], name=name, marker_color=PALETTE.get(name),
                         error_y={"type": "data", "array": [rows[name]["accuracy"][s]["std"] for s in HELDOUT]}))
target = summary["targets"]["heldout metaconcepts"]
fig.add_hline(y=target["target"], line_dash="dash", annotation_text=f"target {target['target']}")
fig.update_layout(barmode="group", yaxis={"range": [0, 1.05], "title": "accuracy"}, height=420, width=1000,
                  title=f"Metaconcept queries about held-out words, budget {summary['budget']}")
save_figure(fig, "09_metaconcepts_heldout", FORMATS)
fig.show()

# %% [markdown]
# ## 3 · The depth curve: trained on 1-2 hops, tested on 1-6

# %%
depth_numbers = [int(s.rsplit(" ", 1)[1]) for s in DEPTHS]
fig = go.Figure()
for name in rows:
    fig.add_trace(go.Scatter(x=depth_numbers, y=[mean(name, s) for s in DEPTHS], mode="lines+markers", name=name,
                             line={"color": PALETTE.get(name), "width": 3 if name == MAIN else 2},
                             error_y={"type": "data", "array": [rows[name]["accuracy"][s]["std"] for s in DEPTHS]}))
fig.add_vrect(x0=0.5, x1=2.5, fillcolor="grey", opacity=0.12, line_width=0, annotation_text="training depths")
fig.update_layout(xaxis_title="is-a depth (hops)", yaxis={"range": [0, 1.05], "title": "accuracy"}, height=420,
                  width=1000, title=f"is-a chains by depth, budget {summary['budget']}")
save_figure(fig, "09_metaconcepts_depth", FORMATS)
fig.show()
markdown_table(["system"] + DEPTHS, [[name] + [f"{mean(name, s):.2f}" for s in DEPTHS] for name in rows])

# %% [markdown]
# ## 4 · A learned proof, step by step
#
# Proofs of the trained, System 1-grounded policy (seed 0), with each word's role in the
# generated world beside it; `compare` shows the evidence it looked at: (Jaccard, overlap
# coefficient, share of the current word's denotation inside the target's, and the reverse).

# %%
run0 = summary["per seed"][0]
world = make_world(run0["seed"])


def role(word: str) -> str:
    if word in world.level:
        kind = "leaf" if word in world.leaves else "abstract"
        return f"{word} ({kind} category, level {world.level[word]})"
    kind, value = world.meaning[word]
    what = f"second name of leaf {world.leaf_of(word)}" if kind == CATEGORY_KIND else f"attribute kind {kind} value {value}"
    return f"{word} ({what}{', held out' if word in world.heldout else ''})"


for name, trace in run0["traces"].items():
    q = trace["query"]
    print(f"[{name}] {q['kind']}({role(q['subject'])}, {role(q['target'])})? truth: {'yes' if q['label'] else 'no'}")
    for step in trace["steps"]:
        move = f" -> {role(step['to'])}" if step["to"] != step["from"] else ""
        evidence = f" evidence {step['evidence']}" if step["evidence"] is not None else ""
        print(f"   {step['step']:2d}. {step['action']:8s}{move}{evidence}")
    print()

# %% [markdown]
# ## 5 · The reward curve of REINFORCE
#
# Mean reward per update (1 for a right answer, minus 0.01 per step), mean ± std over seeds.

# %%
curve = summary["reward curve"]
x = list(range(1, len(curve["mean"]) + 1))
upper = [m + s for m, s in zip(curve["mean"], curve["std"])]
lower = [m - s for m, s in zip(curve["mean"], curve["std"])]
fig = go.Figure([
    go.Scatter(x=x + x[::-1], y=upper + lower[::-1], fill="toself", fillcolor="rgba(44,160,44,0.2)",
               line={"width": 0}, name="± std", hoverinfo="skip"),
    go.Scatter(x=x, y=curve["mean"], line={"color": PALETTE[MAIN]}, name="mean reward"),
])
fig.update_layout(xaxis_title="REINFORCE update", yaxis_title="reward", height=380, width=1000,
                  title="Reward of the S1-grounded proof policy during training")
save_figure(fig, "09_metaconcepts_reward", FORMATS)
fig.show()

# %% [markdown]
# ## Findings (computed from the numbers above)

# %%
heldout = summary["targets"]["heldout metaconcepts"]
deep = summary["targets"]["is-a depth 6"]
findings = [
    f"Held-out metaconcept queries: **{heldout['value']:.2f}** for the S1-grounded System 2 (target "
    f"{heldout['target']}: {'met' if heldout['met'] else 'missed'}); per slice "
    + ", ".join(f"{s} {v:.2f}" for s, v in heldout["per slice"].items())
    + f". With the true denotations (oracle facts): {sum(mean(ORACLE, s) for s in HELDOUT) / len(HELDOUT):.2f}; "
    f"untrained policy {sum(mean(UNTRAINED, s) for s in HELDOUT) / len(HELDOUT):.2f}; "
    f"System 1 alone {sum(mean(S1, s) for s in HELDOUT) / len(HELDOUT):.2f}; always no "
    f"{sum(mean(NO_ROW, s) for s in HELDOUT) / len(HELDOUT):.2f}.",
    f"is-a at depth 6 after training on depths 1-2: **{deep['value']:.2f}** (target {deep['target']}: "
    f"{'met' if deep['met'] else 'missed'}); the fixed depth-2 proof {mean(FIXED, 'is-a depth 6'):.2f} "
    f"(it is {mean(FIXED, 'is-a depth 2'):.2f} at depth 2), the untrained policy {mean(UNTRAINED, 'is-a depth 6'):.2f}, "
    f"System 1 alone {mean(S1, 'is-a depth 6'):.2f}. Mean proof length at depth 6: "
    f"{rows[MAIN]['steps']['is-a depth 6']['mean']:.1f} steps against {rows[MAIN]['steps']['is-a depth 1']['mean']:.1f} "
    "at depth 1: the policy decides the depth by itself.",
    "Gap between the S1-grounded and the oracle row (what imperfect grounding costs): "
    + ", ".join(f"{s} {mean(ORACLE, s) - mean(MAIN, s):+.2f}" for s in HELDOUT)
    + f"; the extractor reads System 1 right on {summary['grounding']['extractor accuracy']['mean']:.1%} of questions.",
    f"Training vs no training (S1-grounded, all slices): {sum(mean(MAIN, s) for s in SLICES) / len(SLICES):.2f} vs "
    f"{sum(mean(UNTRAINED, s) for s in SLICES) / len(SLICES):.2f}; the reward rose from {curve['mean'][0]:.2f} to "
    f"{sum(curve['mean'][-20:]) / min(20, len(curve['mean'])):.2f}.",
]
display(Markdown("\n".join(f"* {line}" for line in findings)))
print(f"notebook ran in {time.perf_counter() - notebook_started:.1f}s")
