"""``python -m bench [--quick] [--json] [--only NAME]``: run the benchmark suite and print its ratios."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from datetime import UTC, datetime

from bench import (deepspeed_step, export_ratio, kd_step, packed_eval, peers, quant_linear, serve, serve_sweep, tradeoff,
                   workflow)
from bench.machine import isa_line, machine

SUITE = {
    "quant_linear": quant_linear.run,
    "kd_step": kd_step.run,
    "deepspeed_step": deepspeed_step.run,
    "packed_eval": packed_eval.run,
    "export_ratio": export_ratio.run,
    "workflow": workflow.run,
    "serve": serve.run,
    "serve_sweep": serve_sweep.run,
    "tradeoff": tradeoff.run,
}
# Run only when named (--only): tradeoff reads what another command left behind (`make demo`'s models); serve_sweep
# takes ~5 minutes beside serve's record.
OPT_IN = ("tradeoff", "serve_sweep")
# The figure each benchmark is judged by, for the readable summary: (key, target).
HEADLINES = {
    "kd_step": [("w1a8_over_fp32", "<= 1.15"), ("w1a8_compiled_over_fp32", "<= 0.95"),
                ("w1a8_int8_over_fp32", "<= 0.95")],
    "deepspeed_step": [("xtc_over_deepspeed", "<= 0.8"), ("xtc_compiled_over_deepspeed", "<= 0.7"),
                       ("xtc_int8_over_deepspeed", "<= 0.7"), ("peak_mib_compiled_over_eager", "<= 1"),
                       ("peak_mib_int8_over_eager", "<= 1"), ("fp32_over_deepspeed", None),
                       ("peak_mib_xtc_over_deepspeed", None), ("step_peak_mib_xtc_over_deepspeed", None)],
    "packed_eval": [("packed_over_fake_quant_throughput", None), ("packed_over_fp32_dir_load", None)],
    "export_ratio": [("max_ratio", "<= 1.01")],
    "serve": [("best_ort_int8", None), ("engine_speedup_vs_best_ort_int8", ">= 1.0"),
              ("engine_latency_ratio_vs_best_ort_int8", "<= 1.0"), ("engine_resident_ratio_vs_best_ort_int8", "<= 0.3"),
              ("engine_packed_speedup_vs_best_ort_int8", ">= 1.0"),
              ("engine_packed_latency_ratio_vs_best_ort_int8", "<= 1.0"),
              ("engine_packed_resident_ratio_vs_best_ort_int8", "<= 0.3"), ("engine_speedup_vs_fp32", ">= 2.5"),
              ("engine_memory_ratio_vs_fp32", "<= 0.3"),
              ("engine_load_ratio_vs_fp32", "<= 1.0"), ("engine_packed_speedup_vs_fp32", ">= 2.5"),
              ("engine_packed_memory_ratio_vs_fp32", "<= 0.3"), ("numerics_within_bound", None)],
    "tradeoff": [("best_ort_int8", None)],
    "serve_sweep": [("cells_engine_at_or_above_best_ort_int8", None), ("engine_vs_best_ort_int8_min", None),
                    ("engine_vs_best_ort_int8_max", None)],
    "workflow": [("dry_run", None), ("xtc_help_s", "< 3"), ("xtc_distill_first_step_s", "< 3"),
                 ("xtc_distill_cpu_s_at_first_step", None)],
}

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small inputs and few rounds (under a minute)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a summary")
    parser.add_argument("--only", choices=sorted(SUITE), action="append", help="run only these benchmarks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = args.only or [name for name in SUITE if name not in OPT_IN]
    if {"serve", "serve_sweep"} & set(names) and (why := peers.missing_extra()):
        print(f"python -m bench: {why}", file=sys.stderr)
        return 2
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
              "mode": "quick" if args.quick else "full"}
    out = sys.stdout
    # DeepSpeed logs to stdout from the moment it is imported: keep stdout for the report alone.
    with contextlib.redirect_stdout(sys.stderr):
        for name in names:
            started = time.perf_counter()
            report[name] = SUITE[name](quick=args.quick)
            report[name]["bench_seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        json.dump(report, out, indent=2)
        out.write("\n")
    else:
        out.write("\n".join(summary_lines(report, names)) + "\n")
    return 0

def summary_lines(report: dict, names: list[str]) -> list[str]:
    """The readable summary: each benchmark's headline figures with their targets."""
    lines = [f"python -m bench: {report['mode']} mode, {report['date']}, {isa_line(report['machine'])}"]
    for name in names:
        entry = report[name]
        lines.append(f"{name} ({entry['bench_seconds']} s)")
        if "skipped" in entry:
            lines.append(f"  skipped: {entry['skipped']}")
            continue
        for shape, figures in entry.get("shapes", {}).items():
            lines.append(f"  {shape}: " + ", ".join(f"{k} = {v}" for k, v in figures.items()))
        for label, row in entry.get("models", {}).items():
            lines.append(f"  {label}: " + ", ".join(f"{k} = {v}" for k, v in row.items() if k != "kind"))
        for key, target in HEADLINES.get(name, []):
            if key in entry:
                lines.append(f"  {key} = {entry[key]}" + (f"  (target {target})" if target else ""))
    return lines

if __name__ == "__main__":
    sys.exit(main())
