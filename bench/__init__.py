"""xtc benchmarks: ``python -m bench [--quick] [--json]``. Every figure is a ratio of two timings measured in the
same run, interleaved round by round, so machine noise hits both sides alike (see docs/performance.md)."""
