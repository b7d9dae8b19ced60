"""The tiny study of `.test/` (its input maker `.test/make_inputs.py`), shared by the workflow, DVC, crash and
SLURM tests: ``REPO`` the repository root, ``BIN`` the venv's bin, ``tiny`` the loaded make_inputs module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
_spec = importlib.util.spec_from_file_location("tiny_study", REPO / ".test" / "make_inputs.py")
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)
