"""config/paper/*.csv: the paper's numbers as data — every row parses, has a source, and is in range."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from xtc.tasks import TASKS
from xtc.report.paper import AVERAGE, GLUE, PAPER_COLUMNS, load_paper

PAPER_DIR = Path(__file__).resolve().parents[1] / "config" / "paper"
FILES = sorted(PAPER_DIR.glob("*.csv"))


def test_the_paper_csvs_exist_and_parse():
    assert FILES, f"no CSV in {PAPER_DIR}"
    paper = load_paper(FILES)
    assert len(paper) == sum(len(pd.read_csv(f)) for f in FILES)
    assert (paper["source"].str.strip() != "").all()
    assert paper["value"].between(0, 100).all()
    assert paper["size_mb"].dropna().gt(0).all() and paper["layers"].isin([4, 5, 6, 12]).all()
    for row in paper.to_dict("records"):
        if row["task"] == GLUE:
            assert row["metric"] == AVERAGE
        else:
            assert row["metric"] in TASKS[row["task"]].metric_keys, row


def _value(paper, model, task, metric, method="XTC"):
    rows = paper[(paper["model"] == model) & (paper["task"] == task) & (paper["metric"] == metric)
                 & (paper["method"] == method)]
    assert len(rows) == 1, (model, task, metric)
    return rows["value"].iloc[0]


def test_reference_section_7_numbers():
    paper = load_paper(FILES)
    assert _value(paper, "FP BERT-base teacher", "mnli", "mnli_m/accuracy") == 84.9
    assert _value(paper, "1-bit W 8-bit A 5L", "qqp", "f1") == 87.58
    assert _value(paper, "2-bit W 8-bit A 6L", "mnli", "mnli_mm/accuracy") == 84.3
    assert _value(paper, "FP BERT-base teacher", GLUE, AVERAGE) == 83.95
    assert _value(paper, "1-bit W 8-bit A 12L", GLUE, AVERAGE) == 83.44
    rerun = paper[paper["method"] == "DeepSpeed re-run"].set_index("metric")["value"]
    assert rerun.to_dict() == {"mnli_m/accuracy": 84.2, "mnli_mm/accuracy": 84.7, "f1": 87.8, "accuracy": 90.9}
    others = paper[paper["method"].isin(["BinaryBERT", "BiT", "BERT-base"])].set_index("model")
    assert others.loc["BinaryBERT 1-1-4", ["value", "size_mb"]].tolist() == [79.9, 16.5]
    assert others.loc["BiT 1-1-1", ["value", "size_mb"]].tolist() == [73.5, 13.4]
    assert others.loc["BiT 1-1-1 (DA)", "value"] == 78.0 and others.loc["BERT-base FP", "size_mb"] == 418.0
    xtc = paper[(paper["method"] == "XTC") & (paper["task"] != GLUE)]
    assert len(xtc) == 9 * 4  # nine models x (MNLI-m, MNLI-mm, QQP F1, QQP acc)


@pytest.mark.parametrize(("column", "value", "message"), [
    ("source", "", "no source"),
    ("value", "184.9", "not a percentage"),
    ("metric", "mnli/accuracy", "is not one of mnli's keys"),
    ("teacher_layer", "1,3,5", "does not list"),
])
def test_bad_rows_are_rejected_with_their_line(tmp_path, column, value, message):
    table = pd.read_csv(PAPER_DIR / "xtc.csv", dtype=str, keep_default_na=False)
    if column == "teacher_layer":
        row = table.index[table["layers"] == "6"][0]
    else:
        row = 0
    table.loc[row, column] = value
    table.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=rf"line {row + 2} .*{message}"):
        load_paper([tmp_path / "bad.csv"])


def test_unknown_columns_are_rejected(tmp_path):
    pd.DataFrame([{"model": "x", "value": 1}]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="a paper CSV has exactly"):
        load_paper([tmp_path / "bad.csv"])
    assert list(load_paper([]).columns) == [*PAPER_COLUMNS, "file"]
