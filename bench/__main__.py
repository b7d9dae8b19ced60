"""``python -m bench [--quick] [--json] [--only NAME]``: run the benchmark suite and print its ratios."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
import sys
from datetime import datetime, timezone

import torch

from bench import quant_linear

SUITE = {"quant_linear": quant_linear.run}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small inputs and few rounds (under a minute)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a summary")
    parser.add_argument("--only", choices=sorted(SUITE), action="append", help="run only these benchmarks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version()},
        "mode": "quick" if args.quick else "full",
    }
    out = sys.stdout
    # DeepSpeed logs to stdout from the moment it is imported: keep stdout for the report alone.
    with contextlib.redirect_stdout(sys.stderr):
        for name in args.only or SUITE:
            report[name] = SUITE[name](quick=args.quick)
    if args.json:
        json.dump(report, out, indent=2)
        out.write("\n")
    else:
        for name in args.only or SUITE:
            for shape, entry in report[name].get("shapes", {}).items():
                print(name, shape, entry, file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
