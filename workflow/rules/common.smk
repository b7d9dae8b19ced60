# Everything the rules share: the study files validated against the schema, the grid built once, wildcard
# constraints generated from it, and the named input/params/resource functions of the rules.
import copy
import difflib
import itertools
import math
import os
from pathlib import Path

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError

from xtc import rehearsal
from xtc.glue import TASKS
from xtc.sources import SourceError, check_data, check_model, resolve_model

SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"
# Settings that are not in the run paths: every study built in one invocation must agree on them.
# fmt: off
SHARED_KEYS = ("teacher", "data", "augment", "step1", "quantize_from", "train", "resources")
# Train-split sizes of GLUE (for the runtime estimate only).
TRAIN_SIZE = {"cola": 8551, "sst2": 67349, "mrpc": 3668, "stsb": 5749, "qqp": 363846, "mnli": 392702,
              "qnli": 104743, "rte": 2490, "wnli": 635}
# TinyBERT's augmented copies per example (reference section 4), for the runtime estimate.
AUG_COPIES = {"cola": 30, "mnli": 10, "mrpc": 30, "sst2": 20, "stsb": 30, "qqp": 10, "qnli": 20, "rte": 30,
              "wnli": 30}
# fmt: on
RUN = "results/runs/task~{task}/layers~{layers}/wbits~{wbits}/abits~{abits}/kd~{kd}/epochs~{epochs}/lr~{lr}/da~{da}/seed~{seed}"
STEP1 = RUN.replace("{wbits}", "fp").replace("{abits}", "none")
TEACHER = "results/teachers/task~{task}/seed~{seed}"
GIVEN_TEACHER = "results/teachers/task~{task}/given"
AUGMENTED = "results/data/task~{task}/train_aug.tsv"


# ------------------------------------------------------------------------------------------- loading, validation
class ConfigError(WorkflowError):
    pass


def _load_schema(name):
    return yaml.safe_load((SCHEMAS / name).read_text())


def _key(path):
    """A JSON path as the user writes it: grid.wbits[1]."""
    out = ""
    for part in path:
        out += (
            f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        )
    return out or "(top level)"


def _allowed(schema):
    return sorted(schema.get("properties", {}))


def _did_you_mean(word, choices):
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f"did you mean '{close[0]}'? " if close else ""


def _schema_message(error, source):
    """One line that names the file, the key and the fix."""
    error = jsonschema.exceptions.best_match([error])
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = _allowed(error.schema)
        word = unknown[0] if unknown else "?"
        if len(error.absolute_path) == 2 and error.absolute_path[0] == "exclude":
            return (
                f"{source}: exclusion '{error.absolute_path[1]}' names an unknown axis '{word}'; "
                f"{_did_you_mean(word, allowed)}axes: {', '.join(allowed)}"
            )
        where = f"{key}.{word}" if error.absolute_path else word
        return (
            f"{source}: unknown key '{where}'; {_did_you_mean(word, allowed)}"
            f"allowed keys here: {', '.join(allowed)} (see workflow/schemas/config.schema.yaml)"
        )
    if error.validator == "enum":
        choices = error.validator_value
        return (
            f"{source}: {key} = {error.instance!r} is not allowed; {_did_you_mean(error.instance, choices)}"
            f"use one of: {', '.join(str(c) for c in choices)}"
        )
    if error.validator == "required":
        return f"{source}: {error.message} at {key}; add it (see workflow/schemas/config.schema.yaml)"
    return f"{source}: {key}: {error.message} (see workflow/schemas/config.schema.yaml)"


def _fill_defaults(schema, instance, root):
    """Set the schema's defaults for missing keys, recursively (jsonschema validates but never fills)."""
    if "$ref" in schema:
        schema = root["definitions"][schema["$ref"].split("/")[-1]]
    if not isinstance(instance, dict):
        return
    for name, sub in schema.get("properties", {}).items():
        if name not in instance and "default" in sub:
            instance[name] = copy.deepcopy(sub["default"])
        if name in instance:
            _fill_defaults(sub, instance[name], root)


def validate_study(study, source):
    schema = _load_schema("config.schema.yaml")
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(study),
        key=lambda e: list(e.path),
    )
    if errors:
        raise ConfigError(_schema_message(errors[0], source))
    study = copy.deepcopy(study)
    _fill_defaults(schema, study, schema)
    # YAML reads `4:` as an int key; the grid looks layer counts up as strings
    study["grid"]["teacher_layer"] = {
        str(k): v for k, v in study["grid"]["teacher_layer"].items()
    }
    study["source"] = source
    check_study(study)
    return study


def per_task(value, task):
    """A per-task setting: the plain value, or mapping[task] falling back to mapping['default']."""
    return value.get(task, value["default"]) if isinstance(value, dict) else value


def local_teacher_layers(path):
    config = Path(path) / "model" / "config.json"
    config = config if config.is_file() else Path(path) / "config.json"
    if config.is_file():
        return yaml.safe_load(config.read_text()).get("num_hidden_layers")
    return None


def check_study(study):
    """The checks a schema cannot express; each stops before any job starts."""
    source, grid, n_teacher = study["source"], study["grid"], study["teacher"]["layers"]
    for layers in grid["layers"]:
        if layers > n_teacher or layers < 1:
            raise ConfigError(
                f"{source}: grid.layers = {layers} is more than the teacher's {n_teacher} layers (teacher.layers); "
                f"use student layer counts from 1 to {n_teacher}, or set teacher.layers to the teacher's depth"
            )
    for task in grid["task"]:
        for flag in per_task(grid["da"], task):
            if flag not in (0, 1):
                raise ConfigError(
                    f"{source}: grid.da = {flag} is not allowed; use 0 (off) or 1 (on)"
                )
    for key, choices in grid["teacher_layer"].items():
        for choice in choices:
            bad = [i for i in choice if i >= n_teacher]
            if len(choice) != int(key) or bad or sorted(set(choice)) != list(choice):
                raise ConfigError(
                    f"{source}: grid.teacher_layer.{key} = {choice} must list {key} increasing 0-based teacher "
                    f"layers below {n_teacher} (teacher.layers)"
                )
    model = study["teacher"]["model"]
    for task in grid["task"]:
        given = teacher_given(study, task)
        depth = local_teacher_layers(resolve_model(given or model))
        if depth is not None and depth != n_teacher:
            raise ConfigError(
                f"{source}: teacher.layers = {n_teacher} but the teacher {given or model} has {depth} layers; "
                f"set teacher.layers: {depth}"
            )
    glue_dir = data_dir(study)
    if glue_dir is not None:
        origin = "data.glue_dir" if study["data"]["glue_dir"] else "$GLUE_DIR"
        for task in grid["task"]:
            folder = Path(glue_dir) / TASKS[task].tsv.directory
            if not folder.is_dir():
                raise ConfigError(
                    f"{source}: task '{task}' (grid.task) has no folder {folder} in the local GLUE dir "
                    f"{glue_dir} ({origin}); download it into the glue_data/ layout "
                    f"({TASKS[task].tsv.directory}/train.tsv), point {origin} at the folder that has it, "
                    f"or drop '{task}' from grid.task"
                )


def data_dir(study):
    return study["data"]["glue_dir"] or os.environ.get("GLUE_DIR") or None


def teacher_given(study, task):
    given = study["teacher"]["finetuned"]
    if isinstance(given, dict):
        return given.get(task)
    return given.format(task=task) if given else None


def load_studies():
    """The validated studies of this invocation.

    `--configfile` replaces config/config.yaml (Snakemake would deep-merge the two, leaking the default study's
    axes and exclusions into another study). A config with `studies:` lists several study files.
    """
    if workflow.config_settings.configfiles:
        raw = workflow.config_settings.overwrite_config
        source = ", ".join(
            os.path.relpath(p) for p in workflow.config_settings.configfiles
        )
    else:
        raw, source = dict(config), "config/config.yaml"
    if "studies" in raw:
        schema = _load_schema("studies.schema.yaml")
        errors = list(jsonschema.Draft7Validator(schema).iter_errors(raw))
        if errors:
            raise ConfigError(_schema_message(errors[0], source))
        studies = []
        for path in raw["studies"]:
            if not Path(path).is_file():
                raise ConfigError(
                    f"{source}: studies lists {path}, which does not exist"
                )
            studies.append(validate_study(yaml.safe_load(Path(path).read_text()), path))
    else:
        studies = [validate_study(raw, source)]
    first = studies[0]
    for study in studies[1:]:
        if study["study"] == first["study"]:
            raise ConfigError(
                f"{study['source']}: study name '{study['study']}' is used twice"
            )
        for key in SHARED_KEYS:
            if study[key] != first[key]:
                raise ConfigError(
                    f"{study['source']}: '{key}' differs from {first['source']}; studies built together share "
                    f"their {key} settings (runs are found by grid values only): make them equal"
                )
    return studies


# ---------------------------------------------------------------------------------------------------- the grid
def fmt_lr(lr):
    return repr(float(lr))


def layers_key(layers, teacher_layer):
    """Path value of the student depth: `6` (XTC's layer choice) or `4_2-5-8-11` (an explicit choice)."""
    if teacher_layer is None:
        return str(layers)
    return f"{layers}_{'-'.join(str(i) for i in teacher_layer)}"


def parse_layers(key):
    """(layers, teacher_layer or None) from a path value."""
    layers, _, choice = key.partition("_")
    return int(layers), (tuple(int(i) for i in choice.split("-")) if choice else None)


def _choice(wanted):
    if isinstance(wanted, list):
        return tuple(int(i) for i in wanted)
    return tuple(int(i) for i in str(wanted).replace("-", ",").split(","))


def _matches(axis, value, wanted):
    """Does a run's axis value equal an exclusion's value, or one of its list of values?"""
    if axis == "teacher_layer":
        nested = isinstance(wanted, list) and wanted and isinstance(wanted[0], list)
        return any(_choice(w) == value for w in (wanted if nested else [wanted]))
    for option in wanted if isinstance(wanted, list) else [wanted]:
        try:
            if float(value) == float(option):
                return True
        except (TypeError, ValueError):
            if str(value) == str(option):
                return True
    return False


def excluded(row, study):
    return any(
        all(_matches(axis, row[axis], wanted) for axis, wanted in rule.items())
        for rule in study["exclude"].values()
    )


def run_row(task, layers, teacher_layer, wbits, abits, kd, epochs, lr, da, seed):
    wbits = str(wbits)
    return {
        "task": task,
        "layers": layers,
        "teacher_layer": teacher_layer,
        "wbits": wbits,
        "abits": "none" if wbits == "fp" else str(abits),
        "kd": kd,
        "epochs": int(epochs),
        "lr": fmt_lr(lr),
        "da": int(da),
        "seed": int(seed),
    }


def run_dir(row):
    values = {**row, "layers": layers_key(row["layers"], row["teacher_layer"])}
    return RUN.format(**values)


def step1_row(study, row):
    """The FP layer-reduced student a quantized reduced run starts from (None: it starts from the teacher)."""
    if row["wbits"] == "fp" or row["layers"] >= study["teacher"]["layers"]:
        return None
    if study["quantize_from"] != "step1":
        return None
    s1, task = study["step1"], row["task"]
    return run_row(
        task,
        row["layers"],
        row["teacher_layer"],
        "fp",
        "none",
        s1["kd"],
        per_task(s1["epochs"], task),
        s1["lr"],
        per_task(s1["da"], task),
        row["seed"],
    )


def grid_runs(study):
    """The study's runs in grid order: the product of the axes minus exclusions and the teacher itself."""
    grid, n_teacher, rows = study["grid"], study["teacher"]["layers"], {}
    for task in grid["task"]:
        for layers in grid["layers"]:
            choices = grid["teacher_layer"].get(str(layers)) or [None]
            values = itertools.product(
                [tuple(c) if c else None for c in choices],
                grid["wbits"],
                grid["abits"],
                grid["kd"],
                per_task(grid["epochs"], task),
                grid["lr"],
                per_task(grid["da"], task),
                grid["seed"],
            )
            for tl, wbits, abits, kd, epochs, lr, da, seed in values:
                row = run_row(task, layers, tl, wbits, abits, kd, epochs, lr, da, seed)
                if row["wbits"] == "fp" and layers == n_teacher:
                    continue  # an FP student as deep as the teacher is the teacher
                if not excluded(row, study):
                    rows[run_dir(row)] = row
    return list(rows.values())


def study_runs(study):
    """Grid runs plus the step-1 students they start from (the paper's FP reduced rows), each once."""
    rows = {}
    for row in grid_runs(study):
        parent = step1_row(study, row)
        if parent is not None:
            rows.setdefault(run_dir(parent), parent)
        rows[run_dir(row)] = row
    return list(rows.values())


def teacher_dir(study, task):
    """The teacher's run dir (fine-tuned here) or the given fine-tuned model (hub id or path)."""
    return teacher_given(study, task) or TEACHER.format(
        task=task, seed=study["teacher"]["seed"]
    )


def teacher_record_dir(study, task):
    """Where the teacher's metrics.json lies."""
    if teacher_given(study, task):
        return GIVEN_TEACHER.format(task=task)
    return TEACHER.format(task=task, seed=study["teacher"]["seed"])


STUDIES = load_studies()
# Rehearsal (--config rehearsal=true): the same jobs on tiny local stand-ins, run in their own root (xtc.rehearsal)
REHEARSAL = rehearsal.root_of(config.get("rehearsal"), workflow.basedir)
if REHEARSAL:
    STUDIES = rehearsal.apply(STUDIES, REHEARSAL, base=os.getcwd())
    rehearsal.offline_environment()
    # the report reads the config files again, from the rehearsal root
    workflow.configfiles[:] = [os.path.abspath(f) for f in workflow.configfiles]

    workdir: str(REHEARSAL)


SETTINGS = STUDIES[0]  # the shared settings (equal in every study, checked above)
RUNS = {}
for _study in STUDIES:
    for _row in study_runs(_study):
        RUNS.setdefault(run_dir(_row), _row)
TASKS_USED = sorted({row["task"] for row in RUNS.values()})


# ------------------------------------------------------------------------------------------- sources, preflight
DATA_RULES = {
    "finetune_teacher",
    "evaluate_given_teacher",
    "augment",
    "reduce",
    "quantize",
    "evaluate_packed",
}


def check_sources(rules):
    """Models and data the pending jobs (`rules`: their rule names) need can be had; else one clear error."""
    tasks = sorted(TASKS_USED)
    if "finetune_teacher" in rules:
        check_model(SETTINGS["teacher"]["model"], key="teacher.model")
    if "evaluate_given_teacher" in rules:
        for task in tasks:
            given = teacher_given(SETTINGS, task)
            if given:
                check_model(given, key="teacher.finetuned")
    if "augment" in rules:
        check_model(SETTINGS["augment"]["mlm"], key="augment.mlm")
    if rules & DATA_RULES:
        check_data(
            data_dir(SETTINGS),
            [TASKS[t].hub_config for t in tasks],
            key=f"data.glue_dir in {SETTINGS['source']}",
        )


onstart:
    # Only when jobs will run (never in a dry run): offline, stop before the first job with what to set.
    if REHEARSAL:
        rehearsal.make_inputs(REHEARSAL, TASKS_USED, SETTINGS["teacher"]["layers"])
    try:
        check_sources({job.rule.name for job in workflow.dag.needrun_jobs()})
    except SourceError as error:
        raise ConfigError(str(error)) from None


def _alternatives(values):
    return "|".join(sorted({str(v) for v in values}))


wildcard_constraints:
    task=_alternatives(TASKS_USED),
    layers=r"\d+(_\d+(-\d+)*)?",
    wbits="1|2|fp",
    abits="8|none",
    kd="none|logits|logits_hidden|one_stage|two_stage|one_stage_probs|two_stage_probs",
    epochs=r"\d+",
    lr=r"[0-9.e+-]+",
    da="0|1",
    seed=r"\d+",
    study="|".join(s["study"] for s in STUDIES),


# ----------------------------------------------------------------------------------------- named input functions
def is_quantized(row):
    return row["wbits"] != "fp"


def all_run_metrics():
    return [f"{path}/metrics.json" for path in RUNS]


def all_packed():
    return [
        f"{path}/packed/size.json" for path, row in RUNS.items() if is_quantized(row)
    ]


def all_packed_evals():
    return [
        f"{path}/packed_eval/metrics.json"
        for path, row in RUNS.items()
        if is_quantized(row)
    ]


def all_teacher_metrics():
    return sorted(
        {f"{teacher_record_dir(SETTINGS, task)}/metrics.json" for task in TASKS_USED}
    )


def output_dir(wildcards, output):
    """The directory an `xtc` command writes (`--out`): the one holding the rule's first output."""
    return os.path.dirname(output[0])


def input_dir(wildcards, input):
    """The run directory whose metrics.json is the rule's first input."""
    return os.path.dirname(input[0])


def study_by_name(name):
    return next(s for s in STUDIES if s["study"] == name)


def study_metrics(wildcards):
    study = study_by_name(wildcards["study"])
    runs = [f"{run_dir(row)}/metrics.json" for row in study_runs(study)]
    teachers = [
        f"{teacher_record_dir(study, task)}/metrics.json"
        for task in study["grid"]["task"]
    ]
    return teachers + runs


def study_sizes(wildcards):
    study = study_by_name(wildcards["study"])
    return [
        f"{run_dir(row)}/packed/size.json"
        for row in study_runs(study)
        if is_quantized(row)
    ]


def study_table_rows(wildcards):
    """The rows of results/<study>/runs.tsv (the interface with the reporting code)."""
    study = study_by_name(wildcards["study"])
    rows = []
    for task in study["grid"]["task"]:
        teacher = study["teacher"]
        rows.append(
            {
                "study": study["study"],
                "task": task,
                "layers": teacher["layers"],
                "teacher_layer": "",
                "wbits": "fp",
                "abits": "none",
                "kd": "none",
                "epochs": (
                    ""
                    if teacher_given(study, task)
                    else per_task(teacher["epochs"], task)
                ),
                "lr": "" if teacher_given(study, task) else fmt_lr(teacher["lr"]),
                "da": 0,
                "seed": "" if teacher_given(study, task) else teacher["seed"],
                "run_dir": teacher_record_dir(study, task),
                "packed_dir": "",
            }
        )
    for row in study_runs(study):
        path = run_dir(row)
        tl = row["teacher_layer"]
        rows.append(
            {
                "study": study["study"],
                **{
                    k: row[k]
                    for k in (
                        "task",
                        "layers",
                        "wbits",
                        "abits",
                        "kd",
                        "epochs",
                        "lr",
                        "da",
                        "seed",
                    )
                },
                "teacher_layer": ",".join(map(str, tl)) if tl else "",
                "run_dir": path,
                "packed_dir": f"{path}/packed" if is_quantized(row) else "",
            }
        )
    return rows


def row_of(wildcards):
    return RUNS[RUN.format(**{"wbits": "fp", "abits": "none", **wildcards})]


def teacher_inputs(wildcards):
    """The teacher a run distils from: its metrics.json when it is built here (DAG edge), nothing if given."""
    if teacher_given(SETTINGS, wildcards.task):
        return []
    return f"{TEACHER.format(task=wildcards.task, seed=SETTINGS['teacher']['seed'])}/metrics.json"


def init_inputs(wildcards):
    parent = step1_row(SETTINGS, row_of(wildcards))
    return [] if parent is None else f"{run_dir(parent)}/metrics.json"


def train_file_inputs(wildcards):
    return AUGMENTED.format(task=wildcards.task) if int(wildcards.da) else []


def data_args():
    data = SETTINGS["data"]
    args = []
    glue_dir = data_dir(SETTINGS)
    if glue_dir:
        args += ["--data-dir", glue_dir]
    for flag, key in (
        ("--max-eval-examples", "max_eval_examples"),
        ("--max-seq-length", "max_seq_length"),
    ):
        if data[key] is not None:
            args += [flag, str(data[key])]
    return " ".join(args)


def job_label(wildcards):
    """Prefix of a training job's log lines on the console: `sst2 teacher`, `sst2 FP 3L`, `sst2 W1A8 6L`."""
    wbits = getattr(wildcards, "wbits", None)
    if not hasattr(wildcards, "layers"):
        return f"{wildcards.task} teacher"
    bits = "FP" if wbits is None else f"W{wbits}A{wildcards.abits}"
    return f"{wildcards.task} {bits} {wildcards.layers}L"


def teacher_threads(wildcards):
    res = SETTINGS["resources"]
    return res["teacher_threads"] or res["threads"]


def train_args(wildcards):
    """Data and training flags shared by finetune and distill."""
    data = SETTINGS["data"]
    args = [data_args(), "--batch-size", str(data["batch_size"])]
    # a da=1 run trains on the whole augmented file (made from the max_train_examples subset)
    if data["max_train_examples"] and not int(wildcards.get("da", 0)):
        args += ["--max-train-examples", str(data["max_train_examples"])]
    if data["group_by_length"]:
        args += ["--group-by-length"]
    args += ["--eval-every", str(SETTINGS["train"]["eval_every"])]
    if SETTINGS["train"]["warmup_ratio"] is not None:
        args += ["--warmup-ratio", str(SETTINGS["train"]["warmup_ratio"])]
    return " ".join(args)


def student_args(wildcards):
    """The `xtc distill` flags a run's path spells out (plus the study's --set overrides)."""
    row = row_of(wildcards)
    args = ["--teacher", teacher_dir(SETTINGS, row["task"])]
    parent = step1_row(SETTINGS, row)
    if parent is not None:
        args += ["--init", run_dir(parent)]
    else:
        if row["layers"] != SETTINGS["teacher"]["layers"]:
            args += ["--layers", str(row["layers"])]
        if row["teacher_layer"]:
            args += ["--teacher-layer", ",".join(map(str, row["teacher_layer"]))]
    args += ["--weight-bits", row["wbits"], "--act-bits", row["abits"]]
    if row["kd"].endswith("_probs"):
        args += ["--kd", row["kd"][: -len("_probs")], "--attention-target", "probs"]
    else:
        args += ["--kd", row["kd"]]
    if row["da"]:
        args += ["--train-file", AUGMENTED.format(task=row["task"])]
    for override in SETTINGS["train"]["set"]:
        args += ["--set", override]
    return " ".join(args)


def teacher_args(wildcards):
    teacher, task = SETTINGS["teacher"], wildcards.task
    return f"--model {teacher['model']} --epochs {per_task(teacher['epochs'], task)} --lr {fmt_lr(teacher['lr'])}"


def given_teacher(wildcards):
    return teacher_given(SETTINGS, wildcards.task)


def augment_args(wildcards):
    aug = SETTINGS["augment"]
    args = ["--mlm", aug["mlm"], "--seed", str(aug["seed"])]
    if aug["glove"]:
        args += ["--glove", aug["glove"]]
    if aug["copies"]:
        args += ["--copies", str(aug["copies"])]
    if SETTINGS["data"]["max_train_examples"]:
        args += ["--max-train-examples", str(SETTINGS["data"]["max_train_examples"])]
    glue_dir = data_dir(SETTINGS)
    if glue_dir:
        args += ["--data-dir", glue_dir]
    return " ".join(args)


# ------------------------------------------------------------------------------------------------- resources
def train_examples(task, da):
    cap = SETTINGS["data"]["max_train_examples"]
    n = min(TRAIN_SIZE[task], cap) if cap else TRAIN_SIZE[task]
    if int(da):
        n *= 1 + (SETTINGS["augment"]["copies"] or AUG_COPIES[task])
    return n


def estimate_minutes(task, epochs, layers, da):
    """Runtime request: task size x epochs, scaled by depth, with a safety factor of 1.5 (and a cap)."""
    res = SETTINGS["resources"]
    depth = layers / SETTINGS["teacher"]["layers"]
    seconds = (
        train_examples(task, da)
        * max(int(epochs), 1)
        * depth
        / res["examples_per_second"]
    )
    return min(
        res["overhead_minutes"] + math.ceil(1.5 * seconds / 60), res["max_runtime"]
    )


def run_runtime(wildcards):
    layers, _ = parse_layers(wildcards.layers)
    return estimate_minutes(wildcards.task, wildcards.epochs, layers, wildcards.da)


def teacher_runtime(wildcards):
    epochs = per_task(SETTINGS["teacher"]["epochs"], wildcards.task)
    return estimate_minutes(wildcards.task, epochs, SETTINGS["teacher"]["layers"], 0)


def small_runtime(wildcards):
    return SETTINGS["resources"]["overhead_minutes"] * 2


def augment_runtime(wildcards):
    return estimate_minutes(wildcards.task, 1, SETTINGS["teacher"]["layers"], 1)


def study_outputs():
    """Every study's runs table, scores, tables and figures."""
    outputs = []
    for study in STUDIES:
        name = study["study"]
        outputs += [f"results/{name}/runs.tsv", f"results/scores/{name}.json"]
        outputs += [f"results/tables/{name}.{ext}" for ext in ("md", "tex", "csv")]
        outputs += [
            f"figures/{name}_{kind}.{ext}"
            for kind in study["report"]["figures"]
            for ext in ("png", "pdf")
        ]
    return outputs
