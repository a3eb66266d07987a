"""Inverted-attention research workbench: units that seek messages and rest after they fire.

Start with ``workbench.model`` (the whole model in one file) and
``workbench.mixers.inverted`` (the mechanism); ``workbench --help`` lists the commands.
"""

__version__ = "0.1.0"
