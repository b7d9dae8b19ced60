"""The ``xtc`` command line: the only module that reads argv, configures logging and writes files.

Each subcommand imports what it needs inside its handler, so ``xtc --help`` stays fast (no torch import).
Training, export and size subcommands arrive with the training issue; today's subcommands work offline.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from xtc import __version__

log = logging.getLogger("xtc")


def _cmd_tasks(args: argparse.Namespace) -> int:
    """Print the GLUE task table (text columns, labels, metrics, selection metric, eval splits)."""
    from xtc.glue import TASKS, get_task

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


def _cmd_layers(args: argparse.Namespace) -> int:
    """Print the teacher layers a student keeps (reference section 3) and the KD layer maps."""
    from xtc.distill import layer_maps
    from xtc.reduce import select_layers

    strategy = args.teacher_layer if args.teacher_layer is not None else args.strategy
    teacher_layer = select_layers(args.teacher_layers, args.layers, strategy)
    att_map, rep_map = layer_maps(teacher_layer, args.teacher_layers, args.rep_first)
    result = {"teacher_layer": list(teacher_layer), "att_map": list(att_map), "rep_map": list(rep_map)}
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").strip("[]").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of layer indices, e.g. 1,3,5") from None


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
    layers.add_argument("--strategy", choices=["xtc", "even"], default="xtc", help="selection rule (default xtc)")
    layers.add_argument("--teacher-layer", type=_int_list, help="explicit 0-based indices, e.g. 1,3,5,7,9,11")
    layers.add_argument("--rep-first", choices=["input", "deepspeed"], default="input",
                        help="teacher state for the student's embedding output (distill.rep_first; default input)")
    layers.add_argument("--json", action="store_true", help="print JSON")
    layers.set_defaults(handler=_cmd_layers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except ValueError as err:  # user errors: one line, no traceback
        print(f"xtc {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
