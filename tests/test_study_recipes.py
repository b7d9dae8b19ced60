"""Every study resolves to the recipe its file promises: the `xtc` commands of a Snakemake dry run, parsed by xtc's
own CLI into recipes. The paper studies (config/studies/*.yaml) train as the original does (docs/fidelity.md);
the demo uses its efficient padding and switches to the original's with one `--config` override."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xtc.cli import DATA_FLAGS, STUDENT_FLAGS, TRAIN_FLAGS, build_parser, build_recipe
from xtc.config import Recipe, apply_overrides

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FAITHFUL_DEMO = "train={set: [data.padding=max_length, data.max_seq_length=128, train.group_by_length=false]}"


def xtc_commands(*args: str) -> list[list[str]]:
    """``argv`` (after ``xtc``) of every training command a dry run of the workflow would run."""
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": str(REPO), "HOME": str(Path.home())}
    # The dry run only prints commands: runs a developer trained in this checkout's results/ (e.g. with GLUE_DIR
    # set) must not decide it, so the study's clash check, tested on its own (test_rundir.py), is switched off.
    args = list(args)
    if "--config" in args:
        args.insert(args.index("--config") + 1, "recipe_change=replace")
    else:
        args += ["--config", "recipe_change=replace"]
    done = subprocess.run([str(BIN / "snakemake"), "-n", "-p", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    commands = []
    for line in done.stdout.splitlines():
        if line.startswith("Shell command:") and " xtc " in line:
            words = shlex.split(line.removeprefix("Shell command:"))
            argv = words[words.index("xtc") + 1:]
            argv = argv[:argv.index("2>&1")] if "2>&1" in argv else argv
            if argv[0] in ("finetune", "distill"):
                commands.append(argv)
    return commands


def recipe_of(argv: list[str]) -> Recipe:
    """The recipe `xtc finetune|distill` builds from these arguments (as xtc.cli does)."""
    args = build_parser().parse_args(argv)
    tables = (DATA_FLAGS, TRAIN_FLAGS) if argv[0] == "finetune" else (DATA_FLAGS, TRAIN_FLAGS, STUDENT_FLAGS)
    return build_recipe(args, *tables)


def _original(recipe: Recipe) -> tuple:
    d, t = recipe.data, recipe.train
    return (d.padding, d.max_seq_length, recipe.distill.rep_first, recipe.distill.att_mask, t.optimizer,
            t.group_by_length, t.batch_size, t.warmup_epochs, t.warmup_ratio, t.grad_clip, t.weight_decay,
            t.eval_every_steps)


ORIGINAL = ("max_length", 128, "original", "original", "original", False, 32, 1.0, None, 1.0, 0.01, 1000)


def test_every_paper_study_trains_with_the_original_recipe():
    listed = yaml.safe_load((REPO / "config/studies/all.yaml").read_text())["studies"]
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "config/studies").glob("*.yaml") if p.name != "all.yaml")
    assert sorted(listed) == files  # all.yaml builds every paper study, so the dry run below covers each file
    commands = xtc_commands("--configfile", "config/studies/all.yaml")
    assert len(commands) > 200 and all(argv[0] == "distill" for argv in commands)  # the paper's teachers are given
    for argv in commands:
        assert _original(recipe_of(argv)) == ORIGINAL, argv


def test_demo_is_efficient_and_one_override_makes_its_students_pad_as_the_original():
    demo, faithful = xtc_commands(), xtc_commands("--config", FAITHFUL_DEMO)
    (teacher,) = [argv for argv in demo if argv[0] == "finetune"]
    assert [argv for argv in faithful if argv[0] == "finetune"] == [teacher]  # the same teacher: trained once
    students = [recipe_of(argv) for argv in demo if argv[0] == "distill"]
    originals = [recipe_of(argv) for argv in faithful if argv[0] == "distill"]
    assert len(students) == len(originals) == 5  # the FP 3-layer step-1 student and W1/W2 x 6/3 layers
    for recipe in students:
        assert (recipe.data.padding, recipe.data.max_seq_length, recipe.train.group_by_length) == ("dynamic", 64, True)
    for recipe in originals:
        assert (recipe.data.padding, recipe.data.max_seq_length, recipe.train.group_by_length) == (
            "max_length", 128, False)
    for recipe in students + originals:  # free of cost, so the demo keeps the original's rules
        assert (recipe.distill.rep_first, recipe.distill.att_mask, recipe.train.optimizer) == ("original",) * 3
        assert recipe.train.warmup_ratio == 0.1  # 1-epoch jobs: the demo keeps its warmup ratio


@pytest.mark.parametrize("key, value", [("data.padding", "full"), ("distill.att_mask", "tiny"),
                                        ("train.optimizer", "adam"), ("distill.rep_first", "deepspeed")])
def test_bad_fidelity_values_are_refused_before_training(key, value):
    with pytest.raises(ValueError, match=f"{key}='{value}' is not supported: expected one of"):
        apply_overrides(Recipe(), [f"{key}={value}"])


def test_cpu_findings_use_the_original_rules_with_the_efficient_options_and_equal_budgets():
    """config/findings (docs/findings-cpu.md): the original's map, mask rule and optimizer; dynamic padding, length
    grouping and a warmup ratio that every budget finishes; KD variants at equal budget per task."""
    commands = xtc_commands("--configfile", "config/findings/findings-cpu.yaml")
    teachers = [argv for argv in commands if argv[0] == "finetune"]
    students = [(argv, recipe_of(argv)) for argv in commands if argv[0] == "distill"]
    assert len(teachers) == 3 and len(students) == 93  # trained once each, though several files list them
    for argv, recipe in students:
        assert (recipe.distill.rep_first, recipe.distill.att_mask, recipe.train.optimizer) == ("original",) * 3
        assert (recipe.data.padding, recipe.train.group_by_length, recipe.train.warmup_ratio) == ("dynamic", True, 0.1)
        assert recipe.data.max_train_examples == 2000 and recipe.train.seed in (1, 2, 3), argv
    quantized = [(a, r) for a, r in students if r.quant.weight_bits is not None]
    by_task: dict[str, set] = {}
    for argv, recipe in quantized:
        if recipe.data.task != "sst2" or recipe.train.lr == 1e-4 and recipe.train.epochs == 3:
            by_task.setdefault(recipe.data.task, set()).add(recipe.train.epochs)
    assert by_task == {"sst2": {3}, "cola": {3}, "mrpc": {1}}  # every KD variant and bit width: one budget per task
    budgets = {r.train.epochs for _, r in quantized if r.data.task == "sst2" and r.train.lr == 1e-4}
    assert budgets == {1, 3, 9}


def test_the_recipe_ablation_switches_one_key_at_a_time_from_the_faithful_recipe():
    """config/findings/recipe.yaml: every recipe's students differ from the faithful ones in exactly the keys its
    name promises, under one teacher per task (a recipe never changes the teacher)."""
    commands = xtc_commands("--configfile", "config/findings/recipe.yaml")
    teachers = [argv for argv in commands if argv[0] == "finetune"]
    students = [(argv, recipe_of(argv)) for argv in commands if argv[0] == "distill"]
    # 7 recipes x 3 tasks x 3 seeds at 1x; SST-2 at 3x for four recipes; SST-2 3L (and its step-1 student) for two
    assert len(teachers) == 3 and len(students) == 7 * 3 * 3 + 4 * 3 + 2 * 3 * 2
    faithful = ("original", "original", "original", "max_length", False)
    changed = {"faithful": {}, "att_zero": {1: "zero"}, "rep_input": {0: "input"}, "optim_torch": {2: "torch"},
               "dynamic": {3: "dynamic"}, "dynamic_grouped": {3: "dynamic", 4: True},
               "former": {0: "input", 1: "zero", 2: "torch", 3: "dynamic"}}
    seen = set()
    for argv, recipe in students:
        out = argv[argv.index("--out") + 1]
        name = out.removeprefix("results/runs/recipe~").split("/")[0]
        keys = (recipe.distill.rep_first, recipe.distill.att_mask, recipe.train.optimizer, recipe.data.padding,
                recipe.train.group_by_length)
        assert keys == tuple(changed[name].get(i, v) for i, v in enumerate(faithful)), (name, keys)
        assert recipe.data.max_seq_length == 64 and recipe.quant.weight_bits in (1, None)  # None: step 1
        assert recipe.train.epochs == 1 or (recipe.data.task == "sst2" and name in (
            "faithful", "att_zero", "dynamic_grouped", "former"))
        assert "/layers~6/" in out or (recipe.data.task == "sst2" and name in ("faithful", "rep_input"))
        seen.add(out)
    assert len(seen) == len(students)
    assert all(recipe_of(argv).data.padding == "max_length" for argv in teachers)


def test_the_recipe_ablations_task_part_trains_runs_of_the_whole_ablation():
    """config/findings/recipe-tasks.yaml is recipe.yaml's MRPC and CoLA part as a study of its own: every command it
    would run is one of recipe.yaml's, word for word (one shared file: the same runs, trained once)."""
    whole = {shlex.join(argv) for argv in xtc_commands("--configfile", "config/findings/recipe.yaml")}
    part = [argv for argv in xtc_commands("--configfile", "config/findings/recipe-tasks.yaml")]
    students = [argv for argv in part if argv[0] == "distill"]
    assert len(students) == 2 * 5 * 3 and len([a for a in part if a[0] == "finetune"]) == 2
    assert {recipe_of(argv).data.task for argv in students} == {"mrpc", "cola"}
    assert [shlex.join(argv) for argv in part if shlex.join(argv) not in whole] == []


def test_the_long_kd_budget_shares_the_first_rounds_runs_and_settings():
    """config/findings/kd-long.yaml: its 3-epoch students are findings-cpu.yaml's own commands, word for word (one
    shared file: trained once), and its 27-epoch students differ from them in the budget only -- 9x the 3x budget."""
    first = {shlex.join(argv) for argv in xtc_commands("--configfile", "config/findings/findings-cpu.yaml")}
    long = [argv for argv in xtc_commands("--configfile", "config/findings/kd-long.yaml") if argv[0] == "distill"]
    recipes = {shlex.join(argv): recipe_of(argv) for argv in long}
    assert sorted({r.train.epochs for r in recipes.values()}) == [3, 27] and len(long) == 3 * 2 * 3
    assert all(cmd in first for cmd, r in recipes.items() if r.train.epochs == 3)
    for cmd, recipe in recipes.items():
        if recipe.train.epochs == 27:
            short = cmd.replace("--epochs 27", "--epochs 3").replace("/epochs~27/", "/epochs~3/")
            assert short in first, cmd  # the same run at 3 epochs is one of the first round's
            assert recipe.data.task == "sst2" and recipe.quant.weight_bits == 1 and recipe.train.warmup_ratio == 0.1
