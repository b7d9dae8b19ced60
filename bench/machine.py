"""The machine a benchmark ran on, for every report's ``machine`` block: CPU model, the instruction sets the int8
kernels care about (AVX2, AVX512-VNNI, AVX-VNNI, AMX), cores, threads and versions. The description lives in
``xtc.packed.serving`` (the workflow's serving report records it too); this module is the benchmarks' name for it.
"""

from xtc.packed.serving import ISA_FLAGS, isa_line, machine

__all__ = ["ISA_FLAGS", "isa_line", "machine"]
