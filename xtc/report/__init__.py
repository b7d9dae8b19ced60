"""Tables and figures of a study from its runs (pandas, matplotlib, seaborn; never torch: the report runs where no model does).

``aggregate(runs_tsv, study, md, tex, csv, paper=[...], figures=[...], kinds=[...])`` does it all; the parts:
``collect`` (runs.tsv, metrics.json, size.json -> tidy frames), ``summary`` (one row per configuration, GLUE
average, Pareto front), ``paper`` (config/paper/*.csv and the join), ``tables`` (md/tex/csv), ``figures``
(imported only when figures are drawn). Command line: ``python -m xtc.report --help``.
"""

from xtc.report.aggregate import StudyResults, aggregate, load_results, output_paths
from xtc.report.collect import collect_metrics, collect_sizes, read_runs_table
from xtc.report.paper import PAPER_COLUMNS, join_paper, load_paper
from xtc.report.summary import assign_configurations, headline, pareto_front, summarize

__all__ = [
    "PAPER_COLUMNS", "StudyResults", "aggregate", "assign_configurations", "collect_metrics", "collect_sizes",
    "headline", "join_paper", "load_paper", "load_results", "output_paths", "pareto_front", "read_runs_table",
    "summarize",
]
