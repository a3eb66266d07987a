"""Glossary: every identifier the design document uses, tied to the real object it names.

``GLOSSARY[identifier] = (path, explanation)``. The path names a live object, so
``tests/test_glossary.py`` can check that none of them rots. Four spellings are used:

* ``package.module.name`` or ``package.module.Class.method``: import the module, then getattr;
* ``package.module.SomeOptions.field``: a field of an options dataclass;
* ``package.module.Class.attribute`` where the attribute is set in ``__init__`` (hook points,
  sub-layers, buffers): it exists on an instance of the class;
* ``package.module.InvertedMixer.init_state['key']``: a tensor of the recurrent state, i.e. a
  key of the dict that ``init_state`` returns.

Tensors that only live inside ``forward`` (``occupant``, ``gain``, ``pointer``, ...) point at the
hook point that exposes them, or at the method that computes them.

``GLOSSARY_RU`` gives a short Russian reading for the terms used in the Russian pseudocode of
``notebooks/00_design.py`` (the inverted mixer, § 6, and System 2, § 7); its keys are a subset of ``GLOSSARY``.
"""

from __future__ import annotations

_INV = "workbench.mixers.inverted"
_MIX = f"{_INV}.InvertedMixer"
_OPT = f"{_INV}.InvertedOptions"
_ATT = "workbench.mixers.transformer"
_NB = "workbench.neighbourhoods"
_SYM = "workbench.symbolic"

GLOSSARY: dict[str, tuple[str, str]] = {
    # ------------------------------------------------------------------ the user's four names (seed 004)
    "attention_compress": (
        f"{_INV}.attention_compress",
        "Core mechanism: run a sequence through the M units; return the outputs and the final unit state (the compressed context).",
    ),
    "memory_state_update": (
        f"{_INV}.memory_state_update",
        "State management: one token in, (output, next state) out, at a cost and state size independent of position.",
    ),
    "compute_weights": (
        f"{_INV}.compute_weights",
        "Weight calculation: the (B, M) read-back weights a new token puts on the units of a given state.",
    ),
    "adaptive_scale": (
        f"{_INV}.adaptive_scale",
        "Dynamic complexity: chunk, candidates per token, state size and multiply-adds for a given sequence length.",
    ),
    # ------------------------------------------------------------------ mixers and model
    "Mixer": ("workbench.mixers.base.Mixer", "Interface of a causal sequence mixer: parallel forward, init_state and step."),
    "MIXERS": ("workbench.mixers.MIXERS", "Registry name -> mixer class ('transformer', 'inverted')."),
    "InvertedMixer": (_MIX, "The inverted-attention mixer: M units seek posted messages, rest after firing, are read back top-k."),
    "InvertedOptions": (_OPT, "Hyper-parameters of the inverted mixer (a dataclass; set under model.mixer_options)."),
    "SoftmaxAttention": (f"{_ATT}.SoftmaxAttention", "Baseline: causal multi-head softmax attention with rotary positions."),
    "AttentionOptions": (f"{_ATT}.AttentionOptions", "Hyper-parameters of the baseline attention mixer."),
    "rotate": (f"{_ATT}.rotate", "Rotary position embedding used by the baseline's queries and keys."),
    "Block": ("workbench.model.Block", "Pre-norm residual block: x + mixer(norm x), then x + mlp(norm x)."),
    "Model": ("workbench.model.Model", "Adapter -> blocks -> final norm -> head; parallel forward and recurrent step/generate."),
    "mixer_options": ("workbench.config.ModelConfig.mixer_options", "Config mapping passed to the mixer's options dataclass."),
    "HookPoint": ("workbench.hooks.HookPoint", "Identity module marking a named place where notebooks read internals."),
    "capture": ("workbench.hooks.capture", "Context manager recording hook-point outputs by dotted module name."),
    "save_figure": ("workbench.plotting.save_figure", "Write a plotly figure to figures/<name>.html (and .png when Chrome exists)."),
    # ------------------------------------------------------------------ small ops of the inverted mixer
    "straight_through": (f"{_INV}.straight_through", "Forward value of the hard decision, gradient of the soft one."),
    "ema_scan": (f"{_INV}.ema_scan", "Multi-timescale exponential moving average by a log-depth parallel scan."),
    "ordinal_code": (f"{_INV}.ordinal_code", "Rotary code of a message's ordinal (write count), geometric frequencies 1 .. 1/M."),
    "rotate_ordinal_query": (
        f"{_INV}.rotate_ordinal_query",
        "Turns the read pointer into a query whose score with ordinal_code(o) depends only on pointer - o.",
    ),
    "_hooked": (f"{_INV}._hooked", "True when a hook listens at a hook point (lets forward skip unused work)."),
    # ------------------------------------------------------------------ methods of InvertedMixer
    "check_options": (f"{_MIX}.check_options", "Reject impossible options with one clear ConfigError."),
    "_features": (f"{_MIX}._features", "h = x + local; feat = [h; ema]: what the gates, router and ordinal query see."),
    "_gates": (f"{_MIX}._gates", "Salience (write) and advance gates: sigmoid, hard threshold 1/2, straight-through."),
    "_route": (f"{_MIX}._route", "Pool choice by learned interest (softmax over pools, argmax, straight-through scale)."),
    "_message": (f"{_MIX}._message", "Key [W_k h / sqrt(d_k); ordinal_code] and value W_v x of a posted message."),
    "_surrogate": (f"{_MIX}._surrogate", "Training-only gradient path for tokens that did not write; adds exactly zero forward."),
    "_query": (f"{_MIX}._query", "Read query [W_q h; rotated ordinal query at the read pointer]."),
    "_read": (f"{_MIX}._read", "Top-k normalization over occupied units: softmax of the k best scores; returns weights and lse."),
    "forward": (f"{_MIX}.forward", "Parallel form: gates, ring allocation, occupant table, read, capacity price."),
    "_gain": (f"{_MIX}._gain", "Refractory gain of every unit: pool writes since it last fired / pool size, in [0, 1]."),
    "_mix_naive": (f"{_MIX}._mix_naive", "Reference read: gather every unit's message at every step (O(T M d) memory)."),
    "_mix_chunked": (f"{_MIX}._mix_chunked", "Chunked read: units as of the chunk start + the chunk's own messages, dense matmuls."),
    "init_state": (f"{_MIX}.init_state", "Empty recurrent state: conv window, EMA, counters and the M (key, value) slots."),
    "step": (f"{_MIX}.step", "Recurrent form: one token, constant-size state, equal to the parallel form."),
    "forward_recurrent": (f"{_MIX}.forward_recurrent", "Reference loop of step over time (tests, the live check)."),
    "impl": (f"{_MIX}.impl", "Which parallel read forward uses: 'chunked' (default) or 'naive'."),
    "stats": (f"{_MIX}.stats", "Scalars of the last forward: write_fraction, advance_fraction."),
    "aux_loss": (f"{_MIX}.aux_loss", "Capacity price of the last forward (added to the task loss by Model.loss)."),
    "pool_size": (f"{_MIX}.pool_size", "S = n_units / n_pools: units per pool, the period of the ring."),
    # ------------------------------------------------------------------ sub-layers and buffers
    "conv": (f"{_MIX}.conv", "Depthwise causal convolution: the token's private local channel (width conv_width)."),
    "decay": (f"{_MIX}.decay", "Per-channel EMA decay, one of the timescales per channel group."),
    "gates": (f"{_MIX}.gates", "Linear map feat -> (salience logit, advance logit)."),
    "router": (f"{_MIX}.router", "Linear map feat -> pool interests (None when there is a single pool)."),
    "query": (f"{_MIX}.query", "Content query projection W_q."),
    "key": (f"{_MIX}.key", "Content key projection W_k (applied to h = x + local)."),
    "value": (f"{_MIX}.value", "Value projection W_v (applied to x: token identity)."),
    "out": (f"{_MIX}.out", "Output projection W_o of the read (zero-initialised)."),
    "ordinal_query": (f"{_MIX}.ordinal_query", "Linear map feat -> coefficients z of the ordinal (recency) query."),
    # ------------------------------------------------------------------ options
    "n_units": (f"{_OPT}.n_units", "M, the number of units: fixed, independent of the sequence length."),
    "n_pools": (f"{_OPT}.n_pools", "Number of normalization pools the units are split into."),
    "read_topk": (f"{_OPT}.read_topk", "k, units each token reads back (n_units = dense softmax over units)."),
    "d_key": (f"{_OPT}.d_key", "Width of the content part of keys and queries."),
    "conv_width": (f"{_OPT}.conv_width", "Width w of the local causal convolution (0 = off)."),
    "refractory": (f"{_OPT}.refractory", "Rest-based ring allocation; False = unit chosen by content alone (ablation)."),
    "timescales": (f"{_OPT}.timescales", "EMA decays of the multi-timescale context (empty = off)."),
    "ordinal_read": (f"{_OPT}.ordinal_read", "Address units by ordinal (recency) as well as by content."),
    "n_freq": (f"{_OPT}.n_freq", "Number F of frequencies of the ordinal code."),
    "write_price": (f"{_OPT}.write_price", "Loss per write beyond capacity M, per token."),
    "write_bias": (f"{_OPT}.write_bias", "Initial salience logit (start by writing; the price prunes)."),
    "chunk_size": (f"{_OPT}.chunk_size", "C, chunk length of the chunked parallel form and window of the surrogate."),
    "write_surrogate": (f"{_OPT}.write_surrogate", "Enable the training-only gradient path for unwritten tokens."),
    "n_heads": (f"{_ATT}.AttentionOptions.n_heads", "Heads of the baseline attention."),
    # ------------------------------------------------------------------ hook points
    "hook_salience": (f"{_MIX}.hook_salience", "(B, T) write probability p_t."),
    "hook_unit": (f"{_MIX}.hook_unit", "(B, T) unit each token wrote to, -1 if it did not write."),
    "hook_gain": (f"{_MIX}.hook_gain", "(B, T, M) refractory gain after step t."),
    "hook_occupant": (f"{_MIX}.hook_occupant", "(B, T, M) position held by each unit after step t, -1 if empty."),
    "hook_read_weights": (f"{_MIX}.hook_read_weights", "(B, T, M) read-back weights (zero outside the top k)."),
    "hook_read_pointer": (f"{_MIX}.hook_read_pointer", "(B, T) read pointer: cumulative advance count minus one."),
    "hook_q": (f"{_ATT}.SoftmaxAttention.hook_q", "Baseline queries after rotary (B, H, T, d_head)."),
    "hook_k": (f"{_ATT}.SoftmaxAttention.hook_k", "Baseline keys after rotary."),
    "hook_v": (f"{_ATT}.SoftmaxAttention.hook_v", "Baseline values."),
    "hook_mixer_out": ("workbench.model.Block.hook_mixer_out", "What a block's mixer adds to the residual stream."),
    # ------------------------------------------------------------------ tensors
    "salience": (f"{_MIX}.hook_salience", "p_t = sigmoid(w_s . feat_t): how much token t wants to post."),
    "write": (f"{_MIX}._gates", "Hard post decision 1[p_t > 1/2] with the gradient of p_t."),
    "advance": (f"{_MIX}._gates", "Hard decision to move the read pointer forward at t."),
    "feat": (f"{_MIX}._features", "[h; ema]: local features plus multi-timescale context."),
    "local": (f"{_MIX}.conv", "Output of the causal convolution, added to x and to the mixer output."),
    "choice": (f"{_MIX}._route", "Pool (or, without refractory, unit) chosen for a message."),
    "count": (f"{_MIX}.init_state['count']", "Number of messages posted so far (all pools)."),
    "ordinal": (f"{_MIX}._message", "count - 1: the global ordinal a message carries in its key."),
    "pointer": (f"{_MIX}.hook_read_pointer", "Read pointer p_t compared with ordinals for addressing by recency."),
    "pool_counts": (f"{_MIX}.init_state['pool_counts']", "Messages taken by each pool so far; the ring position."),
    "unit": (f"{_MIX}.hook_unit", "Unit taken by token t: pool * S + (pool_count - 1) mod S."),
    "occupant": (f"{_MIX}.hook_occupant", "Occupant table: last position written to each unit up to t (cummax)."),
    "gain": (f"{_MIX}.hook_gain", "Refractory gain: 0 right after a unit fires, 1 when it is fully rested."),
    "ema": (f"{_MIX}.init_state['ema']", "Multi-timescale context c_t (EMA of x); carried in the recurrent state."),
    "fired_at": (f"{_MIX}.init_state['fired_at']", "Pool count when each unit last fired (recurrent state)."),
    "keys": (f"{_MIX}.init_state['keys']", "(B, M, d_k + 2F) keys held by the units."),
    "values": (f"{_MIX}.init_state['values']", "(B, M, d) values held by the units."),
    "occupied": (f"{_MIX}.init_state['occupied']", "(B, M) whether a unit holds a message yet."),
    "lse": (f"{_MIX}._read", "log-sum-exp of the kept scores; the surrogate's normalizer."),
    "read_weights": (f"{_MIX}.hook_read_weights", "Weights over units after the top-k softmax."),
    # ------------------------------------------------------------------ neighbourhood analysis
    "Pattern": (f"{_NB}.Pattern", "A causal neighbourhood rule N(t, l): mask, row sizes, edges."),
    "Vanilla": (f"{_NB}.Vanilla", "N(t) = all positions <= t."),
    "SlidingWindow": (f"{_NB}.SlidingWindow", "N(t) = the last w positions."),
    "Dilated": (f"{_NB}.Dilated", "taps positions spaced by a dilation that grows with depth."),
    "Logarithmic": (f"{_NB}.Logarithmic", "N(t) = t and t - b^k."),
    "RandomSparse": (f"{_NB}.RandomSparse", "t plus r random earlier positions per layer."),
    "GlobalHubs": (f"{_NB}.GlobalHubs", "Causal global tokens: strided hubs read everything before them; all read the hubs."),
    "Sinks": (f"{_NB}.Sinks", "The first few positions plus a sliding window."),
    "InvertedUnits": (f"{_NB}.InvertedUnits", "The inverted mixer's candidates: occupants of the M units plus the conv window."),
    "receptive_field": (f"{_NB}.receptive_field", "Which inputs can influence each output after L layers (boolean path product)."),
    "receptive_field_growth": (f"{_NB}.receptive_field_growth", "Receptive-field size of one output vs depth."),
    "standard_patterns": (f"{_NB}.standard_patterns", "The eight variants the design notebook compares, at sizes that show their shapes."),
    "is_causal": (f"{_NB}.is_causal", "True iff a mask never lets a token read a later position."),
    "edges": (f"{_NB}.edges", "Number of (reader, position) pairs of a mask: the cost of one layer, in units of d."),
    # ------------------------------------------------------------------ System 2 (workbench.symbolic)
    "Store": (f"{_SYM}.store.Store", "Timestamped relation facts read off the token sequence, indexed for lookup."),
    "Store.from_tokens": (f"{_SYM}.store.Store.from_tokens", "Read a context clause by clause: binds(k, v), r(a, b), or a stream of events."),
    "Store.add_answer": (f"{_SYM}.store.Store.add_answer", "Record an answered query as a fact when its form says which fact it is."),
    "Fact": (f"{_SYM}.store.Fact", "One relation r(a, b) with its timestamp and truth value."),
    "Hypothesis": (f"{_SYM}.rules.Hypothesis", "A candidate rule or concept fact: kind inverse, compose or fact, with its arguments."),
    "inverse": (f"{_SYM}.rules.inverse", "Hypothesis r(a, b) iff s(b, a) (symmetric when r == s)."),
    "compose": (f"{_SYM}.rules.compose", "Hypothesis r1(a, b) and r2(b, c) imply r3(a, c) (transitive when all equal)."),
    "fact": (f"{_SYM}.rules.fact", "Hypothesis that r(a, b) holds beyond one context (a concept fact)."),
    "propose": (f"{_SYM}.rules.propose", "Candidate hypotheses suggested by one store, with their counts."),
    "evidence": (f"{_SYM}.rules.evidence", "Verdicts of every known hypothesis' predictions that a store decides."),
    "Belief": (f"{_SYM}.rules.Belief", "Keep-logit and counts of one hypothesis."),
    "RuleBase": (f"{_SYM}.rules.RuleBase", "Every hypothesis ever proposed with its keep-probability; the kept ones are the rules."),
    "RuleView": (f"{_SYM}.rules.RuleView", "The rules as the executor sees them for one query (greedy or sampled)."),
    "Program": (f"{_SYM}.executor.Program", "Template + entities + one relation per step: what the executor runs."),
    "Result": (f"{_SYM}.executor.Result", "Answer, readable trace and number of steps of an executed program."),
    "Executor": (f"{_SYM}.executor.Executor", "Runs a program primitive by primitive over a store and a rule view."),
    "Executor.derive": (f"{_SYM}.executor.Executor.derive", "Does r(a, b) hold: context, then concept facts, then inverse and composition rules."),
    "Executor.induce": (f"{_SYM}.executor.Executor.induce", "Few-shot meaning of a new symbol from its examples and stated constraints."),
    "TEMPLATES": (f"{_SYM}.executor.TEMPLATES", "The program templates: walk, relate, holds, first, last, next, previous, count."),
    "execute": (f"{_SYM}.executor.execute", "Run one program on a store with a rule base; return the Result."),
    "parse_query": (f"{_SYM}.policy.parse_query", "Query -> (signature, entity arguments, operator words)."),
    "ProgramPolicy": (f"{_SYM}.policy.ProgramPolicy", "Semantic parser: template per query signature, relation per operator word (REINFORCE)."),
    "RuleLearner": (f"{_SYM}.policy.RuleLearner", "REINFORCE over keep/drop of each hypothesis, from store verdicts and task reward."),
    "price": (f"{_SYM}.policy.RuleLearner.price", "The precision a rule must beat to be worth keeping."),
    "System2": (f"{_SYM}.policy.System2", "Program policy + rule learner: fit on answered episodes, answer a query."),
    "Answered": (f"{_SYM}.policy.Answered", "One training query: context, query tokens, answer."),
    "Choice": (f"{_SYM}.policy.Choice", "What the controller knows about a query: System 1 confidence, both systems' outcomes, steps."),
    "Controller": (f"{_SYM}.policy.Controller", "Dual-process switch: deliberate with p = sigmoid(w . features); reward correct - cost x steps."),
    "tradeoff_curve": (f"{_SYM}.policy.tradeoff_curve", "Accuracy vs mean deliberation steps, one controller per cost."),
}

GLOSSARY_RU: dict[str, str] = {
    "attention_compress": "сжатие контекста: последовательность проходит через M узлов, остаётся их состояние",
    "memory_state_update": "обновление памяти: один токен, состояние постоянного размера",
    "compute_weights": "веса считывания нового токена по узлам",
    "adaptive_scale": "затраты механизма при данной длине последовательности",
    "InvertedMixer": "смеситель «перевёрнутого внимания»",
    "straight_through": "прямой проход по жёсткому решению, градиент по мягкому",
    "ema_scan": "скользящие средние на нескольких временных масштабах",
    "ordinal_code": "код порядкового номера сообщения",
    "rotate_ordinal_query": "запрос по давности относительно указателя чтения",
    "_route": "выбор пула по интересу",
    "_read": "нормировка: softmax по k лучшим узлам",
    "_gain": "рефрактерное усиление узла",
    "_surrogate": "суррогатный градиент для непосланных сообщений",
    "_mix_chunked": "чтение по блокам",
    "step": "рекуррентный шаг",
    "n_units": "число узлов M",
    "n_pools": "число пулов",
    "read_topk": "сколько узлов читает токен (k)",
    "salience": "значимость (вероятность записи)",
    "write": "решение записать сообщение",
    "advance": "сдвиг указателя чтения",
    "pointer": "указатель чтения",
    "pool_counts": "счётчики записей по пулам (позиция кольца)",
    "unit": "узел, принявший сообщение",
    "occupant": "таблица владельцев: чьё сообщение лежит в узле",
    "gain": "усиление (отдых) узла",
    "fired_at": "когда узел срабатывал последний раз",
    "keys": "ключи в узлах",
    "values": "значения в узлах",
    "lse": "логарифм суммы экспонент (нормировщик)",
    "Store": "хранилище фактов с метками времени",
    "RuleBase": "база правил-гипотез с вероятностями",
    "Program": "программа из элементарных шагов",
    "Executor": "исполнитель программ с трассой",
    "ProgramPolicy": "парсер: шаблон и отношения для вопроса",
    "RuleLearner": "обучение правил (REINFORCE)",
    "System2": "Система 2: медленное рассуждение",
    "Controller": "контроллер: думать быстро или медленно",
}
