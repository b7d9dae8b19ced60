# xtc: the XTC study as a Snakemake workflow -- this file is only a table of contents.
# The grid is built once by xtc/study.py (workflow/rules/common.smk forwards to it); every job calls the `xtc` CLI.
from snakemake.utils import min_version

min_version("9.0")


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
