"""``python -m xtc.report``: a study's tables and figures without Snakemake (same function as the workflow)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from xtc.report.aggregate import aggregate, output_paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xtc.report", description=__doc__)
    parser.add_argument("--runs", required=True, help="the study's runs table, results/<study>/runs.tsv")
    parser.add_argument("--study", required=True, help="the study's name (names the output files)")
    parser.add_argument("--paper", action="append", default=[], help="a config/paper/*.csv (repeatable)")
    parser.add_argument("--out-tables", default="results/tables", help="folder of <study>.md/.tex/.csv")
    parser.add_argument("--out-figures", default="figures", help="folder of <study>_<kind>.png/.pdf")
    parser.add_argument("--figures", default="pareto,budget,kd,heatmap",
                        help="comma-separated kinds among pareto,budget,kd,heatmap ('' for none)")
    parser.add_argument("--base-dir", default=None, help="what relative paths in the runs table are relative to")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("xtc").setLevel(logging.INFO)
    kinds = [k for k in args.figures.split(",") if k]
    tables, figures = output_paths(args.study, args.out_tables, args.out_figures, kinds)
    try:
        aggregate(args.runs, args.study, tables["md"], tables["tex"], tables["csv"], paper=args.paper,
                  figures=figures, kinds=kinds, base_dir=args.base_dir)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in (*tables.values(), *figures):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
