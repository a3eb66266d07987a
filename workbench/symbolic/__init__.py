"""System 2: a symbolic, step-by-step reasoner next to the neural System 1.

System 1 (``workbench.model``) is fast and trained by backprop. System 2 is slow and explicit:

* ``store``     - timestamped relation triples read off a token sequence;
* ``concepts``  - discrete concepts grounded in System 1 (inverted-mixer units, k-means codes);
* ``rules``     - metaconcept hypotheses (inverse, composition, synonym / same-kind / is-a facts);
* ``executor``  - small programs over the store, with a trace;
* ``policy``    - REINFORCE-trained program policy and rule keeper, and the dual-process controller;
* ``tasks``     - generated token-form tasks (hops, kinship, temporal, concepts);
* ``experiment``- System 1 alone vs System 1 + System 2, by hop count / chain length.

Round 2 (kinship; the audit of issue 19 found round 1's kinship answers given by a hand fold and
its facts by a hand parser, so ``workbench compare --tasks kinship`` and ``workbench system2`` run
these instead):

* ``clutrr``    - CLUTRR-style stories from a simulated family tree, three noise kinds;
* ``induction`` - composition and inversion rules induced from answered stories, invented predicates;
* ``proof``     - proof search over primitive actions by a REINFORCE-trained policy;
* ``grounding`` - System 1 on the story tokens and a fact extractor on its hidden states;
* ``kinship``   - the experiment: every baseline beside System 2, and the controller's trade-off.

Anchors: NS-CL (Mao et al., ICLR 2019) for programs over grounded concepts trained with
REINFORCE; VCML (Han et al., NeurIPS 2019) for concepts and metaconcepts learned jointly.
"""

from workbench.symbolic.executor import Executor, Program, Result, execute
from workbench.symbolic.policy import Controller, ProgramPolicy, RuleLearner, System2, budget_curve, tradeoff_curve
from workbench.symbolic.rules import Hypothesis, RuleBase, compose, fact, inverse, symmetric, transitive
from workbench.symbolic.store import Fact, Store

__all__ = [
    "Controller", "Executor", "Fact", "Hypothesis", "Program", "ProgramPolicy", "Result", "RuleBase", "RuleLearner",
    "Store", "System2", "compose", "execute", "fact", "inverse", "symmetric", "transitive", "tradeoff_curve",
    "budget_curve",
]
