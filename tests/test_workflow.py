"""The Snakemake workflow, run for real: lint and format, dry runs of every study with their job counts, bad
study files stopped before any job starts, and the tiny study (.test/config.yaml) end to end on 2 cores."""

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from tinystudy import BIN, REPO, tiny


def snakemake(*args: str, cwd: Path = REPO, env=None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "snakemake"), *args], cwd=cwd, env=env or tiny.workflow_env(),
                          capture_output=True, text=True, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    """The `Job stats` table of a (dry) run: rule -> number of jobs."""
    table = output.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


# ------------------------------------------------------------------------------------------------ static checks
def test_lint_is_clean():
    done = snakemake("--lint")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Lints for" not in done.stdout + done.stderr


def test_snakefmt_check_passes():
    files = ["Snakefile", *sorted(str(p.relative_to(REPO)) for p in (REPO / "workflow" / "rules").glob("*.smk"))]
    done = subprocess.run([str(BIN / "snakefmt"), "--check", *files], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_common_smk_is_small_and_the_rules_call_jobs_directly():
    """The grid lives in xtc/study/grid.py and xtc/study/jobs.py (tests/test_study.py). One style in the rules: they
    call JOBS (xtc.study.jobs.Jobs) directly; common.smk holds only what Snakemake needs first (validation, JOBS,
    wildcard constraints, onstart) and the two path helpers that read a rule's own files."""
    common = (REPO / "workflow/rules/common.smk").read_text()
    assert len(common.splitlines()) <= 120
    assert re.findall(r"^def (\w+)", common, flags=re.M) == ["configured", "output_dir", "input_dir"]
    called = set()
    for path in (REPO / "workflow/rules").glob("*.smk"):
        text = path.read_text()
        called |= set(re.findall(r"\bJOBS\.(\w+)", text))
        if path.name != "common.smk":
            assert not re.search(r"^\s*def ", text, re.M), path
    assert {"teacher_input", "student_args", "run_minutes", "serving_plan", "study_table"} <= called


# The grid arithmetic behind each count (8 tasks unless said otherwise; teachers are given, so evaluated once).
# `distill` trains step-1 students (FP, layer-reduced) and step-2 students (1/2-bit) alike.
XTC_MAIN = {  # 3 layer counts x 2 bit widths; FP 6/5 layers are the 2 step-1 students; 5 tasks augmented
    "evaluate_given_teacher": 8, "augment": 5, "distill": 8 * 2 + 8 * 6, "export": 48, "evaluate_packed": 48,
    "serving_report": 1,  # one per study with packed students
}
LAYER_REDUCTION = {"evaluate_given_teacher": 8, "distill": 8 * 4}  # 6, 5, and 4 layers with two layer choices
BUDGET = {  # 3 budgets x 2 KD stages x 2 (augmentation off/on)
    "evaluate_given_teacher": 8, "augment": 8, "distill": 8 * 12, "export": 96, "evaluate_packed": 96,
    "serving_report": 1,
}
KD_VARIANTS = {"evaluate_given_teacher": 8, "augment": 5, "distill": 8 * 6, "export": 48, "evaluate_packed": 48,
               "serving_report": 1}
LR = {  # 2 layer counts x 3 learning rates; the 6-layer runs share one step-1 student per task
    "evaluate_given_teacher": 8, "augment": 5, "distill": 8 + 8 * 6, "export": 48, "evaluate_packed": 48,
    "serving_report": 1,
}
# All together, each run once: 240 quantized runs listed, minus 8 of budget (xtc-main's 12L W1A8), 8 of
# kd-variants (its one_stage = xtc-main's), 8 of kd-variants' two_stage (in budget) and 16 of lr (xtc-main's
# 12L at 2e-5 and 6L at 5e-5) = 200; the 32 FP students of layer-reduction include xtc-main's 16 step-1 students.
ALL = {"evaluate_given_teacher": 8, "augment": 8, "distill": 32 + 200, "export": 200, "evaluate_packed": 200,
       "runs_table": 5, "serving_report": 4}  # layer-reduction has no packed students


@pytest.mark.parametrize(
    "configfile, expected, study_names",
    [
        ("config/studies/xtc-main.yaml", XTC_MAIN, ["xtc_main"]),
        ("config/studies/layer-reduction.yaml", LAYER_REDUCTION, ["layer_reduction"]),
        ("config/studies/budget.yaml", BUDGET, ["budget"]),
        ("config/studies/kd-variants.yaml", KD_VARIANTS, ["kd_variants"]),
        ("config/studies/lr.yaml", LR, ["lr"]),
        ("config/studies/all.yaml", ALL, ["xtc_main", "layer_reduction", "budget", "kd_variants", "lr"]),
        (None, {"finetune_teacher": 1, "distill": 1 + 4, "export": 4, "evaluate_packed": 4, "serving_report": 1},
         ["demo"]),
    ],
)
def test_dry_run_lists_the_grid(configfile, expected, study_names):
    args = ["-n", "-p", "--cores", "8"] + (["--configfile", configfile] if configfile else [])
    done = snakemake(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = job_counts(done.stdout + done.stderr)
    aggregates = {f"aggregate_{name}": 1 for name in study_names}
    local = {"runs_table": len(study_names), "index_trained": 1, "all": 1}
    assert counts == {**local, **expected, **aggregates}
    # every training, teacher and augmentation command names the device its job holds: cuda for the paper
    # studies (gpu: 1), cpu for the demo (gpu: 0)
    commands = re.findall(r"xtc (?:finetune|distill|augment|evaluate --model (?!\S*packed)).*", done.stdout)
    rules = ("finetune_teacher", "distill", "augment", "evaluate_given_teacher")
    assert len(commands) == sum(counts.get(rule, 0) for rule in rules)
    device = "cpu" if configfile is None else "cuda"
    assert all(f"--device {device} " in command for command in commands), commands[:3]


def test_every_study_file_is_in_all_yaml():
    listed = yaml.safe_load((REPO / "config/studies/all.yaml").read_text())["studies"]
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "config/studies").glob("*.yaml") if p.name != "all.yaml")
    assert sorted(listed) == files


def test_profile_dry_run_from_the_repository_root():
    # a GPU study (the default one is the CPU demo); its runs do not overlap the demo's results/ if present
    done = snakemake("-n", "--cores", "8", "--profile", "slurm", "--configfile", "config/studies/xtc-main.yaml")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert re.search(r"Using profiles? slurm", out) and "gpu=1" in out and "CHANGE_ME" not in out  # no placeholders


# ------------------------------------------------------------------------------------------------ bad input
def _bad_study(tmp_path: Path, edit) -> Path:
    tiny.copy_workflow(tmp_path)
    config = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    edit(config)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return tmp_path


def _unknown_key(c):
    c["grid"]["wbit"] = c["grid"].pop("wbits")


def _unknown_value(c):
    c["grid"]["wbits"] = [1, 3]


def _too_many_layers(c):
    c["grid"]["layers"] = [4, 6]


def _unknown_exclusion_axis(c):
    c["exclude"] = {"no_ternary": {"bits": 2}}


def _missing_task_folder(c):
    c["data"]["glue_dir"] = "gluex"
    c["grid"]["task"] = ["sst2", "rte"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (_unknown_key, "bad.yaml: unknown key 'grid.wbit'; did you mean 'wbits'?"),
        (_unknown_value, "bad.yaml: grid.wbits[1] = 3 is not allowed; use one of: 1, 2, fp"),
        (_too_many_layers, "bad.yaml: grid.layers = 6 is more than the teacher's 4 layers (teacher.layers); use"),
        (_unknown_exclusion_axis, "bad.yaml: exclusion 'no_ternary' names an unknown axis 'bits'; did you mean "
                                  "'wbits'?"),
        (_missing_task_folder, "bad.yaml: task 'rte' (grid.task) has no folder gluex/RTE in the local GLUE dir "
                               "gluex (data.glue_dir); download it"),
    ],
)
def test_bad_study_stops_before_any_job(tmp_path, edit, message):
    workdir = _bad_study(tmp_path, edit)
    (workdir / "gluex" / "SST-2").mkdir(parents=True)
    done = snakemake("--cores", "1", "--configfile", "bad.yaml", cwd=workdir)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr[-2000:]
    assert not (workdir / "results").exists()  # nothing ran



def test_studies_built_together_must_agree(tmp_path):
    workdir = _bad_study(tmp_path, lambda c: None)
    tiny.make_inputs(workdir)
    other = yaml.safe_load((workdir / "bad.yaml").read_text())
    other.update(study="other", data={**other["data"], "batch_size": 8})
    (workdir / "other.yaml").write_text(yaml.safe_dump(other, sort_keys=False))
    (workdir / "both.yaml").write_text(yaml.safe_dump({"studies": ["bad.yaml", "other.yaml"]}))
    done = snakemake("-n", "--configfile", "both.yaml", cwd=workdir)
    assert done.returncode != 0
    assert ("other.yaml: 'data' differs from bad.yaml; studies built together share their data settings"
            in done.stdout + done.stderr), done.stdout[-2000:]

@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["data"].update(glue_dir=None),
         "no GLUE data for rte: no local folder is set (data.glue_dir in bad.yaml is unset and so is $GLUE_DIR)"),
        (lambda c: c["teacher"].update(model="someone/unreachable-bert"),
         "teacher.model = 'someone/unreachable-bert' is not a local directory, so it would be downloaded from the "
         "Hugging Face hub, but HF_HUB_OFFLINE is set"),
    ],
)
def test_offline_sources_stop_the_run_before_any_job_but_not_a_dry_run(tmp_path, edit, message):
    workdir = _bad_study(tmp_path, edit)
    tiny.make_inputs(workdir)
    (workdir / "results").mkdir()
    assert snakemake("-n", "--configfile", "bad.yaml", cwd=workdir).returncode == 0  # planning needs no network
    done = snakemake("--cores", "1", "--configfile", "bad.yaml", cwd=workdir)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert list((workdir / "results").iterdir()) == []  # nothing ran


def test_the_demo_study_is_the_issue_s_pipeline():
    """config/config.yaml: MiniLM-L6 teacher on SST-2, FP 3-layer step 1, W1A8/W2A8 at 6 and 3 layers, packed."""
    done = snakemake("-n", "--cores", "2", "--configfile", "config/config.yaml", "--directory", str(REPO),
                     env={**tiny.workflow_env(), "GLUE_DIR": "/nonexistent-glue"})
    assert done.returncode != 0 and "has no folder /nonexistent-glue/SST-2" in done.stdout + done.stderr
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert config["teacher"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert config["grid"]["task"] == ["sst2"] and config["grid"]["layers"] == [6, 3]
    assert config["grid"]["wbits"] == [1, 2] and config["quantize_from"] == "step1"


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny study: teacher -> FP 2-layer step 1 -> W1A8 at 2 and 4 layers -> exports -> tables, figures."""
    workdir = tiny.copy_workflow(tmp_path_factory.mktemp("tiny"))
    tiny.make_inputs(workdir)
    done = snakemake("--cores", "2", "--configfile", ".test/config.yaml", cwd=workdir)
    assert done.returncode == 0, done.stderr[-5000:]
    return workdir


def test_tiny_study_end_to_end(tiny_run):
    with (tiny_run / "results/tiny/runs.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert list(rows[0]) == ["study", "task", "layers", "teacher_layer", "wbits", "abits", "kd", "epochs", "lr",
                             "da", "seed", "recipe", "run_dir", "packed_dir"]
    assert [(r["layers"], r["wbits"], r["abits"], r["kd"]) for r in rows] == [
        ("4", "fp", "fp", "none"), ("4", "1", "8", "one_stage"), ("2", "fp", "fp", "one_stage"),
        ("2", "1", "8", "one_stage"),
    ]
    teacher, w1_4l, fp_2l, w1_2l = rows
    assert teacher["run_dir"] == "results/teachers/task~rte/seed~42" and not teacher["packed_dir"]
    assert w1_2l["run_dir"] == ("results/runs/task~rte/layers~2/wbits~1/abits~8/kd~one_stage/epochs~1/lr~0.001/"
                                "da~0/seed~42")
    assert not fp_2l["packed_dir"] and w1_2l["packed_dir"] == w1_2l["run_dir"] + "/packed"
    for row in rows:
        assert (tiny_run / row["run_dir"] / "metrics.json").is_file()
    # step 2 of the reduced run started from the step-1 student, with the full teacher
    inputs = json.loads((tiny_run / w1_2l["run_dir"] / "config.json").read_text())["inputs"]
    assert inputs["init"] == fp_2l["run_dir"] and inputs["teacher"] == teacher["run_dir"]
    # the packed checkpoint evaluates to exactly the trained model's best metrics
    for row in (w1_4l, w1_2l):
        assert (tiny_run / row["packed_dir"] / "size.json").is_file()
        packed = json.loads((tiny_run / row["run_dir"] / "packed_eval/metrics.json").read_text())["metrics"]
        assert packed == json.loads((tiny_run / row["run_dir"] / "metrics.json").read_text())["best"]["metrics"]
    # tables and figures; logs and benchmarks mirror the outputs
    for ext in ("md", "tex", "csv"):
        assert (tiny_run / f"results/tables/tiny.{ext}").stat().st_size > 0
    for ext in ("png", "pdf"):
        assert (tiny_run / f"figures/tiny_pareto.{ext}").stat().st_size > 0
    with (tiny_run / "results/tables/tiny.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 4  # one row per configuration
    assert (tiny_run / "results/logs" / w1_2l["run_dir"].removeprefix("results/") / "distill.log").is_file()
    assert (tiny_run / "results/benchmarks" / w1_2l["run_dir"].removeprefix("results/") / "distill.tsv").is_file()
    scores = json.loads((tiny_run / "results/scores/tiny.json").read_text())
    packed_of = {r["layers"]: r["packed_dir"] + "/model.xtc.safetensors" for r in rows if r["packed_dir"]}
    assert set(scores) == {"rte/teacher", "rte/L4/W1A8/one_stage/e1/lr0.001/da0/s42",
                           "rte/L2/FP/one_stage/e1/lr0.001/da0/s42", "rte/L2/W1A8/one_stage/e1/lr0.001/da0/s42"}
    # the serving report: each packed architecture on the integer engine against the FP32 teacher, in one job
    serving = json.loads((tiny_run / "results/serving/tiny.json").read_text())
    assert [(s["model"], s["packed"]) for s in serving["students"]] == [
        ("W1A8 4L", packed_of["4"]), ("W1A8 2L", packed_of["2"])]
    assert list(serving["teachers"]) == ["rte"] and all(s["speedup_vs_fp32"] > 0 for s in serving["students"])
    assert "| W1A8 2L | rte |" in (tiny_run / "results/serving/tiny.md").read_text()


def test_tiny_study_second_run_does_nothing(tiny_run):
    """Also: the parse-time recipe check finds the recipe of every finished run equal to its job's."""
    done = snakemake("-n", "--cores", "2", "--configfile", ".test/config.yaml", cwd=tiny_run)
    assert done.returncode == 0 and "Nothing to be done" in done.stdout + done.stderr


# ------------------------------------------------------------------------------------------------ shell quoting
PAYLOAD = "a b;touch X"
STUB_XTC = """#!/usr/bin/env python3
import json, sys
with open("xtc_calls.jsonl", "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def test_study_strings_reach_the_shell_as_one_word_each(tmp_path):
    """Every study string that a rule's `shell:` command carries (teacher.model, teacher.finetuned, data.glue_dir,
    augment.mlm, augment.glove, train.set values) holds `a b;touch X`: each dry-run command splits back to the exact
    value, and run through bash (with a stub `xtc` that records its argv) no X appears."""
    workdir = tiny.copy_workflow(tmp_path / "work")
    odd = tmp_path / PAYLOAD  # a real folder whose name is the payload: every source check passes
    for folder in ("RTE", "SST-2"):
        (odd / folder).mkdir(parents=True)
    value = str(odd)
    config = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    config["teacher"].update(model=value, finetuned={"rte": value})
    config["data"]["glue_dir"] = value
    config["augment"].update(mlm=value, glove=value)
    config["grid"].update(task=["rte", "sst2"], da=[1])
    config["train"]["set"] = [f"data.data_dir={value}"]
    (workdir / "odd.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    done = snakemake("-n", "-p", "--cores", "1", "--configfile", "odd.yaml", cwd=workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    commands = [line.split("Shell command: ", 1)[1] for line in (done.stdout + done.stderr).splitlines()
                if "Shell command: OMP_NUM_THREADS=" in line]
    def odd_flags(words: list[str]) -> set[str]:
        """The flags of a command that carry the payload."""
        sub, out = words[2], words[words.index("--out") + 1]
        return {"finetune": {"--model", "--data-dir"}, "augment": {"--mlm", "--glove", "--data-dir"},
                "evaluate": {"--model", "--data-dir"} if out.endswith("/given") else {"--data-dir"},
                "distill": {"--data-dir", "--set"} | ({"--teacher"} if "task~rte" in out else set()),
                "export": set()}[sub]

    seen = set()
    for command in commands:
        words = shlex.split(command)
        for flag in odd_flags(words):
            values = [words[i + 1] for i, w in enumerate(words) if w == flag]
            assert values and all(v in (value, f"data.data_dir={value}") for v in values), (flag, command)
            seen.add((words[2], flag))
    assert seen == {("finetune", "--model"), ("finetune", "--data-dir"), ("augment", "--mlm"), ("augment", "--glove"),
                    ("augment", "--data-dir"), ("evaluate", "--model"), ("evaluate", "--data-dir"),
                    ("distill", "--data-dir"), ("distill", "--set"), ("distill", "--teacher")}
    # run through bash: a stub `xtc` records its argv; an unquoted `;` would run `touch X`
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "xtc").write_text(STUB_XTC)
    (tmp_path / "bin" / "xtc").chmod(0o755)
    for command in commands:
        for target in re.findall(r"(?:> |tee )(results/\S+)", command):
            (workdir / target).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["bash", "-c", command], cwd=workdir, env=tiny.workflow_env(tmp_path / "bin"), check=True)
    calls = [json.loads(line) for line in (workdir / "xtc_calls.jsonl").read_text().splitlines()]
    assert len(calls) == len(commands)
    assert not [p for p in workdir.rglob("X")] and not (tmp_path / "X").exists()


def test_a_run_dir_of_another_recipe_is_refused_at_parse_unless_replace_is_asked(tiny_run, tmp_path):
    """Another study sharing the teacher's run key with another teacher.lr (or this study edited): one line at
    parse, before any job; `--config recipe_change=replace` plans the retraining instead."""
    workdir = tmp_path / "study"
    shutil.copytree(tiny_run, workdir)  # with Snakemake's records: the teacher's params changed
    config = yaml.safe_load((workdir / ".test/config.yaml").read_text())
    config["study"], config["teacher"]["lr"] = "other", 2e-3
    (workdir / ".test/other.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    done = snakemake("-n", "--cores", "2", "--configfile", ".test/other.yaml", cwd=workdir)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    lines = [ln for ln in output.splitlines() if "holds another recipe" in ln]
    assert len(lines) == 1 and lines[0].startswith("results/teachers/task~rte/seed~42 (train.lr: 0.001 -> 0.002)"), \
        output[-3000:]
    assert "--config recipe_change=replace" in lines[0]
    done = snakemake("-n", "--cores", "2", "--configfile", ".test/other.yaml", "--config", "recipe_change=replace",
                     cwd=workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert job_counts(done.stdout)["finetune_teacher"] == 1  # and the runs downstream of it
    assert "XTC_RECIPE_CHANGE" not in os.environ  # set for the jobs of that run only, not here
