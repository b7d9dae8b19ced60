"""A study's whole aggregation in one call: runs table -> tidy frames -> tables (md, tex, csv) + figures.

Both the Snakemake adapter (``workflow/scripts/aggregate.py``) and ``python -m xtc.report`` call ``aggregate``;
neither needs torch (aggregation runs where no model does).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from xtc.report.collect import collect_metrics, collect_sizes, read_runs_table
from xtc.report.paper import join_paper, load_paper
from xtc.report.summary import assign_configurations, summarize
from xtc.report.tables import notes, write_tables

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


@dataclass
class StudyResults:
    """Everything the tables and figures are drawn from (handy in a notebook)."""

    study: str
    runs: pd.DataFrame  # runs.tsv, normalized, plus config and epochs_label
    long: pd.DataFrame  # one row per (run, checkpoint, metric key); value is a fraction
    summary: pd.DataFrame  # one row per configuration (the CSV table), paper and delta columns joined
    comparison: pd.DataFrame  # the paper comparison in long form
    paper: pd.DataFrame  # every row of the paper CSVs
    tasks: list[str]
    notes: list[str]


def load_results(runs: PathLike, study: str, paper: Sequence[PathLike] = (),
               base_dir: PathLike | None = None) -> StudyResults:
    """Read a study's runs table, their metrics.json and size.json files, and the paper CSVs; build the table.

    Relative paths in the runs table are relative to ``base_dir`` (default: the working directory, as Snakemake
    runs scripts from the workflow's working directory).
    """
    table = read_runs_table(runs)
    if set(table["study"]) != {study}:
        others = sorted(set(table["study"]) - {study})
        if study not in set(table["study"]):
            raise ValueError(f"{runs} has no run of study {study!r} (it lists studies {others})")
        log.warning("%s also lists runs of %s; only study %r is aggregated", runs, others, study)
        table = table[table["study"] == study].reset_index(drop=True)
    table = assign_configurations(table)
    long = collect_metrics(table, base_dir)
    sizes, conventions = collect_sizes(table, base_dir)
    tasks = list(dict.fromkeys(table["task"]))
    paper_files = [str(p) for p in paper]
    paper_rows = load_paper(paper_files)
    summary, comparison = join_paper(summarize(long, sizes, table), paper_rows, tasks)
    return StudyResults(study, table, long, summary, comparison, paper_rows, tasks,
                        notes(summary, tasks, comparison, conventions, paper_files))


def aggregate(runs: PathLike, study: str, md: PathLike, tex: PathLike, csv: PathLike,
              paper: Sequence[PathLike] = (), figures: Sequence[PathLike] = (), kinds: Sequence[str] = (),
              base_dir: PathLike | None = None) -> StudyResults:
    """Write the study's tables to ``md``/``tex``/``csv`` and each figure kind to its ``figures`` paths
    (``<study>_<kind>.png`` and ``.pdf``)."""
    results = load_results(runs, study, paper, base_dir)
    write_tables(study, results.summary, results.comparison, results.tasks, results.notes, md, tex, csv)
    if kinds or figures:
        from xtc.report.figures import write_figures  # matplotlib only when figures are asked for

        write_figures(kinds, figures, results.summary, results.long, results.paper, results.tasks)
    log.info("study %s: %d configurations from %d runs -> %s", study, len(results.summary), len(results.runs), md)
    return results


def output_paths(study: str, tables_dir: PathLike, figures_dir: PathLike,
                 kinds: Sequence[str]) -> tuple[dict[str, Path], list[Path]]:
    """The workflow's layout: ``<tables_dir>/<study>.{md,tex,csv}`` and ``<figures_dir>/<study>_<kind>.{png,pdf}``."""
    tables = {ext: Path(tables_dir) / f"{study}.{ext}" for ext in ("md", "tex", "csv")}
    figures = [Path(figures_dir) / f"{study}_{kind}.{ext}" for kind in kinds for ext in ("png", "pdf")]
    return tables, figures
