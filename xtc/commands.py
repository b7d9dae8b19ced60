"""What the ``xtc`` subcommands do: read data and models, check them against the recipe, train, export.

Each command takes a typed ``Recipe`` (built by the CLI) and explicit paths -- ``RunPaths`` for the training
commands, ``AugmentRequest`` for augmentation -- never an argparse ``Namespace``. The run directory's layout,
its manifest and the one "run dir -> model dir" rule (``model_dir``) live in ``xtc.study.rundir``; what files each
part writes, always atomically (``xtc.atomic``), is said where it writes them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xtc.atomic import atomic_dir, atomic_path, atomic_write_json
from xtc.config import AugmentConfig, Recipe
from xtc.sources import check_model, is_hub_id, resolve_file
from xtc.study.rundir import (  # noqa: F401 (re-exported: the run directory's names)
    LAST,
    MODEL,
    STATE_DIR,
    RunPaths,
    RunWriter,
    manifest,
    model_config,
    model_dir,
    prepare_out_dir,
    run_config_of,
)

log = logging.getLogger("xtc")


def require_device(requested: str | None):
    """``xtc.device.require_device`` (imported late: torch), the first step of every command that computes."""
    from xtc.device import require_device as check

    return check(requested)


# ---------------------------------------------------------------------------------------------- data
def load_train_features(recipe: Recipe, tokenizer) -> list:
    """Tokenized train features: the task's train split, or ``data.train_file`` (an augmented TSV)."""
    from xtc.glue import load_split, read_tsv, subsample, tokenize
    from xtc.tasks import get_task

    data = recipe.data
    if data.train_file:
        train = subsample(read_tsv(get_task(data.task), data.train_file), data.max_train_examples, data.subsample_seed)
    else:
        train = load_split(data.task, "train", data.data_dir, data.max_train_examples, data.subsample_seed)
    return tokenize(train, tokenizer, data.max_seq_length)


def load_eval_features(recipe: Recipe, tokenizer) -> dict[str, list]:
    """Tokenized dev features for every eval split of the task (MNLI: matched and mismatched)."""
    from xtc.glue import load_split, tokenize
    from xtc.tasks import get_task

    data = recipe.data
    return {
        split.name: tokenize(load_split(data.task, split.name, data.data_dir, data.max_eval_examples,
                                        data.subsample_seed), tokenizer, data.max_seq_length)
        for split in get_task(data.task).eval_splits
    }


# ---------------------------------------------------------------------------------------------- training runs
def check_inputs(recipe: Recipe, model_config: Any | None = None) -> None:
    """Cheap checks of the data and the model against the recipe, before any file is written or loaded."""
    data = recipe.data
    if data.train_file and not Path(data.train_file).is_file():
        raise ValueError(f"--train-file {data.train_file} does not exist; give an augmented train TSV written by "
                         f"`xtc augment --task {data.task} --out ...`, or drop --train-file to use the train split")
    limit = getattr(model_config, "max_position_embeddings", None)
    if limit is not None and data.max_seq_length > limit:
        raise ValueError(f"data.max_seq_length={data.max_seq_length} is more than the model's "
                         f"max_position_embeddings={limit}; set --max-seq-length {min(128, limit)} (XTC: 128) or less")


def run_training(
    recipe: Recipe, model, tokenizer, paths: RunPaths, teacher=None, maps=None, *, inputs: dict[str, Any],
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train ``model`` by ``recipe`` into the run directory ``paths.out`` (resuming when it holds a killed run)."""
    from xtc.checkpoint import load_train_state, save_model_dir
    from xtc.collate import make_collator
    from xtc.device import describe, device_info
    from xtc.preempt import StopRequest
    from xtc.study.runlock import hold_run_dir
    from xtc.train import Hooks, Trainer

    started, out = time.time(), paths.out
    device = require_device(paths.device)
    info = device_info(device, recipe.train.tf32, recipe.train.bf16)
    log.info("%s", describe(info))
    stop = StopRequest().install()  # SLURM's warning before a time limit, or a preemption: save, exit, resume
    check_inputs(recipe, model.config)
    run_config = json.loads(json.dumps({"recipe": recipe.to_dict(), "inputs": inputs}))  # as config.json holds it
    hold_run_dir(out)  # one trainer per run directory: waits while a live process (e.g. an orphan) trains into it
    status = prepare_out_dir(out, run_config, paths.overwrite)
    if status == "done":
        log.info("%s already holds a finished run of this recipe; nothing to do (--overwrite to retrain)", out)
        return json.loads((out / "metrics.json").read_text())
    saved = load_train_state(out / STATE_DIR / "train_state.pt") if status == "resume" else None
    train_features, eval_sets = load_train_features(recipe, tokenizer), load_eval_features(recipe, tokenizer)
    resumed_step = saved["state"]["global_step"] if saved else None
    writer = RunWriter(out, tokenizer, resumed_step)
    trainer = Trainer(
        model, recipe.data.task, train_features, eval_sets,
        make_collator(tokenizer, recipe.data.padding, recipe.data.max_seq_length), recipe.train, recipe.distill,
        teacher=teacher, maps=maps, hooks=Hooks(writer.on_best, writer.on_checkpoint, writer.on_log),
        device=device, progress=progress, stop=stop,
    )
    if saved:
        log.info("resuming %s from global step %d", out, resumed_step)
        trainer.load_state_dict(saved)
    state = trainer.fit()
    save_model_dir(trainer.model, out / LAST, tokenizer)
    metrics = run_metrics(recipe, trainer.stages[-1].name, state.history, state.best_step)
    atomic_write_json(out / "manifest.json", manifest(str(trainer.device), started, paths.argv, info))
    atomic_write_json(out / "metrics.json", metrics)  # last: its presence marks the run as complete
    log.info("best %s = %.4f at step %d; written to %s", metrics["selection_metric"], state.best_score,
             state.best_step, out)
    return metrics


def run_metrics(recipe: Recipe, final_stage: str, history: list[dict[str, Any]], best_step: int) -> dict[str, Any]:
    """``metrics.json``: the best and the last evaluation, the selection rule and the evaluation history."""
    from xtc.tasks import get_task

    spec = get_task(recipe.data.task)
    evals = [r for r in history if r["kind"] == "eval"]
    best = next(r for r in evals if r["global_step"] == best_step)
    return {
        "task": spec.name, "selection_metric": spec.selection_metric,
        "selection_rule": f"highest {spec.selection_metric} over the evaluations of stage {final_stage!r} "
                          f"(every {recipe.train.eval_every_steps} steps and at each epoch end)",
        "best": {"global_step": best["global_step"], "epoch": best["epoch"], "metrics": best["metrics"]},
        "last": {"global_step": evals[-1]["global_step"], "epoch": evals[-1]["epoch"], "metrics": evals[-1]["metrics"]},
        "history": evals,
    }


def finetune(recipe: Recipe, model: str, paths: RunPaths) -> dict[str, Any]:
    """Fine-tune a teacher (labels only) from a pretrained model: hub id or local directory."""
    import torch

    from xtc.checkpoint import load_tokenizer
    from xtc.models import set_task_labels
    from xtc.models import load_classifier
    from xtc.tasks import get_task

    require_device(paths.device)  # a job told cuda without CUDA stops here, before any data or model is read
    check_inputs(recipe)
    source = check_model(model, key="--model")  # an installed model package, a local dir or the hub
    tokenizer = load_tokenizer(source)
    torch.manual_seed(recipe.train.seed)  # the fresh classification head
    spec = get_task(recipe.data.task)
    classifier = load_classifier(source, num_labels=spec.num_labels)
    set_task_labels(classifier, spec)  # the teacher's label2id/id2label name the task's labels (xtc.models)
    inputs = {"model": str(model), **({"model_dir": source} if source != str(model) else {})}
    return run_training(recipe, classifier, tokenizer, paths, inputs=inputs)


def distill(recipe: Recipe, teacher: str, init: str | None, paths: RunPaths) -> dict[str, Any]:
    """Train a student by KD from a fine-tuned teacher: layer-reduced (step 1) and/or quantized (step 2)."""
    from xtc.checkpoint import load_tokenizer

    require_device(paths.device)  # a job told cuda without CUDA stops here, before any data or model is read
    check_inputs(recipe)
    init_dir = model_dir(init) if init else None
    if init_dir is not None:
        _check_init(recipe, init_dir)
    teacher_model, teacher_dir = _load_teacher(teacher, recipe)
    start = _load_init(init_dir, teacher_model, teacher) if init_dir is not None else None
    student, maps, teacher_layer = prepare_student(recipe, teacher_model, start)
    inputs = {"teacher": str(teacher), "init": str(init) if init else None, "teacher_layer": list(teacher_layer)}
    return run_training(recipe, student, load_tokenizer(teacher_dir), paths, teacher_model, maps, inputs=inputs)


def prepare_student(recipe: Recipe, teacher_model, start: tuple[Any, tuple[int, ...]] | None = None):
    """``(student, layer maps, teacher_layer)``: what ``xtc distill`` trains, in train mode. From ``start`` (an
    ``--init`` step-1 student and its teacher layers), else the teacher's kept layers (``build_student``; all of
    them: a copy of the teacher), then quantized and marked when the recipe quantizes. The step-parity test
    (tests/test_parity_training.py) trains exactly this."""
    import copy

    from xtc.checkpoint import mark_quantized
    from xtc.distill import layer_maps
    from xtc.quant import quantize_
    from xtc.reduce import build_student, encoder_layers, resolve_teacher_layer

    n_teacher = len(encoder_layers(teacher_model))
    if start is not None:
        student, teacher_layer = start
    else:
        teacher_layer = resolve_teacher_layer(recipe.reduce, n_teacher)
        student = (build_student(teacher_model, teacher_layer) if len(teacher_layer) < n_teacher
                   else copy.deepcopy(teacher_model))
    if recipe.quant.enabled:
        quantize_(student, recipe.quant)
        mark_quantized(student, recipe.quant)
    return student.train(), layer_maps(teacher_layer, n_teacher, recipe.distill.rep_first), tuple(teacher_layer)


def _check_init(recipe: Recipe, init_dir: Path) -> None:
    """An ``--init`` student is a full-precision step-1 student whose depth agrees with ``--layers``."""
    config = model_config(init_dir, "--init")
    if config.get("xtc_quant"):
        raise ValueError(f"--init {init_dir} is already quantized (its config has xtc_quant); step 2 starts from the "
                         "full-precision step-1 student: pass that run's dir (xtc distill --layers N, no --weight-bits)")
    layers = len(config.get("xtc_teacher_layer") or ()) or config.get("num_hidden_layers")
    if recipe.reduce.layers is not None and recipe.reduce.layers != layers:
        raise ValueError(f"--layers {recipe.reduce.layers} contradicts the --init student {init_dir} ({layers} layers, "
                         f"teacher layers {config.get('xtc_teacher_layer')}); drop --layers")


def _load_init(init_dir: Path, teacher, teacher_source: str) -> tuple[Any, tuple[int, ...]]:
    from xtc.checkpoint import load_model_dir
    from xtc.reduce import encoder_layers

    student = load_model_dir(init_dir)
    for key in ("vocab_size", "hidden_size", "num_attention_heads", "num_labels"):
        s, t = getattr(student.config, key), getattr(teacher.config, key)
        if s != t:
            raise ValueError(f"student {init_dir} has {key}={s} but teacher {teacher_source} has {key}={t}; "
                             "the step-1 student must come from this teacher (xtc distill --teacher ...)")
    teacher_layer = getattr(student.config, "xtc_teacher_layer", None) or range(len(encoder_layers(teacher)))
    return student, tuple(teacher_layer)


def _load_teacher(source: str, recipe: Recipe) -> tuple[Any, str | Path]:
    """The teacher of ``xtc distill``: ``load_fp_teacher``, checked against the task (labels and their order)."""
    from xtc.models import load_fp_teacher
    from xtc.tasks import get_task

    teacher, path = load_fp_teacher(model_dir(source))
    want = get_task(recipe.data.task).num_labels
    if teacher.config.num_labels != want:
        raise ValueError(f"teacher {path} has {teacher.config.num_labels} labels but task {recipe.data.task!r} has "
                         f"{want}; fine-tune a teacher on this task first (xtc finetune)")
    from xtc.models import align_labels

    return align_labels(teacher, recipe.data.task, f"teacher {source}"), path


def evaluate(recipe: Recipe, model: str, tokenizer: str | None = None, out: Path | None = None,
             device: str | None = None, argv: Sequence[str] = (), engine: str = "float") -> dict[str, Any]:
    """Dev-set metrics of a model directory, a run directory or a packed checkpoint (``engine``: ``float``, the
    exact fake-quant model, or ``int8`` / ``int8-packed``, the integer CPU engine of ``xtc.packed.engine``)."""
    from xtc.checkpoint import load_model_dir, load_tokenizer
    from xtc.collate import make_collator
    from xtc.device import device_info
    from xtc.models import load_hub_classifier
    from xtc.train import evaluate as evaluate_model

    started = time.time()
    path = model_dir(model)
    if engine != "float" and not path.is_file():
        raise ValueError(f"--engine {engine} serves a packed checkpoint, but {model} is not one (its float model would "
                         f"be evaluated); export it (xtc export --model {model} --out PACKED_DIR) and evaluate "
                         "PACKED_DIR/model.xtc.safetensors, or drop --engine")
    target = require_device("cpu" if path.is_file() and engine != "float" else device)  # the int8 engine: CPU
    if path.is_file():
        from xtc.packed import load

        loaded, tokenizer_dir = load(path, engine=engine), path.parent
    elif not path.exists() and is_hub_id(model, qualified=True):  # a fine-tuned hub model (a given teacher)
        tokenizer_dir = check_model(model, key="--model")
        loaded = load_hub_classifier(tokenizer_dir)
    else:
        loaded, tokenizer_dir = load_model_dir(path), path
    check_inputs(recipe, loaded.config)
    tok = load_tokenizer(tokenizer or tokenizer_dir)
    eval_sets = load_eval_features(recipe, tok)
    from xtc.models import align_labels

    loaded = align_labels(loaded, recipe.data.task, f"model {model}")
    collate = make_collator(tok, recipe.data.padding, recipe.data.max_seq_length)
    metrics = evaluate_model(loaded.to(target), recipe.data.task, eval_sets, collate, device=target)
    result = {"model": str(model), "engine": engine, "task": recipe.data.task, "metrics": metrics}
    if out is not None:
        atomic_write_json(out / "metrics.json", result)
        atomic_write_json(out / "manifest.json", manifest(str(target), started, argv, device_info(target)))
    return result


# ---------------------------------------------------------------------------------------------- export, size, augment
PACKED = "model.xtc.safetensors"


# What marks a directory as a run or a model dir (export never replaces one): its files, and the run's folders.
TRAINED_MARKS = ("config.json", "metrics.json", "train_log.jsonl", MODEL, STATE_DIR)


def _holds_training(path: Path) -> bool:
    return any((path / mark).exists() for mark in TRAINED_MARKS)


def check_export_out(model: Path, out: Path, overwrite: bool = False) -> None:
    """``xtc export`` replaces ``out`` wholesale, so it writes only into a new or empty folder or an earlier export
    (``--overwrite``: any folder), and never where a run, a model dir or the model it exports lies."""
    target, source = out.resolve(), model.resolve()
    fix = f"export into a folder of its own, e.g. --out {model.parent if model.name == MODEL else model}/packed"
    if target == source or target in source.parents:
        raise ValueError(f"--out {out} holds the model being exported ({model}), which the export would delete; {fix}")
    if target.exists() and not target.is_dir():
        raise ValueError(f"--out {out} is a file; {fix}")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if _holds_training(target):
        raise ValueError(f"--out {out} is a run or model directory, which export never replaces (even with "
                         f"--overwrite); {fix}")
    if (target / PACKED).is_file():
        return  # an earlier export: replaced (what the workflow's rerun does)
    if not overwrite:
        raise ValueError(f"--out {out} is not empty and holds no earlier export ({PACKED}); choose an empty or new "
                         "folder, or --overwrite to replace what it holds")
    inside = next((p.parent for p in target.rglob("*") if p.name in TRAINED_MARKS and _holds_training(p.parent)),
                  None)
    if inside is not None:
        raise ValueError(f"--out {out} holds the run or model directory {inside}, which export never replaces "
                         f"(even with --overwrite); {fix}")


def export(model: str | Path, out: Path, teacher_config: str | Path | None = None,
           argv: Sequence[str] = (), overwrite: bool = False) -> dict[str, Any]:
    """Write the packed low-bit checkpoint of a trained model, its tokenizer and ``size.json`` into ``out``."""
    from transformers import AutoConfig

    from xtc.checkpoint import load_model_dir, load_tokenizer
    from xtc.packed.export import export_packed
    from xtc.packed.size import size_report

    started = time.time()
    path, run_config = model_dir(model), run_config_of(model)
    check_export_out(path, Path(out), overwrite)
    student = load_model_dir(path)
    recipe = Recipe.from_dict(run_config["recipe"]) if run_config else None
    teacher = None
    if teacher_config or getattr(student.config, "xtc_teacher_layer", None) is not None:
        source = teacher_config or (run_config or {}).get("inputs", {}).get("teacher")
        if source is None:
            raise ValueError(f"{path} is a layer-reduced student: pass --teacher-config (the teacher's model "
                             "dir or config) so the compression ratio is measured against the full teacher")
        teacher = AutoConfig.from_pretrained(model_dir(source))
    with atomic_dir(out) as tmp:
        written = export_packed(student, tmp / PACKED, recipe)
        load_tokenizer(path).save_pretrained(tmp)
        report = size_report(student, tmp / PACKED, teacher)
        report["packed_file"] = PACKED
        atomic_write_json(tmp / "size.json", report)
        atomic_write_json(tmp / "manifest.json", manifest("cpu", started, argv))
    log.info("packed %s: %d bytes (%.2fx the theoretical minimum); %.1fx smaller than the FP32 teacher "
             "(quantized part), %.1fx (whole model)", out / PACKED, written["file_bytes"],
             report["packed_over_theoretical"], report["compression"]["quantized_part"],
             report["compression"]["whole_model_on_disk"])
    return report


def size(model_config: str, layers: int | None, weight_bits: int | None) -> dict[str, Any]:
    """Size accounting of an XTC student from a model config alone (offline; ``bert-base`` is built in)."""
    from xtc.models import bert_config
    from xtc.packed.size import size_from_config

    return size_from_config(bert_config(model_config), layers, weight_bits)


AUGMENT_SHARD = 1024  # originals per shard of `xtc augment`: what a killed job loses at most


@dataclass(frozen=True)
class AugmentRequest:
    """What ``xtc augment`` reads and writes: TinyBERT's augmentation of one task's train split."""

    task: str
    mlm: str
    out: Path
    data_dir: str | None = None
    glove: str | None = None
    copies: int | None = None
    p: float = AugmentConfig.p
    k: int = AugmentConfig.k
    max_train_examples: int | None = None
    seed: int = 0
    device: str | None = None
    shard_examples: int = AUGMENT_SHARD


def augment(request: AugmentRequest) -> dict[str, Any]:
    """TinyBERT data augmentation of a task's train split into a TSV that `--train-file` reads.

    The masked LM runs on ``request.device``. The work is cut into shards of ``shard_examples`` originals, each
    written atomically into ``<out>.parts/`` as soon as it is done; a killed job run again keeps the complete
    shards and continues with the next one. Each shard starts with an empty candidate cache, whether the job ran
    in one go or was resumed, so the joined file is byte-identical either way. The parts are joined into ``out``
    (atomically) and removed at the end.
    """
    import hashlib
    import shutil

    from xtc.augment import write_tsv_rows
    from xtc.glue import load_split
    from xtc.tasks import get_task

    r = request
    if isinstance(r.shard_examples, bool) or not isinstance(r.shard_examples, int) or r.shard_examples < 1:
        raise ValueError(f"--shard-examples {r.shard_examples!r} must be an integer >= 1 (originals per shard)")
    device = require_device(r.device)  # before any data is read
    spec = get_task(r.task)
    examples = load_split(spec, "train", r.data_dir, r.max_train_examples, r.seed)
    n_copies = spec.aug_copies if r.copies is None else r.copies
    parts = r.out.with_name(r.out.name + ".parts")
    digest = hashlib.sha256(json.dumps([list(e.values()) for e in examples], default=str).encode()).hexdigest()
    key = {"task": spec.name, "mlm": r.mlm, "glove": r.glove, "copies": n_copies, "p": r.p, "k": r.k, "seed": r.seed,
           "shard_examples": r.shard_examples, "examples": len(examples), "data_sha256": digest}
    key_path = parts / "request.json"
    if parts.is_dir() and (not key_path.is_file() or json.loads(key_path.read_text()) != key):
        log.warning("%s holds the parts of a different augmentation request; discarding them", parts)
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    if not key_path.is_file():
        atomic_write_json(key_path, key)
    shards = range(0, len(examples), r.shard_examples)
    names = [parts / f"part-{i // r.shard_examples:05d}.tsv" for i in shards]
    done = sum(name.is_file() for name in names)
    if done:
        log.info("resuming: %d of %d shards of %s already done (%s)", done, len(names), r.out, parts)
    augmenter = None
    for start, name in zip(shards, names, strict=True):
        if name.is_file():
            continue
        augmenter = augmenter or _Augmenter(r, device)
        augmented = augmenter(spec, examples[start:start + r.shard_examples], start)
        with atomic_path(name) as tmp, tmp.open("w", encoding=spec.tsv.encoding, newline="") as handle:
            write_tsv_rows(spec, augmented, handle, first_row=start * (1 + n_copies))
        log.info("shard %s: examples %d-%d of %d", name.name, start, start + len(augmented) // (1 + n_copies) - 1,
                 len(examples))
    from xtc.augment import tsv_header

    with atomic_path(r.out) as tmp, tmp.open("w", encoding=spec.tsv.encoding, newline="") as handle:
        handle.write(tsv_header(spec))
        for name in names:
            handle.write(name.read_text(encoding=spec.tsv.encoding))
    shutil.rmtree(parts)
    total = len(examples) * (1 + n_copies)
    log.info("wrote %d examples (%d originals) to %s", total, len(examples), r.out)
    return {"path": str(r.out), "examples": total}


class _Augmenter:
    """The masked LM (on the job's device) and GloVe, loaded once, when the first shard needs them."""

    def __init__(self, r: AugmentRequest, device) -> None:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        from xtc.device import describe, device_info
        from xtc.glove import load_glove

        log.info("%s", describe(device_info(device)))
        source = check_model(r.mlm, key="--mlm")
        self.request, self.tokenizer = r, AutoTokenizer.from_pretrained(source)
        self.mlm = AutoModelForMaskedLM.from_pretrained(source).to(device).eval()
        self.glove = load_glove(resolve_file(r.glove)) if r.glove else None  # a path, or the store's copy

    def __call__(self, spec, examples: list, start: int) -> list:
        from xtc.augment import augment_examples

        r = self.request
        return augment_examples(examples, spec.name, self.mlm, self.tokenizer, n_copies=r.copies, p=r.p, k=r.k,
                                glove=self.glove, seed=r.seed, start=start)
