# What Snakemake itself needs before the rules: xtc/study/grid.py loads and validates the study files and names every
# run (one run key: axes <-> path <-> label <-> runs.tsv row); JOBS (xtc/study/jobs.py) gives each job its input
# files, `xtc` command line and runtime, and the rules call it directly. No grid logic lives here.
import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from xtc.cli import recipe_of
from xtc.sources import SourceError
from xtc.study import cluster
from xtc.study import grid as study
from xtc.study import prefetch, rehearsal, rundir
from xtc.study.jobs import Jobs

RUN = study.RUN
TEACHER = study.TEACHER
GIVEN_TEACHER = study.GIVEN_TEACHER
AUGMENTED = study.AUGMENTED


def configured():
    """This invocation's config and its source. `--configfile` replaces config/config.yaml (Snakemake would
    deep-merge the two, leaking the default study's axes and exclusions into another study).
    """
    files = workflow.config_settings.configfiles
    if not files:
        return dict(config), "config/config.yaml"
    return workflow.config_settings.overwrite_config, ", ".join(
        map(os.path.relpath, files)
    )


# Rehearsal (--config rehearsal=true): the same jobs on tiny local stand-ins, in their own root (xtc/study/rehearsal.py).
try:
    REHEARSAL = rehearsal.root_of(config.get("rehearsal"), workflow.basedir)
except ValueError as error:
    raise WorkflowError(str(error)) from None
# The schemas' messages and checks of xtc.study.grid first, then Snakemake's validate() fills the defaults.
try:
    _studies = study.load_studies(
        *configured(),
        validate=validate,
        schemas=os.path.join(workflow.basedir, "workflow", "schemas"),
    )
except study.StudyError as error:
    raise WorkflowError(str(error)) from None
if REHEARSAL:
    _studies = rehearsal.apply(_studies, REHEARSAL, base=os.getcwd())
    rehearsal.offline_environment()
    # the report reads the config files again, from the rehearsal root
    workflow.configfiles[:] = [os.path.abspath(f) for f in workflow.configfiles]

    workdir: str(REHEARSAL)


# Offline compute nodes (docs/cluster.md): jobs read the store `xtc prefetch` filled when there is one
# (--config store=DIR, $XTC_STORE, or prefetched/); --config offline=true switches the hub off for every job.
STORE = prefetch.store_of(config.get("store"), workflow.basedir)
if STORE:
    prefetch.use_store(STORE)
if prefetch.is_on(config.get("offline")):
    prefetch.offline_environment()

JOBS = Jobs(_studies)
SETTINGS = JOBS.settings  # the shared settings (equal in every study, checked above)
STUDIES = JOBS.studies
# under SLURM the default study (the demo) is never run unless named; CPU-only jobs go to $XTC_CPU_PARTITION when
# it is set (xtc/study/cluster.py)
NAMED_STUDY = bool(workflow.config_settings.configfiles)
PARTITION = cluster.partitions(workflow, SETTINGS["resources"]["gpu"])

# A run directory of another recipe than its job's (the study changed, or two studies share a run key but differ in
# a setting outside the path) is refused here, before any job; with --config recipe_change=replace their jobs, which
# Snakemake reruns as their params changed, discard the old run (docs/cluster.md, "Recipe changes"; rundir.py).
if config.get("recipe_change") == "replace":
    rundir.replace_changed_recipes()
elif workflow.is_main_process:
    try:
        rundir.refuse_recipe_clashes(JOBS.training_commands(), recipe_of)
    except ValueError as error:
        raise WorkflowError(str(error)) from None


onstart:
    # Only when jobs will run (never in a dry run): offline, stop before the first job with what to set.
    if REHEARSAL:
        rehearsal.make_inputs(REHEARSAL, JOBS.tasks, SETTINGS["teacher"]["layers"])
    try:
        JOBS.check_sources({job.rule.name for job in workflow.dag.needrun_jobs()})
    except SourceError as error:
        raise WorkflowError(str(error)) from None


wildcard_constraints:
    task="|".join(JOBS.tasks),
    layers=r"\d+(_\d+(-\d+)*)?",
    wbits="|".join(str(b) for b in study.WBITS),
    abits="|".join(str(b) for b in study.ABITS),
    kd="|".join(study.KD_GRID),
    epochs=r"\d+",
    lr=r"[0-9.e+-]+",
    da="0|1",
    seed=r"\d+",
    recipe=r"(recipe~[a-z0-9_]+/)?",  # empty: the base recipe (grid.py, recipe_key)
    study="|".join(s["study"] for s in STUDIES),


# The directories an `xtc` command reads and writes, from the rule's own files.
def output_dir(wildcards, output):
    """The directory an `xtc` command writes (`--out`): the one holding the rule's first output."""
    return os.path.dirname(output[0])


def input_dir(wildcards, input):
    """The run directory whose metrics.json is the rule's first input."""
    return os.path.dirname(input[0])
