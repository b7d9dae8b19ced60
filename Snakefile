# xtc: the XTC study as a Snakemake workflow -- this file is only a table of contents.
# The grid is built once by xtc/study/grid.py (workflow/rules/common.smk forwards to it); every job calls the `xtc` CLI.
from snakemake.utils import min_version

from xtc.study.cluster import (
    check_lock_scope,
    check_slurm_submission,
    report_failures,
    require_named_study,
)
from xtc.study.driverlock import clear_stale_lock, record_driver

min_version("9.0")

# After a killed snakemake: its stale lock goes when no driver can still hold it (xtc/study/driverlock.py).
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


# Snakemake keeps one onstart handler. This one records the driver beside Snakemake's lock; under --profile slurm
# it stops when no study is named (the default is the CPU demo); it runs the rules' own (the offline sources
# check); under SLURM it warns where run locks are node-local and asks SLURM whether it accepts the account, the
# partitions and the largest request of each before the first submission (xtc/study/cluster.py).
_rules_onstart = workflow._onstart


onstart:
    require_named_study(workflow, NAMED_STUDY)
    record_driver(workflow)
    _rules_onstart(log)
    check_lock_scope(workflow)
    check_slurm_submission(workflow)


# keep-going (the SLURM profile): the jobs that failed for good, listed at the end and in the log
onerror:
    report_failures(workflow, log)
