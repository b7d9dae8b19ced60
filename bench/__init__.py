"""xtc benchmarks: ``python -m bench [--quick] [--json] [--only NAME]``. Every timed figure is a ratio of two
timings measured in the same run, interleaved round by round, so machine noise hits both sides alike; sizes are
exact byte counts (see docs/performance.md, which describes each benchmark's method)."""
