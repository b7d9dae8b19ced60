"""xtc: the maintained, reproducible implementation of XTC extreme compression for BERT-style transformers.

A flat training core and two wings, ``xtc.study`` (the workflow's side, torch-free) and ``xtc.packed`` (the packed
model after training); the layers and the import rule are in docs/architecture.md (a test holds the code to them).
Importing ``xtc`` itself is cheap: submodules are imported by the code that needs them.
"""

__version__ = "0.1.0"
