"""The packed checkpoint: exact logits after load, the format and its errors."""

from __future__ import annotations

import dataclasses
import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from xtc.checkpoint import mark_quantized, quant_config_of
from xtc.config import QuantConfig, Recipe
from xtc.packed import load as load_packed
from xtc.packed.export import export_packed
from xtc.packed.format import FORMAT_VERSION, read_packed
from xtc.quant import QuantEmbedding, QuantLinear, quantize_, quantized_modules
from xtc.quant.packed import PackedEmbedding, PackedLinear
from xtc.reduce import build_student


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny forwards are ~100x slower with 2 contending threads on a loaded 2-core CI box; numbers are unchanged."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def _round_trip(model, batch, path: Path, **kwargs):
    info = export_packed(model, path, **kwargs)
    loaded = load_packed(path)
    assert torch.equal(_logits(loaded, batch), _logits(model, batch))
    return info, loaded


def _packed_path(tmp_path: Path) -> Path:
    return tmp_path / "packed" / "model.safetensors"


# ---------------------------------------------------------------------------------------------- exactness
CASES = {
    "W1A8": QuantConfig(weight_bits=1),
    "W2A8": QuantConfig(weight_bits=2),
    "W4A8": QuantConfig(weight_bits=4),
    "W8A8-asymmetric": QuantConfig(weight_bits=8, weight_symmetric=False),
    "W3-asymmetric-no-act": QuantConfig(weight_bits=3, weight_symmetric=False, act_bits=None),
    "mixed-1-2-2": QuantConfig(weight_bits=1, attn_out_bits=2, ffn_out_bits=2),
    "groups-and-tensor-embedding": QuantConfig(weight_bits=2, weight_granularity="groups:4",
                                               embedding_granularity="tensor"),
    "qkv-only": QuantConfig(weight_bits=1, groups=("qkv",)),
}


@pytest.mark.parametrize("cfg", CASES.values(), ids=CASES.keys())
def test_loaded_logits_equal_the_fake_quant_model_exactly(cfg, tiny_bert, tiny_batch, tmp_path):
    quantize_(tiny_bert, cfg)
    mark_quantized(tiny_bert, cfg)
    info, loaded = _round_trip(tiny_bert, tiny_batch, _packed_path(tmp_path))
    assert not loaded.training
    assert set(loaded.state_dict()) == set(tiny_bert.state_dict())  # HF keys, nothing extra
    kinds = {type(m) for n, m in loaded.named_modules() if n in dict(quantized_modules(tiny_bert))}
    assert kinds <= {PackedLinear, PackedEmbedding}
    assert info["header"]["quant_config"] == dataclasses.asdict(cfg)  # as mark_quantized recorded it
    assert quant_config_of(loaded) == cfg  # read back from the header


def test_static_activation_range_is_kept(tiny_bert, tiny_batch, tmp_path):
    quantize_(tiny_bert, QuantConfig(weight_bits=1, act_range="static", act_granularity="tensor"))
    tiny_bert.train()
    with torch.no_grad():
        tiny_bert(**tiny_batch)  # calibrate the EMA ranges
    tiny_bert.eval()
    _, loaded = _round_trip(tiny_bert, tiny_batch, _packed_path(tmp_path))
    query = "bert.encoder.layer.0.attention.self.query.act_quantizer"
    assert torch.equal(loaded.get_submodule(query).min_max, tiny_bert.get_submodule(query).min_max)
    assert bool(loaded.get_submodule(query).calibrated)


def test_layer_reduced_student(tiny_bert, tiny_batch, tmp_path):
    student = build_student(tiny_bert, [1, 3])
    quantize_(student, QuantConfig(weight_bits=1))
    _, loaded = _round_trip(student, tiny_batch, _packed_path(tmp_path))
    assert loaded.config.num_hidden_layers == 2 and loaded.config.xtc_teacher_layer == [1, 3]


def test_exact_zero_weights(tiny_bert, tiny_batch, tmp_path):
    """The zero padding row of the word embeddings (looked up by the batch) and a half-pruned linear."""
    assert tiny_batch["input_ids"].eq(0).any() and tiny_bert.bert.embeddings.word_embeddings.weight[0].eq(0).all()
    with torch.no_grad():
        tiny_bert.bert.encoder.layer[0].intermediate.dense.weight[:, ::2] = 0
    quantize_(tiny_bert, QuantConfig(weight_bits=1))
    info, _ = _round_trip(tiny_bert, tiny_batch, _packed_path(tmp_path))
    modules = info["header"]["modules"]
    assert modules["bert.embeddings.word_embeddings"]["encoding"] == "sign+zeros"
    assert modules["bert.embeddings.word_embeddings"]["zeros"] == 32
    assert modules["bert.encoder.layer.0.intermediate.dense"]["encoding"] == "ternary"
    assert modules["bert.encoder.layer.0.intermediate.dense"]["stored_bits"] == 2
    assert modules["bert.encoder.layer.1.intermediate.dense"]["encoding"] == "sign"


def test_trainable_load_gives_fake_quant_modules_that_train(tiny_bert, tiny_batch, tmp_path):
    quantize_(tiny_bert, QuantConfig(weight_bits=1))
    export_packed(tiny_bert, _packed_path(tmp_path))
    loaded = load_packed(_packed_path(tmp_path), trainable=True)
    assert isinstance(loaded.bert.encoder.layer[0].attention.self.query, QuantLinear)
    # Re-quantizing alpha * sign(w) recomputes alpha with float rounding: close, not bit-exact.
    assert torch.allclose(_logits(loaded, tiny_batch), _logits(tiny_bert, tiny_batch), atol=1e-5)
    loaded.train()
    loaded(**tiny_batch).logits.sum().backward()
    assert loaded.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    export_packed(loaded, tmp_path / "again.safetensors")  # and it exports again


def test_header_records_format_bits_granularity_shapes_and_recipe(tiny_bert, tmp_path):
    cfg = QuantConfig(weight_bits=1, attn_out_bits=2, ffn_out_bits=2)
    quantize_(tiny_bert, cfg)
    recipe = Recipe(quant=cfg)
    export_packed(tiny_bert, _packed_path(tmp_path), recipe=recipe)
    header, tensors = read_packed(_packed_path(tmp_path))
    assert header["format"] == "xtc.packed" and header["format_version"] == FORMAT_VERSION
    assert header["recipe"] == json.loads(json.dumps(recipe.to_dict())) and header["model_config"]["hidden_size"] == 32
    query = header["modules"]["bert.encoder.layer.0.attention.self.query"]
    assert {k: query[k] for k in ("kind", "group", "shape", "bits", "granularity", "encoding", "scales")} == {
        "kind": "linear", "group": "qkv", "shape": [32, 32], "bits": 1, "granularity": "tensor", "encoding": "sign",
        "scales": 1}
    assert query["act"] == {"bits": 8, "range": "dynamic", "granularity": "token", "momentum": 0.95}
    assert header["modules"]["bert.encoder.layer.0.output.dense"]["bits"] == 2
    assert header["modules"]["bert.embeddings.word_embeddings"]["scales"] == 128  # one per token
    assert tensors["bert.encoder.layer.0.attention.self.query.weight.codes"].dtype == torch.uint8
    assert tensors["bert.encoder.layer.0.attention.self.query.weight.codes"].numel() == 32 * 32 // 8
    assert tensors["bert.encoder.layer.0.output.dense.weight.codes"].numel() == 32 * 64 // 4
    assert tensors["bert.encoder.layer.0.attention.self.query.weight.scale"].dtype == torch.float32
    assert "bert.encoder.layer.0.attention.self.query.weight" not in tensors
    assert "bert.encoder.layer.0.attention.self.query.bias" in tensors  # the FP remainder, as is
    assert set(header["tensors"]) == set(tensors)


def test_file_is_plain_safetensors_and_loading_never_unpickles(tiny_bert, tiny_batch, tmp_path, monkeypatch):
    quantize_(tiny_bert, QuantConfig(weight_bits=1))
    path = _packed_path(tmp_path)
    export_packed(tiny_bert, path)
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])  # safetensors: u64 header length, then JSON
    assert json.loads(raw[8 : 8 + length])["__metadata__"]["xtc"].startswith("{")
    assert not list(path.parent.glob(".*tmp"))  # the atomic write left no temp file

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    assert torch.equal(_logits(load_packed(path), tiny_batch), _logits(tiny_bert, tiny_batch))


def test_float_model_is_refused_unless_asked_for(tiny_bert, tiny_batch, tmp_path):
    with pytest.raises(ValueError, match="has no quantized module, so there is nothing to pack; quantize it"):
        export_packed(tiny_bert, _packed_path(tmp_path))
    info, _ = _round_trip(tiny_bert, tiny_batch, _packed_path(tmp_path), allow_float=True)
    assert info["header"]["modules"] == {} and info["header"]["quant_config"] is None


def test_packed_model_cannot_be_exported_again(tiny_bert, tmp_path):
    quantize_(tiny_bert, QuantConfig(weight_bits=1))
    export_packed(tiny_bert, _packed_path(tmp_path))
    with pytest.raises(ValueError, match="was loaded by xtc.packed.load .* trainable=True"):
        export_packed(load_packed(_packed_path(tmp_path)), tmp_path / "again.safetensors")


def test_recipe_that_contradicts_the_weights_is_refused(tiny_bert, tmp_path):
    quantize_(tiny_bert, QuantConfig(weight_bits=1))
    match = "recipe quantizes group 'word_embeddings' at 2 bits, but module .* holds 1-bit"
    with pytest.raises(ValueError, match=match):
        export_packed(tiny_bert, _packed_path(tmp_path), recipe=Recipe(quant=QuantConfig(weight_bits=2)))


# ---------------------------------------------------------------------------------------------- load errors
def _rewrite_header(path: Path, edit) -> None:
    """Edit the xtc header inside a packed file, keeping the tensor data as is."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    framing = json.loads(raw[8 : 8 + length])
    header = json.loads(framing["__metadata__"]["xtc"])
    edit(header)
    framing["__metadata__"]["xtc"] = json.dumps(header)
    text = json.dumps(framing).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length :])


@pytest.fixture
def packed_file(tiny_bert, tmp_path) -> Path:
    quantize_(tiny_bert, QuantConfig(weight_bits=1))
    path = _packed_path(tmp_path)
    export_packed(tiny_bert, path)
    return path


def test_header_rewrite_helper_keeps_a_valid_file(packed_file, tiny_batch):
    _rewrite_header(packed_file, lambda h: None)
    load_packed(packed_file)


def test_wrong_format_version_is_refused(packed_file):
    _rewrite_header(packed_file, lambda h: h.update(format_version=99))
    with pytest.raises(ValueError, match=r"has format_version 99, but this xtc reads format_version 1; export it"):
        load_packed(packed_file)


@pytest.mark.parametrize("keep", [-100, 5, 20])
def test_truncated_file_is_refused(packed_file, keep):
    raw = packed_file.read_bytes()
    packed_file.write_bytes(raw[:keep])
    with pytest.raises(ValueError, match=r"truncated or corrupt packed checkpoint .*model.safetensors: "):
        load_packed(packed_file)


def test_trailing_bytes_are_refused(packed_file):
    packed_file.write_bytes(packed_file.read_bytes() + b"\0" * 4)
    with pytest.raises(ValueError, match="the header describes .* bytes but the file has"):
        load_packed(packed_file)


def test_mismatched_tensor_shape_in_header_is_refused(packed_file):
    key = "bert.encoder.layer.0.attention.self.query.bias"
    _rewrite_header(packed_file, lambda h: h["tensors"][key].update(shape=[16]))
    with pytest.raises(ValueError, match=rf"tensor '{key}' is float32 \[32\] in the file but float32 \[16\] in the"):
        load_packed(packed_file)


def test_mismatched_module_shape_is_refused(packed_file):
    name = "bert.encoder.layer.1.intermediate.dense"
    _rewrite_header(packed_file, lambda h: h["modules"][name].update(shape=[64, 16]))
    with pytest.raises(ValueError, match=rf"module '{name}' of shape \[64, 16\] at 1 stored bits needs codes of "
                                         r"shape \[128\], but the file holds \[256\]"):
        load_packed(packed_file)


def test_module_missing_from_the_model_is_refused(packed_file):
    _rewrite_header(packed_file, lambda h: h["model_config"].update(num_hidden_layers=1))
    with pytest.raises(ValueError, match=r"its config asks for 1 layers but the file holds 4"):
        load_packed(packed_file)


def test_config_that_does_not_fit_the_tensors_is_refused(packed_file):
    _rewrite_header(packed_file, lambda h: h["model_config"].update(max_position_embeddings=32))
    with pytest.raises(ValueError, match=r"tensor 'bert.embeddings.position_embeddings.weight' is \[64, 32\] in the "
                                         r"file but the model its config describes needs \[32, 32\]"):
        load_packed(packed_file)
    _rewrite_header(packed_file, lambda h: h["model_config"].update(max_position_embeddings=64, hidden_size=48))
    with pytest.raises(ValueError, match=r"module 'bert.embeddings.word_embeddings' is \[128, 32\] in the header"):
        load_packed(packed_file)


def test_plain_safetensors_file_is_not_a_packed_checkpoint(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="is a safetensors file but not an xtc packed checkpoint"):
        load_packed(path)


def test_packed_modules_run_the_fake_quant_forward(tiny_bert):
    """PackedLinear/PackedEmbedding are QuantLinear/QuantEmbedding with an identity weight rule: one forward."""
    assert PackedLinear.forward is QuantLinear.forward and PackedEmbedding.forward is QuantEmbedding.forward


def test_quant_config_comes_from_the_record_or_the_recipe_never_from_the_modules(tiny_bert, tmp_path):
    cfg = QuantConfig(weight_bits=2)
    quantize_(tiny_bert, cfg)
    assert export_packed(tiny_bert, tmp_path / "a.safetensors")["header"]["quant_config"] is None  # nothing recorded
    recipe = Recipe(quant=cfg)
    assert export_packed(tiny_bert, tmp_path / "b.safetensors", recipe)["header"]["quant_config"] == \
        dataclasses.asdict(cfg)
    mark_quantized(tiny_bert, QuantConfig(weight_bits=1))  # a record that contradicts the 2-bit modules
    with pytest.raises(ValueError, match=r"recorded quantization \(config.xtc_quant\) quantizes group 'word_embeddings' "
                                         r"at 1 bits, .* holds 2-bit weights; record the config it was quantized with"):
        export_packed(tiny_bert, tmp_path / "c.safetensors")


def test_nan_scales_are_refused(packed_file):
    header, tensors = read_packed(packed_file)
    key = "bert.encoder.layer.1.attention.self.query.weight.scale"
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, str(packed_file), metadata={"xtc": json.dumps(header)})
    with pytest.raises(ValueError, match=r"module 'bert.encoder.layer.1.attention.self.query' has 1 NaN or infinite "
                                         r"scale value\(s\), so its weights are not numbers; export it again"):
        load_packed(packed_file)


def test_a_diverged_model_is_not_exported(tiny_bert, tmp_path):
    quantize_(tiny_bert, QuantConfig(weight_bits=1))
    with torch.no_grad():
        tiny_bert.bert.encoder.layer[0].intermediate.dense.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="'bert.encoder.layer.0.intermediate.dense' has non-finite weights"):
        export_packed(tiny_bert, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
