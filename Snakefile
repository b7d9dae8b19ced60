# xtc: the XTC study as a Snakemake workflow -- this file is only a table of contents.
# The grid (workflow/rules/common.smk), the stage rules (data, teacher, reduce, quantize, export, aggregate) and
# the report arrive with the workflow issue; every training rule will call the `xtc` CLI.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


rule all:
    default_target: True
