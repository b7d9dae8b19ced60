"""The guards of tests/guards.py, run for real in a child pytest: where `make test` (or CI) promises a test runs, a
missing DeepSpeed peer, a broken C++ compiler or missing GLUE files fail it instead of skipping it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROMISES = ("XTC_REQUIRE_PEER", "XTC_REQUIRE_COMPILE", "XTC_REQUIRE_GLUE", "XTC_REQUIRE_SLURM", "CI")


def child_pytest(test: str, env: dict[str, str], path: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in PROMISES}
    pythonpath = os.pathsep.join([*map(str, path), str(REPO)])
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=REPO,
                          env={**base, "PYTHONPATH": pythonpath, **env}, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def broken_deepspeed(tmp_path_factory) -> Path:
    """A `deepspeed` package that cannot be imported, first on the path."""
    root = tmp_path_factory.mktemp("broken")
    (root / "deepspeed").mkdir()
    (root / "deepspeed" / "__init__.py").write_text('raise ImportError("deepspeed is broken here (test stand-in)")\n')
    return root


@pytest.mark.parametrize("test, env, promise", [
    ("tests/test_bench.py::test_deepspeed_student_really_quantizes", {}, "XTC_REQUIRE_PEER"),
    ("tests/test_engine.py::test_compiled_kernels_match_the_eager_ones", {"CXX": "/nonexistent/c++"},
     "XTC_REQUIRE_COMPILE"),
    ("tests/test_glue.py::test_real_rows_are_read_verbatim", {"XTC_GLUE_DIR": "/nonexistent/glue"}, "XTC_REQUIRE_GLUE"),
    ("tests/test_glue.py::test_real_rows_are_read_verbatim", {"XTC_GLUE_DIR": "/nonexistent/glue"}, "CI"),
])
def test_a_promised_test_fails_instead_of_skipping(broken_deepspeed, test, env, promise):
    path = (broken_deepspeed,) if promise == "XTC_REQUIRE_PEER" else ()
    done = child_pytest(test, {**env, promise: "true" if promise == "CI" else "1"}, path)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out[-3000:]
    assert "is set, so this test must run, but" in out and "skipped" not in out


def test_elsewhere_the_same_test_skips_with_its_reason(broken_deepspeed):
    done = child_pytest("tests/test_bench.py::test_deepspeed_student_really_quantizes", {"XTC_GLUE_DIR": "/x"},
                        (broken_deepspeed,))
    assert done.returncode == 0 and "1 skipped" in done.stdout, done.stdout[-3000:]
