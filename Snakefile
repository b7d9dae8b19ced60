# xtc: the XTC study as a Snakemake workflow -- this file is only a table of contents.
# The grid is built once by xtc/study/grid.py (workflow/rules/common.smk forwards to it); every job calls the `xtc` CLI.
from snakemake.utils import min_version

from xtc.study.cluster import check_slurm_submission, clear_stale_lock

min_version("9.0")

# After a killed snakemake: its stale lock goes if no other snakemake works here (xtc/study/cluster.py).
clear_stale_lock(workflow)


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    default_target: True
    input:
        rules.index_trained.output,
        JOBS.outputs(),


# Snakemake keeps one onstart handler: this one runs the rules' own (the offline sources check), then, under
# --profile slurm, asks SLURM whether it accepts the account and partition before the first submission.
_rules_onstart = workflow._onstart


onstart:
    _rules_onstart(log)
    check_slurm_submission(workflow)
