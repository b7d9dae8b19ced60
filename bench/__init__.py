"""xtc benchmarks: ``python -m bench [--quick] [--json] [--only NAME]``. Every timed figure is a ratio of two
timings measured in the same run, interleaved round by round, so machine noise hits both sides alike; sizes are
exact byte counts. docs/performance.md holds the current figures, each with its command and machine, and "How each
benchmark measures"; docs/performance-history.md the earlier runs."""
