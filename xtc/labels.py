"""Label order of classifiers: the dataset's label ids (``TaskSpec.label_names``) must mean the same for a model.

An xtc addition: the original XTC script never checks it (its ``replace_config`` only rewrites the student's config,
and the GLUE labels are used as the dataset gives them), so a given teacher trained with another label order would
be scored and distilled against the wrong labels without a word. Here:

* a teacher xtc fine-tunes gets ``label2id``/``id2label`` with the task's label names (``set_task_labels``);
* a given teacher (``align_labels``) with generic names (``LABEL_0``, ``LABEL_1``, ...) is read as dataset order;
  with the task's names in another order its classifier rows are permuted into dataset order; with names that
  cannot be matched it is refused, before any training.
"""

from __future__ import annotations

import logging
import re

import torch
from torch import nn

from xtc.tasks import TaskSpec, get_task

log = logging.getLogger(__name__)

_GENERIC = re.compile(r"^label_(\d+)$")


def _norm(name: object) -> str:
    """``ENTAILMENT``, ``Not Entailment``, ``not-entailment`` -> ``entailment``, ``not_entailment``."""
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def set_task_labels(model: nn.Module, task: str | TaskSpec) -> None:
    """Write the task's label names into ``model.config`` (``id2label[i] = label_names[i]``)."""
    spec = get_task(task)
    if spec.is_regression:
        return
    model.config.id2label = dict(enumerate(spec.label_names))
    model.config.label2id = {name: i for i, name in enumerate(spec.label_names)}


def label_permutation(id2label: dict, task: str | TaskSpec, source: str = "the model") -> list[int] | None:
    """``perm[j]`` = the model's output index for dataset label ``j``; None when the model is in dataset order.

    Generic names (``LABEL_i`` at index ``i``) are dataset order. Raises ``ValueError`` when the names cannot be
    matched to the task's label names.
    """
    spec = get_task(task)
    if spec.is_regression:
        return None
    names = {int(i): _norm(name) for i, name in id2label.items()}
    want = [_norm(name) for name in spec.label_names]
    if sorted(names) != list(range(len(want))):
        raise ValueError(f"{source} has labels {dict(sorted(id2label.items()))} but task {spec.name!r} has "
                         f"{len(want)} ({list(spec.label_names)}); use a model fine-tuned on {spec.name}")
    if all(_GENERIC.match(name) and int(_GENERIC.match(name).group(1)) == i for i, name in names.items()):
        return None
    index = {name: i for i, name in names.items()}
    if sorted(index) != sorted(want):
        raise ValueError(
            f"{source} names its labels {[names[i] for i in sorted(names)]}, which do not match task "
            f"{spec.name!r}'s labels {list(spec.label_names)}; set the model's config.json id2label to the task's "
            f"names (in the model's output order) or to LABEL_0..LABEL_{len(want) - 1} if it uses the dataset order"
        )
    perm = [index[name] for name in want]
    return None if perm == list(range(len(want))) else perm


def _output_layer(model: nn.Module, num_labels: int) -> nn.Linear:
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_labels]
    if not heads:
        raise ValueError(f"{type(model).__name__} has no Linear layer with {num_labels} outputs to reorder; "
                         "give a model whose labels are in the dataset's order")
    return heads[-1]


def align_labels(model: nn.Module, task: str | TaskSpec, source: str = "the model") -> nn.Module:
    """Put a given classifier's outputs into the task's label order (in place) and name them; returns ``model``."""
    spec = get_task(task)
    if spec.is_regression:
        return model
    perm = label_permutation(model.config.id2label, spec, source)
    if perm is not None:
        head = _output_layer(model, spec.num_labels)
        with torch.no_grad():
            head.weight.copy_(head.weight[perm])  # (C, D): row j becomes the model's row for dataset label j
            if head.bias is not None:
                head.bias.copy_(head.bias[perm])
        log.warning("%s orders its labels %s; reordered its classifier to the dataset's order %s",
                    source, [model.config.id2label[i] for i in sorted(model.config.id2label)], list(spec.label_names))
    set_task_labels(model, spec)
    return model
