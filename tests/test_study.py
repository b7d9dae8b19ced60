"""The study grid (xtc/study/grid.py) and the jobs built from it (xtc/study/jobs.py), tested directly, without Snakemake's
scheduler: the run key, study loading and merging, exclusions, step-1 students, labels, runtimes, and the bad
study files that stop the workflow before any job starts. Snakemake's `validate` fills the schema's defaults, as
in workflow/rules/common.smk."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from xtc.config import KD_VARIANTS
from xtc.study import grid as study
from xtc.study.jobs import Jobs

REPO = Path(__file__).resolve().parent.parent
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())


def load(raw, source="s.yaml"):
    return study.load_studies(raw, source, validate=validate)


def tiny(**edits) -> dict:
    """A small valid study: a 4-layer teacher fine-tuned here (its model dir does not exist: depth unchecked)."""
    raw = {"study": "t", "teacher": {"model": "no/such-local-model", "layers": 4},
           "grid": {"task": ["rte"], "layers": [4, 2], "wbits": [1, 2], "abits": [8], "kd": ["one_stage"],
                    "epochs": [1], "lr": [1.0e-3], "seed": [42]},
           "step1": {"epochs": 2}}
    for key, value in edits.items():
        section, _, name = key.partition("__")
        (raw.setdefault(section, {}).__setitem__(name, value) if name else raw.__setitem__(section, value))
    return raw


@pytest.fixture(autouse=True)
def _no_glue_dir(monkeypatch):
    monkeypatch.delenv("GLUE_DIR", raising=False)


# ------------------------------------------------------------------------------------------------ the run key
def test_the_package_modules_import_without_torch():
    code = "import sys, xtc.study.grid, xtc.study.jobs, xtc.report; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr


def test_a_run_key_round_trips_axes_path_label_and_table_row():
    row = study.run_row("rte", 4, (2, 5, 8, 11), 1, 8, "one_stage", 3, 5e-5, 1, 42)
    path = study.run_dir(row)
    assert path == ("results/runs/task~rte/layers~4_2-5-8-11/wbits~1/abits~8/kd~one_stage/epochs~3/lr~5e-05/da~1/"
                    "seed~42")
    values = {"recipe": "", **dict(part.split("~") for part in path.removeprefix("results/runs/").split("/"))}
    assert study.run_key(values) == path  # Snakemake's wildcards name the same run (the base recipe: no prefix)
    assert study.parse_layers(values["layers"]) == (4, (2, 5, 8, 11))
    line = study.table_row("s", row)
    assert list(line) == list(study.RUNS_COLUMNS)
    assert line["teacher_layer"] == "2,5,8,11" and line["packed_dir"] == path + "/packed"
    assert study.run_label(line) == "rte/L4[2,5,8,11]/W1A8/one_stage/e3/lr5e-05/da1/s42"


def test_a_recipe_axis_names_its_runs_and_passes_its_overrides_after_train_set():
    raw = tiny(grid__recipe=["base", "att_zero"], recipes={"att_zero": ["distill.att_mask=zero"]},
               train={"set": ["distill.att_mask=original", "train.optimizer=torch"]})
    s = load(raw)[0]
    runs = study.study_runs(s)
    named = [r for r in runs if r["recipe"] == "att_zero"]
    # (4L, 2L) x (W1, W2) per recipe, plus one step-1 student per recipe: the recipe reaches step 1 too
    assert len(runs) == 10 and len(named) == 5
    assert all(study.run_dir(r).startswith("results/runs/recipe~att_zero/task~rte/") for r in named)
    assert all(study.run_dir(r).startswith("results/runs/task~rte/") for r in runs if r["recipe"] == "base")
    row = next(r for r in named if r["layers"] == 2 and r["wbits"] == "1")
    path = study.run_dir(row)
    wildcards = study.run_wildcards(path)
    assert wildcards["recipe"] == "recipe~att_zero/" and study.run_key(wildcards) == path
    assert study.run_wildcards(study.run_dir({**row, "recipe": "base"}))["recipe"] == ""
    line = study.table_row("t", row)
    assert line["recipe"] == "att_zero" and study.run_label(line).endswith("/s42/r-att_zero")
    argv = shlex.split(Jobs([s]).student_args(wildcards))
    parent = study.step1_row(s, row)
    assert parent["recipe"] == "att_zero" and argv[argv.index("--init") + 1] == study.run_dir(parent)
    sets = [argv[i + 1] for i, word in enumerate(argv) if word == "--set"]
    assert sets == ["distill.att_mask=original", "train.optimizer=torch", "distill.att_mask=zero"]  # later wins
    base = {**wildcards, "recipe": ""}
    base_sets = [w for w in shlex.split(Jobs([s]).student_args(base)) if "=" in w]
    assert base_sets == ["distill.att_mask=original", "train.optimizer=torch"]
    dropped = load(tiny(grid__recipe=["base", "att_zero"], recipes={"att_zero": []},
                        exclude={"no_named_2bit": {"recipe": "att_zero", "wbits": 2}}))[0]
    assert len(study.study_runs(dropped)) == 8  # the exclusion matched the recipe axis


@pytest.mark.parametrize("edits, match", [
    ({"grid__recipe": ["att_zro"], "recipes": {"att_zero": []}}, "grid.recipe names 'att_zro'.*did you mean"),
    ({"grid__recipe": ["lr_up"], "recipes": {"lr_up": ["train.lr=1e-3"]}}, "recipes.lr_up .* grid owns"),
    ({"grid__recipe": ["bad"], "recipes": {"bad": ["distill.att_mask=tiny"]}}, "recipes.bad .*att_mask"),
    ({"recipes": {"base": []}}, "recipes"),
])
def test_bad_recipes_are_refused_at_load(edits, match):
    with pytest.raises(study.StudyError, match=match):
        load(tiny(**edits))


def test_studies_built_together_define_a_recipe_name_alike(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, rule in (("a", "zero"), ("b", "original")):
        raw = tiny(grid__recipe=["mask"], recipes={"mask": [f"distill.att_mask={rule}"]})
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**raw, "study": name}))
    with pytest.raises(study.StudyError, match="recipes.mask differs from a.yaml"):
        load({"studies": ["a.yaml", "b.yaml"]})


def test_full_precision_is_spelled_fp_in_paths_rows_and_labels():
    row = study.run_row("sst2", 6, None, "fp", 8, "one_stage", 3, 5e-5, 0, 42)
    assert row["abits"] == "fp" and "/wbits~fp/abits~fp/" in study.run_dir(row)
    assert study.table_row("s", row)["packed_dir"] == ""
    assert study.model_label(6, "fp", "fp") == "FP 6L" and study.model_label(6, "1", "8") == "W1A8 6L"
    assert study.bits_label("fp", "8") == "W32A8" and study.bits_label("2", "fp") == "W2A32"
    for spelling in ("fp", "FP", "none", "null", "32", "fp32", "", None):
        assert study.precision(spelling) == "fp"
    assert study.precision(8) == "8" and study.precision(" 1 ") == "1"
    for bad in ("33", "0", "int8"):
        with pytest.raises(ValueError):
            study.precision(bad)


def test_teacher_rows_are_labelled_teacher():
    given = load(tiny(teacher__finetuned="someone/bert-{task}"))[0]
    row = study.teacher_row(given, "rte")
    assert row["run_dir"] == "results/teachers/task~rte/given" and (row["epochs"], row["lr"], row["seed"]) == ("",) * 3
    assert study.run_label(row) == "rte/teacher"
    trained = study.teacher_row(load(tiny())[0], "rte")
    assert trained["run_dir"] == "results/teachers/task~rte/seed~42" and trained["lr"] == "2e-05"  # the default


def test_the_schema_enums_are_the_package_s_definitions():
    definitions, grid = SCHEMA["definitions"], SCHEMA["properties"]["grid"]["properties"]
    assert tuple(definitions["kd"]["enum"]) == study.KD_GRID
    assert study.KD_GRID[: len(KD_VARIANTS)] == KD_VARIANTS
    assert set(study.KD_GRID) - set(KD_VARIANTS) == {"one_stage_probs", "two_stage_probs"}
    assert tuple(grid["wbits"]["items"]["enum"]) == study.WBITS
    assert tuple(grid["abits"]["items"]["enum"]) == study.ABITS
    assert list(SCHEMA["properties"]["exclude"]["additionalProperties"]["properties"]) == list(study.AXES)


# ------------------------------------------------------------------------------------------------ the grid
def test_grid_adds_step1_students_drops_the_teacher_and_fills_defaults():
    studies = load(tiny(grid__wbits=[1, "fp"]))
    s = studies[0]
    assert s["quantize_from"] == "step1" and s["resources"]["gpu"] == 1  # defaults filled by validate()
    runs = study.study_runs(s)
    keys = [(r["layers"], r["wbits"], r["abits"], r["epochs"]) for r in runs]
    # 4 layers: W1A8 only (an FP 4-layer student is the teacher); 2 layers: its step-1 student (step1.epochs),
    # then W1A8, then the grid's own FP 2-layer run (epochs 1, a different run from the step-1 student)
    assert keys == [(4, "1", "8", 1), (2, "fp", "fp", 2), (2, "1", "8", 1), (2, "fp", "fp", 1)]
    assert study.step1_row(s, runs[2]) == runs[1] and study.step1_row(s, runs[0]) is None
    assert study.step1_row(load(tiny(quantize_from="teacher"))[0], runs[2]) is None


def test_exclusions_match_values_lists_spellings_and_layer_choices():
    raw = tiny(grid__layers=[4, 2], grid__teacher_layer={2: [[0, 3], [1, 2]]},
               exclude={"no_w2_at_4": {"wbits": 2, "layers": 4}, "no_first_choice": {"teacher_layer": "0-3"}})
    runs = study.grid_runs(load(raw)[0])
    assert [(r["layers"], r["wbits"], r["teacher_layer"]) for r in runs] == [
        (4, "1", None), (2, "1", (1, 2)), (2, "2", (1, 2))]
    assert study.matches("abits", "fp", "none") and study.matches("wbits", "2", [1, 2])
    assert study.matches("teacher_layer", (1, 2), [[0, 3], [1, 2]]) and not study.matches("lr", "0.001", 2e-5)


def test_xtc_main_runs_and_all_yaml_trains_shared_runs_once():
    os.chdir(REPO)
    main = Jobs(load(yaml.safe_load(Path("config/studies/xtc-main.yaml").read_text())))
    fp = [r for r in main.runs.values() if r["wbits"] == "fp"]
    assert len(main.runs) == 64 and len(fp) == 16  # 48 quantized runs, 16 step-1 students
    assert {(r["layers"], r["epochs"]) for r in fp if r["task"] == "mnli"} == {(6, 36), (5, 36)}
    every = Jobs(load(yaml.safe_load(Path("config/studies/all.yaml").read_text()), "config/studies/all.yaml"))
    assert [s["study"] for s in every.studies] == ["xtc-main", "layer-reduction", "budget", "kd-variants", "lr"]
    assert len(every.runs) == 232 and set(main.runs) < set(every.runs)  # 200 quantized + 32 FP, each once
    assert len(every.study_table("xtc-main")) == 8 + 64  # teachers, then runs


def test_xtc_main_three_seeds_for_the_small_tasks_is_a_one_line_switch():
    """The commented line of xtc-main.yaml, put in place of `seed: [42]`: 3 seeds for CoLA, MRPC, STS-B and RTE, as
    its comment counts them (64 more runs; one more teacher per task is not needed: the teacher seed is fixed)."""
    text = (REPO / "config/studies/xtc-main.yaml").read_text()
    switch = next(line for line in text.splitlines() if line.startswith("  # seed: {default: [42]"))
    raw = yaml.safe_load(text.replace("  seed: [42]\n", "").replace(switch, switch.replace("# ", "", 1)))
    os.chdir(REPO)
    jobs = Jobs(load(raw))
    seeds = {task: sorted({r["seed"] for r in jobs.runs.values() if r["task"] == task}) for task in jobs.tasks}
    assert seeds == {**{t: [42] for t in ("mnli", "qnli", "qqp", "sst2")},
                     **{t: [42, 43, 44] for t in ("cola", "mrpc", "rte", "stsb")}}
    assert len(jobs.runs) == 64 + 64 and "adds 64 training jobs (+96 exports and evaluations)" in text
    assert sum(map(study.is_quantized, jobs.runs.values())) == 48 + 48


def _studies_file(tmp_path, first, second):
    for name, raw in (("a.yaml", first), ("b.yaml", second)):
        (tmp_path / name).write_text(yaml.safe_dump(raw))
    return {"studies": [str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]}


def test_studies_built_together_must_agree_on_shared_sections(tmp_path):
    raw = _studies_file(tmp_path, tiny(), {**tiny(), "study": "u", "data": {"batch_size": 16}})
    with pytest.raises(study.StudyError) as error:
        load(raw, "all.yaml")
    assert str(error.value) == (
        f"{tmp_path}/b.yaml: 'data' differs from {tmp_path}/a.yaml; studies built together share their data "
        "settings (runs are found by grid values only): make them equal")
    with pytest.raises(study.StudyError, match="study name 't' is used twice; rename one"):
        load(_studies_file(tmp_path, tiny(), tiny()), "all.yaml")
    two = load(_studies_file(tmp_path, tiny(), {**tiny(), "study": "u", "grid": {**tiny()["grid"], "seed": [1]}}))
    assert len(Jobs(two).runs) == 2 * len(study.study_runs(two[0]))
    with pytest.raises(study.StudyError, match="all.yaml: studies lists nope.yaml, which does not exist"):
        load({"studies": ["nope.yaml"]}, "all.yaml")


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("raw, message", [
    (tiny(grid__wbit=[1]), "s.yaml: unknown key 'grid.wbit'; did you mean 'wbits'? allowed keys here: abits, da,"),
    (tiny(grid__wbits=[1, 3]), "s.yaml: grid.wbits[1] = 3 is not allowed; use one of: 1, 2, fp"),
    (tiny(grid__kd=["one_stag"]), "s.yaml: grid.kd[0] = 'one_stag' is not allowed; did you mean 'one_stage'? use"),
    (tiny(exclude={"x": {"bits": 2}}), "s.yaml: exclusion 'x' names an unknown axis 'bits'; did you mean 'wbits'?"),
    ({"grid": tiny()["grid"]}, "s.yaml: 'study' is a required property at (top level); add it"),
    (tiny(grid__layers=[4, 6]), "s.yaml: grid.layers = 6 is more than the teacher's 4 layers (teacher.layers)"),
    (tiny(grid__teacher_layer={2: [[3, 1]]}), "s.yaml: grid.teacher_layer.2 = [3, 1] must list 2 increasing"),
    (tiny(data__glue_dir="nowhere"), "s.yaml: task 'rte' (grid.task) has no folder nowhere/RTE in the local GLUE dir"),
    # train.set may not contradict the run key: the grid owns these keys (and their path and label name them)
    (tiny(train__set=["quant.weight_bits=4"]),
     "s.yaml: train.set 'quant.weight_bits=4' sets quant.weight_bits, which the grid owns (grid.wbits names it in"),
    (tiny(train__set=["data.task=sst2"]), "s.yaml: train.set 'data.task=sst2' sets data.task, which the grid owns "
                                          "(grid.task"),
    (tiny(train__set=["quant.ffn_out_bits=2"]), "sets quant.ffn_out_bits, which the grid owns (grid.wbits"),
    (tiny(train__set=["distill.attention_target=probs"]), "sets distill.attention_target, which the grid owns "
                                                           "(grid.kd"),
    (tiny(train__set=["reduce.strategy=even"]), "sets reduce.strategy, which the grid owns (grid.teacher_layer"),
    (tiny(train__set=["data.train_file=x.tsv"]), "sets data.train_file, which the grid owns (grid.da"),
    (tiny(train__set=["train.seed=1"]), "sets train.seed, which the grid owns (grid.seed"),
    # every train.set entry parses before the first job
    (tiny(train__set=["train.optimiser=torch"]),
     "s.yaml: train.set 'train.optimiser=torch': unknown config key 'train.optimiser'; did you mean 'optimizer'?"),
    (tiny(train__set=["train.weight_decay=lots"]),
     "s.yaml: train.set 'train.weight_decay=lots': train.weight_decay='lots' must be a number"),
    (tiny(train__set=["train.compile=true", "train.int8_forward=true"]), "s.yaml: train.set: train.int8_forward"),
    # values a schema lets through but no job can run
    (tiny(grid__epochs=[1, 0]), "s.yaml: grid.epochs = 0 is not allowed; train for at least 1 epoch"),
    (tiny(grid__epochs={"default": [1], "rte": [0]}), "s.yaml: grid.epochs.rte = 0 is not allowed; train for at"),
    (tiny(teacher__epochs=0), "s.yaml: teacher.epochs = 0 is not allowed; train for at least 1 epoch"),
    (tiny(step1__epochs={"default": 0}), "s.yaml: step1.epochs.default = 0 is not allowed"),
    (tiny(grid__lr=["0"]), "s.yaml: grid.lr = '0' is not allowed; a learning rate is a number above 0"),
    (tiny(teacher__lr="0.0e0"), "s.yaml: teacher.lr = '0.0e0' is not allowed; a learning rate is a number above 0"),
    (tiny(step1__lr="00"), "s.yaml: step1.lr = '00' is not allowed"),
    (tiny(teacher__finetuned="someone/bert-{model}-{task}"),
     "s.yaml: teacher.finetuned = 'someone/bert-{model}-{task}' names {model}; the only placeholder is {task}"),
    (tiny(teacher__finetuned="someone/bert-{}"), "names {}; the only placeholder is {task}"),
    (tiny(teacher__finetuned="someone/bert-{task"), "s.yaml: teacher.finetuned = 'someone/bert-{task' is not a valid"),
    (tiny(grid__teacher_layer={3: [[0, 1, 2]]}),
     "s.yaml: grid.teacher_layer.3 gives layer choices for 3-layer students, but grid.layers = [4, 2] has none"),
])
def test_bad_studies_get_one_line_naming_file_key_and_fix(raw, message):
    with pytest.raises(study.StudyError) as error:
        load(raw)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_local_teacher_of_another_depth_is_refused(tmp_path):
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "config.json").write_text('{"num_hidden_layers": 6}')
    message = "teacher.layers = 4 but the teacher .* has 6 layers; set teacher.layers: 6"
    with pytest.raises(study.StudyError, match=message):
        load(tiny(teacher__model=str(tmp_path / "teacher")))


# ------------------------------------------------------------------------------------------------ jobs
def test_jobs_give_each_run_its_command_line_inputs_and_priority():
    jobs = Jobs(load(tiny(grid__kd=["one_stage_probs"], grid__da=[1], data__max_train_examples=100)))
    step2 = next(r for r in jobs.runs.values() if r["layers"] == 2 and r["wbits"] == "1")
    wildcards = {**step2, "layers": "2"}
    parent = study.step1_row(jobs.settings, step2)
    assert shlex.split(jobs.student_args(wildcards)) == [
        "--teacher", "results/teachers/task~rte/seed~42", "--init", study.run_dir(parent), "--weight-bits", "1",
        "--act-bits", "8", "--kd", "one_stage", "--attention-target", "probs", "--train-file",
        "results/data/task~rte/train_aug.tsv"]
    assert jobs.init_input(wildcards) == [f"{study.run_dir(parent)}/metrics.json"]
    assert jobs.teacher_input(wildcards) == ["results/teachers/task~rte/seed~42/metrics.json"]
    assert jobs.priority(wildcards) == 0 and jobs.priority({**parent, "layers": "2"}) == 1
    assert jobs.job_label(wildcards) == "rte W1A8 2L" and jobs.job_label({"task": "rte"}) == "rte teacher"
    # a da=1 run trains on the whole augmented file: no --max-train-examples
    assert "--max-train-examples" not in jobs.train_args(wildcards)
    assert "--max-train-examples 100" in jobs.train_args({"da": "0"})


def test_serving_plan_serves_each_student_architecture_once():
    os.chdir(REPO)
    main = Jobs(load(yaml.safe_load(Path("config/studies/xtc-main.yaml").read_text())))
    plan = main.serving_plan("xtc-main")
    labels = [s["label"] for s in plan["students"]]
    assert sorted(labels) == sorted(f"W{b}A8 {n}L" for b in (1, 2) for n in (12, 6, 5))  # 48 runs, 6 architectures
    first = plan["students"][0]["task"]
    assert {s["task"] for s in plan["students"]} == {first} and list(plan["teachers"]) == [first]
    assert plan["teachers"][first] == "yoshitomo-matsubara/bert-base-uncased-" + first  # the given teacher
    for student in plan["students"]:
        assert student["packed"].endswith("/packed/model.xtc.safetensors") and f"/task~{first}/" in student["packed"]
    # given teachers are not built here: the report's inputs are the packed files only
    assert main.serving_inputs("xtc-main") == [s["packed"] for s in plan["students"]]
    reduction = Jobs(load(yaml.safe_load(Path("config/studies/layer-reduction.yaml").read_text())))
    assert reduction.serving_plan("layer-reduction")["students"] == []
    assert not any(path.startswith("results/serving/") for path in reduction.outputs())
    assert "results/serving/xtc-main.md" in main.outputs()


def test_a_target_outside_the_grid_is_refused_by_name():
    jobs = Jobs(load(tiny()))
    row = {**next(iter(jobs.runs.values())), "layers": "3"}
    with pytest.raises(study.StudyError) as error:
        jobs.run(row)
    assert str(error.value) == (
        f"{study.run_key(row)} is not a run of s.yaml; ask for a run listed in results/<study>/runs.tsv, or add its "
        "values to the grid")


def test_the_grid_owns_every_recipe_key_a_run_s_path_sets():
    """Each flag of `xtc distill` that the workflow derives from a run's path values sets a key of GRID_OWNED."""
    from xtc import cli

    jobs = Jobs(load(tiny(grid__kd=["one_stage_probs"], grid__da=[1], grid__teacher_layer={2: [[0, 3]]},
                          quantize_from="teacher")))
    flags = {**cli.DATA_FLAGS, **cli.TRAIN_FLAGS, **cli.STUDENT_FLAGS}
    owned = set()
    for row in jobs.runs.values():
        wildcards = {**row, "layers": study.layers_key(row["layers"], row["teacher_layer"])}
        argv = ["distill", *jobs.student_args(wildcards).split(), "--task", row["task"], "--epochs",
                str(row["epochs"]), "--lr", row["lr"], "--seed", str(row["seed"]), "--out", "x"]
        args = cli.build_parser().parse_args(argv)
        owned |= {key for dest, key in flags.items() if hasattr(args, dest)}
    assert owned == set(study.GRID_OWNED) - {"reduce.strategy", *(f"quant.{g}_bits" for g in study.MODULE_GROUPS)}
