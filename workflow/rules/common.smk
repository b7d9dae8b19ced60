# What the rules share, as thin named functions over the study grid: xtc/study.py loads and validates the
# study files and names every run (one run key: axes <-> path <-> label <-> runs.tsv row); xtc/jobs.py gives
# each job its input files, `xtc` command line and runtime. No grid logic lives here.
import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from xtc import rehearsal, rundir, study
from xtc.jobs import Jobs
from xtc.sources import SourceError

# Snakemake reruns a job whose parameters changed (say, the study's teacher.epochs); the run directory it owns then
# holds the old recipe's state, which the job discards instead of refusing (xtc/rundir.py; same recipe: resume).
rundir.replace_changed_recipes()

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


# Rehearsal (--config rehearsal=true): the same jobs on tiny local stand-ins, in their own root (xtc/rehearsal.py).
try:
    REHEARSAL = rehearsal.root_of(config.get("rehearsal"), workflow.basedir)
except ValueError as error:
    raise WorkflowError(str(error)) from None
# The schemas' messages and checks of xtc.study first, then Snakemake's validate() fills the defaults.
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


JOBS = Jobs(_studies)
SETTINGS = JOBS.settings  # the shared settings (equal in every study, checked above)
STUDIES = JOBS.studies


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
    study="|".join(s["study"] for s in STUDIES),


# ------------------------------------------------------------------------------------------- files of a run
def teacher_inputs(wildcards):
    return JOBS.teacher_input(wildcards)


def init_inputs(wildcards):
    return JOBS.init_input(wildcards)


def train_file_inputs(wildcards):
    return JOBS.train_file_input(wildcards)


def output_dir(wildcards, output):
    """The directory an `xtc` command writes (`--out`): the one holding the rule's first output."""
    return os.path.dirname(output[0])


def input_dir(wildcards, input):
    """The run directory whose metrics.json is the rule's first input."""
    return os.path.dirname(input[0])


# ----------------------------------------------------------------------------------------- files of a study
def study_metrics(wildcards):
    return JOBS.study_metrics(wildcards["study"])


def study_sizes(wildcards):
    return JOBS.study_sizes(wildcards["study"])


def serving_inputs(wildcards):
    return JOBS.serving_inputs(wildcards["study"])


def serving_plan(wildcards):
    return JOBS.serving_plan(wildcards["study"])


def study_table_rows(wildcards):
    """The rows of results/<study>/runs.tsv (the interface with the reporting code)."""
    return JOBS.study_table(wildcards["study"])


# ---------------------------------------------------------------------------------------- command lines
def student_args(wildcards):
    return JOBS.student_args(wildcards)


def train_args(wildcards):
    return JOBS.train_args(wildcards)


def teacher_args(wildcards):
    return JOBS.teacher_args(wildcards)


def given_teacher_args(wildcards):
    return JOBS.given_teacher_args(wildcards)


def augment_args(wildcards):
    return JOBS.augment_args(wildcards)


def job_label(wildcards):
    return JOBS.job_label(wildcards)


# ------------------------------------------------------------------------------------ scheduling, resources
def step1_first(wildcards):
    return JOBS.priority(wildcards)


def teacher_threads(wildcards):
    return SETTINGS["resources"]["teacher_threads"] or SETTINGS["resources"]["threads"]


def run_runtime(wildcards):
    return JOBS.run_minutes(wildcards)


def teacher_runtime(wildcards):
    return JOBS.teacher_minutes(wildcards)


def augment_runtime(wildcards):
    return JOBS.augment_minutes(wildcards)


def small_runtime(wildcards):
    return JOBS.small_minutes()
