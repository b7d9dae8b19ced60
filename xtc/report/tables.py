"""A study's tables as Markdown, LaTeX (booktabs) and CSV; percent with one decimal, as the paper prints.

The Markdown and LaTeX files hold the same four parts: the best-checkpoint table (sub-metrics, GLUE average,
size and compression ratios), the last-checkpoint table, the paper comparison (ours, paper, delta) and the notes
that state every convention. The CSV is the machine-readable table: one row per configuration, every number
unrounded (percent for scores, MiB for sizes).
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from xtc.atomic import atomic_write_text
from xtc.tasks import get_task
from xtc.metrics import XTC_GLUE_TASKS, describe_glue_average
from xtc.report.collect import SIZE_COLUMNS
from xtc.report.columns import AXES, CHECKPOINTS, GIVEN, study_columns
from xtc.report.summary import headline
from xtc.study.grid import BASE

BEST_HEADING = "## Best dev checkpoint"  # the main table's section (xtc.report.show prints it)
_AXIS_TITLES = {"layers": "Layers", "teacher_layer": "Teacher layers", "wbits": "W bits", "abits": "A bits",
                "kd": "KD", "epochs": "Epochs", "lr": "LR", "da": "DA", "recipe": "Recipe"}


@dataclass(frozen=True)
class _Flavor:
    """What differs between Markdown and LaTeX cells."""

    pm: str
    times: str
    dagger: str
    minus: str

    def text(self, value: str) -> str:
        return value


class _Tex(_Flavor):
    def text(self, value: str) -> str:
        return tex_escape(value)


MD = _Flavor(pm=" ± ", times="x", dagger="†", minus="-")
TEX = _Tex(pm=r" $\pm$ ", times=r"$\times$", dagger=r"$^\dagger$", minus="$-$")


def tex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text (model names, headers, notes)."""
    out = str(text).replace("\\", r"\textbackslash{}")
    for char in "&%$#_{}":
        out = out.replace(char, "\\" + char)
    out = out.replace("~", r"\textasciitilde{}").replace("^", r"\textasciicircum{}")
    return out.replace("±", r"$\pm$").replace("†", r"$^\dagger$")


def _isnan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def pct(mean: float, std: float, flavor: _Flavor = MD) -> str:
    """``84.1 ± 0.3``; the std is left out for a single seed; empty when there is no number."""
    if _isnan(mean):
        return ""
    text = f"{mean:.1f}".replace("-", flavor.minus)
    return text if _isnan(std) else f"{text}{flavor.pm}{std:.1f}"


def signed(value: float, flavor: _Flavor = MD) -> str:
    return "" if _isnan(value) else f"{value:+.1f}".replace("-", flavor.minus)


def _axis_cell(axis: str, value) -> str:
    if axis in ("epochs", "lr") and str(value) in (str(GIVEN), str(float(GIVEN))):
        return "given"  # a teacher fine-tuned elsewhere: no budget or lr of ours
    if axis == "teacher_layer":
        return f"[{value}]" if value else "all"
    if axis == "lr":
        return f"{value:g}"
    if axis == "da":
        return "on" if value else "off"
    return str(value)


def varying_axes(summary: pd.DataFrame) -> list[str]:
    """Axes whose value differs between configurations (the others are stated once, above the tables)."""
    return [axis for axis in AXES if summary[axis].astype(str).nunique() > 1]


def _score_table(summary: pd.DataFrame, tasks: Collection[str], checkpoint: str, flavor: _Flavor,
                 with_size: bool) -> tuple[list[str], list[list[str]]]:
    columns = study_columns(tasks)
    axes = varying_axes(summary)
    with_average = len(study_columns_tasks(tasks)) > 1  # one task: the average would repeat its score
    header = ["Model", *(_AXIS_TITLES[a] for a in axes), "n", *(c.label for c in columns),
              *(["Avg"] if with_average else []), "Retention"]
    if with_size:
        header += ["Size (MB)", "CR part", "CR whole"]
    rows = []
    for _, row in summary.iterrows():
        average = pct(row[f"glue_avg_{checkpoint}_mean"], row[f"glue_avg_{checkpoint}_std"], flavor)
        if average and not row["glue_avg_complete"]:
            average += flavor.dagger
        cells = [row["model"], *(_axis_cell(a, row[a]) for a in axes), str(row["n_seeds"]),
                 *(pct(row[f"{c.slug}_{checkpoint}_mean"], row[f"{c.slug}_{checkpoint}_std"], flavor)
                   for c in columns), *([average] if with_average else []),
                 _number(row[f"retention_{checkpoint}"], "", 1)]
        if with_size:
            cells += [_number(row["size_mb"], "", 1), _number(row["compression_quantized_part"], flavor.times, 1),
                      _number(row["compression_whole_model"], flavor.times, 1)]
        rows.append([flavor.text(cells[0]), *(flavor.text(c) for c in cells[1:1 + len(axes)]),
                     *cells[1 + len(axes):]])
    return [flavor.text(h) for h in header], rows


def _number(value: float, suffix: str, digits: int) -> str:
    return "" if _isnan(value) else f"{value:.{digits}f}{suffix}"


def _as_printed(value: float) -> str:
    """The paper's number with its own precision (one decimal, or two for QQP's 87.58)."""
    return f"{value:.1f}" if round(value, 1) == value else f"{value:.2f}"


def _comparison_table(comparison: pd.DataFrame, flavor: _Flavor) -> tuple[list[str], list[list[str]]]:
    header = ["Model", "Metric", "Ours", "Paper", "Delta", "Ret. ours", "Ret. paper", "Paper's model"]
    rows = [[flavor.text(r["model"]), flavor.text(r["metric"]), pct(r["ours"], r["ours_std"], flavor),
             _as_printed(r["paper"]), signed(r["delta"], flavor), _number(r["ours_retention"], "", 1),
             _number(r["paper_retention"], "", 1), flavor.text(r["paper_model"])]
            for r in comparison.to_dict("records")]
    return [flavor.text(h) for h in header], rows


def notes(summary: pd.DataFrame, tasks: Collection[str], comparison: pd.DataFrame,
          conventions: Mapping[str, str], paper_files: Sequence[str]) -> list[str]:
    """The sentences that state every convention of the tables (they go under the tables in md and tex)."""
    single = len(study_columns_tasks(tasks)) == 1
    lines = [] if single else [describe_glue_average()]
    partial = [] if single else summary.loc[~summary["glue_avg_complete"], "glue_avg_tasks"].unique()
    for label in partial:
        present = [t for t in XTC_GLUE_TASKS if get_task(t).title in label.partition(": ")[2].split(", ")]
        if present:
            lines.append(f"† Average over the tasks present only ({label}): not an 8-task GLUE average, and never "
                         f"compared with the paper's. {describe_glue_average(tasks=present)}")
    selection = "; ".join(f"{get_task(t).title} {get_task(t).selection_metric}" for t in study_columns_tasks(tasks))
    lines.append(f"Scores in percent, one decimal: mean ± sample standard deviation (ddof=1) over the n seeds (no std "
                 f"for one seed). Best = the best dev checkpoint by each task's selection metric ({selection}); "
                 f"last = the last evaluation of training.")
    scored = headline(summary, tasks)[2].removesuffix(" (%)")
    lines.append(f"Retention: {scored} of the configuration over the FP teacher's (its best checkpoint, the one the "
                 f"students distil from), in percent; best table: the configuration's best checkpoint, last table: "
                 f"its last.")
    if summary["epochs"].astype(str).str.contains(" ").any():
        lines.append("Epochs: the recipe's budget per task; a budget axis (several budgets of one task) gives one row "
                     "per budget.")
    lines.append(
        "Size (MB, MiB = 2^20 bytes as in the BinaryBERT/BiT tables): the packed export's file, averaged over the "
        "configuration's runs (task heads differ slightly); FP teachers: the FP32 teacher of size.json; FP students "
        "have no packed export. CR part: compression ratio of the quantized part ("
        f"{conventions.get('quantized_part', 'XTC module set at FP32 over its packed bits and scales')}). "
        f"CR whole: whole model ({conventions.get('whole_model', 'all FP32 parameters over the student as stored')})."
    )
    if len(comparison):
        sources = sorted(set(comparison["source"]))
        lines.append("Paper: the XTC rows of " + ", ".join(paper_files) + " (sources: " + " | ".join(sources) +
                     "). Delta = ours (best checkpoint, seed mean) minus the paper, in points; matched on weight and "
                     "activation bits, layers, KD variant and kept teacher layers (lr, budget and augmentation not "
                     "matched). The paper's GLUE average is compared only with complete 8-task averages; its "
                     "sub-metric convention is not stated by the source. Ret. ours: ours over our FP teacher's same "
                     "metric; Ret. paper: the paper's value over the paper's FP teacher's (in percent; empty where "
                     "a teacher value is missing): compare these where the teachers differ.")
    if paper_files:
        lines += _missing_paper_values(summary, tasks, paper_files)
    elif paper_files:
        lines.append("Paper: no cell of this study is reported in " + ", ".join(paper_files) + ".")
    return lines


def _missing_paper_values(summary: pd.DataFrame, tasks: Collection[str], paper_files: Sequence[str]) -> list[str]:
    """One footnote naming every cell of the tables that has no paper value, grouped by the missing columns."""
    columns = study_columns(tasks)
    missing: dict[tuple[str, ...], list[str]] = {}
    for _, row in summary.iterrows():
        absent = tuple(c.label for c in columns
                       if _isnan(row.get(f"paper_{c.slug}", math.nan)) and not _isnan(row[f"{c.slug}_best_mean"]))
        if absent:
            missing.setdefault(absent, []).append(row["model"])
    if not missing:
        return []
    groups = "; ".join(f"{', '.join(labels) if len(labels) < len(columns) else 'every column'} of "
                       f"{', '.join(models)}" for labels, models in missing.items())
    return [f"No paper value (none in {', '.join(paper_files)}) for: {groups}. These cells have no Paper, Delta or "
            "retention comparison."]


def study_columns_tasks(tasks: Collection[str]) -> list[str]:
    return list(dict.fromkeys(c.task for c in study_columns(tasks)))


def _fixed_axes(summary: pd.DataFrame) -> str:
    fixed = [a for a in AXES if a not in varying_axes(summary)
             and not (a == "recipe" and summary[a].iloc[0] == BASE)]  # the base recipe goes unsaid
    return ", ".join(f"{_AXIS_TITLES[a]} {_axis_cell(a, summary[a].iloc[0])}" for a in fixed)


def _overview(summary: pd.DataFrame, tasks: Collection[str]) -> str:
    titles = ", ".join(get_task(t).title for t in study_columns_tasks(tasks))
    return (f"{int(summary['n_runs'].sum())} runs, {len(summary)} configurations; tasks: {titles}. "
            f"Fixed across this study: {_fixed_axes(summary) or 'nothing'}.")


# ---------------------------------------------------------------------------------------------- markdown
def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---" if i == 0 or not _numeric_column(rows, i) else "---:" for i in range(len(header))]
    return "\n".join([line(header), "| " + " | ".join(align) + " |", *(line(r) for r in rows)])


def _is_number(cell: str) -> bool:
    cell = cell.split(MD.pm)[0].split(TEX.pm)[0]
    for mark in (TEX.times, TEX.dagger, MD.dagger):
        cell = cell.replace(mark, "")
    cell = cell.replace(TEX.minus, "-").removesuffix(MD.times)
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _numeric_column(rows: list[list[str]], i: int) -> bool:
    """Right-align a column whose filled cells are all numbers (with their std, dagger or ratio sign)."""
    cells = [r[i] for r in rows if r[i]]
    return bool(cells) and all(_is_number(c) for c in cells)


def render_markdown(study: str, summary: pd.DataFrame, comparison: pd.DataFrame, tasks: Collection[str],
                    note_lines: Sequence[str]) -> str:
    parts = [f"# Study `{study}`", "", _overview(summary, tasks), "",
             f"{BEST_HEADING} (mean ± std over seeds, %)", "",
             _md_table(*_score_table(summary, tasks, "best", MD, with_size=True)), "",
             "## Last checkpoint (mean ± std over seeds, %)", "",
             _md_table(*_score_table(summary, tasks, "last", MD, with_size=False)), "",
             "## Paper comparison (best checkpoint)", ""]
    parts += [_md_table(*_comparison_table(comparison, MD)) if len(comparison) else
              "No cell of this study is reported by the paper CSVs given.", "", "## Notes", ""]
    parts += [f"- {line}" for line in note_lines]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------- latex
def _tex_table(header: list[str], rows: list[list[str]], caption: str, label: str) -> str:
    spec = "".join("r" if _numeric_column(rows, i) and i else "l" for i in range(len(header)))
    body = [" & ".join(header) + r" \\", r"\midrule", *(" & ".join(r) + r" \\" for r in rows)]
    return "\n".join([r"\begin{table}[t]", r"\centering\small", rf"\caption{{{caption}}}", rf"\label{{{label}}}",
                      r"\resizebox{\textwidth}{!}{%", rf"\begin{{tabular}}{{{spec}}}", r"\toprule", *body,
                      r"\bottomrule", r"\end{tabular}}", r"\end{table}"])


def render_latex(study: str, summary: pd.DataFrame, comparison: pd.DataFrame, tasks: Collection[str],
                 note_lines: Sequence[str]) -> str:
    name = tex_escape(study)
    convention = tex_escape(describe_glue_average())
    parts = [f"% Tables of study {study}, generated by xtc.report. Needs \\usepackage{{booktabs,graphicx}}.",
             f"% {_overview(summary, tasks)}", "",
             _tex_table(*_score_table(summary, tasks, "best", TEX, with_size=True),
                        f"{name}: best dev checkpoint, mean $\\pm$ std over seeds (\\%). {convention}",
                        f"tab:{study}-best"), "",
             _tex_table(*_score_table(summary, tasks, "last", TEX, with_size=False),
                        f"{name}: last checkpoint, mean $\\pm$ std over seeds (\\%).", f"tab:{study}-last"), ""]
    if len(comparison):
        parts += [_tex_table(*_comparison_table(comparison, TEX),
                             f"{name}: ours vs the paper (best checkpoint, points).", f"tab:{study}-paper"), ""]
    parts += [r"\begin{itemize}\footnotesize",
              *(rf"\item {tex_escape(line)}" for line in note_lines), r"\end{itemize}"]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------- csv
def csv_columns(summary: pd.DataFrame, tasks: Collection[str]) -> list[str]:
    """The CSV's column order: identity, axes, seeds, sub-metrics, average, retention, paper and delta, size, best epochs."""
    metric = [f"{c.slug}_{ck}_{stat}" for ck in CHECKPOINTS for c in study_columns(tasks) for stat in ("mean", "std")]
    average = [f"glue_avg_{ck}_{stat}" for ck in CHECKPOINTS for stat in ("mean", "std")]
    paper = [c for c in summary.columns if c.startswith(("paper_", "delta_"))]
    epochs = [f"{t}_best_epoch" for t in study_columns_tasks(tasks)]
    return ["config", "model", *AXES, "tasks", "n_tasks", "seeds", "n_seeds", "n_runs", *metric, *average,
            "glue_avg_tasks", "glue_avg_complete", *(f"retention_{ck}" for ck in CHECKPOINTS), *paper, *SIZE_COLUMNS,
            *epochs]


def write_tables(study: str, summary: pd.DataFrame, comparison: pd.DataFrame, tasks: Collection[str],
                 note_lines: Sequence[str], md: str | os.PathLike[str], tex: str | os.PathLike[str],
                 csv: str | os.PathLike[str]) -> None:
    atomic_write_text(md, render_markdown(study, summary, comparison, tasks, note_lines))
    atomic_write_text(tex, render_latex(study, summary, comparison, tasks, note_lines))
    table = summary.reindex(columns=csv_columns(summary, tasks))
    atomic_write_text(csv, table.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
