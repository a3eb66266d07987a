"""Support code used only by the notebooks: statistics, neighbourhood patterns, figures, corpora.

Nothing in the training path imports this package; the notebooks (``notebooks/NN_*.py``) and
their tests do.
"""
