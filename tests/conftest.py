"""Shared fixtures: tiny random BERTs and a deterministic torch set-up; nothing here touches the network."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from guards import GLUE, REAL_GLUE, skip_unless  # noqa: E402
from xtc.models import random_model, tiny_bert_config  # noqa: E402

# Tiny models run fastest on one thread, and a loaded 2-core machine makes more threads much slower.
torch.set_num_threads(1)


@pytest.fixture
def tiny_config():
    return tiny_bert_config()


@pytest.fixture
def tiny_bert(tiny_config):
    """A 4-layer random BERT classifier in eval mode (dropout off, so outputs are deterministic)."""
    return random_model(tiny_config, seed=0).eval()


@pytest.fixture
def tiny_batch(tiny_config):
    """Input ids with padding in the second row, so masks are exercised."""
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, tiny_config.vocab_size, (3, 12), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 8:] = 0
    input_ids[1, 8:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@pytest.fixture
def real_glue():
    """The public GLUE files (tests/guards.py): a skip where they are not, a failure under CI."""
    skip_unless(REAL_GLUE.is_dir(), f"real GLUE files not found at {REAL_GLUE} (set XTC_GLUE_DIR)", GLUE)
    return REAL_GLUE


@pytest.fixture
def packed_with_tokenizer(tmp_path):
    """A tiny W1A8 packed checkpoint with its tokenizer beside it (as `xtc export` writes), and a GLUE SST-2 dir."""
    from textdata import tiny_tokenizer, write_glue_tsv
    from xtc.packed.export import export_packed
    from xtc.config import QuantConfig
    from xtc.quant import quantize_

    tokenizer = tiny_tokenizer(tmp_path / "tok")
    model = random_model(tiny_bert_config(vocab_size=len(tokenizer)), seed=0).eval()
    quantize_(model, QuantConfig(weight_bits=1))
    out = tmp_path / "packed"
    export_packed(model, out / "model.xtc.safetensors")
    tokenizer.save_pretrained(out)
    dev = write_glue_tsv(tmp_path / "glue", "sst2", "validation", 12, seed=2)
    return out / "model.xtc.safetensors", dev
