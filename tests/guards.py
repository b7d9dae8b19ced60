"""Skips that a promised run turns into failures: `make test` sets XTC_REQUIRE_PEER=1 (DeepSpeed, the numerical
oracle) and XTC_REQUIRE_COMPILE=1 (torch.compile's C++ toolchain, which also builds the engine's C++ kernels);
CI (CI=true) or XTC_REQUIRE_GLUE=1 requires the real GLUE files. Elsewhere the same tests skip with their reason."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

PEER, COMPILE, GLUE = ("XTC_REQUIRE_PEER",), ("XTC_REQUIRE_COMPILE",), ("CI", "XTC_REQUIRE_GLUE")
# The public GLUE files of the integration checks (beside the clone, as CI lays it out; XTC_GLUE_DIR elsewhere).
REAL_GLUE = Path(os.environ.get("XTC_GLUE_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data" / "glue")


def required(names: tuple[str, ...]) -> bool:
    return any(os.environ.get(name, "").lower() in ("1", "true") for name in names)


def skip_unless(ok: bool, reason: str, names: tuple[str, ...]) -> None:
    """Nothing when ``ok``; else skip with ``reason``, or fail where one of ``names`` promises the test runs."""
    if ok:
        return
    if required(names):
        pytest.fail(f"{' or '.join(names)} is set, so this test must run, but {reason}", pytrace=False)
    pytest.skip(reason)


def import_peer(module: str) -> ModuleType:
    """A module of the DeepSpeed peer: imported, or a skip (a failure under XTC_REQUIRE_PEER=1)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        skip_unless(False, f"{module} cannot be imported ({err}); install the peer extra: make test does", PEER)
        raise  # not reached
