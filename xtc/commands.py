"""What the ``xtc`` subcommands do: resolve the recipe, read data and models, train, and write the run directory.

A run directory (``--out``) holds: ``model/`` (best on dev), ``last/``, ``metrics.json`` (best and last, the
selection rule, the eval history), ``config.json`` (the resolved recipe and the run's inputs), ``manifest.json``
(versions, git commit, device, wall time), ``train_log.jsonl`` and ``state/train_state.pt`` (to resume a killed
run). Every file is written atomically. Together with ``cli.py`` this is the only code that touches files.
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from xtc.atomic import atomic_dir, atomic_write_json, atomic_write_text
from xtc.config import Recipe, apply_overrides
from xtc.sources import check_model, is_hub_id

log = logging.getLogger("xtc")

MODEL, LAST, STATE_DIR = "model", "last", "state"


# ---------------------------------------------------------------------------------------------- recipe & run dir
def resolve_recipe(flags: Sequence[str], overrides: Sequence[str], base: Recipe | None = None) -> Recipe:
    """Flags (``--lr`` ...) become ``section.key=value`` overrides, then ``--set`` ones: one validation path."""
    return apply_overrides(base or Recipe(), [*flags, *overrides])


def _git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def manifest(device: str, started: float, argv: Sequence[str]) -> dict[str, Any]:
    versions = {}
    for package in ("xtc", "torch", "transformers", "datasets", "safetensors", "numpy", "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "command": ["xtc", *argv], "versions": versions, "python": platform.python_version(),
        "platform": platform.platform(), "git_commit": _git_commit(), "device": device,
        "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(time.time() - started, 2),
    }


def prepare_out_dir(out: Path, run_config: dict[str, Any], overwrite: bool) -> str:
    """``'new'``, ``'resume'`` or ``'done'``; refuses a directory made by a different recipe (never mixes runs)."""

    config_path = out / "config.json"
    if overwrite and out.exists():
        import shutil

        shutil.rmtree(out)
    if config_path.is_file():
        previous = json.loads(config_path.read_text())
        if previous != run_config:
            diffs = _diff(previous, run_config)
            raise ValueError(
                f"{out} was made by a different recipe ({'; '.join(diffs[:5])}); use another --out, "
                "or --overwrite to discard it"
            )
        if (out / "metrics.json").is_file():
            return "done"
        return "resume" if (out / STATE_DIR / "train_state.pt").is_file() else "new"
    if out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise ValueError(f"{out} exists and is not an xtc run directory; choose an empty or new --out")
    atomic_write_json(config_path, run_config)
    return "new"


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} -> {b!r}"]


# ---------------------------------------------------------------------------------------------- data
def load_train_features(recipe: Recipe, tokenizer) -> list:
    """Tokenized train features: the task's train split, or ``data.train_file`` (an augmented TSV)."""
    from xtc.glue import get_task, load_split, read_tsv, subsample, tokenize

    data = recipe.data
    if data.train_file:
        if not Path(data.train_file).is_file():
            raise ValueError(f"data.train_file={data.train_file!r} does not exist; give an augmented TSV from xtc augment")
        train = subsample(read_tsv(get_task(data.task), data.train_file), data.max_train_examples, data.subsample_seed)
    else:
        train = load_split(data.task, "train", data.data_dir, data.max_train_examples, data.subsample_seed)
    return tokenize(train, tokenizer, data.max_seq_length)


def load_eval_features(recipe: Recipe, tokenizer) -> dict[str, list]:
    """Tokenized dev features for every eval split of the task (MNLI: matched and mismatched)."""
    from xtc.glue import get_task, load_split, tokenize

    data = recipe.data
    return {
        split.name: tokenize(load_split(data.task, split.name, data.data_dir, data.max_eval_examples,
                                        data.subsample_seed), tokenizer, data.max_seq_length)
        for split in get_task(data.task).eval_splits
    }


# ---------------------------------------------------------------------------------------------- training runs
class RunWriter:
    """The training loop's hooks: best/last model dirs, the JSONL log, and the resumable state."""

    def __init__(self, out: Path, tokenizer, resumed_step: int | None) -> None:
        self.out, self.tokenizer = out, tokenizer
        self.log_path = out / "train_log.jsonl"
        if resumed_step is not None and self.log_path.is_file():  # drop records the killed run made after its state
            keep = [ln for ln in self.log_path.read_text().splitlines()
                    if ln.strip() and json.loads(ln)["global_step"] <= resumed_step]

            atomic_write_text(self.log_path, "".join(f"{ln}\n" for ln in keep))

    def on_log(self, record: dict[str, Any]) -> None:
        with self.log_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def on_best(self, model, record: dict[str, Any]) -> None:
        from xtc.checkpoint import save_model_dir

        save_model_dir(model, self.out / MODEL, self.tokenizer)

    def on_checkpoint(self, state: dict[str, Any]) -> None:
        from xtc.checkpoint import save_train_state

        save_train_state(state, self.out / STATE_DIR / "train_state.pt")


def run_training(
    out: Path, recipe: Recipe, model, tokenizer, teacher=None, maps=None, *, inputs: dict[str, Any],
    argv: Sequence[str], overwrite: bool = False, device: str | None = None, progress: bool | None = None,
) -> dict[str, Any]:
    """Train ``model`` by ``recipe`` into the run directory ``out`` (resuming when it holds a killed run)."""
    from xtc.checkpoint import load_train_state, save_model_dir
    from xtc.glue import get_task, make_collator
    from xtc.runlock import hold_run_dir
    from xtc.train import Hooks, Trainer, select_device

    started = time.time()
    run_config = json.loads(json.dumps({"recipe": recipe.to_dict(), "inputs": inputs}))  # as config.json holds it
    hold_run_dir(out)  # one trainer per run directory: waits while a live process (e.g. an orphan) trains into it
    status = prepare_out_dir(out, run_config, overwrite)
    if status == "done":
        log.info("%s already holds a finished run of this recipe; nothing to do (--overwrite to retrain)", out)
        return json.loads((out / "metrics.json").read_text())
    train_features, eval_sets = load_train_features(recipe, tokenizer), load_eval_features(recipe, tokenizer)
    saved = load_train_state(out / STATE_DIR / "train_state.pt") if status == "resume" else None
    resumed_step = saved["state"]["global_step"] if saved else None
    writer = RunWriter(out, tokenizer, resumed_step)
    trainer = Trainer(
        model, recipe.data.task, train_features, eval_sets, make_collator(tokenizer), recipe.train, recipe.distill,
        teacher=teacher, maps=maps, hooks=Hooks(writer.on_best, writer.on_checkpoint, writer.on_log),
        device=select_device(device), progress=progress,
    )
    if saved:
        log.info("resuming %s from global step %d", out, resumed_step)
        trainer.load_state_dict(saved)
    state = trainer.fit()
    save_model_dir(trainer.model, out / LAST, tokenizer)
    spec = get_task(recipe.data.task)
    evals = [r for r in state.history if r["kind"] == "eval"]
    final_stage = trainer.stages[-1].name
    best = next(r for r in evals if r["global_step"] == state.best_step)
    metrics = {
        "task": spec.name, "selection_metric": spec.selection_metric,
        "selection_rule": f"highest {spec.selection_metric} over the evaluations of stage {final_stage!r} "
                          f"(every {recipe.train.eval_every_steps} steps and at each epoch end)",
        "best": {"global_step": best["global_step"], "epoch": best["epoch"], "metrics": best["metrics"]},
        "last": {"global_step": evals[-1]["global_step"], "epoch": evals[-1]["epoch"], "metrics": evals[-1]["metrics"]},
        "history": evals,
    }
    atomic_write_json(out / "manifest.json", manifest(str(trainer.device), started, argv))
    atomic_write_json(out / "metrics.json", metrics)  # last: its presence marks the run as complete
    log.info("best %s = %.4f at step %d; written to %s", spec.selection_metric, state.best_score, state.best_step, out)
    return metrics


def finetune(args, argv: Sequence[str]) -> dict[str, Any]:
    """Fine-tune a teacher (labels only) from a pretrained model: hub id or local directory."""
    import torch

    from xtc.checkpoint import load_tokenizer
    from xtc.glue import get_task
    from xtc.models import load_classifier

    recipe = resolve_recipe([*args.flags, "distill.kd=none", "quant.weight_bits=null"], args.set)
    spec = get_task(recipe.data.task)
    source = check_model(args.model, key="--model")  # an installed model package, a local dir or the hub
    tokenizer = load_tokenizer(source)
    torch.manual_seed(recipe.train.seed)  # the fresh classification head
    model = load_classifier(source, num_labels=spec.num_labels)
    inputs = {"model": str(args.model), **({"model_dir": source} if source != str(args.model) else {})}
    return run_training(Path(args.out), recipe, model, tokenizer, inputs=inputs, argv=argv,
                        overwrite=args.overwrite, device=args.device)


def distill(args, argv: Sequence[str]) -> dict[str, Any]:
    """Train a student by KD from a fine-tuned teacher: layer-reduced (step 1) and/or quantized (step 2)."""
    import copy

    from xtc.checkpoint import load_model_dir, load_tokenizer, mark_quantized
    from xtc.distill import layer_maps
    from xtc.quant import quantize_
    from xtc.reduce import build_student, encoder_layers, resolve_teacher_layer

    recipe = resolve_recipe(args.flags, args.set)
    teacher, teacher_dir = _load_teacher(args.teacher, recipe)
    n_teacher = len(encoder_layers(teacher))
    if args.init:
        init = Path(args.init)
        student = load_model_dir(init / MODEL if (init / MODEL / "config.json").is_file() else init)
        _check_compatible(student, teacher, args.init, args.teacher)
        teacher_layer = tuple(getattr(student.config, "xtc_teacher_layer", None) or range(n_teacher))
        if recipe.reduce.layers is not None and recipe.reduce.layers != len(teacher_layer):
            raise ValueError(f"--layers {recipe.reduce.layers} contradicts the --init student ({len(teacher_layer)} "
                             f"layers, teacher layers {list(teacher_layer)}); drop --layers")
    else:
        teacher_layer = resolve_teacher_layer(recipe.reduce, n_teacher)
        student = (build_student(teacher, teacher_layer) if len(teacher_layer) < n_teacher
                   else copy.deepcopy(teacher))
    if recipe.quant.enabled:
        quantize_(student, recipe.quant)
        mark_quantized(student, recipe.quant)
    maps = layer_maps(teacher_layer, n_teacher, recipe.distill.rep_first)
    student.train()
    inputs = {"teacher": str(args.teacher), "init": str(args.init) if args.init else None,
              "teacher_layer": list(teacher_layer)}
    return run_training(Path(args.out), recipe, student, load_tokenizer(teacher_dir), teacher, maps, inputs=inputs,
                        argv=argv, overwrite=args.overwrite, device=args.device)


def _load_teacher(source: str | Path, recipe: Recipe) -> tuple[Any, str | Path]:
    """A local teacher (an `xtc finetune` run dir or a model dir) or a fine-tuned hub id (``owner/name``)."""
    from xtc.checkpoint import load_model_dir
    from xtc.glue import get_task

    path = Path(source)
    if path.is_dir():
        if (path / MODEL / "config.json").is_file():
            path = path / MODEL
        teacher = load_model_dir(path)
    elif _is_hub_id(str(source)):
        path = check_model(str(source), key="--teacher")
        teacher = _load_hub_teacher(path)
    else:
        raise ValueError(f"teacher dir {path} does not exist; pass the --out of `xtc finetune` (or its model/ dir), "
                         "or a fine-tuned hub id such as yoshitomo-matsubara/bert-base-uncased-rte")
    if getattr(teacher.config, "xtc_quant", None):
        raise ValueError(f"teacher {path} is quantized; XTC distils from the full-precision fine-tuned teacher")
    want = get_task(recipe.data.task).num_labels
    if teacher.config.num_labels != want:
        raise ValueError(f"teacher {path} has {teacher.config.num_labels} labels but task {recipe.data.task!r} has "
                         f"{want}; fine-tune a teacher on this task first (xtc finetune)")
    return teacher, path


def _is_hub_id(text: str) -> bool:
    """A fine-tuned model on the hub: ``owner/name`` (a bare name is taken for a missing local dir)."""
    return "/" in text and is_hub_id(text)


def _load_hub_teacher(repo_id: str):
    from xtc.models import load_classifier

    try:
        return load_classifier(repo_id).eval()
    except OSError as err:
        raise ValueError(f"could not load the teacher {repo_id!r} from the Hugging Face hub ({err.__class__.__name__}); "
                         "check the id and the network, or pass a local teacher dir (xtc finetune --out)") from None


def _check_compatible(student, teacher, student_path, teacher_path) -> None:
    for key in ("vocab_size", "hidden_size", "num_attention_heads", "num_labels"):
        s, t = getattr(student.config, key), getattr(teacher.config, key)
        if s != t:
            raise ValueError(f"student {student_path} has {key}={s} but teacher {teacher_path} has {key}={t}; "
                             "the step-1 student must come from this teacher (xtc distill --teacher ...)")


def evaluate(args, argv: Sequence[str]) -> dict[str, Any]:
    """Dev-set metrics of a model directory, a run directory or a packed checkpoint."""
    from xtc.checkpoint import load_model_dir, load_tokenizer
    from xtc.glue import make_collator
    from xtc.train import evaluate as evaluate_model
    from xtc.train import select_device

    started = time.time()
    path = Path(args.model)
    recipe = resolve_recipe(args.flags, args.set)
    if path.is_file():
        from xtc.export import load_packed

        model, tokenizer_dir = load_packed(path), path.parent
    elif not path.exists() and _is_hub_id(str(args.model)):  # a fine-tuned hub model (a given teacher)
        tokenizer_dir = check_model(str(args.model), key="--model")
        model = _load_hub_teacher(tokenizer_dir)
    else:
        if (path / MODEL / "config.json").is_file():
            path = path / MODEL
        model, tokenizer_dir = load_model_dir(path), path
    tokenizer = load_tokenizer(args.tokenizer or tokenizer_dir)
    eval_sets = load_eval_features(recipe, tokenizer)
    device = select_device(args.device)
    metrics = evaluate_model(model.to(device), recipe.data.task, eval_sets, make_collator(tokenizer), device=device)
    result = {"model": str(args.model), "task": recipe.data.task, "metrics": metrics}
    if args.out:
        atomic_write_json(Path(args.out) / "metrics.json", result)
        atomic_write_json(Path(args.out) / "manifest.json", manifest(str(device), started, argv))
    print(json.dumps(result, indent=2))
    return result


# ---------------------------------------------------------------------------------------------- export, size, augment
PACKED = "model.xtc.safetensors"


def export(args, argv: Sequence[str]) -> dict[str, Any]:
    """Write the packed low-bit checkpoint of a trained model, its tokenizer and ``size.json`` into ``--out``."""
    from transformers import AutoConfig

    from xtc.checkpoint import load_model_dir, load_tokenizer
    from xtc.config import Recipe
    from xtc.export import export_packed
    from xtc.size import size_report

    started = time.time()
    model_dir, run_config = _model_dir_and_run_config(Path(args.model))
    model = load_model_dir(model_dir)
    recipe = Recipe.from_dict(run_config["recipe"]) if run_config else None
    teacher_config = None
    if args.teacher_config or getattr(model.config, "xtc_teacher_layer", None) is not None:
        source = args.teacher_config or (run_config or {}).get("inputs", {}).get("teacher")
        if source is None:
            raise ValueError(f"{model_dir} is a layer-reduced student: pass --teacher-config (the teacher's model "
                             "dir or config) so the compression ratio is measured against the full teacher")
        source = Path(source)
        teacher_config = AutoConfig.from_pretrained(source / MODEL if (source / MODEL / "config.json").is_file() else source)
    out = Path(args.out)
    with atomic_dir(out) as tmp:
        written = export_packed(model, tmp / PACKED, recipe)
        load_tokenizer(model_dir).save_pretrained(tmp)
        report = size_report(model, tmp / PACKED, teacher_config)
        report["packed_file"] = PACKED
        atomic_write_json(tmp / "size.json", report)
        atomic_write_json(tmp / "manifest.json", manifest("cpu", started, argv))
    log.info("packed %s: %d bytes (%.2fx the theoretical minimum); %.1fx smaller than the FP32 teacher "
             "(quantized part), %.1fx (whole model)", out / PACKED, written["file_bytes"],
             report["packed_over_theoretical"], report["compression"]["quantized_part"],
             report["compression"]["whole_model_on_disk"])
    return report


def _model_dir_and_run_config(path: Path) -> tuple[Path, dict[str, Any] | None]:
    """A run dir resolves to its ``model/``; the run's ``config.json`` (recipe + inputs) comes along if present."""
    if (path / MODEL / "config.json").is_file():
        run_config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else None
        return path / MODEL, run_config
    parent_config = path.parent / "config.json"
    if path.name in (MODEL, LAST) and parent_config.is_file():
        return path, json.loads(parent_config.read_text())
    return path, None


def size(args, argv: Sequence[str]) -> dict[str, Any]:
    """Size accounting of an XTC student from a model config alone (offline; ``bert-base`` is built in)."""
    from xtc.models import bert_config
    from xtc.size import size_from_config

    report = size_from_config(bert_config(args.model_config), args.layers, args.weight_bits)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        t, c = report["theoretical_bytes"], report["compression"]
        mib = 2**20
        print(f"teacher FP32: {report['teacher']['fp32_bytes'] / mib:.1f} MiB ({report['teacher']['params']:,} params)")
        print(f"student: {report['student']['layers']} layers, weight bits {report['student']['bits']}")
        print(f"theoretical minimum: {t['whole_model'] / mib:.2f} MiB (quantized part {t['quantized_part'] / mib:.2f} MiB)")
        print(f"packed file (predicted): {report['packed_file_bytes_predicted'] / mib:.2f} MiB "
              f"({report['packed_predicted_over_theoretical']:.4f}x the minimum)")
        print(f"compression: {c['quantized_part']:.1f}x (quantized part), {c['whole_model']:.1f}x (whole model)")
    return report


def augment(args, argv: Sequence[str]) -> dict[str, Any]:
    """TinyBERT data augmentation of a task's train split into a TSV that `--train-file` reads."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from xtc.augment import augment_examples, write_augmented_tsv
    from xtc.glove import load_glove
    from xtc.glue import get_task, load_split

    spec = get_task(args.task)
    examples = load_split(spec, "train", args.data_dir, args.max_train_examples, args.seed)
    source = check_model(args.mlm, key="--mlm")
    tokenizer = AutoTokenizer.from_pretrained(source)
    mlm = AutoModelForMaskedLM.from_pretrained(source).eval()
    glove = load_glove(args.glove) if args.glove else None
    augmented = augment_examples(examples, spec.name, mlm, tokenizer, n_copies=args.copies, p=args.p, k=args.k,
                                 glove=glove, seed=args.seed)
    path = write_augmented_tsv(spec.name, augmented, args.out)
    log.info("wrote %d examples (%d originals) to %s", len(augmented), len(examples), path)
    return {"path": str(path), "examples": len(augmented)}
