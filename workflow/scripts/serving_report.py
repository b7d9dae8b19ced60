"""Snakemake adapter of the serving_report rule (through `script:`): results/serving/<study>.{json,md} from
`params.plan` (xtc.study.jobs.Jobs.serving_plan), measured by xtc.packed.serving in this one job."""

import logging
import os
import sys
import traceback

import torch

from xtc.packed.serving import measure, write

sm = snakemake  # noqa: F821 (Snakemake's script global)
os.environ.setdefault("OMP_NUM_THREADS", str(sm.threads))
torch.set_num_threads(sm.threads)
with open(sm.log[0], "w") as log:
    sys.stderr = log
    logging.basicConfig(stream=log, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        plan = sm.params.plan
        report = measure(plan["teachers"], plan["students"], batch=sm.params.batch, seq=sm.params.seq)
        write(report, sm.wildcards.study, sm.output.json, sm.output.md)
    except Exception:
        traceback.print_exc(file=log)  # into the rule's log (stderr is closed with it)
        raise SystemExit(1)
    print(f"serving report of {sm.wildcards.study}: {len(report['students'])} students", file=log)
