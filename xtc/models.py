"""Loading teachers and students: a hub id, a local directory, or a random-init config (tests, benchmarks).

Model families are never chosen by matching class-name strings: everything here goes through the
``transformers`` Auto classes, and XTC code works on any model whose modules carry BERT's names.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

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
        raise ValueError(f"could not load the teacher {repo_id!r} from the Hugging Face hub ({err.__class__.__name__}); "
                         "check the id and the network, or pass a local teacher dir (xtc finetune --out)") from None


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
