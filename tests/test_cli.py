"""The `xtc` command: help, version, the offline subcommands, and one-line user errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from xtc.cli import main


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "tasks" in out and "layers" in out


def test_python_dash_m_and_help_do_not_import_torch():
    code = "import sys; from xtc.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
    done = subprocess.run([sys.executable, "-m", "xtc", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("xtc ")


def test_layers_prints_the_xtc_choice_and_maps(capsys):
    assert main(["layers", "--layers", "6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "teacher_layer": [1, 3, 5, 7, 9, 11], "att_map": [1, 3, 5, 7, 9, 11], "rep_map": [0, 2, 4, 6, 8, 10, 12],
    }
    assert main(["layers", "--layers", "3", "--teacher-layer", "0,5,11", "--rep-first", "input", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["teacher_layer"] == [0, 5, 11]


def test_tasks_table(capsys):
    assert main(["tasks", "mnli", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["eval_splits"] == ["validation_matched", "validation_mismatched"]
    assert row["selection_metric"] == "mnli_m/accuracy"
    assert main(["tasks", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 9


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tasks", "sst"], "did you mean 'sst2'"),
        (["layers", "--layers", "13"], "more layers than the teacher has (12)"),
        (["layers", "--layers", "2", "--teacher-layer", "3,3"], "repeats [3]; each teacher layer can be kept once"),
        (["layers", "--layers", "2", "--teacher-layer", "0,12"], "out of range"),
        (["finetune", "--model", "m", "--task", "rte", "--out", "/nonexistent/run", "--set", "train.lr=NaN"],
         "train.lr=NaN is not a finite number"),
        (["finetune", "--model", "m", "--task", "rte", "--out", "/nonexistent/run", "--lr", "inf"],
         "train.lr=inf must be a finite number"),
    ],
)
def test_user_errors_are_one_line_without_traceback(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
