"""`snakemake --cores 2 --profile slurm` as typed, against fake sbatch/sacct/squeue/scontrol/srun (tests/fake_slurm):
the tiny study runs to completion through the real snakemake-executor-plugin-slurm, and every training job asks
SLURM for one GPU, memory and a time limit."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FAKE_SLURM = REPO / "tests" / "fake_slurm"
_spec = importlib.util.spec_from_file_location("tiny_study", REPO / ".test" / "make_inputs.py")
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)


def _option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def test_profile_runs_the_tiny_study_on_fake_slurm(tmp_path):
    workdir = tiny.copy_workflow(tmp_path / "repo")
    tiny.make_inputs(workdir)
    tiny.tiny_config(workdir, "slurm.yaml", layers=[4])  # teacher, one W1A8 run, its export and evaluation
    profile = workdir / "slurm" / "config.v8+.yaml"
    text = profile.read_text()
    assert "CHANGE_ME_account" in text and "CHANGE_ME_partition" in text  # the placeholders users must edit
    profile.write_text(text.replace("CHANGE_ME_account", "testacct").replace("CHANGE_ME_partition", "gpu"))
    env = tiny.workflow_env(FAKE_SLURM)
    env["FAKE_SLURM_DIR"] = str(tmp_path / "slurm_state")

    done = subprocess.run(
        [str(BIN / "snakemake"), "--cores", "2", "--profile", "slurm", "--configfile", ".test/slurm.yaml",
         "--slurm-init-seconds-before-status-checks", "1"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    assert "Using profile slurm" in done.stderr + done.stdout
    for table in ("results/tiny/runs.tsv", "results/tables/tiny.md", "figures/tiny_pareto.png"):
        assert (workdir / table).is_file(), table

    calls = [json.loads(line) for line in (tmp_path / "slurm_state" / "sbatch.log").read_text().splitlines()]
    by_rule = {_option(c["argv"], "--comment").split("_wildcards_")[0].removeprefix("rule_"): c["argv"] for c in calls}
    # local rules (runs table, tables and figures) never reach sbatch
    assert sorted(by_rule) == ["distill", "evaluate_packed", "export", "finetune_teacher"]
    assert len(calls) == 4 and len({c["jobid"] for c in calls}) == 4
    for rule in ("finetune_teacher", "distill"):
        argv = by_rule[rule]
        assert "--gpus=1" in argv, argv  # what the plugin makes of resources: gpu=1
        assert _option(argv, "--mem") == "2000"  # resources.mem_mb of .test/config.yaml
        assert int(_option(argv, "-t")) >= 5  # runtime estimate in minutes, at least the overhead
        assert _option(argv, "-A") == "testacct" and _option(argv, "-p") == "gpu"
        assert not any(a.startswith("--gres") for a in argv)
    assert "--gpus=1" not in by_rule["export"]  # packing runs on CPU
    srun = (tmp_path / "slurm_state" / "srun.log").read_text()
    assert srun.count("srun ") == 4 and "--gpus=1" in srun
