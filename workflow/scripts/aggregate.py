"""Snakemake adapter of the aggregate rule: the study's tables and figures (all the work is xtc.report.aggregate).

input: runs (runs.tsv; metrics and sizes are DAG dependencies only); params: study, paper, figures;
output: md, tex, csv, figures (<study>_<kind>.png/.pdf for each kind in params.figures); log: optional.
"""

import logging

from xtc.report import aggregate

if snakemake.log:  # noqa: F821 (Snakemake's script directive injects `snakemake`)
    logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)  # noqa: F821

aggregate(
    runs=snakemake.input.runs,  # noqa: F821
    study=snakemake.params.study,  # noqa: F821
    md=snakemake.output.md,  # noqa: F821
    tex=snakemake.output.tex,  # noqa: F821
    csv=snakemake.output.csv,  # noqa: F821
    paper=list(snakemake.params.paper),  # noqa: F821
    figures=list(snakemake.output.figures),  # noqa: F821
    kinds=list(snakemake.params.figures),  # noqa: F821
)
