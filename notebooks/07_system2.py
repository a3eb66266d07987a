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
# # 07 · System 2: a symbolic metaconcept learner next to the network
#
# System 1 is the sequence model of the rest of the workbench: fast, one forward pass of
# fixed depth, trained by backprop. System 2 (`workbench/symbolic/`) reads **the same token
# sequence**, writes it down as explicit timestamped facts, learns rules about its relations
# (inverse, composition, synonym, same-kind, is-a) by proposing hypotheses and keeping those
# that reward supports, and answers a question by running a small program step by step, with
# a trace. No gradient of the task loss reaches it: its program policy and its keep/drop
# decisions are trained by REINFORCE. A dual-process controller decides per query whether to
# answer fast (System 1) or to deliberate (System 2), paying a cost per deliberation step.
# The design and the Russian pseudocode are in `notebooks/00_design.py`, § 7.
#
# Four generated tasks, deterministic by seed (`workbench/symbolic/tasks.py`), each trained on
# easy cases and tested on harder ones:
#
# | task | question | trained on | tested on |
# |---|---|---|---|
# | `hops` | `? > > > a`: a's third successor in shuffled chains of `k v` pairs | 1-2 hops | 1-6 hops |
# | `kinship` | `? x z`: how is z related to x, through a chain of family facts (CLUTRR-style) | chains of 2-3 | 4-10 |
# | `temporal` | `? first x y`, `? after x` over a stream of events | 16-48 events | 64-256 |
# | `concepts` | `? o has w`, `? a same-kind b`, a new word seen once (VCML-style) | mixed | per kind, held-out words |
#
# What this notebook shows, in order:
#
# 1. **The table**: System 1 alone (inverted; transformer with 1 and 2 layers) vs System 1 +
#    System 2, by hop count / chain length, read from `results/system2-<budget>.json`
#    (written by `workbench compare --tasks hops,kinship,temporal,concepts --budget demo`).
# 2. **Why System 1 alone is at chance on `hops`** at the demo budget (a measurement, not a bug).
# 3. **The concept inventory**: discrete concepts grounded in System 1 (a k-means codebook over
#    the inverted model's hidden states), each with a readable label.
# 4. **The learned rules and metaconcepts**, readable, with precision and recall against the
#    generator's true rules.
# 5. **A reasoning trace**, step by step.
# 6. **Reward curves** of the REINFORCE program policy.
# 7. **The controller's trade-off**: accuracy against mean deliberation steps as the cost per
#    step varies.
#
# Sections 4 and 5 also fit System 2 live here (seconds: it trains no network), so the rule
# base and the traces can be inspected object by object. With `smoke = True` (the tests) the
# whole experiment runs live at its smoke budget in a temporary directory: the numbers are
# then meaningless, only the path is exercised.

# %% tags=["parameters"]
smoke = False  # True: run the System 2 experiment live at the smoke budget in a temp dir (numbers meaningless)
results_dir = "results"  # where `workbench compare --tasks hops,kinship,temporal,concepts` wrote system2-<budget>.json
budget = "demo"  # the budget to show; falls back to demo, then smoke, when its file is missing
live_episodes = 300  # training episodes of each live System 2 fit (sections 4-6)
seed = 0  # data and policy sampling of the live fits

# %%
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from IPython.display import Markdown, display
from plotly.subplots import make_subplots

from workbench.model import IGNORE
from workbench.plotting import save_figure
from workbench.symbolic.experiment import BUDGETS, answered, reward_curve, run_system2
from workbench.symbolic.policy import System2
from workbench.symbolic.rules import compare_rules
from workbench.symbolic.store import Store
from workbench.symbolic.tasks import KIN, KIN_NAMES, KINDS, NONCE, SYMBOLIC_TASKS, SYNONYM, kin_compose

notebook_started = time.perf_counter()
TASKS = tuple(SYMBOLIC_TASKS)
SYSTEM1 = ("inverted", "transformer-1L", "transformer-2L")
PALETTE = {"inverted": "#d62728", "transformer-1L": "#1f77b4", "transformer-2L": "#17becf", "system2": "#2ca02c",
           "system2+S1-concepts": "#9467bd"}
TASK_COLOURS = {"hops": "#1f77b4", "kinship": "#d62728", "temporal": "#2ca02c", "concepts": "#9467bd"}
FORMATS = ("html",) if smoke else ("html", "png")  # PNG export takes seconds a figure: not in smoke runs


def markdown_table(header, rows) -> None:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    display(Markdown("\n".join(lines)))


if smoke:
    live_episodes = min(live_episodes, 150)
    results_path = Path(tempfile.mkdtemp(prefix="workbench-07-"))
    started = time.perf_counter()
    summary = run_system2("smoke", 1, results_path, progress=False)
    print(f"smoke: ran the System 2 experiment live into {results_path} in {time.perf_counter() - started:.1f}s")
    shown = "smoke"
else:
    results_path = Path(results_dir)
    candidates = [budget] + [b for b in ("demo", "smoke") if b != budget]
    found = [b for b in candidates if (results_path / f"system2-{b}.json").is_file()]
    if not found:
        raise FileNotFoundError(
            f"no system2-<budget>.json in {results_path.resolve()}; run "
            f"`workbench compare --tasks hops,kinship,temporal,concepts --budget {budget}` first, or set smoke = True")
    shown = found[0]
    if shown != budget:
        display(Markdown(f"**No `system2-{budget}.json` in `{results_path}`**: showing budget `{shown}` instead."))
    summary = json.loads((results_path / f"system2-{shown}.json").read_text())
print(f"budget {summary['budget']}, {summary['seeds']} seed(s), device {summary.get('device', '?')}, "
      f"{summary.get('seconds', 0):.0f}s, commit {str(summary.get('git_commit', '?'))[:10]}")
print("System 1 training per task:", json.dumps(summary["config"]))
tasks_present = [t for t in TASKS if t in summary["tasks"]]

# %% [markdown]
# ## What an episode looks like
#
# Every episode is one token sequence: context clauses ended by `.`, then queries `? ... answer`.
# System 1 is trained with the language-model head on the answer tokens only (the label sits
# at the last query token); System 2 reads the same context with one clause grammar that names
# no task: two tokens `k v` are `binds(k, v)`, three tokens `a r b` are `r(a, b)`, anything
# else is a stream of events with timestamps.

# %%
for name in TASKS:
    task = SYMBOLIC_TASKS[name](n_eval=2)
    episode = task.episodes(1, [seed, 99])[0]
    text = " ".join(episode.tokens)
    print(f"[{name}] ({len(episode.tokens)} tokens) {text[:260]}{' ...' if len(text) > 260 else ''}")
    store = Store.from_tokens(episode.context)
    shown_facts = [str(f) for f in store.facts if f.rel != "follows"][:4]
    print(f"   store: {len(store)} facts, e.g. {', '.join(shown_facts) or 'events ' + ' '.join(store.events[:6])}\n")

# %% [markdown]
# ## 1 · System 1 alone vs System 1 + System 2
#
# Rows: the three System 1 models alone; System 2 alone (always deliberating); System 2 with
# System 1's grounded concepts (`concepts` only, section 3); and each System 1 model with the
# dual-process controller trained at the table's cost per step (`cost_per_step` in the JSON),
# which picks per query between the fast answer and deliberation. Cells: accuracy (mean ± std
# over seeds), and in parentheses the mean number of deliberation steps. The first slices of
# each task are the training distribution; the rest test generalization beyond it (more hops,
# longer chains, longer streams, held-out words).

# %%


def cell(row: dict, s: str) -> str:
    acc = row["accuracy"][s]
    text = f"{acc['mean']:.2f}" + (f" ± {acc['std']:.2f}" if acc["n"] > 1 else "")
    if "steps" in row:
        text += f" ({row['steps'][s]['mean']:.1f})"
    return text


for name in tasks_present:
    result = summary["tasks"][name]
    display(Markdown(f"**{name}** - trained on {', '.join(result['train_slices'])}"))
    markdown_table(["system"] + result["slices"], [[row["system"]] + [cell(row, s) for s in result["slices"]]
                                                  for row in result["rows"]])

fig = make_subplots(rows=2, cols=2, subplot_titles=[f"{n}" for n in tasks_present[:4]],
                    horizontal_spacing=0.08, vertical_spacing=0.16)
in_legend: set[str] = set()  # one legend entry per system, at its first panel (some appear in one task only)
for index, name in enumerate(tasks_present[:4]):
    result = summary["tasks"][name]
    r, c = index // 2 + 1, index % 2 + 1
    for row in result["rows"]:
        system = row["system"]
        if system.endswith("+system2") and system != "inverted+system2":
            continue  # the other controllers: in the table above
        alone = system in SYSTEM1
        first = system not in in_legend
        in_legend.add(system)
        fig.add_trace(go.Scatter(
            x=result["slices"], y=[row["accuracy"][s]["mean"] for s in result["slices"]],
            error_y={"type": "data", "array": [row["accuracy"][s]["std"] for s in result["slices"]], "visible": True},
            mode="lines+markers", name=system, legendgroup=system, showlegend=first,
            line={"color": PALETTE.get(system, "black"), "dash": "dot" if alone else "solid",
                  "width": 3 if system == "inverted+system2" else 2}), row=r, col=c)
    n_train = len(result["train_slices"])
    fig.add_vrect(x0=-0.5, x1=n_train - 0.5, fillcolor="grey", opacity=0.12, line_width=0, row=r, col=c)
    fig.update_yaxes(range=[-0.03, 1.05], title_text="accuracy" if c == 1 else None, row=r, col=c)
fig.update_layout(title=f"System 1 alone (dotted) vs with System 2 (solid), budget {summary['budget']}"
                        "<br><sup>accuracy by slice; grey band: the training distribution</sup>", height=720, width=1100)
save_figure(fig, "07_system2_table", FORMATS)
fig.show()

targets = summary.get("targets", {})
print("targets:", json.dumps(targets))

# %% [markdown]
# How to read it. System 2 alone and every "+system2" row reach the targets set for them
# (≥ 0.95 at 6 hops, ≥ 0.9 on kinship chains of 4-10, see `targets` above) at the demo budget:
# its programs do not care how many hops or links a question needs, because the policy maps a
# query's *signature* (operator words collapsed, entities as `E`) to a template, so what is
# learned on two hops runs unchanged on six. The controller rows equal System 2 alone whenever
# System 1 is weak: at this cost per step, deliberating is worth it on almost every query.
# `concepts` is the hard case for System 2 too: metaconcept questions about held-out words
# (`meta` in the table) need facts it never saw, and few-shot questions need the new
# word's meaning induced from one example. Compare `system2` with `system2+S1-concepts` in the
# table on `fewshot` and `fewshot+meta`: System 1's grounded concepts can link a new word to
# words System 1 represents alike, at the price of more steps per query (and, where the
# grounding is noisy, accuracy on `attr`).
#
# ## 2 · Why System 1 alone is at chance on `hops`
#
# At the demo budget the three System 1 models score about 1/(number of symbols) on `hops`,
# even on one hop, which is plain associative recall - the thing the inverted mixer learns on
# MQAR. Two things are checked live below, and one is stated as what it is, a hypothesis:
#
# * **Labels are aligned** (checked): the label of a query sits at the position of its last
#   query token, the input is the sequence shifted by one, and `predict` reads the same
#   position. The cell encodes an episode and prints (input token, target) at every labelled
#   position next to the fact in the context that answers it.
# * **The accuracy is chance** (checked): the cell prints each System 1 model's one-hop accuracy
#   next to 1 / n_symbols and the uniform-guess loss ln(n_symbols).
# * **The recall problem is large for the budget** (hypothesis, not measured here): every
#   context holds n_chains × chain_len key-value pairs (computed below), against 4 in MQAR's
#   demo cell, and the loss plateau of associative-recall training grows with the number of
#   pairs. Whether the `full` budget or a curriculum from few pairs to many gets System 1 off
#   the plateau was not measured; the table reports System 1 as measured.

# %%
hops_task = SYMBOLIC_TASKS["hops"](n_eval=2)
episode = hops_task.episodes(1, [seed, 7])[0]
batch = hops_task.encode([episode])
labelled = (batch.targets[0] != IGNORE).nonzero()[:, 0].tolist()
context = " ".join(episode.context)
for position in labelled:
    key = hops_task.vocab[int(batch.inputs[0, position])]
    target = hops_task.vocab[int(batch.targets[0, position])]
    fact = re.search(rf"\b{key} \S+", context)
    print(f"position {position}: input {key!r} -> target {target!r}; "
          f"context clause starting with {key!r}: {fact.group(0) if fact else '(none: a multi-hop query)'}")
pairs = hops_task.n_chains * hops_task.chain_len
print(f"\nkey-value pairs per context: {hops_task.n_chains} chains x {hops_task.chain_len} hops = {pairs}; "
      f"symbols {hops_task.n_symbols}: chance 1/{hops_task.n_symbols} = {1 / hops_task.n_symbols:.3f}, "
      f"uniform-guess loss ln {hops_task.n_symbols} = {np.log(hops_task.n_symbols):.2f} nats")
for row in summary["tasks"]["hops"]["rows"]:
    if row["system"] in SYSTEM1:
        print(f"{row['system']:>16}: accuracy at 1 hop {row['accuracy']['hops1']['mean']:.3f}")

# %% [markdown]
# ## 3 · The concept inventory: concepts grounded in System 1
#
# System 2 does not get concepts by hand. On `concepts`, the experiment takes the trained
# inverted model, collects its final hidden state at every context token, and fits a k-means
# codebook (`workbench.symbolic.concepts.codebook_inventory`; one centroid per concept, a
# vector-quantized code). Each code's label is its most typical tokens. Tokens whose dominant
# code is the same become `alike(a, b)` facts that System 2 may use as premises of rules - and
# keeps only if reward supports them. The heat map shows, for each token (columns, grouped by
# the generator's true kind), which share of its occurrences fell into each code (rows). A
# clean inventory would put each kind's words into codes of their own; `purity_by_kind` is the
# share of the colour/shape/material words whose code's majority kind is their own. With the
# demo's weakly trained System 1 it is far from clean (the purity is printed below), which is
# why reward keeps only a few rules that go through System 1's `alike` links.

# %%
grounded = summary["tasks"].get("concepts", {}).get("concepts")
if grounded is None:
    print("no concepts task in this result: no grounded inventory to show")
else:
    print(f"purity by kind: {grounded['purity_by_kind']:.2f}\n")
    print(grounded["inventory"])
    codes = grounded.get("codes")
    if codes is None:
        print("\n(this result predates the per-code token counts; re-run the experiment for the heat map)")
    else:
        kind_words = {k: [w for c in cs for w in (c, SYNONYM[c])] for k, cs in KINDS.items()}
        seen = {t for code in codes for t in code["tokens"]}
        groups = [(k, [w for w in ws if w in seen]) for k, ws in kind_words.items()]
        groups += [("kind names", [k for k in KINDS if k in seen]), ("new words", [w for w in NONCE if w in seen])]
        objects = sorted((t for t in seen if re.fullmatch(r"o\d+", t)), key=lambda t: int(t[1:]))
        groups.append(("objects", objects))
        columns = [w for _, ws in groups for w in ws]
        totals = {w: sum(code["tokens"].get(w, 0) for code in codes) for w in columns}
        z = [[code["tokens"].get(w, 0) / max(totals[w], 1) for w in columns] for code in codes]
        fig = go.Figure(go.Heatmap(z=z, x=columns, y=[f"code {code['code']}: {code['label']}" for code in codes],
                                   colorscale="Blues", zmin=0, zmax=1, colorbar={"title": "share"}))
        start = 0
        for kind, ws in groups:
            if ws:
                fig.add_annotation(x=(start + start + len(ws) - 1) / 2, y=1.04, yref="paper", text=kind,
                                   showarrow=False)
                fig.add_vline(x=start - 0.5, line_color="grey", line_width=1)
            start += len(ws)
        fig.update_layout(title="System 1's concept codes (k-means over the inverted model's hidden states)"
                                "<br><sup>share of each token's occurrences that fell into each code</sup>",
                          height=200 + 28 * len(codes),
                          width=1200, margin={"t": 90})
        save_figure(fig, "07_system2_concepts", FORMATS)
        fig.show()
    through = summary["tasks"]["concepts"]["concepts"].get("rules_through_system1", [])
    print(f"\nrules kept that go through System 1's alike links: {through or 'none'}")

# %% [markdown]
# ## 4 · The learned rules and metaconcepts
#
# Rules are hypotheses *proposed* from training stores (one occurrence of a pattern is enough)
# and *kept or dropped* by a Bernoulli policy per hypothesis trained by REINFORCE: keeping a
# rule earns (share of its decided predictions that came true − `price`) / (1 − `price`), with
# `price` = 0.95, and every rule the executor consulted for a query shares that query's task
# reward. The kept rules are the rule base. Each task's generator knows its true rules
# (`task.true_rules()`, found by brute force on a complete world), so the learned ones can be
# scored: **precision** = learned rules that are true / learned, **recall** = true rules
# learned / true. `hops` needs no rules (following `binds` is enough), so it has none to score.
# For `concepts` the learned *facts* (synonym, same-kind, is-a between words) are scored too.

# %%
names, precision, recall, labels = [], [], [], []
for name in tasks_present:
    result = summary["tasks"][name]
    scored = [("rules", result["rules"]["compare"])] + ([("facts", result["facts"])] if "facts" in result else [])
    for what, scores in scored:
        if not scores["true"]:
            print(f"{name}: no true {what} to learn ({scores['learned']} kept)")
            continue
        names.append(f"{name} {what}")
        precision.append(scores["precision"])
        recall.append(scores["recall"])
        labels.append(f"{scores['correct']}/{scores['true']} true, {scores['learned']} kept")
        print(f"{name} {what}: precision {scores['precision']:.2f} recall {scores['recall']:.2f} "
              f"({labels[-1]}); missing {scores['missing'][:5]}{' ...' if len(scores['missing']) > 5 else ''}; "
              f"wrong {scores['extra'][:5]}")
fig = go.Figure([go.Bar(x=names, y=precision, name="precision", marker_color="#1f77b4"),
                 go.Bar(x=names, y=recall, name="recall", marker_color="#ff7f0e", text=labels, textposition="outside")])
fig.update_layout(barmode="group", yaxis={"range": [0, 1.15], "title": "score"}, height=420, width=900,
                  title=f"Learned rules vs the generators' true rules (budget {summary['budget']}, last seed)")
save_figure(fig, "07_system2_rule_scores", FORMATS)
fig.show()

# %% [markdown]
# The same learner, fit live on `live_episodes` training episodes per task (System 2 only: no
# network is trained, so this takes seconds). Below, the readable rule base of `temporal` and
# `concepts`, each rule marked ✓ when it is one of the generator's rules and ✗ when not. For
# `kinship` the rule base is large (every composition of two of the 15 gender-free relations
# that the family tree fixes), so it is drawn as a composition table: row r1, column r2, the
# cell names the learned r3 in "r1 ∘ r2 = r3" (z is x's r3 when y is x's r1 and z is y's r2).

# %%
live: dict[str, dict] = {}
for name in TASKS:
    task = SYMBOLIC_TASKS[name](n_eval=4, **({"test_lengths": (64,)} if name == "temporal" else {}))
    items = answered(task.episodes(live_episodes, [seed, 1]))
    started = time.perf_counter()
    s2 = System2(seed=seed)
    s2.learn_rules(items)
    rewards = s2.train(items, epochs=2)
    learned = [h for h in s2.rules.kept() if h.kind != "fact"]
    live[name] = {"task": task, "s2": s2, "rewards": rewards, "seconds": time.perf_counter() - started,
                  "compare": compare_rules(learned, task.true_rules()), "learned": learned, "items": len(items)}
    scores = live[name]["compare"]
    print(f"{name:9s} {len(items):5d} queries, fit in {live[name]['seconds']:.1f}s: {scores['learned']} rules kept, "
          f"precision {scores['precision']:.2f} recall {scores['recall']:.2f} ({scores['true']} true)")

for name in ("temporal", "concepts"):
    s2, truth = live[name]["s2"], live[name]["task"].true_rules()
    print(f"\n--- {name}: kept relation rules (✓ = a true rule of the generator)")
    for h in live[name]["learned"]:
        belief = s2.rules.beliefs[h]
        print(f"  {'✓' if h in truth else '✗'} {str(h):<36s} p={belief.p:.2f}  evidence {belief.verified}/{belief.decided}")
    for missing in live[name]["compare"]["missing"]:
        print(f"  · missing: {missing}")
concepts_task = live["concepts"]["task"]
true_facts = concepts_task.true_facts()
facts = [h for h in live["concepts"]["s2"].rules.kept("fact") if h.args[0] != "has"]
right = [h for h in facts if h in true_facts]
print(f"\n--- concepts: {len(facts)} metaconcept facts kept, {len(right)} true "
      f"(precision {len(right) / max(len(facts), 1):.2f}); e.g.")
for h in facts[:12]:
    print(f"  {'✓' if h in true_facts else '✗'} {h}")
print("\n--- the program policy (which template per query signature, which relation per word)")
for name in TASKS:
    print(f"[{name}]\n{live[name]['s2'].policy.describe()}")

# %%
kin = live["kinship"]
rel_names = [KIN_NAMES[r] for r in KIN]
view_rules = {(h.args[0], h.args[1]): h.args[2] for h in kin["learned"] if h.kind == "compose"}
kin_true = kin["task"].true_rules()
z, text = [], []
for r1 in KIN:
    z_row, t_row = [], []
    for r2 in KIN:
        truth = kin_compose(r1, r2)
        got = view_rules.get((KIN_NAMES[r1], KIN_NAMES[r2]))
        if got is None:
            z_row.append(0.5 if truth is not None else np.nan)  # missing / not fixed by the tree
            t_row.append("?" if truth is not None else "")
        else:
            correct = truth is not None and got == KIN_NAMES[truth]
            z_row.append(1.0 if correct else 0.0)
            t_row.append(got)
        # several learned r3 for one (r1, r2) cannot all be right; the table shows one of them
    z.append(z_row)
    text.append(t_row)
fig = go.Figure(go.Heatmap(z=z, x=rel_names, y=rel_names, text=text, texttemplate="%{text}",
                           textfont={"size": 8}, zmin=0, zmax=1, showscale=False,
                           colorscale=[[0, "#f4a6a6"], [0.5, "#dddddd"], [1, "#b7e4b7"]]))
fig.update_layout(title=f"kinship: the learned composition table r1 ∘ r2 = r3 (live fit, {kin['items']} queries)"
                        "<br><sup>green: right; red: wrong; grey ?: a true rule not learned; "
                        "blank: the family tree does not fix r3</sup>",
                  xaxis={"title": "r2 (z is y's r2)", "tickangle": -45}, yaxis={"title": "r1 (y is x's r1)",
                                                                               "autorange": "reversed"},
                  height=760, width=1100)
save_figure(fig, "07_system2_kinship_rules", FORMATS)
fig.show()
inverses = sorted(str(h) for h in kin["learned"] if h.kind == "inverse")
print(f"kinship inverses kept ({len(inverses)}):", "; ".join(inverses))
print(f"kinship: precision {kin['compare']['precision']:.2f}, recall {kin['compare']['recall']:.2f}; "
      f"wrong {kin['compare']['extra'][:6]}; missing {kin['compare']['missing'][:6]}")

# %% [markdown]
# ## 5 · A reasoning trace, step by step
#
# A kinship question from the test distribution (a chain of 6 family facts, longer than any
# seen in training), answered by the live System 2. First the store read off the context,
# then the program the policy chose for the query's signature, then every primitive the
# executor ran: `path` finds the chain of stated facts from x to z, `invert` reads a
# backwards-stated fact through its learned named inverse, and each `compose` step applies
# one learned rule "r1 ∘ r2 = r3" to the running relation. Each line is one step, and the
# step count is what the controller pays. A 6-hop `hops` question and a `temporal` question
# follow.

# %%
kin_task = SYMBOLIC_TASKS["kinship"](n_eval=20)
episodes = kin_task.eval_set("len6")
answers = [kin["s2"].answer(e.context, e.query(0)) for e in episodes]
right = [i for i, (e, r) in enumerate(zip(episodes, answers)) if r.answer == e.answer(0)]
print(f"the live System 2 answers {len(right)}/{len(episodes)} of these length-6 questions; "
      f"the trace is of the first {'it answers right' if right else 'one (none answered right)'}\n")
episode, result = episodes[right[0] if right else 0], answers[right[0] if right else 0]
query, truth = episode.query(0), episode.answer(0)
store = kin["s2"].read(episode.context, [query])
print("context:", " ".join(episode.context), "\n")
print(store, "\n")
print(f"? {' '.join(query)}   (true answer: {truth})")
print(result)
steps = [line for line in result.trace[1:] if re.match(r"\s*\d+\.", line)]
rows = [re.match(r"\s*(\d+)\.\s+(\S+)\s*(.*)", line).groups() for line in steps]
fig = go.Figure(go.Table(
    header={"values": ["step", "primitive", "what it did"], "align": "left", "fill_color": "#dddddd"},
    cells={"values": [[r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]], "align": "left"},
    columnwidth=[40, 80, 700]))
fig.update_layout(title=f"{result.trace[0]} for '? {' '.join(query)}' -> {result.answer} "
                        f"(true: {truth}), {result.steps} steps", height=140 + 32 * len(rows), width=1000)
save_figure(fig, "07_system2_trace", FORMATS)
fig.show()

for name, slice_name in (("hops", "hops6"), ("temporal", "L64")):
    task = live[name]["task"]
    episode = task.eval_set(slice_name)[0]
    query, truth = episode.query(0), episode.answer(0)
    result = live[name]["s2"].answer(episode.context, query)
    print(f"\n[{name} {slice_name}] ? {' '.join(query)}   (true answer: {truth})\n{result}")

print("\nfrom the result file, one trace per slice of the last seed (first query):")
for line in summary["tasks"].get("kinship", {}).get("examples", [])[:2]:
    print(line, "\n")

# %% [markdown]
# ## 6 · Reward curves of the REINFORCE program policy
#
# The program policy is trained by REINFORCE with a running baseline per query signature: for
# each training query it samples a template and one relation per operator word, the executor
# runs the program with rules switched on at their keep-probabilities, and the reward is 1
# when the answer is right, else 0. The curves are the mean reward over consecutive chunks of
# training queries (two passes over the training set). Rewards start low because the policy
# starts uniform over templates (a word that names a store relation has a small prior for
# it) and rules start sceptical; they rise as the policy settles on one template per
# signature and the useful rules are switched on. `concepts` stays lowest: its few-shot and
# held-out questions are ones no program can always get right.

# %%
recorded = {name: summary["tasks"][name].get("system2_reward", {}).get("curves") or [] for name in tasks_present}
panels = ([f"the result file (budget {summary['budget']}), one line per seed"] if any(recorded.values()) else [])
panels.append(f"the live fits above ({live_episodes} training episodes per task)")
fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True, horizontal_spacing=0.04, subplot_titles=panels)
for name, curves in recorded.items():
    for index, curve in enumerate(curves):
        fig.add_trace(go.Scatter(x=curve["queries"], y=curve["reward"], mode="lines", name=name, legendgroup=name,
                                 showlegend=index == 0, line={"color": TASK_COLOURS[name]},
                                 opacity=1.0 if index == 0 else 0.5), row=1, col=1)
    if not curves:
        print(f"{name}: the result file predates the recorded reward curves (it has first/last 200 only)")
for name in TASKS:
    curve = reward_curve(live[name]["rewards"])
    fig.add_trace(go.Scatter(x=curve["queries"], y=curve["reward"], mode="lines", name=name, legendgroup=name,
                             showlegend=not recorded.get(name), line={"color": TASK_COLOURS[name]}),
                  row=1, col=len(panels))
fig.update_xaxes(title_text="training queries seen (two passes)")
fig.update_yaxes(title_text="reward (1 = right)", range=[0, 1.05], row=1, col=1)
fig.update_layout(title="System 2's task reward during REINFORCE training<br><sup>mean reward per chunk of "
                        "consecutive training queries</sup>", height=460, width=600 * len(panels))
save_figure(fig, "07_system2_rewards", FORMATS)
fig.show()
for name in tasks_present:
    reward = summary["tasks"][name]["system2_reward"]
    print(f"{name:9s} mean reward, first 200 queries {reward['first_200']:.2f} -> last 200 {reward['last_200']:.2f}")

# %% [markdown]
# ## 7 · The dual-process controller: accuracy vs deliberation
#
# Per query the controller sees System 1's confidence in its own answer and the query's length,
# and deliberates with probability σ(w · features). It is trained by REINFORCE on held-out
# training-distribution queries with reward 1[right] − cost × steps when it deliberates and
# 1[right] when it answers fast. Sweeping the cost per step traces the trade-off: at cost 0 it
# deliberates wherever System 2 is at least as good, and as the cost grows it answers fast
# more and more often, down to zero steps (System 1 alone). Each curve is one System 1 model
# with the same System 2; the points are evaluated on every test slice together, and the
# labels give the cost. A curve that stays high as it moves left means the controller found
# the queries where System 1 is already right.
#
# The controller can only be as selective as its features: on `hops` the query's length says
# how many hops it takes, so at a middle cost it deliberates on the short queries only; on
# `kinship` every query is two names, and with System 1 near chance nothing tells easy from
# hard, so it is all or nothing. The dotted lines are the **anytime** alternative, which needs
# no such signal (`budget_curve`): System 2 may take at most *B* steps, and where its program is
# longer, System 1 answers; one point per *B*.

# %%
fig = make_subplots(rows=1, cols=len(tasks_present), subplot_titles=tasks_present, horizontal_spacing=0.05)
for index, name in enumerate(tasks_present):
    tradeoff = summary["tasks"][name]["tradeoff"]
    costs_at: dict[tuple[float, float], list[float]] = {}
    for label, points in summary["tasks"][name].get("budget_curve", {}).items():
        fig.add_trace(go.Scatter(
            x=[p["mean_steps"] for p in points], y=[p["accuracy"] for p in points], mode="lines+markers",
            name=f"{label}, step budget B", legendgroup=f"{label}-budget", showlegend=index == 0,
            line={"color": PALETTE.get(label, "black"), "dash": "dot", "width": 1}, marker={"size": 4},
            customdata=[[p["budget"], p["finished"]] for p in points],
            hovertemplate="B = %{customdata[0]} steps<br>mean steps %{x:.2f}<br>accuracy %{y:.3f}"
                          "<br>System 2 finished %{customdata[1]:.0%}"), row=1, col=index + 1)
    for label, points in tradeoff.items():
        fig.add_trace(go.Scatter(
            x=[p["mean_steps"] for p in points], y=[p["accuracy"] for p in points], mode="lines+markers",
            name=label, legendgroup=label, showlegend=index == 0, line={"color": PALETTE.get(label, "black")},
            customdata=[[p["cost"], p["deliberate"]] for p in points],
            hovertemplate="cost %{customdata[0]}<br>mean steps %{x:.2f}<br>accuracy %{y:.3f}"
                          "<br>deliberates on %{customdata[1]:.0%}"), row=1, col=index + 1)
        for p in points:
            costs_at.setdefault((round(p["mean_steps"], 2), round(p["accuracy"], 3)), []).append(p["cost"])
    fig.add_trace(go.Scatter(  # where several costs (or System 1 models) land on one point, one label
        x=[x for x, _ in costs_at], y=[y for _, y in costs_at], mode="text", showlegend=False, hoverinfo="skip",
        text=[f"cost {min(c):g}" + (f"-{max(c):g}" if max(c) > min(c) else "") for c in costs_at.values()],
        textposition=["top right" if x == 0 else "bottom left" for x, _ in costs_at], textfont={"size": 9},
        cliponaxis=False), row=1, col=index + 1)
    fig.update_xaxes(title_text="mean deliberation steps per query", row=1, col=index + 1)
fig.update_yaxes(title_text="accuracy (all slices)", range=[-0.05, 1.08], row=1, col=1)
fig.update_layout(title=f"The controller's trade-off as the cost per deliberation step varies, budget "
                        f"{summary['budget']}<br><sup>one controller per cost and System 1 model; "
                        "at 0 steps it always answers fast; dotted: System 2 capped at B steps</sup>",
                  height=480, width=1300)
save_figure(fig, "07_system2_tradeoff", FORMATS)
fig.show()
for name in tasks_present:
    for label, points in summary["tasks"][name]["tradeoff"].items():
        line = ", ".join(f"{p['cost']:g}: {p['accuracy']:.2f} @ {p['mean_steps']:.1f} steps" for p in points)
        print(f"{name:9s} {label:15s} {line}")

# %% [markdown]
# ## Summary
#
# * System 2 learns its rules without being given them, and they are readable: the kinship
#   composition table, "before is transitive", "synonym ∘ is-a = is-a". Precision and recall
#   against the generators' rules are printed above per task.
# * Its programs generalize by construction: the policy maps a query's signature to a template,
#   so 2-hop training answers 6-hop questions, and chains of length 3 teach compositions that
#   chains of length 10 reuse.
# * System 1 alone is weak at the demo budget, and at chance on `hops` with aligned labels
#   (section 2: the recall problem is large for the budget); the controller therefore deliberates
#   almost always there, and its trade-off curve shows what each saved step costs.

# %%
print(f"budgets known to the experiment: {', '.join(BUDGETS)}; shown: {summary['budget']}")
print(f"notebook ran in {time.perf_counter() - notebook_started:.1f}s")
