"""``python -m xtc.report.show STUDY``: print a finished study's main table and where its outputs are.

``make demo`` ends with it. It reads what the workflow wrote (``results/tables/<study>.md`` and the figures), so
what it prints is exactly what the files hold.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from xtc.report.tables import BEST_HEADING as MAIN_SECTION


def main_table(markdown: str) -> str:
    """The best-checkpoint section of a study's Markdown tables (heading to the next heading)."""
    start = markdown.find(MAIN_SECTION)
    if start < 0:
        raise ValueError(f"no '{MAIN_SECTION}' section")
    end = markdown.find("\n## ", start + len(MAIN_SECTION))
    return markdown[start:end if end >= 0 else None].strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xtc.report.show", description=__doc__)
    parser.add_argument("study", help="the study's name (config: `study:`)")
    parser.add_argument("--tables", default="results/tables", help="folder of <study>.md/.csv/.tex")
    parser.add_argument("--figures", default="figures", help="folder of <study>_<kind>.png/.pdf")
    parser.add_argument("--report", default=None, help="the Snakemake report, if one was made")
    args = parser.parse_args(argv)
    md = Path(args.tables) / f"{args.study}.md"
    if not md.is_file():
        print(f"error: {md} does not exist: the study '{args.study}' has not finished (run the workflow first)",
              file=sys.stderr)
        return 2
    try:
        table = main_table(md.read_text())
    except ValueError as error:
        print(f"error: {md}: {error}", file=sys.stderr)
        return 2
    figures = sorted(Path(args.figures).glob(f"{args.study}_*.png"))
    print(f"\n{table}\n")
    print(f"Tables:  {md} (all sections and notes), {md.with_suffix('.csv')}, {md.with_suffix('.tex')}")
    print(f"Figures: {', '.join(str(f) for f in figures) or '(none)'} (and .pdf)")
    if args.report:
        state = "" if Path(args.report).is_file() else " (not written)"
        print(f"Report:  {args.report}{state}")
    print("Runs:    results/runs/ and results/teachers/ (model/, packed/, metrics.json, train_log.jsonl); "
          "logs: results/logs/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
