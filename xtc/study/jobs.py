"""What the workflow's jobs need from one invocation's studies (torch-free): files, ``xtc`` command lines, runtimes.

``Jobs(studies)`` takes the validated studies of ``xtc.study.grid.load_studies`` (their shared settings agree, so the
first one's are ``settings``) and holds their runs, each once (``runs``: run dir -> axes). Its methods are the
named inputs, params and resources of ``workflow/rules/*.smk``; they take Snakemake's wildcards (any mapping of
path values). ``workflow/rules/common.smk`` only forwards to it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path

from xtc.sources import SourceError, check_data, check_model, resolve_file, store_dir
from xtc.study.grid import (
    AUGMENTED,
    PROBS,
    TEACHER,
    StudyError,
    data_dir,
    fmt_lr,
    is_quantized,
    model_label,
    per_task,
    recipe_overrides,
    run_dir,
    run_key,
    run_wildcards,
    step1_row,
    study_runs,
    study_table,
    teacher_given,
    teacher_record_dir,
)
from xtc.tasks import TASKS

log = logging.getLogger("snakemake.xtc")
# The rules whose jobs read models or data that may have to come from the hub.
DATA_RULES = frozenset({"finetune_teacher", "evaluate_given_teacher", "augment", "distill", "evaluate_packed"})


class Jobs:
    def __init__(self, studies: list[dict]):
        # the shared settings, with every study's named recipes (load_studies checked that a name means one thing)
        self.settings = {**studies[0], "recipes": {n: r for s in studies for n, r in s["recipes"].items()}}
        self.studies, self.runs = studies, {}
        for study in studies:
            for row in study_runs(study):
                self.runs.setdefault(run_dir(row), row)
        self.tasks = sorted({row["task"] for row in self.runs.values()})
        resources = self.settings["resources"]
        if resources.get("device") == "cpu" and resources["gpu"] > 0:
            log.warning("resources.device = cpu: the jobs request gpu=%d but train on CPU (an override for clusters "
                        "that declare a GPU without one; drop resources.device to train on the GPU)",
                        resources["gpu"])

    def study(self, name: str | Mapping) -> dict:
        """A study by name, or by a rule's ``{study}`` wildcard (the rules pass their wildcards directly)."""
        name = name if isinstance(name, str) else name["study"]
        return next(s for s in self.studies if s["study"] == name)

    def run(self, wildcards: Mapping) -> dict:
        """The run a target path names; a path outside every study's grid is refused (it would train a run no
        table lists, with settings the grid never chose)."""
        key = run_key(wildcards)
        if key not in self.runs:
            sources = ", ".join(s["source"] for s in self.studies)
            raise StudyError(f"{key} is not a run of {sources}; ask for a run listed in results/<study>/runs.tsv, "
                             "or add its values to the grid")
        return self.runs[key]

    # ------------------------------------------------------------------------------------------------- files
    def teacher_metrics(self) -> list[str]:
        return sorted({f"{teacher_record_dir(self.settings, task)}/metrics.json" for task in self.tasks})

    def run_files(self, name: str, quantized_only: bool = False) -> list[str]:
        """``<run dir>/<name>`` of every run (of the quantized ones: exports)."""
        return [f"{path}/{name}" for path, row in self.runs.items() if is_quantized(row) or not quantized_only]

    def augmented(self) -> list[str]:
        return sorted({AUGMENTED.format(task=row["task"]) for row in self.runs.values() if row["da"]})

    def study_metrics(self, name: str | Mapping) -> list[str]:
        study = self.study(name)
        teachers = [f"{teacher_record_dir(study, task)}/metrics.json" for task in study["grid"]["task"]]
        return teachers + [f"{run_dir(row)}/metrics.json" for row in study_runs(study)]

    def study_sizes(self, name: str | Mapping) -> list[str]:
        return [f"{run_dir(row)}/packed/size.json" for row in study_runs(self.study(name)) if is_quantized(row)]

    def paper_files(self, name: str) -> list[str]:
        """The paper CSVs a study's tables join (inputs of its aggregate rule)."""
        return list(self.study(name)["report"]["paper"])

    def report_digest(self, name: str) -> str:
        """A content hash of what a study's tables are computed from besides its runs: its paper CSVs and the
        reporting code (``xtc/report``). A param of the aggregate rule, so a changed paper value or report function
        rebuilds the table under any ``--rerun-triggers`` (``dvc.yaml`` leaves out ``mtime``)."""
        report = Path(importlib.util.find_spec("xtc.report").origin).parent
        digest = hashlib.sha256()
        for path in [*map(Path, self.paper_files(name)), *sorted(report.glob("*.py"))]:
            digest.update(path.name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"missing"))
        return digest.hexdigest()[:16]

    def study_table(self, name: str | Mapping) -> list[dict]:
        return study_table(self.study(name))

    def outputs(self) -> list[str]:
        """Every study's runs table, scores, tables and figures, and its serving report when it has packed students."""
        outputs = []
        for study in self.studies:
            name = study["study"]
            outputs += [f"results/{name}/runs.tsv", f"results/scores/{name}.json"]
            outputs += [f"results/tables/{name}.{ext}" for ext in ("md", "tex", "csv")]
            outputs += [f"figures/{name}_{kind}.{ext}" for kind in study["report"]["figures"] for ext in ("png", "pdf")]
            if self.serving_plan(name)["students"]:
                outputs += [f"results/serving/{name}.{ext}" for ext in ("json", "md")]
        return outputs

    def serving_plan(self, name: str | Mapping) -> dict:
        """What a study's serving report serves (``xtc.packed.serving``): the first packed run of each student architecture
        (depth, layer choice, bits) in grid order, and the FP32 teacher of each of their tasks."""
        students, teachers = {}, {}
        for row in study_runs(self.study(name)):
            architecture = (row["layers"], row["teacher_layer"], row["wbits"], row["abits"])
            if is_quantized(row) and architecture not in students:
                label = model_label(row["layers"], row["wbits"], row["abits"])
                if row["teacher_layer"]:
                    label += " (" + ",".join(map(str, row["teacher_layer"])) + ")"
                students[architecture] = {"label": label, "task": row["task"],
                                          "packed": f"{run_dir(row)}/packed/model.xtc.safetensors"}
                teachers[row["task"]] = self.teacher_dir(row["task"])
        return {"teachers": teachers, "students": list(students.values())}

    def serving_inputs(self, name: str | Mapping) -> list[str]:
        """The serving report's packed files, and the metrics.json of the teachers built here (DAG edges)."""
        plan = self.serving_plan(name)
        return ([student["packed"] for student in plan["students"]]
                + [f"{self.teacher_dir(t)}/metrics.json" for t in plan["teachers"] if not teacher_given(self.settings, t)])

    # ------------------------------------------------------------------------------------ what a run starts from
    def teacher_dir(self, task: str) -> str:
        """The teacher a run distils from: its run dir (fine-tuned here) or the given model (hub id or path)."""
        return teacher_given(self.settings, task) or TEACHER.format(task=task, seed=self.settings["teacher"]["seed"])

    def teacher_input(self, wildcards: Mapping) -> list[str]:
        """The teacher's metrics.json when it is built here (a DAG edge), nothing when it is given."""
        task = wildcards["task"]
        return [] if teacher_given(self.settings, task) else [f"{self.teacher_dir(task)}/metrics.json"]

    def init_input(self, wildcards: Mapping) -> list[str]:
        """The step-1 student's metrics.json a reduced quantized run starts from."""
        parent = step1_row(self.settings, self.run(wildcards))
        return [] if parent is None else [f"{run_dir(parent)}/metrics.json"]

    def train_file_input(self, wildcards: Mapping) -> list[str]:
        return [AUGMENTED.format(task=wildcards["task"])] if int(wildcards["da"]) else []

    def priority(self, wildcards: Mapping) -> int:
        """Step-1 students first: they unblock the reduced quantized runs."""
        return 0 if is_quantized(self.run(wildcards)) else 1

    # ------------------------------------------------------------------------------------------ command lines
    def device(self, gpu: int | None = None) -> str:
        """The ``--device`` of a job holding ``gpu`` GPUs (default: the study's ``resources.gpu``): cuda when it
        holds one, cpu otherwise; ``resources.device`` overrides (logged at start)."""
        resources = self.settings["resources"]
        gpu = resources["gpu"] if gpu is None else gpu
        return resources.get("device") or ("cuda" if gpu > 0 else "cpu")


    # Each is one string of shell words, every value quoted (shlex.join): study strings (paths, model ids, train.set
    # values) reach the rules' `shell:` commands, where a space or `;` must stay part of the value.
    def data_args(self) -> str:
        return shlex.join(self._data_args())

    def _data_args(self) -> list[str]:
        data, args, glue_dir = self.settings["data"], [], data_dir(self.settings)
        if glue_dir:
            args += ["--data-dir", glue_dir]
        for flag, key in (("--max-eval-examples", "max_eval_examples"), ("--max-seq-length", "max_seq_length"),
                          ("--padding", "padding")):
            if data[key] is not None:
                args += [flag, str(data[key])]
        return args

    def train_args(self, wildcards: Mapping) -> str:
        """Data and training flags shared by finetune and distill."""
        data, train = self.settings["data"], self.settings["train"]
        args = [*self._data_args(), "--batch-size", str(data["batch_size"])]
        # a da=1 run trains on the whole augmented file (made from the max_train_examples subset)
        if data["max_train_examples"] and not int(wildcards.get("da", 0)):
            args += ["--max-train-examples", str(data["max_train_examples"])]
        if data["group_by_length"]:
            args += ["--group-by-length"]
        args += ["--eval-every", str(train["eval_every"])]
        if train["warmup_ratio"] is not None:
            args += ["--warmup-ratio", str(train["warmup_ratio"])]
        return shlex.join(args)

    def student_args(self, wildcards: Mapping) -> str:
        """The `xtc distill` flags a run's path spells out (plus the study's --set overrides)."""
        row = self.run(wildcards)
        args = ["--teacher", self.teacher_dir(row["task"])]
        parent = step1_row(self.settings, row)
        if parent is not None:
            args += ["--init", run_dir(parent)]
        else:
            if row["layers"] != self.settings["teacher"]["layers"]:
                args += ["--layers", str(row["layers"])]
            if row["teacher_layer"]:
                args += ["--teacher-layer", ",".join(map(str, row["teacher_layer"]))]
        args += ["--weight-bits", row["wbits"], "--act-bits", row["abits"]]
        if row["kd"].endswith(PROBS):
            args += ["--kd", row["kd"].removesuffix(PROBS), "--attention-target", "probs"]
        else:
            args += ["--kd", row["kd"]]
        if row["da"]:
            args += ["--train-file", AUGMENTED.format(task=row["task"])]
        for override in recipe_overrides(self.settings, row["recipe"]):
            args += ["--set", override]
        return shlex.join(args)

    def teacher_args(self, wildcards: Mapping) -> str:
        teacher, task = self.settings["teacher"], wildcards["task"]
        return shlex.join(["--model", teacher["model"], "--epochs", str(per_task(teacher["epochs"], task)),
                           "--lr", fmt_lr(teacher["lr"])])

    def given_teacher_args(self, wildcards: Mapping) -> str:
        """``--model`` of a given teacher's evaluation, quoted."""
        return shlex.join(["--model", teacher_given(self.settings, wildcards["task"])])

    def augment_args(self, wildcards: Mapping) -> str:
        aug, data = self.settings["augment"], self.settings["data"]
        args = ["--mlm", aug["mlm"], "--seed", str(aug["seed"])]
        if aug["glove"]:
            args += ["--glove", aug["glove"]]
        if aug["copies"]:
            args += ["--copies", str(aug["copies"])]
        if data["max_train_examples"]:
            args += ["--max-train-examples", str(data["max_train_examples"])]
        glue_dir = data_dir(self.settings)
        if glue_dir:
            args += ["--data-dir", glue_dir]
        return shlex.join(args)

    def training_commands(self) -> dict[str, list[str]]:
        """Run dir -> the ``xtc finetune|distill`` argv (after ``xtc``) its rule runs: the rules' shell lines, as
        words, so that the recipe a job would train can be compared with a run directory's before any job."""
        def words(text: str) -> list[str]:
            return shlex.split(text)

        commands = {}
        for task in self.tasks:
            if not teacher_given(self.settings, task):
                seed = self.settings["teacher"]["seed"]
                wildcards = {"task": task, "seed": seed}
                commands[self.teacher_dir(task)] = [
                    "finetune", *words(self.teacher_args(wildcards)), "--task", task,
                    *words(self.train_args(wildcards)), "--seed", str(seed), "--out", self.teacher_dir(task)]
        for path in self.runs:
            w = run_wildcards(path)
            commands[path] = ["distill", *words(self.student_args(w)), "--task", w["task"],
                              *words(self.train_args(w)), "--epochs", w["epochs"], "--lr", w["lr"],
                              "--seed", w["seed"], "--out", path]
        return commands

    @staticmethod
    def job_label(wildcards: Mapping) -> str:
        """Prefix of a training job's log lines: ``sst2 teacher``, ``sst2 FP 3L``, ``sst2 W1A8 6L``."""
        if "layers" not in wildcards.keys():
            return f"{wildcards['task']} teacher"
        return f"{wildcards['task']} {model_label(wildcards['layers'], wildcards['wbits'], wildcards['abits'])}"

    # ---------------------------------------------------------------------------------------- runtimes (minutes)
    @functools.cached_property
    def costs(self):
        """The runtime model (``xtc.study.cost``: the calibration of this device type, or the documented default)."""
        from xtc.study.cost import JobCosts

        return JobCosts(self.settings, self.device())

    def run_minutes(self, wildcards: Mapping) -> int:
        row = self.run(wildcards)
        cost = self.costs.train(row["task"], row["layers"], row["wbits"], row["epochs"], row["da"], teacher=False)
        return self.costs.minutes(cost["seconds"])

    def teacher_minutes(self, wildcards: Mapping) -> int:
        teacher, task = self.settings["teacher"], wildcards["task"]
        cost = self.costs.train(task, teacher["layers"], "fp", per_task(teacher["epochs"], task), 0, teacher=True)
        return self.costs.minutes(cost["seconds"])

    def augment_minutes(self, wildcards: Mapping) -> int:
        return self.costs.minutes(self.costs.augment(wildcards["task"]))

    def teacher_threads(self, wildcards: Mapping | None = None) -> int:
        resources = self.settings["resources"]
        return resources["teacher_threads"] or resources["threads"]

    def small_minutes(self, wildcards: Mapping | None = None) -> int:
        return self.settings["resources"]["overhead_minutes"] * 2

    # ------------------------------------------------------------------------------------------------ sources
    def check_sources(self, rules: Iterable[str]) -> None:
        """Models and data the pending jobs (``rules``: their rule names) need can be had; else one clear error.

        Offline (``--config offline=true``) this is the check that everything is local: in place, in the store
        ``xtc prefetch`` filled, or in a cache."""
        try:
            self._check_sources(set(rules))
        except SourceError as error:
            configfile = self.settings["source"] if len(self.studies) == 1 else "config/studies/all.yaml"
            raise SourceError(f"{error} (offline compute nodes: run `xtc prefetch --configfile {configfile}` on a "
                              f"machine with network access; docs/cluster.md)") from None

    def _check_sources(self, rules: set[str]) -> None:
        settings = self.settings
        if "finetune_teacher" in rules:
            check_model(settings["teacher"]["model"], key="teacher.model")
        if "evaluate_given_teacher" in rules:
            for task in self.tasks:
                given = teacher_given(settings, task)
                if given:
                    check_model(given, key="teacher.finetuned")
        if "augment" in rules:
            check_model(settings["augment"]["mlm"], key="augment.mlm")
            glove = settings["augment"]["glove"]
            if glove and not Path(resolve_file(glove)).is_file():
                raise SourceError(f"augment.glove = {glove!r} is not a file here nor in the prefetched store "
                                  f"({store_dir() or 'none set'})")
        if rules & DATA_RULES:
            check_data(data_dir(settings), [TASKS[t].hub_config for t in self.tasks],
                       key=f"data.glue_dir in {settings['source']}")
