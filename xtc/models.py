"""Loading teachers and students: a hub id, a local directory, or a random-init config (tests, benchmarks); and
making a classifier's labels the task's.

Model families are never chosen by matching class-name strings: everything here goes through the
``transformers`` Auto classes, and XTC code works on any model whose modules carry BERT's names.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from xtc.tasks import TaskSpec, get_task

log = logging.getLogger(__name__)

# The standard BERT-base shape (docs/method.md, "Model size"); offline, no download needed.
BERT_BASE = dict(
    vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    max_position_embeddings=512, type_vocab_size=2,
)


def bert_config(name_or_path: str = "bert-base", **overrides) -> BertConfig:
    """A ``BertConfig`` from ``'bert-base'`` (built in, offline), a local dir, or a hub id; ``overrides`` win."""
    if name_or_path == "bert-base":
        config = BertConfig(**BERT_BASE)
    else:
        config = AutoConfig.from_pretrained(name_or_path)
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def tiny_bert_config(**overrides) -> BertConfig:
    """A BERT small enough to train on CPU in seconds (tests); eager attention so scores can be captured."""
    params = dict(
        vocab_size=128, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, type_vocab_size=2, num_labels=2,
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    )
    params.update(overrides)
    return BertConfig(**params)


def random_model(config: BertConfig, seed: int = 0) -> BertForSequenceClassification:
    """A randomly initialised classifier; seeded, so the same config and seed give the same weights."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = BertForSequenceClassification(config)
    finally:
        torch.random.set_rng_state(generator_state)
    return model


def load_classifier(name_or_path: str | Path, num_labels: int | None = None, **kwargs) -> torch.nn.Module:
    """Load a sequence classifier from a hub id or local dir (``num_labels`` sets a fresh head if needed)."""
    extra = {} if num_labels is None else {"num_labels": num_labels}
    return AutoModelForSequenceClassification.from_pretrained(str(name_or_path), **extra, **kwargs)


def load_hub_classifier(repo_id: str) -> torch.nn.Module:
    """A fine-tuned classifier from the hub, in eval mode, or a one-line error naming the id and the fix."""
    try:
        return load_classifier(repo_id).eval()
    except OSError as err:
        raise ValueError(f"could not load the teacher {repo_id!r} from the Hugging Face hub "
                         f"({err.__class__.__name__}); check the id and the network, or pass a local teacher dir "
                         "(xtc finetune --out)") from None


def load_fp_teacher(path: str | Path) -> tuple[torch.nn.Module, str | Path]:
    """A full-precision fine-tuned model and where it was read: a local model dir (a run directory's ``model/``:
    resolve it with ``xtc.study.rundir.model_dir`` first) or a fine-tuned hub id (``owner/name``)."""
    from xtc.checkpoint import load_model_dir
    from xtc.sources import check_model, is_hub_id

    path = Path(path)
    if path.is_dir():
        teacher = load_model_dir(path)
    elif is_hub_id(str(path), qualified=True):
        path = check_model(str(path), key="--teacher")
        teacher = load_hub_classifier(path)
    else:
        raise ValueError(f"teacher dir {path} does not exist; pass the --out of `xtc finetune` (or its model/ dir), "
                         "or a fine-tuned hub id such as yoshitomo-matsubara/bert-base-uncased-rte")
    if getattr(teacher.config, "xtc_quant", None):
        raise ValueError(f"teacher {path} is quantized; XTC distils from the full-precision fine-tuned teacher: "
                         "pass the `xtc finetune` run dir (or a step-1 FP student)")
    return teacher, path


# ---------------------------------------------------------------------------------------------- label order
# Label order of classifiers: the dataset's label ids (``TaskSpec.label_names``) must mean the same for a model.
#
# An xtc addition: the original XTC script never checks it (its ``replace_config`` only rewrites the student's config,
# and the GLUE labels are used as the dataset gives them), so a given teacher trained with another label order would
# be scored and distilled against the wrong labels without a word. Here:
#
# * a teacher xtc fine-tunes gets ``label2id``/``id2label`` with the task's label names (``set_task_labels``);
# * a given teacher (``align_labels``) with generic names (``LABEL_0``, ``LABEL_1``, ...) is read as dataset order;
#   with the task's names in another order its classifier rows are permuted into dataset order; with names that
#   cannot be matched it is refused, before any training.
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
