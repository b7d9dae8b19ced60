"""The study's figures (matplotlib Agg + seaborn), sized for a paper column and saved as PNG (300 dpi) and PDF.

``pareto``: score vs model size (log MB) with our Pareto front and the paper's points beside ours;
``budget``: score vs training epochs; ``kd``: KD variants side by side (bars = seed mean, error bars = seed std);
``heatmap``: weight bits x layers. The score is the GLUE average, or the selection metric when a study ran a
single task (``summary.headline``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: figures are files (must precede pyplot)
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from xtc.atomic import atomic_path  # noqa: E402
from xtc.tasks import get_task  # noqa: E402
from xtc.report.columns import AXES, FP, GIVEN, bits_sort_key, kd_sort_key, model_label  # noqa: E402
from xtc.report.paper import AVERAGE, GLUE  # noqa: E402
from xtc.report.summary import headline, pareto_front, selection_label  # noqa: E402

KINDS = ("pareto", "budget", "kd", "heatmap")
MAX_POINT_LABELS = 12
COLUMN_WIDTH = 3.3  # inches: one column of a two-column paper
HEIGHT = 2.5
DPI = 300
_PAPER_MARKERS = {"XTC": "s", "DeepSpeed re-run": "^", "BinaryBERT": "D", "BiT": "v", "BERT-base": "P"}
_RC = {"font.size": 7, "axes.titlesize": 7.5, "axes.labelsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7,
       "legend.fontsize": 7, "legend.title_fontsize": 7, "axes.linewidth": 0.6, "lines.linewidth": 1.0,
       "lines.markersize": 4, "pdf.fonttype": 42, "savefig.dpi": DPI}


def _bits_label(bits: str) -> str:
    return "FP32" if bits == FP else f"{bits}-bit"


def run_scores(long: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its axes, ``config`` if present, and ``score`` = the task's selection metric at the best
    checkpoint, in percent."""
    selection = long["task"].map(lambda t: get_task(t).selection_metric)
    rows = long[(long["checkpoint"] == "best") & (long["metric"] == selection)]
    return rows.assign(score=100 * rows["value"]).reset_index(drop=True)


def _variant_label(frame: pd.DataFrame, exclude: Collection[str]) -> pd.Series:
    """A legend label from the axes that vary in ``frame`` (except ``exclude``): ``W1A8 12L, KD one_stage``."""
    varying = [a for a in AXES if a not in exclude and frame[a].astype(str).nunique() > 1]
    model_axes = {"layers", "wbits", "abits"}

    def label(row) -> str:
        parts = [model_label(row["layers"], row["wbits"], row["abits"])] if model_axes & set(varying) else []
        for axis in varying:
            if axis in model_axes:
                continue
            if axis in ("lr", "epochs") and row[axis] == GIVEN:  # a given teacher: not trained here
                value = "given"
            else:
                value = {"da": "DA on" if row["da"] else "DA off", "lr": f"lr {row['lr']:g}",
                         "teacher_layer": f"layers [{row['teacher_layer']}]", "kd": f"KD {row['kd']}",
                         "epochs": f"{row['epochs']} ep", "recipe": f"recipe {row['recipe']}"}[axis]
            if value in parts:
                continue
            parts.append(value)
        return ", ".join(parts) or model_label(row["layers"], row["wbits"], row["abits"])

    return frame.apply(label, axis=1) if len(frame) else pd.Series(dtype=str)


def _palette(names: Sequence[str]) -> dict[str, tuple]:
    colors = sns.color_palette("colorblind" if len(names) <= 10 else "husl", len(names))
    return dict(zip(names, colors))


def _ordered(frame: pd.DataFrame, column: str) -> list[str]:
    """The distinct values of ``column`` in the order of the axes' values (3 ep before 12 ep), not alphabetical."""
    keys = frame.assign(_kd=frame["kd"].map(kd_sort_key)).sort_values(
        [a if a != "kd" else "_kd" for a in AXES], kind="stable")
    return list(dict.fromkeys(keys[column]))


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, wrap=True)


def figure_pareto(summary: pd.DataFrame, paper: pd.DataFrame, tasks: Collection[str]) -> Figure:
    column, prefix, ylabel = headline(summary, tasks)
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, HEIGHT + 0.4), layout="constrained")
    ours = summary.assign(score=summary[f"{prefix}_best_mean"], err=summary[f"{prefix}_best_std"])
    ours = ours[ours["size_mb"].notna() & ours["score"].notna()]
    palette = _palette([_bits_label(b) for b in sorted(set(summary["wbits"]), key=bits_sort_key)])
    for bits, group in ours.groupby(ours["wbits"].map(_bits_label)):
        ax.errorbar(group["size_mb"], group["score"], yerr=group["err"].fillna(0), fmt="o", color=palette[bits],
                    label=f"ours: {bits} weights", capsize=1.5, elinewidth=0.6, markeredgecolor="white",
                    markeredgewidth=0.4, zorder=3)
    if len(ours) <= MAX_POINT_LABELS:  # few points: name each (W1A8 6L), the depth is not in the colour
        for _, row in ours.iterrows():
            ax.annotate(row["model"], (row["size_mb"], row["score"]), xytext=(-3, 3), textcoords="offset points",
                        ha="right", va="bottom", fontsize="x-small", color="0.25")
    front = ours[pareto_front(ours["size_mb"].to_numpy(), ours["score"].to_numpy())].sort_values("size_mb")
    if len(front) > 1:
        ax.step(front["size_mb"], front["score"], where="post", color="black", linestyle="--", linewidth=0.7,
                label="Pareto front (ours)", zorder=2)
    points = _paper_points(paper, column, prefix, summary)
    for method, group in points.groupby("method", sort=False):
        ax.scatter(group["size_mb"], group["value"], marker=_PAPER_MARKERS.get(method, "X"), facecolors="none",
                   edgecolors="0.3", linewidths=0.7, label=f"paper: {method}", zorder=4)
    if ours.empty and points.empty:
        _empty(ax, "no configuration with a size\n(FP students have no packed export)")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("Model size (MB, log scale)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", linewidth=0.3, alpha=0.5)
    handles, labels = ax.get_legend_handles_labels()
    if handles:  # ours first, then the front, then the paper
        ranked = sorted(zip(handles, labels), key=lambda hl: (not hl[1].startswith("ours"), hl[1].startswith("paper")))
        fig.legend(*zip(*ranked), loc="outside lower center", ncol=2, frameon=False, handletextpad=0.3,
                   columnspacing=0.8)
    return fig


def _paper_points(paper: pd.DataFrame, column, prefix: str, summary: pd.DataFrame) -> pd.DataFrame:
    """The paper rows that report the plotted score and a size: GLUE averages when ours are complete 8-task
    averages, the task's selection metric for a single-task study."""
    if paper.empty:
        return paper
    if column is None:
        if not summary["glue_avg_complete"].all():
            return paper.iloc[0:0]
        keep = (paper["task"] == GLUE) & (paper["metric"] == AVERAGE)
    else:
        keep = (paper["task"] == column.task) & (paper["metric"] == column.key)
    return paper[keep & paper["size_mb"].notna()]


def _grid(n: int) -> tuple[plt.Figure, np.ndarray]:
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    size = (COLUMN_WIDTH, HEIGHT) if n == 1 else (1.9 * cols + 0.5, 1.8 * rows + 0.9)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def figure_budget(scores: pd.DataFrame) -> Figure:
    """Score vs epochs per task; one line per combination of the other varying axes; error bars: seed std."""
    tasks = [t for t in dict.fromkeys(scores["task"])]
    fig, axes = _grid(max(len(tasks), 1))
    scores = scores.assign(variant=_variant_label(scores, exclude={"epochs"}))
    variants = _ordered(scores, "variant")
    palette = _palette(variants)
    for ax, task in zip(axes, tasks):
        data = scores[scores["task"] == task]
        sns.lineplot(data=data, x="epochs", y="score", hue="variant", palette=palette, errorbar="sd",
                     err_style="bars", marker="o", ax=ax, legend=False, err_kws={"capsize": 1.5, "elinewidth": 0.6})
        ax.set_title(get_task(task).title if len(tasks) > 1 else "")
        ax.set_xlabel("Training budget (epochs)")
        ax.set_ylabel(selection_label(task))
        ax.set_xticks(sorted(data["epochs"].unique()))
        ax.grid(True, linewidth=0.3, alpha=0.5)
    if not tasks:
        _empty(axes[0], "no runs")
    if len(variants) > 1:
        handles = [plt.Line2D([], [], color=palette[v], marker="o") for v in variants]
        fig.legend(handles, variants, loc="outside lower center", ncol=2, frameon=False)
    return fig


def figure_kd(scores: pd.DataFrame) -> Figure:
    """Bars per KD variant, one panel per task (bar = seed mean, error bar = seed std, dots = seeds); hue = the
    other axes that vary, so a bar never pools anything but seeds."""
    tasks = list(dict.fromkeys(scores["task"]))
    fig, axes = _grid(max(len(tasks), 1))
    if scores.empty:
        _empty(axes[0], "no runs")
        return fig
    order = sorted(scores["kd"].unique(), key=kd_sort_key)
    scores = scores.assign(hue=_variant_label(scores, exclude={"kd", "task"}))
    hues = _ordered(scores, "hue")
    palette = _palette(hues)
    dodge = len(hues) > 1
    for ax, task in zip(axes, tasks):
        data = scores[scores["task"] == task]
        present = [h for h in hues if h in set(data["hue"])]  # a task's own budgets: no empty bar slots
        sns.barplot(data=data, x="kd", y="score", hue="hue", order=order, hue_order=present, palette=palette,
                    errorbar="sd", capsize=0.15, err_kws={"linewidth": 0.7}, ax=ax, legend=False)
        sns.stripplot(data=data, x="kd", y="score", hue="hue", order=order, hue_order=present, dodge=dodge,
                      palette=dict.fromkeys(hues, "black"), size=2, jitter=0.1, ax=ax, legend=False)
        low, high = data["score"].min(), data["score"].max()
        ax.set_ylim(max(0.0, low - 0.5 * (high - low) - 1), high + 0.15 * (high - low) + 0.5)
        spec = get_task(task)
        ax.set_title(spec.title if len(tasks) > 1 else "")
        ax.set_xlabel("Knowledge distillation variant")
        ax.set_ylabel(selection_label(task))
        ax.tick_params(axis="x", rotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
        ax.grid(True, axis="y", linewidth=0.3, alpha=0.5)
    if dodge:
        handles = [plt.Rectangle((0, 0), 1, 1, color=palette[h]) for h in hues]
        fig.legend(handles, hues, loc="outside lower center", ncol=min(len(hues), 3), frameon=False)
    return fig


def figure_heatmap(summary: pd.DataFrame, tasks: Collection[str]) -> Figure:
    """Weight bits x layers, annotated with the score; several configurations in one cell: the best one."""
    _, prefix, label = headline(summary, tasks)
    data = summary.assign(score=summary[f"{prefix}_best_mean"], bits=summary["wbits"])
    table = data.pivot_table(index="bits", columns="layers", values="score", aggfunc="max")
    table = table.reindex(index=sorted(table.index, key=bits_sort_key), columns=sorted(table.columns, reverse=True))
    table.index = [_bits_label(b) for b in table.index]
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, HEIGHT), layout="constrained")
    if table.empty:
        _empty(ax, "no scores")
        return fig
    several = (data.groupby(["bits", "layers"]).size() > 1).any()
    sns.heatmap(table, annot=True, fmt=".1f", cmap="viridis", ax=ax, linewidths=0.5, annot_kws={"fontsize": 7},
                cbar_kws={"label": label + (" (best config per cell)" if several else "")})
    ax.set_xlabel("Encoder layers")
    ax.set_ylabel("Weight bits")
    ax.tick_params(axis="y", rotation=0)
    return fig


# No creation date in the files: the same results give the same bytes, so DVC (which records the figures' hashes)
# sees no change where nothing changed.
_METADATA = {".pdf": {"CreationDate": None}, ".png": {}}


def write_figures(kinds: Sequence[str], paths: Sequence[str | os.PathLike[str]], summary: pd.DataFrame,
                  long: pd.DataFrame, paper: pd.DataFrame, tasks: Collection[str]) -> list[Path]:
    """Draw each kind and save it to exactly the ``paths`` named ``<anything>_<kind>.<png|pdf>``."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown figure kinds {unknown}; choose from {list(KINDS)}")
    by_kind = paths_by_kind(kinds, paths)
    scores = run_scores(long)
    makers: Mapping[str, Callable[[], Figure]] = {
        "pareto": lambda: figure_pareto(summary, paper, tasks),
        "budget": lambda: figure_budget(scores),
        "kd": lambda: figure_kd(scores),
        "heatmap": lambda: figure_heatmap(summary, tasks),
    }
    written = []
    for kind in kinds:
        with plt.rc_context(_RC):
            fig = makers[kind]()
            for path in by_kind[kind]:
                with atomic_path(path) as tmp:
                    fig.savefig(tmp, format=path.suffix[1:], dpi=DPI, bbox_inches="tight", pad_inches=0.02,
                                metadata=_METADATA[path.suffix])
                written.append(path)
            plt.close(fig)
    return written


def paths_by_kind(kinds: Sequence[str], paths: Sequence[str | os.PathLike[str]]) -> dict[str, list[Path]]:
    """Match each output path to its kind by the ``_<kind>`` ending of its stem; every path and kind must match."""
    by_kind: dict[str, list[Path]] = {kind: [] for kind in kinds}
    for path in map(Path, paths):
        kind = next((k for k in kinds if path.stem.endswith(f"_{k}")), None)
        if kind is None or path.suffix not in (".png", ".pdf"):
            raise ValueError(f"figure path {path} is not <study>_<kind>.png/.pdf for a kind in {list(kinds)}")
        by_kind[kind].append(path)
    missing = [k for k, v in by_kind.items() if not v]
    if missing:
        raise ValueError(f"no output path for the figure kinds {missing}; pass <study>_<kind>.png and .pdf")
    return by_kind
