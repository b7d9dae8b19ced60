"""The machine a benchmark ran on, for every report: CPU model, the instruction sets the int8 kernels care about,
threads and versions.

Whether a CPU has AVX512-VNNI (or AVX-VNNI) and AMX decides which int8 kernels oneDNN, FBGEMM and ONNX Runtime's
MLAS pick, and whether ``torch._int_mm`` has a fast path at all, so a ratio is only comparable beside these flags.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

# cpuinfo flag -> the name the reports use
ISA_FLAGS = {"avx2": "avx2", "avx512f": "avx512f", "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni",
             "amx_tile": "amx_tile", "amx_int8": "amx_int8", "amx_bf16": "amx_bf16"}


def _cpuinfo(text: str | None = None) -> tuple[str | None, set[str]]:
    """``(model name, flags)`` of the first processor in ``/proc/cpuinfo`` (or of ``text``)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None, set()
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def machine(cpuinfo: str | None = None) -> dict:
    """The ``machine`` block of a benchmark report."""
    model, flags = _cpuinfo(cpuinfo)
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()
    return {"cpu": model or platform.processor() or platform.machine(), "arch": platform.machine(),
            "isa": {name: flag in flags for flag, name in ISA_FLAGS.items()},
            "torch_cpu_capability": capability, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


def isa_line(block: dict) -> str:
    """One line for summaries and docs: ``Intel(R) Xeon(R) ..., AVX2 yes, AVX512-VNNI yes, AMX no, 2 threads``."""
    isa = block["isa"]
    yes = {True: "yes", False: "no"}
    return (f"{block['cpu']}, AVX2 {yes[isa['avx2']]}, AVX512-VNNI {yes[isa['avx512_vnni']]}, "
            f"AMX {yes[isa['amx_int8']]}, {block['threads']} threads")
