"""The study grid, torch-free: study files -> validated studies -> runs, each named by one run key.

A *study* is one YAML file validated against ``workflow/schemas/config.schema.yaml``: ``schema_error`` words the
first violation as one line naming the file, the key and the fix; Snakemake's ``validate`` (passed in) fills the
defaults; ``check_study`` adds what a schema cannot express. ``load_studies`` returns one invocation's studies
(``config/studies/all.yaml`` lists several; their shared sections must agree); ``study_runs`` the runs of one
(grid product minus exclusions, plus the step-1 students); ``train_examples`` what a job trains on.
``xtc.study.jobs`` turns them into what the workflow's rules ask for; ``workflow/rules/common.smk`` only forwards.

The run key: a run is a dict of ``AXES`` (``run_row``); ``run_dir`` spells it as a path (``RUN``), ``run_key``
reads a path's values back, ``table_row`` is its line of ``results/<study>/runs.tsv`` (``RUNS_COLUMNS``),
``run_label`` its name in ``dvc metrics show`` and ``model_label`` its name in logs and figures. Full precision is
``fp`` everywhere; ``precision`` is the one place that maps other spellings (``none``, ``32``...) to it.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import string
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from xtc.config import KD_VARIANTS, MODULE_GROUPS, Recipe, parse_bits, parse_override, suggest, with_values
from xtc.sources import resolve_model
from xtc.study.rundir import model_dir
from xtc.tasks import TASKS

SCHEMAS = Path(__file__).resolve().parents[2] / "workflow" / "schemas"
FP = "fp"
# The grid axes: every one but teacher_layer and recipe is a path component (teacher_layer joins the layer value;
# a recipe other than BASE prefixes the path: results/runs/recipe~att_zero/task~...).
AXES = ("task", "layers", "teacher_layer", "wbits", "abits", "kd", "epochs", "lr", "da", "seed", "recipe")
RUNS_COLUMNS = ("study", *AXES, "run_dir", "packed_dir")
RUN = "results/runs/{recipe}" + "/".join(f"{axis}~{{{axis}}}" for axis in AXES
                                         if axis not in ("teacher_layer", "recipe"))
# The recipe of a run: the study's own train.set (BASE), or BASE plus a named entry of the study's `recipes:` (its
# --set overrides, applied after train.set), e.g. the recipe ablation of config/findings/recipe.yaml.
BASE = "base"
TEACHERS = "results/teachers"
TEACHER = TEACHERS + "/task~{task}/seed~{seed}"
GIVEN_TEACHER = TEACHERS + "/task~{task}/given"
AUGMENTED = "results/data/task~{task}/train_aug.tsv"
# A grid kd value: an xtc.config KD variant, or a variant that distils attention with `_probs` (the attention
# probabilities as target instead of the scores: `xtc distill --attention-target probs`).
PROBS = "_probs"
KD_GRID = (*KD_VARIANTS, *(variant + PROBS for variant in KD_VARIANTS if variant.endswith("_stage")))
WBITS, ABITS = (1, 2, FP), (8, FP)  # the grid's bit widths (the schema's enums)
QUANTIZED_WBITS = tuple(b for b in WBITS if b != FP)  # the runs that are exported and served packed
# Settings that are not in the run paths: every study built in one invocation must agree on them.
SHARED_KEYS = ("teacher", "data", "augment", "step1", "quantize_from", "train", "resources", "revisions")
SCHEMA_HINT = "(see workflow/schemas/config.schema.yaml)"
# The recipe keys the grid owns, and the axis that sets each: a run's path and label name their values (and the
# workflow passes the init and train files), so a study's `train.set` may not change them.
GRID_OWNED = {
    "data.task": "grid.task", "reduce.layers": "grid.layers", "reduce.teacher_layer": "grid.teacher_layer",
    "reduce.strategy": "grid.teacher_layer", "quant.weight_bits": "grid.wbits",
    **{f"quant.{group}_bits": "grid.wbits" for group in MODULE_GROUPS}, "quant.act_bits": "grid.abits",
    "distill.kd": "grid.kd", "distill.attention_target": "grid.kd", "train.epochs": "grid.epochs",
    "train.lr": "grid.lr", "train.seed": "grid.seed", "data.train_file": "grid.da",
}

Validate = Callable[[dict, str], Any]  # snakemake.utils.validate(data, schema_path): validates, fills defaults


class StudyError(ValueError):
    """A study file the workflow cannot run: the message names the file, the key and the fix."""


# ------------------------------------------------------------------------------------------------- spellings
def precision(value: object) -> str:
    """``'fp'`` or a bit width as text (``'1'``, ``'8'``), by ``xtc.config.parse_bits`` (the one map of
    full-precision spellings)."""
    bits = parse_bits(value)
    return FP if bits is None else str(bits)


def fmt_lr(lr: object) -> str:
    return repr(float(lr))


def layers_key(layers: int, teacher_layer: tuple[int, ...] | None) -> str:
    """Path value of the student depth: ``6`` (XTC's layer choice) or ``4_2-5-8-11`` (an explicit choice)."""
    return str(layers) if teacher_layer is None else f"{layers}_{'-'.join(str(i) for i in teacher_layer)}"


def parse_layers(key: str) -> tuple[int, tuple[int, ...] | None]:
    """(layers, teacher_layer or None) from a path value."""
    layers, _, choice = str(key).partition("_")
    return int(layers), (tuple(int(i) for i in choice.split("-")) if choice else None)


def bits_label(wbits: str, abits: str) -> str:
    """``FP``, ``W1A8``; a full-precision side of a quantized model prints as 32 (``W32A8``, ``W1A32``)."""
    if wbits == FP:
        return "FP" if abits == FP else f"W32A{abits}"
    return f"W{wbits}A{'32' if abits == FP else abits}"


def model_label(layers: int | str, wbits: str, abits: str) -> str:
    """A model's short name in logs and figure legends: ``FP 12L``, ``W1A8 6L``."""
    return f"{bits_label(wbits, abits)} {layers}L"


# ------------------------------------------------------------------------------------------------- the run key
def run_row(task, layers, teacher_layer, wbits, abits, kd, epochs, lr, da, seed, recipe=BASE) -> dict:
    """A run's axis values, normalized (a full-precision student has full-precision activations)."""
    wbits = precision(wbits)
    return {"task": task, "layers": int(layers), "teacher_layer": tuple(teacher_layer) if teacher_layer else None,
            "wbits": wbits, "abits": FP if wbits == FP else precision(abits), "kd": kd, "epochs": int(epochs),
            "lr": fmt_lr(lr), "da": int(da), "seed": int(seed), "recipe": str(recipe)}


def recipe_key(recipe: str) -> str:
    """Path spelling of a recipe: nothing for BASE (every run path of a study without recipes), else a prefix."""
    return "" if recipe == BASE else f"recipe~{recipe}/"


def run_dir(row: Mapping) -> str:
    return RUN.format(**{**row, "layers": layers_key(row["layers"], row["teacher_layer"]),
                         "recipe": recipe_key(row["recipe"])})


def run_wildcards(path: str) -> dict[str, str]:
    """The wildcards Snakemake matches in a run dir (``run_key``'s inverse): every ``axis~value`` part, ``recipe``
    in its path spelling (empty for the base recipe)."""
    values = dict(part.split("~", 1) for part in path.split("/") if "~" in part)
    values["recipe"] = recipe_key(values.get("recipe", BASE))
    return values


def run_key(values: Mapping) -> str:
    """The run dir of a path's values (Snakemake wildcards: ``layers`` in its path spelling; ``recipe`` in its path
    spelling, or a run row's recipe name)."""
    recipe = values.get("recipe", "")
    recipe = recipe if recipe == "" or recipe.endswith("/") else recipe_key(recipe)
    return RUN.format(**{axis: values[axis] for axis in AXES if axis not in ("teacher_layer", "recipe")},
                      recipe=recipe)


def is_quantized(row: Mapping) -> bool:
    return row["wbits"] != FP


def table_row(study: str, row: Mapping) -> dict:
    """A run's line of runs.tsv."""
    path, choice = run_dir(row), row["teacher_layer"]
    return {"study": study, **{axis: row[axis] for axis in AXES}, "run_dir": path,
            "teacher_layer": ",".join(map(str, choice)) if choice else "",
            "packed_dir": f"{path}/packed" if is_quantized(row) else ""}


def run_label(row: Mapping) -> str:
    """A runs.tsv row's name in ``dvc metrics show``: ``sst2/L6/W1A8/one_stage/e3/lr5e-05/da0/s42``,
    ``sst2/teacher``."""
    if str(row["run_dir"]).startswith(TEACHERS + "/"):
        return f"{row['task']}/teacher"
    layers = f"L{row['layers']}" + (f"[{row['teacher_layer']}]" if row["teacher_layer"] else "")
    recipe = [] if row.get("recipe", BASE) in (BASE, "") else [f"r-{row['recipe']}"]
    return "/".join((row["task"], layers, bits_label(row["wbits"], row["abits"]), row["kd"], f"e{row['epochs']}",
                     f"lr{row['lr']}", f"da{row['da']}", f"s{row['seed']}", *recipe))


# ------------------------------------------------------------------------------------------- loading, validation
def _key(path) -> str:
    """A JSON path as the user writes it: grid.wbits[1]."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _hint(word: object, choices) -> str:
    """``; did you mean 'x'?`` or ``;``, to be followed by the list of choices."""
    return suggest(word, choices) or ";"


def schema_error(instance: Mapping, schema: Mapping, source: str) -> str | None:
    """The first violation of ``schema`` as one line that names the file, the key and the fix (None: valid)."""
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    if not errors:
        return None
    error = jsonschema.exceptions.best_match([errors[0]])
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        word = unknown[0] if unknown else "?"
        if len(error.absolute_path) == 2 and error.absolute_path[0] == "exclude":
            return (f"{source}: exclusion '{error.absolute_path[1]}' names an unknown axis '{word}'"
                    f"{_hint(word, allowed)} axes: {', '.join(allowed)}")
        where = f"{key}.{word}" if error.absolute_path else word
        return (f"{source}: unknown key '{where}'{_hint(word, allowed)} allowed keys here: {', '.join(allowed)} "
                + SCHEMA_HINT)
    if error.validator == "enum":
        choices = error.validator_value
        return (f"{source}: {key} = {error.instance!r} is not allowed{_hint(error.instance, choices)} "
                f"use one of: {', '.join(str(c) for c in choices)}")
    if error.validator == "required":
        return f"{source}: {error.message} at {key}; add it {SCHEMA_HINT}"
    return f"{source}: {key}: {error.message} {SCHEMA_HINT}"


def per_task(value, task: str):
    """A per-task setting: the plain value, or mapping[task] falling back to mapping['default']."""
    return value.get(task, value["default"]) if isinstance(value, dict) else value


def teacher_given(study: Mapping, task: str) -> str | None:
    """The given fine-tuned teacher of a task (hub id or path), or None when it is fine-tuned here."""
    given = study["teacher"]["finetuned"]
    if isinstance(given, dict):
        return given.get(task)
    return given.format(task=task) if given else None


def data_dir(study: Mapping) -> str | None:
    return study["data"]["glue_dir"] or os.environ.get("GLUE_DIR") or None


def local_teacher_layers(path: str) -> int | None:
    config = model_dir(path) / "config.json"
    return yaml.safe_load(config.read_text()).get("num_hidden_layers") if config.is_file() else None


def _per_task_values(value, key: str) -> list[tuple[str, Any]]:
    """``(key as written, value)`` of a per-task setting: ``grid.epochs`` or ``grid.epochs.rte``, list items flat."""
    pairs = list(value.items()) if isinstance(value, dict) else [(None, value)]
    return [(key if task is None else f"{key}.{task}", item) for task, values in pairs
            for item in (values if isinstance(values, list) else [values])]


def check_budgets(study: Mapping) -> None:
    """Every epoch count is at least 1 and every learning rate a finite number above 0 (the schema lets `0` and
    the string "0" through)."""
    source = study["source"]
    epochs = [*_per_task_values(study["grid"]["epochs"], "grid.epochs"),
              *_per_task_values(study["teacher"]["epochs"], "teacher.epochs"),
              *_per_task_values(study["step1"]["epochs"], "step1.epochs")]
    for key, value in epochs:
        if value < 1:
            raise StudyError(f"{source}: {key} = {value} is not allowed; train for at least 1 epoch")
    rates = [("grid.lr", lr) for lr in study["grid"]["lr"]] + [("teacher.lr", study["teacher"]["lr"]),
                                                              ("step1.lr", study["step1"]["lr"])]
    for key, lr in rates:
        if not (math.isfinite(float(lr)) and float(lr) > 0):
            raise StudyError(f"{source}: {key} = {lr!r} is not allowed; a learning rate is a number above 0, "
                             "e.g. 5.0e-5")


def check_finetuned(study: Mapping) -> None:
    """A ``teacher.finetuned`` template names no placeholder but ``{task}``."""
    given, source = study["teacher"]["finetuned"], study["source"]
    if not isinstance(given, str):
        return
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(given) if name is not None]
    except ValueError as err:
        raise StudyError(f"{source}: teacher.finetuned = {given!r} is not a valid template ({err}); write "
                         "{task} where the task name goes, and double other braces ({{ }})") from None
    for name in fields:
        if name != "task":
            raise StudyError(f"{source}: teacher.finetuned = {given!r} names {{{name}}}; the only placeholder is "
                             "{task} (the GLUE task name): fix the template")


def _check_set(items, where: str, source: str, values: dict) -> dict:
    """``values`` updated with ``items`` (``section.key=value`` strings), each checked: it parses, names a recipe key
    the grid does not own, and the whole set validates."""
    values = dict(values)
    for item in items:
        try:
            key, value = parse_override(item)
            with_values(Recipe(), {key: value})
        except ValueError as err:
            raise StudyError(f"{source}: {where} {item!r}: {err}") from None
        if key in GRID_OWNED:
            axis = GRID_OWNED[key]
            raise StudyError(
                f"{source}: {where} {item!r} sets {key}, which the grid owns ({axis} names it in every run's path "
                f"and label); vary {axis} instead, or drop the entry")
        values[key] = value
    try:
        with_values(Recipe(), values)
    except ValueError as err:
        raise StudyError(f"{source}: {where}: {err}") from None
    return values


def check_overrides(study: Mapping) -> None:
    """``train.set`` and every named recipe (on top of it) check out (``_check_set``); ``grid.recipe`` names
    ``base`` or a recipe of ``recipes:``."""
    source = study["source"]
    base = _check_set(study["train"]["set"], "train.set", source, {})
    for name, items in study["recipes"].items():
        _check_set(items, f"recipes.{name}", source, base)
    for name in study["grid"]["recipe"]:
        if name != BASE and name not in study["recipes"]:
            known = [BASE, *study["recipes"]]
            raise StudyError(f"{source}: grid.recipe names '{name}', which recipes: does not define"
                             f"{_hint(name, known)} use one of: {', '.join(known)}, or define it under recipes:")


def recipe_overrides(study: Mapping, recipe: str) -> list[str]:
    """The ``--set`` overrides of a run's recipe: ``train.set``, then the named recipe's (later wins)."""
    return [*study["train"]["set"], *([] if recipe == BASE else study["recipes"][recipe])]


def check_study(study: Mapping) -> None:
    """The checks a schema cannot express; each stops before any job starts."""
    source, grid, n_teacher = study["source"], study["grid"], study["teacher"]["layers"]
    for layers in grid["layers"]:
        if layers > n_teacher or layers < 1:
            raise StudyError(
                f"{source}: grid.layers = {layers} is more than the teacher's {n_teacher} layers (teacher.layers); "
                f"use student layer counts from 1 to {n_teacher}, or set teacher.layers to the teacher's depth")
    check_budgets(study)
    check_finetuned(study)
    check_overrides(study)
    for task in grid["task"]:
        for flag in per_task(grid["da"], task):
            if flag not in (0, 1):
                raise StudyError(f"{source}: grid.da = {flag} is not allowed; use 0 (off) or 1 (on)")
    for key, choices in grid["teacher_layer"].items():
        if int(key) not in grid["layers"]:
            raise StudyError(f"{source}: grid.teacher_layer.{key} gives layer choices for {key}-layer students, but "
                             f"grid.layers = {grid['layers']} has none; add {key} to grid.layers or drop the entry")
        for choice in choices:
            if len(choice) != int(key) or any(i >= n_teacher for i in choice) or sorted(set(choice)) != list(choice):
                raise StudyError(f"{source}: grid.teacher_layer.{key} = {choice} must list {key} increasing 0-based "
                                 f"teacher layers below {n_teacher} (teacher.layers)")
    for task in grid["task"]:
        model = teacher_given(study, task) or study["teacher"]["model"]
        depth = local_teacher_layers(resolve_model(model))
        if depth is not None and depth != n_teacher:
            raise StudyError(f"{source}: teacher.layers = {n_teacher} but the teacher {model} has {depth} layers; "
                             f"set teacher.layers: {depth}")
    glue_dir = data_dir(study)
    if glue_dir is not None:
        origin = "data.glue_dir" if study["data"]["glue_dir"] else "$GLUE_DIR"
        for task in grid["task"]:
            folder = Path(glue_dir) / TASKS[task].tsv.directory
            if not folder.is_dir():
                raise StudyError(
                    f"{source}: task '{task}' (grid.task) has no folder {folder} in the local GLUE dir {glue_dir} "
                    f"({origin}); download it into the glue_data/ layout ({TASKS[task].tsv.directory}/train.tsv), "
                    f"point {origin} at the folder that has it, or drop '{task}' from grid.task")


def with_shared(raw: Mapping, source: str) -> dict:
    """``raw`` with the sections of its ``shared:`` file (a path relative to the working directory) filled in: a
    section the study writes itself wins key by key. The paper studies share config/studies/shared/paper.yaml; a
    shared file may also define ``recipes:`` once for several studies (config/findings/shared/recipe.yaml)."""
    raw = dict(raw)
    path = raw.pop("shared", None)
    if path is None:
        return raw
    if not Path(path).is_file() and (SCHEMAS.parent.parent / path).is_file():
        path = SCHEMAS.parent.parent / path  # run from elsewhere than the repository: its copy
    if not Path(path).is_file():
        raise StudyError(f"{source}: shared = {path} does not exist; fix the path (relative to the working "
                         f"directory) or drop the key")
    merged = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(merged, dict) or "shared" in merged or "grid" in merged:
        raise StudyError(f"{source}: shared = {path} must hold shared sections only ({', '.join(SHARED_KEYS)}, "
                         f"recipes)")
    for key, value in raw.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = {**merged[key], **value} if both else value
    return merged


def load_study(raw: Mapping, source: str, validate: Validate, schemas: Path = SCHEMAS) -> dict:
    """One validated study with the schema's defaults filled in (and its ``shared:`` sections)."""
    raw = with_shared(raw, source)
    schema_path = Path(schemas) / "config.schema.yaml"
    message = schema_error(raw, yaml.safe_load(schema_path.read_text()), source)
    if message:
        raise StudyError(message)
    study = copy.deepcopy(dict(raw))
    validate(study, str(schema_path))
    # YAML reads `4:` as an int key; the grid looks layer counts up as strings
    study["grid"]["teacher_layer"] = {str(k): v for k, v in study["grid"]["teacher_layer"].items()}
    study["source"] = source
    check_study(study)
    return study


def load_studies(raw: Mapping, source: str, validate: Validate, schemas: Path = SCHEMAS) -> list[dict]:
    """The invocation's studies: ``raw`` is one study, or ``studies:`` lists study files that must agree on
    ``SHARED_KEYS`` (runs are found by grid values only) and have distinct names."""
    if "studies" not in raw:
        return [load_study(raw, source, validate, schemas)]
    message = schema_error(raw, yaml.safe_load((Path(schemas) / "studies.schema.yaml").read_text()), source)
    if message:
        raise StudyError(message)
    studies = []
    for path in raw["studies"]:
        if not Path(path).is_file():
            raise StudyError(f"{source}: studies lists {path}, which does not exist; fix the path or drop it")
        studies.append(load_study(yaml.safe_load(Path(path).read_text()), path, validate, schemas))
    first = studies[0]
    for study in studies[1:]:
        if study["study"] == first["study"]:
            raise StudyError(f"{study['source']}: study name '{study['study']}' is used twice; rename one")
        for key in SHARED_KEYS:
            if study[key] != first[key]:
                raise StudyError(
                    f"{study['source']}: '{key}' differs from {first['source']}; studies built together share "
                    f"their {key} settings (runs are found by grid values only): make them equal")
    named = {}
    for study in studies:  # a recipe name is part of run paths: one definition per invocation
        for name, items in study["recipes"].items():
            source, before = named.setdefault(name, (study["source"], items))
            if before != items:
                raise StudyError(f"{study['source']}: recipes.{name} differs from {source}'s; studies built "
                                 f"together share a recipe's path: make them equal or rename one")
    return studies


# ---------------------------------------------------------------------------------------------------- the grid
def _choice(wanted) -> tuple[int, ...]:
    if isinstance(wanted, list):
        return tuple(int(i) for i in wanted)
    return tuple(int(i) for i in str(wanted).replace("-", ",").split(","))


def _same(axis: str, value, option) -> bool:
    if axis in ("wbits", "abits"):
        try:
            return precision(value) == precision(option)
        except ValueError:
            return False
    try:
        return float(value) == float(option)
    except (TypeError, ValueError):
        return str(value) == str(option)


def matches(axis: str, value, wanted) -> bool:
    """Does a run's axis value equal an exclusion's value, or one of its list of values?"""
    if axis == "teacher_layer":
        nested = isinstance(wanted, list) and wanted and isinstance(wanted[0], list)
        return any(_choice(w) == value for w in (wanted if nested else [wanted]))
    return any(_same(axis, value, option) for option in (wanted if isinstance(wanted, list) else [wanted]))


def excluded(row: Mapping, study: Mapping) -> bool:
    return any(all(matches(axis, row[axis], wanted) for axis, wanted in rule.items())
               for rule in study["exclude"].values())


def step1_row(study: Mapping, row: Mapping) -> dict | None:
    """The FP layer-reduced student a quantized reduced run starts from (None: it starts from the teacher)."""
    if not is_quantized(row) or row["layers"] >= study["teacher"]["layers"] or study["quantize_from"] != "step1":
        return None
    s1, task = study["step1"], row["task"]
    return run_row(task, row["layers"], row["teacher_layer"], FP, FP, s1["kd"], per_task(s1["epochs"], task),
                   s1["lr"], per_task(s1["da"], task), row["seed"], row["recipe"])  # step 1 under the run's recipe


def grid_runs(study: Mapping) -> list[dict]:
    """The study's runs in grid order: the product of the axes minus exclusions and the teacher itself."""
    grid, n_teacher, rows = study["grid"], study["teacher"]["layers"], {}
    for task in grid["task"]:
        for layers in grid["layers"]:
            choices = [tuple(c) if c else None for c in grid["teacher_layer"].get(str(layers)) or [None]]
            for values in itertools.product(choices, grid["wbits"], grid["abits"], grid["kd"],
                                            per_task(grid["epochs"], task), grid["lr"], per_task(grid["da"], task),
                                            per_task(grid["seed"], task), grid["recipe"]):
                row = run_row(task, layers, *values)
                if not is_quantized(row) and layers == n_teacher:
                    continue  # an FP student as deep as the teacher is the teacher
                if not excluded(row, study):
                    rows[run_dir(row)] = row
    return list(rows.values())


def study_runs(study: Mapping) -> list[dict]:
    """Grid runs plus the step-1 students they start from (the paper's FP reduced rows), each once."""
    rows = {}
    for row in grid_runs(study):
        parent = step1_row(study, row)
        if parent is not None:
            rows.setdefault(run_dir(parent), parent)
        rows[run_dir(row)] = row
    return list(rows.values())


def teacher_record_dir(study: Mapping, task: str) -> str:
    """Where the teacher's metrics.json lies: its run dir, or the evaluation of a given teacher."""
    if teacher_given(study, task):
        return GIVEN_TEACHER.format(task=task)
    return TEACHER.format(task=task, seed=study["teacher"]["seed"])


def teacher_row(study: Mapping, task: str) -> dict:
    """The teacher's line of runs.tsv (a given teacher was not trained here: no epochs, lr or seed)."""
    teacher, given = study["teacher"], teacher_given(study, task)
    return {"study": study["study"], "task": task, "layers": teacher["layers"], "teacher_layer": "", "wbits": FP,
            "abits": FP, "kd": "none", "epochs": "" if given else per_task(teacher["epochs"], task),
            "lr": "" if given else fmt_lr(teacher["lr"]), "da": 0, "seed": "" if given else teacher["seed"],
            "recipe": BASE, "run_dir": teacher_record_dir(study, task), "packed_dir": ""}


def study_table(study: Mapping) -> list[dict]:
    """The rows of results/<study>/runs.tsv (the interface with the reporting code): teachers, then runs."""
    return ([teacher_row(study, task) for task in study["grid"]["task"]]
            + [table_row(study["study"], row) for row in study_runs(study)])




# ------------------------------------------------------------------------------------------- job sizes
def train_examples(settings: Mapping, task: str, da) -> int:
    """Examples a job trains on per epoch: the train split (or data.max_train_examples), times the augmented
    copies plus one on augmented data."""
    cap, n = settings["data"]["max_train_examples"], TASKS[task].train_size
    n = min(n, cap) if cap else n
    return n * (1 + (settings["augment"]["copies"] or TASKS[task].aug_copies)) if int(da) else n
