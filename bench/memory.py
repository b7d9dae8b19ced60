"""Peak resident memory of one benchmark candidate, each measured in a fresh child process (CPU).

``python -m bench.memory MODULE:FUNCTION JSON_KWARGS STEPS``: the child calls ``FUNCTION(**kwargs)``, which builds
the candidate and returns its step (a no-argument callable), runs one warm-up step (so gradients and optimizer state
exist, as in steady-state training), resets the kernel's high-water mark of resident memory (``VmHWM``, by writing
5 to ``/proc/self/clear_refs``), runs ``STEPS`` more steps and reads ``VmHWM`` again. It prints one JSON object:

* ``resident_mib``: ``VmRSS`` just before the measured steps (models, gradients, optimizer state, libraries),
  after glibc's ``malloc_trim`` has returned the memory the allocator kept cached from the warm-up step;
* ``peak_mib``: ``VmHWM`` over the measured steps, the process's true peak while training;
* ``step_peak_mib``: ``peak_mib - resident_mib``, what one step adds at its peak (activations, temporaries).

A fresh process per candidate keeps one candidate's freed-but-cached memory and imports (DeepSpeed's) out of the
other's figures. Resident memory counts pages actually touched, so it is what the machine must really provide.
Without a writable ``/proc/self/clear_refs`` (not Linux), ``peak_mib`` falls back to ``ru_maxrss``, the peak since
the process started, and ``step_peak_mib`` is left out (``method`` says which was used).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIB = 2**20


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    """Hand the allocator's cached free memory back to the kernel (glibc ``malloc_trim``), so that resident memory
    between steps is live data only and the next step's peak counts everything that step needs."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def calibration_step(mib: int) -> Callable[[], None]:
    """A step that allocates and touches ``mib`` MiB, then frees it: its ``step_peak_mib`` must come out as about
    ``mib`` (a self-check of the method, used by the tests)."""

    def step() -> None:
        block = bytearray(mib * MIB)
        block[::4096] = b"\x01" * len(range(0, len(block), 4096))  # touch every page
        del block

    return step


def measure(target: str, kwargs: dict, steps: int) -> dict:
    """Run in the child: build ``target(**kwargs)``, warm up, and measure the peak over ``steps`` steps."""
    module, _, function = target.partition(":")
    step = getattr(importlib.import_module(module), function)(**kwargs)
    step()
    gc.collect()
    _release_free_memory()
    resident = _status_kib("VmRSS")
    reset = resident is not None and _reset_peak()
    for _ in range(steps):
        step()
    if reset:
        peak = _status_kib("VmHWM")
        return {"method": "VmHWM after clear_refs=5", "resident_mib": round(resident / 1024, 1),
                "peak_mib": round(peak / 1024, 1), "step_peak_mib": round((peak - resident) / 1024, 1)}
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    peak_mib = maxrss / MIB if sys.platform == "darwin" else maxrss / 1024
    return {"method": "ru_maxrss (peak since process start)", "peak_mib": round(peak_mib, 1)}


def in_children(jobs: dict[str, tuple[str, dict]], steps: int = 2, threads: int | None = None,
                timeout: float = 900) -> dict[str, dict]:
    """``measure`` each ``name: (target, kwargs)`` in its own fresh ``python -m bench.memory`` process.

    The children run one after the other: at BERT-base each holds 4-5 GB, and four at once beside the parent ran a
    24 GB machine out of memory. Returns ``{name: result}``.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    results = {}
    for name, (target, kwargs) in jobs.items():
        proc = subprocess.Popen([sys.executable, "-m", "bench.memory", target, json.dumps(kwargs), str(steps)],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"memory child {name} ({jobs[name][0]}) failed (exit {proc.returncode}):\n{err[-3000:]}")
        results[name] = json.loads(out.strip().splitlines()[-1])
    return results


def main(argv: list[str]) -> int:
    target, kwargs, steps = argv[0], json.loads(argv[1]), int(argv[2])
    import torch

    if "OMP_NUM_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed prints on stdout; keep it for the result
        result = measure(target, kwargs, steps)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
