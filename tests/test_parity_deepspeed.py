"""Parity with the original XTC implementation, DeepSpeed 0.19.6's ``deepspeed.compression``.

Runs under ``make test`` (which installs the ``peer`` extra and sets XTC_REQUIRE_PEER=1, so a missing DeepSpeed
fails instead of skipping). The math is the same operation for operation, so the quantizers are compared with
exact equality and the whole-model logits must agree to 1e-5 (they agree exactly on CPU today).
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

if os.environ.get("XTC_REQUIRE_PEER") == "1":
    import deepspeed.compression.utils  # noqa: F401  (fail loudly: make test promises these tests run)
ds_utils = pytest.importorskip("deepspeed.compression.utils", reason="install the peer extra: make test does")
from deepspeed.compression.compress import init_compression  # noqa: E402
from deepspeed.compression.config import get_compression_config  # noqa: E402
from deepspeed.compression.scheduler import compression_scheduler  # noqa: E402

from bench.deepspeed_step import xtc_ds_config  # noqa: E402  (the config the benchmark compares against too)
from xtc.config import QuantConfig  # noqa: E402
from xtc.quant import quantize_  # noqa: E402
from xtc.quant.primitives import fake_quantize_symmetric, fake_quantize_weight  # noqa: E402

SHAPES = [(768, 768), (3072, 768), (64, 33), (7,), (2, 3, 5, 4)]


def _groups(shape):
    return sorted({1, shape[0]})


@pytest.mark.parametrize("shape", SHAPES)
def test_binary_equals_deepspeed(shape):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    for g in _groups(shape):
        assert torch.equal(fake_quantize_weight(w, 1, f"groups:{g}"), ds_utils.BinaryQuantizer.apply(w, 1, None, None, g))


@pytest.mark.parametrize("shape", SHAPES)
def test_ternary_equals_deepspeed(shape):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    for g in _groups(shape):
        assert torch.equal(fake_quantize_weight(w, 2, f"groups:{g}"), ds_utils.TernaryQuantizer.apply(w, 2, None, None, g))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bits", [4, 8])
def test_symmetric_equals_deepspeed(shape, bits):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(3)) * 5
    for g in _groups(shape):
        ours = fake_quantize_weight(w, bits, f"groups:{g}")
        assert torch.equal(ours, ds_utils.SymQuantizer.apply(w, bits, None, None, g))


@pytest.mark.parametrize("shape", [(32, 128, 768), (4, 9, 16), (10, 3)])
def test_per_token_activation_equals_deepspeed_dynamic(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(4)) * 3
    tokens = x.numel() // x.shape[-1]  # LinearLayer_Compress's num_groups for dynamic activations
    assert torch.equal(fake_quantize_symmetric(x, 8, "token"), ds_utils.SymQuantizer.apply(x, 8, None, None, tokens))


@pytest.mark.parametrize("weight_bits", [1, 2])
def test_whole_model_logits_and_gradients_equal_deepspeed(tiny_bert, tiny_batch, weight_bits):
    # A random-init HF BERT has an all-zero [PAD] embedding row, on which DeepSpeed's ternary rule divides 0/0
    # (see test_all_zero_group_is_nan_in_deepspeed_and_zero_in_xtc); pretrained BERT's [PAD] row is not zero.
    with torch.no_grad():
        tiny_bert.bert.embeddings.word_embeddings.weight[0].normal_(generator=torch.Generator().manual_seed(5))
    fp_logits = tiny_bert(**tiny_batch).logits
    ds_config = xtc_ds_config(weight_bits)
    ds_model = init_compression(copy.deepcopy(tiny_bert), ds_config)
    # Before its scheduler step DeepSpeed's model is still plain FP32: the comparison below would prove nothing.
    assert torch.equal(ds_model(**tiny_batch).logits, fp_logits)
    compression_scheduler(ds_model, get_compression_config(ds_config)).step()
    ds_model.eval()
    ds_logits = ds_model(**tiny_batch).logits
    assert (ds_logits - fp_logits).abs().max() > 1e-3  # now DeepSpeed really quantizes

    ours = copy.deepcopy(tiny_bert)
    quantize_(ours, QuantConfig(weight_bits=weight_bits, act_bits=8))
    ours.eval()
    logits = ours(**tiny_batch).logits
    assert (logits - ds_logits).abs().max() <= 1e-5

    labels = torch.tensor([0, 1, 1])
    ours(**tiny_batch, labels=labels).loss.backward()
    ds_model(**tiny_batch, labels=labels).loss.backward()
    ours_params = dict(ours.named_parameters())
    for name, p in ds_model.named_parameters():
        assert torch.allclose(ours_params[name].grad, p.grad, atol=1e-6, rtol=1e-5), name


def test_all_zero_group_is_nan_in_deepspeed_and_zero_in_xtc():
    w = torch.randn(4, 8, generator=torch.Generator().manual_seed(6))
    w[2] = 0.0
    theirs = ds_utils.TernaryQuantizer.apply(w, 2, None, None, 4)
    ours = fake_quantize_weight(w, 2, "row")
    assert theirs[2].isnan().all() and torch.equal(ours[2], torch.zeros(8))
    assert torch.equal(ours[[0, 1, 3]], theirs[[0, 1, 3]])
