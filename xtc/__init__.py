"""xtc: the maintained, reproducible implementation of XTC extreme compression for BERT-style transformers.

Layers (imports only point down): ``config`` and ``quant.primitives``/``quant.ste`` (L0); ``quant.modules``,
``glue``, ``metrics``, ``models``, ``reduce``, ``distill`` (L1); ``quant.apply`` (L2); ``cli`` (L3).
Importing ``xtc`` itself is cheap: submodules are imported by the code that needs them.
"""

__version__ = "0.1.0"
