"""System 2: a symbolic, step-by-step reasoner next to the neural System 1.

System 1 (``workbench.model``) is fast and trained by backprop. System 2 is slow and explicit:

* ``store``     - timestamped relation triples read off a token sequence;
* ``concepts``  - discrete concepts grounded in System 1 (inverted-mixer units, k-means codes);
* ``rules``     - metaconcept hypotheses (inverse, composition, synonym / same-kind / is-a facts);
* ``executor``  - small programs over the store, with a trace;
* ``policy``    - REINFORCE-trained program policy and rule keeper, and the dual-process controller;
* ``tasks``     - generated token-form tasks (hops, kinship, temporal, concepts);
* ``experiment``- System 1 alone vs System 1 + System 2, by hop count / chain length.

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
