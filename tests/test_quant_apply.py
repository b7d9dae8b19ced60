"""quantize_: the XTC module set by full name, per-group bits, and the errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from xtc.config import QuantConfig
from xtc.quant import QuantEmbedding, QuantLinear, dequantize_, quantize_, quantized_modules


def test_swaps_exactly_the_xtc_module_set(tiny_bert):
    swapped = quantize_(tiny_bert, QuantConfig(weight_bits=1, act_bits=8))
    layers = tiny_bert.config.num_hidden_layers
    assert len(swapped) == 6 * layers + 1
    assert swapped["bert.embeddings.word_embeddings"] == "word_embeddings"
    assert swapped["bert.encoder.layer.0.attention.output.dense"] == "attn_out"
    assert swapped["bert.encoder.layer.3.output.dense"] == "ffn_out"
    assert isinstance(tiny_bert.bert.embeddings.word_embeddings, QuantEmbedding)
    for name in ("position_embeddings", "token_type_embeddings"):
        assert type(getattr(tiny_bert.bert.embeddings, name)) is nn.Embedding
    assert type(tiny_bert.bert.pooler.dense) is nn.Linear
    assert type(tiny_bert.classifier) is nn.Linear
    for name, module in tiny_bert.named_modules():
        if isinstance(module, nn.LayerNorm):
            assert "LayerNorm" in name


def test_mixed_bits_setting_of_the_reference(tiny_bert):
    cfg = QuantConfig(weight_bits=1, attn_out_bits=2, ffn_out_bits=2)
    quantize_(tiny_bert, cfg)
    layer = tiny_bert.bert.encoder.layer[0]
    assert layer.attention.self.query.weight_quantizer.bits == 1
    assert layer.intermediate.dense.weight_quantizer.bits == 1
    assert layer.attention.output.dense.weight_quantizer.bits == 2
    assert layer.output.dense.weight_quantizer.bits == 2
    assert tiny_bert.bert.embeddings.word_embeddings.weight_quantizer.bits == 1


def test_groups_subset_and_no_activation_quantization(tiny_bert):
    swapped = quantize_(tiny_bert, QuantConfig(weight_bits=2, act_bits=None, groups=("qkv",)))
    assert set(swapped.values()) == {"qkv"}
    assert all(m.act_quantizer is None for _, m in quantized_modules(tiny_bert))


def test_quantized_model_logits_change_and_dequantize_restores_them(tiny_bert, tiny_batch):
    fp = tiny_bert(**tiny_batch).logits
    model = copy.deepcopy(tiny_bert)
    quantize_(model, QuantConfig(weight_bits=1))
    assert not torch.allclose(model(**tiny_batch).logits, fp)
    dequantize_(model)
    assert not list(quantized_modules(model))
    assert torch.equal(model(**tiny_batch).logits, fp)


def test_gradients_reach_every_latent_weight(tiny_bert, tiny_batch):
    quantize_(tiny_bert, QuantConfig(weight_bits=1))
    tiny_bert.train()
    tiny_bert(**tiny_batch, labels=torch.tensor([0, 1, 1])).loss.backward()
    for name, module in quantized_modules(tiny_bert):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0, name


def test_state_dict_loads_into_the_float_model(tiny_bert, tiny_config):
    from xtc.models import random_model

    quantize_(tiny_bert, QuantConfig(weight_bits=1))
    fresh = random_model(tiny_config, seed=1)
    fresh.load_state_dict(tiny_bert.state_dict())  # same keys: checkpoints stay plain HF state dicts


def test_model_without_quantizable_modules_is_an_error():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="no quantizable module found in Sequential: expected BERT module names"):
        quantize_(model, QuantConfig(weight_bits=1))


def test_quantizing_twice_is_an_error(tiny_bert):
    quantize_(tiny_bert, QuantConfig(weight_bits=1))
    with pytest.raises(ValueError, match="model is already quantized"):
        quantize_(tiny_bert, QuantConfig(weight_bits=1))


def test_fp_recipe_is_an_error(tiny_bert):
    with pytest.raises(ValueError, match="quant.weight_bits is null"):
        quantize_(tiny_bert, QuantConfig(weight_bits=None))


def test_works_on_a_bare_encoder_with_bert_names(tiny_config):
    from transformers import BertModel

    encoder = BertModel(tiny_config)
    swapped = quantize_(encoder, QuantConfig(weight_bits=2))
    assert "encoder.layer.0.attention.self.query" in swapped
    assert isinstance(encoder.encoder.layer[1].output.dense, QuantLinear)
