"""The ``xtc`` command line: the only module that reads argv and configures logging (``xtc.report.__main__``
does the same for the report).

Each subcommand imports what it needs inside its handler, so ``xtc --help`` stays fast (no torch import). The
handlers build a typed ``Recipe`` (flags as typed values, then ``--set`` overrides, validated once) and paths, and
call ``xtc.commands`` with them; ``main(argv)`` hands its argv on (recorded in each run's manifest).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

from xtc import __version__
from xtc.config import (ENGINES, GLUE_TASK_NAMES, KD_VARIANTS, ActRange, AttentionTarget, AugmentConfig, LayerStrategy,
                        Padding,
                        Recipe, RepFirst, parse_bits, parse_override, suggest, with_values)
from xtc.sources import SourceError

log = logging.getLogger("xtc")
# modules of the optional extras (pyproject.toml) -> the extra that installs them; the core serves packed files
EXTRA_OF = {"datasets": "train", "scipy": "train", "pandas": "report", "matplotlib": "report", "seaborn": "report",
            "snakemake": "workflow", "jsonschema": "workflow", "dvc": "workflow"}
# xtc calibrate writes, xtc plan reads (xtc.study.cost.CALIBRATION; spelled here so that `xtc --help` stays light)
CALIBRATION = Path(__file__).resolve().parent.parent / "config" / "calibration.json"


def _cmd_tasks(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Print the GLUE task table (text columns, labels, metrics, selection metric, eval splits)."""
    from xtc.tasks import TASKS, get_task

    names = [get_task(args.task).name] if args.task else list(TASKS)
    rows = [_task_row(TASKS[name]) for name in names]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print("  ".join(f"{k}={v}" for k, v in row.items()))
    return 0


def _task_row(spec) -> dict:
    return {
        "task": spec.name, "title": spec.title, "text_columns": list(spec.text_columns),
        "labels": list(spec.label_names) if not spec.is_regression else "score (regression)",
        "eval_splits": [split.name for split in spec.eval_splits], "metrics": list(spec.metric_keys),
        "selection_metric": spec.selection_metric, "hub_config": spec.hub_config, "local_dir": spec.tsv.directory,
    }


def _cmd_layers(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Print the teacher layers a student keeps (docs/method.md, "Layer reduction") and the KD layer maps."""
    from xtc.distill import layer_maps
    from xtc.reduce import select_layers

    strategy = args.teacher_layer if args.teacher_layer is not None else args.strategy
    teacher_layer = select_layers(args.teacher_layers, args.layers, strategy)
    att_map, rep_map = layer_maps(teacher_layer, args.teacher_layers, args.rep_first)
    result = {"teacher_layer": list(teacher_layer), "att_map": list(att_map), "rep_map": list(rep_map)}
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


def _task(text: str) -> str:
    """A GLUE task name (``xtc.config.GLUE_TASK_NAMES``, the keys of ``xtc.tasks.TASKS``), or a "did you mean"."""
    if text not in GLUE_TASK_NAMES:
        raise argparse.ArgumentTypeError(f"unknown task {text!r}{suggest(text, GLUE_TASK_NAMES)}; use one of "
                                         f"{', '.join(GLUE_TASK_NAMES)}")
    return text


TASK_METAVAR = "{" + ",".join(GLUE_TASK_NAMES) + "}"


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").strip("[]").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of layer indices, e.g. 1,3,5") from None


# Convenience flags and the recipe keys they set; `--set section.key=value` reaches every other key.
DATA_FLAGS = {"task": "data.task", "data_dir": "data.data_dir", "train_file": "data.train_file",
              "max_train_examples": "data.max_train_examples", "max_eval_examples": "data.max_eval_examples",
              "max_seq_length": "data.max_seq_length", "padding": "data.padding"}
TRAIN_FLAGS = {"epochs": "train.epochs", "lr": "train.lr", "batch_size": "train.batch_size", "seed": "train.seed",
               "eval_every": "train.eval_every_steps", "warmup_epochs": "train.warmup_epochs",
               "warmup_ratio": "train.warmup_ratio", "group_by_length": "train.group_by_length", "bf16": "train.bf16",
               "tf32": "train.tf32"}
STUDENT_FLAGS = {"layers": "reduce.layers", "teacher_layer": "reduce.teacher_layer", "strategy": "reduce.strategy",
                 "weight_bits": "quant.weight_bits", "act_bits": "quant.act_bits", "act_range": "quant.act_range",
                 "kd": "distill.kd", "attention_target": "distill.attention_target",
                 "temperature": "distill.temperature"}


def _bits(text: str) -> int | None:
    try:
        return parse_bits(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _flag_group(p: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """A group of recipe flags: a flag not given is absent from the namespace (so ``--weight-bits fp`` sets null)."""
    return p.add_argument_group(title, argument_default=argparse.SUPPRESS)


def _add_data_args(p: argparse.ArgumentParser, eval_only: bool = False) -> None:
    g = _flag_group(p, "data")
    g.add_argument("--task", required=True, type=_task, metavar=TASK_METAVAR, help="GLUE task")
    g.add_argument("--data-dir", help="local glue_data/ folder (default: $GLUE_DIR, else the Hugging Face hub)")
    if not eval_only:
        g.add_argument("--train-file", help="train TSV in the task's layout (e.g. from xtc augment)")
        g.add_argument("--max-train-examples", type=int, help="seeded subset of the train split")
    g.add_argument("--max-eval-examples", type=int, help="seeded subset of each dev split")
    g.add_argument("--max-seq-length", type=int, help="truncate to this many tokens (XTC: 128)")
    g.add_argument("--padding", choices=get_args(Padding),
                   help="pad batches to --max-seq-length (the original's, default) or to their longest example")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    g = _flag_group(p, "training (docs/method.md, \"Budgets\")")
    g.add_argument("--epochs", type=float)
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--eval-every", type=int, help="evaluate (and save resumable state) every N steps")
    g.add_argument("--warmup-epochs", type=float, help="linear warmup length in epochs (XTC: 1)")
    g.add_argument("--warmup-ratio", type=float, help="warmup as a fraction of the steps (overrides --warmup-epochs)")
    g.add_argument("--group-by-length", action="store_const", const=True,
                   help="batch examples of similar length (less padding; off in XTC's recipe)")
    g.add_argument("--bf16", action="store_const", const=True, help="bf16 autocast (CUDA only)")
    g.add_argument("--tf32", action="store_const", const=True, help="allow TF32 matmuls (CUDA only)")


def _add_run_args(p: argparse.ArgumentParser, out_required: bool = True) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--out", required=out_required, help="run directory (created; resumed if it holds a killed run)")
    g.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any recipe key, e.g. --set distill.rep_first=input (repeatable)")
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    if out_required:
        g.add_argument("--overwrite", action="store_true", help="discard what --out holds and start again")


FINETUNE_FIXED = {"distill.kd": "none", "quant.weight_bits": None}  # a teacher: labels only, full precision


def build_recipe(args: argparse.Namespace, *tables: dict[str, str], fixed: dict | None = None) -> Recipe:
    """The recipe of a run: the flags given (typed values), then ``fixed`` keys, then ``--set`` (later wins)."""
    values = {key: getattr(args, dest) for table in tables for dest, key in table.items() if hasattr(args, dest)}
    values.update(fixed or {})
    values.update(parse_override(item) for item in args.set)
    return with_values(Recipe(), values)


def recipe_of(argv: Sequence[str]) -> dict:
    """The recipe (as ``config.json`` holds it) that ``xtc finetune|distill ARGV`` would train; the workflow uses it
    to compare a job with the run directory it would write before any job starts."""
    args = build_parser().parse_args(list(argv))
    if args.command == "finetune":
        return build_recipe(args, DATA_FLAGS, TRAIN_FLAGS, fixed=FINETUNE_FIXED).to_dict()
    return build_recipe(args, DATA_FLAGS, TRAIN_FLAGS, STUDENT_FLAGS).to_dict()


def _run_paths(args: argparse.Namespace, argv: Sequence[str]):
    from xtc.study.rundir import RunPaths

    return RunPaths(Path(args.out), overwrite=args.overwrite, device=args.device, argv=tuple(argv))


def _cmd_finetune(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from xtc import commands

    recipe = build_recipe(args, DATA_FLAGS, TRAIN_FLAGS, fixed=FINETUNE_FIXED)
    commands.finetune(recipe, args.model, _run_paths(args, argv))
    return 0


def _cmd_distill(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from xtc import commands

    recipe = build_recipe(args, DATA_FLAGS, TRAIN_FLAGS, STUDENT_FLAGS)
    commands.distill(recipe, args.teacher, args.init, _run_paths(args, argv))
    return 0


def _cmd_evaluate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from xtc import commands

    result = commands.evaluate(build_recipe(args, DATA_FLAGS), args.model, args.tokenizer,
                               Path(args.out) if args.out else None, args.device, argv, engine=args.engine)
    print(json.dumps(result, indent=2))
    return 0


def _cmd_export(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from xtc import commands

    commands.export(args.model, Path(args.out), args.teacher_config, argv, overwrite=args.overwrite)
    return 0


def _cmd_size(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Print the size report: JSON, or the headline numbers in MiB."""
    from xtc import commands

    report = commands.size(args.model_config, args.layers, args.weight_bits)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    t, c, mib = report["theoretical_bytes"], report["compression"], 2**20
    print(f"teacher FP32: {report['teacher']['fp32_bytes'] / mib:.1f} MiB ({report['teacher']['params']:,} params)")
    print(f"student: {report['student']['layers']} layers, weight bits {report['student']['bits']}")
    print(f"theoretical minimum: {t['whole_model'] / mib:.2f} MiB (quantized part {t['quantized_part'] / mib:.2f} MiB)")
    print(f"packed file (predicted): {report['packed_file_bytes_predicted'] / mib:.2f} MiB "
          f"({report['packed_predicted_over_theoretical']:.4f}x the minimum)")
    print(f"compression: {c['quantized_part']:.1f}x (quantized part), {c['whole_model']:.1f}x (whole model)")
    return 0


def _cmd_augment(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from xtc import commands

    commands.augment(commands.AugmentRequest(
        task=args.task, mlm=args.mlm, out=Path(args.out), data_dir=args.data_dir, glove=args.glove,
        copies=args.copies, p=args.p, k=args.k, max_train_examples=args.max_train_examples, seed=args.seed,
        device=args.device, shard_examples=args.shard_examples))
    return 0


def _cmd_plan(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Print what a study will cost: jobs, GPU- and CPU-hours, critical path, disk, downloads, GPU memory."""
    from xtc.study import plan

    summary = plan.load(args.configfile, args.gpu, Path(args.calibration)).summary()
    print(json.dumps(summary, indent=2) if args.json else plan.format_summary(summary))
    return 0


def _cmd_prefetch(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Fetch every model, dataset and GloVe file a study's jobs open into the store, at the pinned revisions."""
    import os

    from xtc.study import plan, prefetch

    jobs = plan.load(args.configfile).jobs
    mirror = os.environ.get(prefetch.MIRROR_ENV)
    summary = prefetch.prefetch(jobs, Path(args.store).resolve(), Path(mirror) if mirror else None)
    return 0 if not summary["missing"] else 1


def _cmd_calibrate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Time a few real steps of each job kind of a study on this device; write the calibration file."""
    from xtc.device import require_device
    from xtc.study.calibrate import study_calibration

    device = require_device(args.device)
    entry = study_calibration(args.configfile, device, args.layers, args.steps, args.warmup, args.tf32,
                              Path(args.out), args.threads)
    print(json.dumps(entry, indent=2))
    return 0


def _cmd_predict(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from xtc.packed.predict import run

    run(args.model, args.input, args.columns, args.scores, args.batch_size, args.max_seq_length, args.engine,
        args.tokenizer, task=args.task)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xtc",
        description="XTC extreme compression for BERT-style transformers: binary/ternary weights, 8-bit "
        "activations, layer reduction and knowledge distillation on GLUE.",
    )
    parser.add_argument("--version", action="version", version=f"xtc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    tasks = sub.add_parser("tasks", help="show the GLUE task table", description=_cmd_tasks.__doc__)
    tasks.add_argument("task", nargs="?", help="one task (default: all)")
    tasks.add_argument("--json", action="store_true", help="print JSON")
    tasks.set_defaults(handler=_cmd_tasks)

    layers = sub.add_parser("layers", help="which teacher layers a layer-reduced student keeps",
                            description=_cmd_layers.__doc__)
    layers.add_argument("--layers", type=int, required=True, help="student layers, e.g. 6")
    layers.add_argument("--teacher-layers", type=int, default=12, help="teacher layers (default 12)")
    layers.add_argument("--strategy", choices=get_args(LayerStrategy), default="xtc", help="selection rule (default xtc)")
    layers.add_argument("--teacher-layer", type=_int_list, help="explicit 0-based indices, e.g. 1,3,5,7,9,11")
    layers.add_argument("--rep-first", choices=get_args(RepFirst), default="original",
                        help="teacher state for the student's embedding output (distill.rep_first; default original)")
    layers.add_argument("--json", action="store_true", help="print JSON")
    layers.set_defaults(handler=_cmd_layers)

    ft = sub.add_parser("finetune", help="fine-tune a teacher on a GLUE task (labels only)",
                        description="Fine-tune a pretrained model (hub id or local dir) into a task teacher.")
    ft.add_argument("--model", required=True, help="pretrained model: hub id or local directory")
    _add_data_args(ft)
    _add_train_args(ft)
    _add_run_args(ft)
    ft.set_defaults(handler=_cmd_finetune)

    ds = sub.add_parser("distill", help="train a layer-reduced and/or quantized student by KD (XTC steps 1 and 2)",
                        description="Train a student from a fine-tuned teacher: --layers for step 1 (FP, reduced), "
                        "--weight-bits/--act-bits for step 2 (from the teacher, or --init a step-1 student).")
    ds.add_argument("--teacher", required=True, help="the teacher: an `xtc finetune` run dir or a model dir")
    ds.add_argument("--init", help="start from this student (a step-1 run's model/ dir) instead of the teacher")
    g = _flag_group(ds, "student (docs/method.md)")
    g.add_argument("--layers", type=int, help="student layers (default: the teacher's)")
    g.add_argument("--teacher-layer", type=_int_list, help="explicit 0-based teacher layers, e.g. 1,3,5,7,9,11")
    g.add_argument("--strategy", choices=get_args(LayerStrategy), help="layer choice rule (default xtc)")
    g.add_argument("--weight-bits", type=_bits, help="1, 2, 3..8, or fp (default fp)")
    g.add_argument("--act-bits", type=_bits, help="8 (XTC), 4..7, or none")
    g.add_argument("--act-range", choices=get_args(ActRange))
    g.add_argument("--kd", choices=KD_VARIANTS,
                   help="KD variant (default one_stage, the XTC setting)")
    g.add_argument("--attention-target", choices=get_args(AttentionTarget))
    g.add_argument("--temperature", type=float)
    _add_data_args(ds)
    _add_train_args(ds)
    _add_run_args(ds)
    ds.set_defaults(handler=_cmd_distill)

    ev = sub.add_parser("evaluate", help="dev-set metrics of a model dir, run dir or packed checkpoint")
    ev.add_argument("--model", required=True, help="run dir, model dir, or packed .safetensors file")
    ev.add_argument("--tokenizer", help="tokenizer dir (default: next to the model)")
    _add_data_args(ev, eval_only=True)
    _add_run_args(ev, out_required=False)
    ev.add_argument("--engine", choices=ENGINES, default="float",
                    help="a packed checkpoint's engine: float (exact fake-quant), int8 (integer CPU engine) or "
                         "int8-packed (the same, weights kept packed in memory: less memory, slower)")
    ev.set_defaults(handler=_cmd_evaluate)

    pr = sub.add_parser("predict", help="labels or scores of sentences from a TSV file or stdin (one line each)")
    pr.add_argument("--model", required=True, help="packed .safetensors file (integer engine), model dir or run dir")
    pr.add_argument("--input", default="-", help="a GLUE file of the model's task, a TSV of 1 or 2 texts per line, "
                    "or '-' for stdin (default)")
    pr.add_argument("--columns", type=lambda t: t.split(","), help="header names of the text columns, e.g. sentence")
    pr.add_argument("--task", help="read the input as this GLUE task's files (default: the task the model records)")
    pr.add_argument("--scores", action="store_true", help="write class probabilities instead of labels")
    pr.add_argument("--batch-size", type=int, default=32)
    pr.add_argument("--max-seq-length", type=int,
                    help="truncate to this many tokens (default 128, or the model's positions when fewer)")
    pr.add_argument("--engine", choices=ENGINES, default="int8",
                    help="a packed file's engine: int8 (default), int8-packed (weights kept packed: less memory) or "
                         "float (the exact fake-quant model)")
    pr.add_argument("--tokenizer", help="tokenizer dir (default: next to the model)")
    pr.set_defaults(handler=_cmd_predict)

    ex = sub.add_parser("export", help="write the packed 1/2-bit checkpoint of a trained model, and size.json",
                        description="Pack a trained quantized model: 1-bit weights 8 per byte, ternary 4 per byte.")
    ex.add_argument("--model", required=True, help="an `xtc distill` run dir (its best model) or a model dir")
    ex.add_argument("--out", required=True, help="output dir: model.xtc.safetensors, tokenizer, size.json")
    ex.add_argument("--overwrite", action="store_true",
                    help="replace a non-empty --out that is not an earlier export (never a run or model dir)")
    ex.add_argument("--teacher-config", help="the FP teacher's model dir or config, for the compression ratio "
                    "(default: the run's teacher)")
    ex.set_defaults(handler=_cmd_export)

    sz = sub.add_parser("size", help="size accounting of an XTC student from a model config alone (offline)")
    sz.add_argument("--model-config", default="bert-base", help="'bert-base' (built in), a model dir or a hub id")
    sz.add_argument("--layers", type=int, help="student layers (default: the teacher's)")
    sz.add_argument("--weight-bits", type=_bits, default=1, help="1, 2, 3..8, or fp (default 1)")
    sz.add_argument("--json", action="store_true", help="print the full report as JSON")
    sz.set_defaults(handler=_cmd_size)

    pl = sub.add_parser("plan", help="what a study will cost before its first job (jobs, hours, disk, downloads)",
                        description=_cmd_plan.__doc__)
    pl.add_argument("--configfile", default="config/config.yaml", help="a study file, or config/studies/all.yaml")
    pl.add_argument("--gpu", help="the calibrated GPU to plan for (a device name in the calibration file; default: "
                    "the first calibrated GPU, else the documented default rate)")
    pl.add_argument("--calibration", default=str(CALIBRATION),
                    help="calibration file written by `xtc calibrate`")
    pl.add_argument("--json", action="store_true", help="print JSON")
    pl.set_defaults(handler=_cmd_plan)

    pf = sub.add_parser("prefetch", help="fetch what a study's jobs open (models, GLUE, GloVe) for offline nodes",
                        description=_cmd_prefetch.__doc__)
    pf.add_argument("--configfile", default="config/config.yaml", help="a study file, or config/studies/all.yaml")
    pf.add_argument("--store", default="prefetched", help="where to put them: on the file system the compute nodes "
                    "share (default: prefetched/, which the workflow reads when it exists)")
    pf.set_defaults(handler=_cmd_prefetch)

    ca = sub.add_parser("calibrate", help="time each job kind of a study on this device (for xtc plan and the "
                        "workflow's runtime requests)", description=_cmd_calibrate.__doc__)
    ca.add_argument("--configfile", default="config/config.yaml", help="the study whose shape, batch and kinds to time")
    ca.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    ca.add_argument("--layers", type=_int_list, help="time FP/W1A8/W2A8 at these depths instead of the study's kinds")
    ca.add_argument("--steps", type=int, default=3, help="timed steps per kind (after --warmup)")
    ca.add_argument("--warmup", type=int, default=1, help="untimed steps per kind")
    ca.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (CUDA)")
    ca.add_argument("--threads", type=int, help="CPU threads (default: the study's resources.threads on CPU)")
    ca.add_argument("--out", default=str(CALIBRATION),
                    help="calibration file (the entry of this device, shape, batch and length is replaced)")
    ca.set_defaults(handler=_cmd_calibrate)

    au = sub.add_parser("augment", help="TinyBERT data augmentation of a task's train split",
                        description=f"Replace words (p={AugmentConfig.p}) by one of the top-k masked-LM candidates "
                        "(single-piece words) or GloVe neighbours (multi-piece words, when --glove is given; kept otherwise).")
    au.add_argument("--task", required=True, type=_task, metavar=TASK_METAVAR, help="GLUE task")
    au.add_argument("--data-dir", help="local glue_data/ folder (default: $GLUE_DIR, else the hub)")
    au.add_argument("--mlm", required=True, help="masked-LM model (hub id or dir), e.g. bert-base-uncased")
    au.add_argument("--glove", help="GloVe text file for multi-piece words")
    au.add_argument("--copies", type=int, help="augmented copies per example (default: TinyBERT's per task)")
    au.add_argument("--p", type=float, default=AugmentConfig.p,
                    help=f"replacement probability per word ({AugmentConfig.p})")
    au.add_argument("--k", type=int, default=AugmentConfig.k, help=f"candidates per word ({AugmentConfig.k})")
    au.add_argument("--max-train-examples", type=int, help="augment a seeded subset only")
    au.add_argument("--seed", type=int, default=0)
    au.add_argument("--out", required=True, help="the augmented train TSV to write")
    au.add_argument("--device", help="where the masked LM runs: cpu, cuda, cuda:1 ... (default: CUDA when available)")
    au.add_argument("--shard-examples", type=int, default=1024,
                    help="originals per resumable shard (<out>.parts/; a killed job continues from the last one)")
    au.set_defaults(handler=_cmd_augment)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command in ("finetune", "distill", "evaluate", "export", "augment", "predict"):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one progress display: ours
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from xtc.preempt import EXIT_CODE, Preempted

    try:
        return args.handler(args, argv)
    except Preempted as stopped:  # a cluster job's time limit or preemption: state saved, the retry resumes
        print(f"xtc {args.command}: {stopped}", file=sys.stderr)
        return EXIT_CODE
    except (ValueError, SourceError) as err:  # user errors and unreachable sources: one line, no traceback
        print(f"xtc {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:  # a light install (the serving core) running a command of an extra
        extra = EXTRA_OF.get((err.name or "").partition(".")[0])
        if extra is None:
            raise
        print(f"xtc {args.command}: error: {err.name} is not installed; this command needs the {extra!r} extra: "
              f"pip install 'xtc[{extra}]'", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
