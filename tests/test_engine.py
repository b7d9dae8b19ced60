"""The integer CPU engine (xtc.packed.engine, xtc.quant.int8): exact integer parts, bounded logits, int8 at most in memory."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from guards import COMPILE, skip_unless

from xtc.config import ENGINES, QuantConfig
from xtc.packed import load as load_packed
from xtc.packed.engine import EngineBertLayer, logit_bound
from xtc.packed.export import export_packed
from xtc.quant.packing import code_mapping, pack_bits, pack_codes
from xtc.quant import cpu_kernels
from xtc.quant import int8 as int8_module
from xtc.quant import quantize_
from xtc.quant.int8 import (
    Int8Linear,
    PackedRowEmbedding,
    PackedWeight,
    compile_status,
    enable_compiled,
    engine_status,
    kernels,
    quantize_tokens,
    reset_kernels,
    select_matmul,
)
from xtc.quant.packed import PackedEmbedding, PackedLinear
from xtc.quant.primitives import dequantize, quantize_symmetric, quantize_weight


@pytest.fixture(autouse=True)
def _eager_kernels(monkeypatch):
    """Eager kernels by default (compiling costs ~a minute on a cold 2-core box); test_compiled_* compile."""
    monkeypatch.setenv(int8_module.COMPILE_ENV, "0")
    reset_kernels()
    yield
    reset_kernels()


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def _pair(model, cfg, batch, tmp_path, calibrate=False):
    quantize_(model, cfg)
    if calibrate:
        model.train()
        model(**batch)
        model.eval()
    path = tmp_path / "model.safetensors"
    export_packed(model, path)
    return load_packed(path), load_packed(path, engine="int8")


def _check_bounded(fake, engine, batch) -> None:
    want, got = _logits(fake, batch), _logits(engine, batch)
    bound = logit_bound(want)
    assert (got - want).abs().max() <= bound
    top2 = want.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * bound
    assert torch.equal(got.argmax(-1)[clear], want.argmax(-1)[clear])


INTEGER = {
    "W1A8": QuantConfig(weight_bits=1),
    "W2A8-ternary": QuantConfig(weight_bits=2),
    "W4A8": QuantConfig(weight_bits=4),
    "W8A8": QuantConfig(weight_bits=8),
    "mixed-1-2-2": QuantConfig(weight_bits=1, attn_out_bits=2, ffn_out_bits=2),
    "row-scales": QuantConfig(weight_bits=2, weight_granularity="row", embedding_granularity="tensor"),
    "whole-row-groups": QuantConfig(weight_bits=1, weight_granularity="groups:4"),
}


@pytest.mark.parametrize("cfg", INTEGER.values(), ids=INTEGER.keys())
def test_engine_logits_are_within_the_bound_of_the_fake_quant_model(cfg, tiny_bert, tiny_batch, tmp_path):
    fake, engine = _pair(tiny_bert, cfg, tiny_batch, tmp_path)
    _check_bounded(fake, engine, tiny_batch)
    layers = engine.bert.encoder.layer
    assert all(isinstance(layer, EngineBertLayer) for layer in layers)  # the integer, fused path really ran
    assert isinstance(engine.bert.embeddings.word_embeddings, PackedRowEmbedding)
    assert not any(isinstance(m, (PackedLinear, PackedEmbedding, torch.nn.Linear)) for m in layers.modules())


def test_engine_differs_from_the_float_model_by_much_more_than_the_bound(tiny_bert, tiny_batch, tmp_path):
    """The bound is tight enough to tell the quantized model from its FP32 original."""
    fp32 = _logits(tiny_bert, tiny_batch)
    fake, engine = _pair(tiny_bert, QuantConfig(weight_bits=1), tiny_batch, tmp_path)
    assert (_logits(engine, tiny_batch) - fp32).abs().max() > 10 * logit_bound(_logits(fake, tiny_batch))


def test_weights_are_int8_at_most_in_memory(tiny_bert, tiny_batch, tmp_path):
    _, engine = _pair(tiny_bert, QuantConfig(weight_bits=1), tiny_batch, tmp_path)
    linears = [m for m in engine.modules() if isinstance(m, Int8Linear)]
    assert linears and all(m.codes is None for m in linears)  # still packed: unpacked on first use
    _logits(engine, tiny_batch)
    assert all(m.codes.dtype == torch.int8 for m in linears)
    table = engine.bert.embeddings.word_embeddings
    assert table.data.dtype == torch.uint8 and table.data.numel() == table.num_embeddings * table.embedding_dim // 8
    big_float = [n for n, t in engine.state_dict().items() if t.is_floating_point() and t.numel() >= 32 * 32]
    assert all("position_embeddings" in n or "pooler" in n or "classifier" in n for n in big_float), big_float


@pytest.mark.parametrize("cfg", INTEGER.values(), ids=INTEGER.keys())
def test_packed_weights_give_the_int8_engines_logits_exactly(cfg, tiny_bert, tiny_batch, tmp_path):
    """engine="int8-packed" keeps 1/2/4/8-bit codes packed and unpacks each layer's per forward: the same integer
    products, so exactly the same logits as the int8 engine, with no int8 weight kept after the forward."""
    _, engine = _pair(tiny_bert, cfg, tiny_batch, tmp_path)
    packed = load_packed(tmp_path / "model.safetensors", engine="int8-packed")
    for _ in range(2):  # the second forward unpacks again: nothing is cached
        assert torch.equal(_logits(packed, tiny_batch), _logits(engine, tiny_batch))
    linears = [m for m in packed.modules() if isinstance(m, Int8Linear)]
    assert linears and all(m.codes is None and isinstance(m.packed, PackedWeight) for m in linears)
    assert not any(t.dtype == torch.int8 for t in packed.state_dict().values())
    stored_bytes = sum(m.packed.data.numel() for m in linears)
    weights = sum(m.in_features * m.out_features for m in linears)
    assert stored_bytes * 8 <= weights * max(cfg.weight_bits, cfg.attn_out_bits or 0, cfg.ffn_out_bits or 0, 2)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_packed_weight_unpacks_to_the_exact_int8_codes(bits):
    g = torch.Generator().manual_seed(bits)
    weights = [torch.randn(16, 24, generator=g) for _ in range(3)]
    weights[1][2, 5] = weights[2][0, :3] = 0  # exact zeros: sign+zeros for binary
    parts, want = [], []
    for w in weights:
        codes, _ = quantize_weight(w, bits, "tensor")
        stored = pack_codes(codes, bits)
        mul, sub = code_mapping(stored.encoding, stored.stored_bits)
        parts.append(PackedWeight(stored.data, stored.stored_bits, mul, sub, 16, 24, stored.zeros))
        want.append(codes.t().to(torch.int8))  # (in, out)
        assert torch.equal(parts[-1].weight_codes(), want[-1])
    fused = PackedWeight.cat(parts)
    assert fused is not None and torch.equal(fused.weight_codes(), torch.cat(want, dim=1))


def test_every_engine_loads(tmp_path, tiny_bert, tiny_batch):
    """The engines the CLI offers (config.ENGINES) are exactly those xtc.packed.load serves."""
    quantize_(tiny_bert, QuantConfig(weight_bits=1, act_bits=8))
    export_packed(tiny_bert, tmp_path / "m.safetensors")
    for engine in ENGINES:
        assert load_packed(tmp_path / "m.safetensors", engine=engine)(**tiny_batch).logits.shape[0] == len(tiny_batch["input_ids"])


@pytest.mark.parametrize("kernels_mode", ["eager", "compiled"])
def test_static_activation_range_runs_on_integers(tiny_bert, tiny_batch, tmp_path, monkeypatch, kernels_mode):
    """One activation scale per tensor: the rescale kernels repeat it per row (the C++ ones read one per row)."""
    if kernels_mode == "compiled":
        monkeypatch.setenv(int8_module.COMPILE_ENV, "1")
        enable_compiled()
        skip_unless(compile_status()["mode"] == "compiled",
                    f"the C++ kernels are unavailable here: {compile_status()['reason']}", COMPILE)
    cfg = QuantConfig(weight_bits=1, act_range="static", act_granularity="tensor")
    fake, engine = _pair(tiny_bert, cfg, tiny_batch, tmp_path, calibrate=True)
    query = engine.bert.encoder.layer[0].attention.self.query
    assert isinstance(query, Int8Linear) and query.act_max_abs is not None
    _check_bounded(fake, engine, tiny_batch)


FLOAT_PATH = {
    "asymmetric": QuantConfig(weight_bits=8, weight_symmetric=False),
    "no-act": QuantConfig(weight_bits=3, weight_symmetric=False, act_bits=None),
    "sub-row-groups": QuantConfig(weight_bits=2, weight_granularity="group:8"),
}


@pytest.mark.parametrize("cfg", FLOAT_PATH.values(), ids=FLOAT_PATH.keys())
def test_modules_the_integer_path_cannot_run_keep_the_exact_float_path(cfg, tiny_bert, tiny_batch, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="xtc.packed.engine"):
        fake, engine = _pair(tiny_bert, cfg, tiny_batch, tmp_path)
    assert "keeps the float path" in caplog.text
    assert isinstance(engine.bert.encoder.layer[0].intermediate.dense, PackedLinear)
    if cfg.act_bits is None or not cfg.weight_symmetric:
        assert torch.equal(_logits(engine, tiny_batch), _logits(fake, tiny_batch))
    else:
        _check_bounded(fake, engine, tiny_batch)


# ---------------------------------------------------------------------------------------------- exact parts
def test_activation_codes_equal_the_training_quantizers():
    x = torch.randn(64, 48) * torch.logspace(-3, 2, 64).unsqueeze(1)
    x[3] = 0  # an all-zero token: scale 1, codes 0
    codes, scale = quantize_tokens(x, 8)
    want_codes, want_scale = quantize_symmetric(x, 8, "token")
    assert codes.dtype == torch.int8 and torch.equal(codes.float(), want_codes) and torch.equal(scale, want_scale)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_int8_linear_integer_products_are_exact(bits):
    g = torch.Generator().manual_seed(0)
    w, x, b = torch.randn(24, 40, generator=g), torch.randn(5, 7, 40, generator=g), torch.randn(24, generator=g)
    w_codes, w_scale = quantize_weight(w, bits, "row")
    linear = Int8Linear(w_codes.t().to(torch.int8).contiguous(), w_scale, b, 8)
    x_codes, x_scale = quantize_symmetric(x.reshape(-1, 40), 8, "token")
    exact = (x_codes.double() @ w_codes.double().t()) * x_scale.double() * w_scale.double().t() + b.double()
    got = linear(x)
    assert got.shape == (5, 7, 24)
    assert torch.allclose(got.reshape(-1, 24).double(), exact, rtol=1e-6, atol=1e-6)
    assert torch.equal(linear.matmul(x_codes.to(torch.int8)), (x_codes @ w_codes.t()).to(torch.int32))


@pytest.mark.parametrize("bits", [1, 2, 8])
def test_embedding_rows_gathered_from_packed_bytes_equal_the_dequantized_table(bits):
    g = torch.Generator().manual_seed(0)
    table = torch.randn(50, 16, generator=g)
    table[0] = 0  # a padding row: exact zeros (sign+zeros for binary)
    codes, scale = quantize_weight(table, bits, "row")
    packed = pack_codes(codes, bits)
    embedding = PackedRowEmbedding(packed.data, scale, packed.encoding, packed.stored_bits, 50, 16, packed.zeros)
    ids = torch.tensor([[0, 3, 49, 0], [7, 7, 1, 2]])
    assert torch.equal(embedding(ids), dequantize(codes, scale, "row")[ids])


def test_packed_row_embedding_rejects_rows_that_do_not_start_on_a_byte():
    with pytest.raises(ValueError, match="do not start on a byte"):
        PackedRowEmbedding(torch.zeros(5, dtype=torch.uint8), torch.ones(10, 1), "sign", 1, 10, 4)


@pytest.mark.parametrize("kernels_mode", ["eager", "compiled"])
@pytest.mark.parametrize("engine", ["int8", "int8-packed"])
def test_chunked_layers_give_the_unchunked_logits_on_a_padded_batch(tiny_bert, tiny_config, tmp_path, monkeypatch,
                                                                    engine, kernels_mode):
    """Every evaluation at batch 128 takes the chunked path (batch x seq > CHUNK_TOKENS): the same numbers, exactly
    (the C++ kernels write each chunk's rows of the layer output in place)."""
    import xtc.packed.engine as engine_module

    if kernels_mode == "compiled":
        monkeypatch.setenv(int8_module.COMPILE_ENV, "1")
        enable_compiled()
        skip_unless(compile_status()["mode"] == "compiled",
                    f"the C++ kernels are unavailable here: {compile_status()['reason']}", COMPILE)

    quantize_(tiny_bert, QuantConfig(weight_bits=1))
    export_packed(tiny_bert, tmp_path / "m.safetensors")
    model = load_packed(tmp_path / "m.safetensors", engine=engine)
    g = torch.Generator().manual_seed(3)
    batch, seq = 40, 16  # 640 tokens: chunks of 32 and 8 sequences
    input_ids = torch.randint(5, tiny_config.vocab_size, (batch, seq), generator=g)
    lengths = torch.randint(3, seq + 1, (batch,), generator=g)
    attention_mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()  # (B, T), padded rows
    input_ids = input_ids * attention_mask
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    calls = []
    forward = EngineBertLayer._forward
    monkeypatch.setattr(EngineBertLayer, "_forward", lambda self, h, *a, **k: calls.append(h.shape[0])
                        or forward(self, h, *a, **k))
    chunked = _logits(model, inputs)
    layers = len(model.bert.encoder.layer)
    assert calls == [32, 8] * layers  # the chunked path ran
    calls.clear()
    monkeypatch.setattr(engine_module, "CHUNK_TOKENS", batch * seq)
    whole = _logits(model, inputs)
    assert calls == [batch] * layers
    assert torch.equal(chunked, whole)


# ---------------------------------------------------------------------------------------------- matmul kernels
def _onednn_exact() -> bool:
    """Whether oneDNN's int8 linear sums exactly here: with AMX or VNNI (without AMX, on a slow reference path that
    is fine at test sizes); not without VNNI, where it saturates like _int_mm and forcing it is refused."""
    try:
        int8_module._probe_onednn()
    except RuntimeError:
        return False
    return True


def _use_matmul(monkeypatch, kernel: str) -> bool:
    """Force the kernel; False (after checking the refusal) where oneDNN cannot be used exactly on this CPU."""
    monkeypatch.setenv(int8_module.MATMUL_ENV, kernel)
    reset_kernels()
    if kernel == "onednn" and not _onednn_exact():
        with pytest.raises(RuntimeError, match="XTC_ENGINE_MATMUL=onednn, but oneDNN's int8 linear fails here"):
            select_matmul()
        return False
    assert select_matmul()["matmul"] == kernel
    return True


@pytest.mark.parametrize("bits", [1, 2, 8])
def test_both_matmul_kernels_give_the_exact_products(bits, monkeypatch):
    """oneDNN's prepacked int8 linear (forced here; on CPUs without AMX it takes its slow reference path, fine at
    this size) returns the exact sums as float32: equal to _int_mm's int32 converted, and to float64 arithmetic.
    8-bit weights: full-range codes, which _int_mm saturates without VNNI (then split into two products)."""
    g = torch.Generator().manual_seed(0)
    w, x, b = torch.randn(24, 40, generator=g), torch.randn(35, 40, generator=g), torch.randn(24, generator=g)
    w_codes, w_scale = quantize_weight(w, bits, "row")
    x_codes, x_scale = quantize_symmetric(x, 8, "token")
    exact = x_codes.double() @ w_codes.double().t()  # (35, 24)
    got = {}
    for kernel in ("int_mm", "onednn"):
        if not _use_matmul(monkeypatch, kernel):
            continue
        linear = Int8Linear(w_codes.t().to(torch.int8).contiguous(), w_scale, b, 8)
        product = linear.matmul(x_codes.to(torch.int8))
        assert linear.kernel == kernel and product.dtype == (torch.int32 if kernel == "int_mm" else torch.float32)
        assert torch.equal(product.double(), exact)
        got[kernel] = linear(x)
    assert "onednn" not in got or torch.equal(got["onednn"], got["int_mm"])


def test_int_mm_made_exact_where_it_saturates(monkeypatch):
    """Full-range codes whose pair sums overflow int16 (what a CPU without VNNI gets wrong): the two-product form is
    exact on every CPU, and a linear takes it when the probe says _int_mm saturates and its codes exceed +-64."""
    x = torch.full((20, 64), 127, dtype=torch.int8)
    w = torch.full((64, 8), 127, dtype=torch.int8)
    w[:, 1::2] = -128
    assert torch.equal(int8_module.int_mm_exact(x, w).long(), x.long() @ w.long())
    _use_matmul(monkeypatch, "int_mm")
    monkeypatch.setitem(int8_module._matmul_status, "int_mm_range", "saturates")
    wide = Int8Linear(w, torch.ones(8), None, 8)
    narrow = Int8Linear((w >> 2).contiguous(), torch.ones(8), None, 8)  # codes within +-32: one product
    assert torch.equal(wide.matmul(x).long(), x.long() @ w.long()) and wide.split is True
    assert torch.equal(narrow.matmul(x).long(), x.long() @ (w >> 2).long()) and narrow.split is False


def test_the_saturation_probe_sees_a_cpu_without_vnni():
    """oneDNN capped at AVX2 (what a CPU without VNNI runs): the probe says _int_mm saturates, oneDNN is refused,
    and 8-bit weight products still come out exact."""
    import subprocess
    import sys

    code = ("import torch; from xtc.quant import int8; from xtc.quant.int8 import Int8Linear; s = int8.select_matmul();"
            "x = torch.full((20, 64), 127, dtype=torch.int8); w = torch.full((64, 8), 127, dtype=torch.int8);"
            "w[:, 1::2] = -128; raw = torch.equal(torch._int_mm(x, w).long(), x.long() @ w.long());"
            "out = Int8Linear(w, torch.ones(8), None, 8).matmul(x).long();"
            "print(s['matmul'], s['int_mm_range'].split(':')[0], raw, torch.equal(out, x.long() @ w.long()))")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", int8_module.MATMUL_ENV: "auto"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["int_mm", "saturates", "False", "True"]


@pytest.mark.parametrize("cfg", [INTEGER["W1A8"], INTEGER["W2A8-ternary"]], ids=["W1A8", "W2A8"])
def test_the_engine_gives_the_same_logits_on_either_matmul_kernel(cfg, monkeypatch, tiny_bert, tiny_batch, tmp_path):
    """The kernel choice (AMX or not) never changes a logit: bit for bit, fused layers and all."""
    quantize_(tiny_bert, cfg)
    path = tmp_path / "model.safetensors"
    export_packed(tiny_bert, path)
    logits = {}
    for kernel in ("int_mm", "onednn"):
        if not _use_matmul(monkeypatch, kernel):
            return  # oneDNN saturates here (no VNNI): refused, checked above
        engine = load_packed(path, engine="int8")
        logits[kernel] = _logits(engine, tiny_batch)
        linears = [m for m in engine.modules() if isinstance(m, Int8Linear)]
        assert linears and {m.kernel for m in linears} == {kernel}
    assert torch.equal(logits["onednn"], logits["int_mm"])
    _use_matmul(monkeypatch, "onednn")
    packed = load_packed(path, engine="int8-packed")  # kept packed: _int_mm whatever the process chose
    assert torch.equal(_logits(packed, tiny_batch), logits["int_mm"])
    kept_packed = [m for m in packed.modules() if isinstance(m, Int8Linear)]
    # on oneDNN where its prepacked layout is exactly the codes (re-packed in its order), else _int_mm
    assert all((m.kernel == "onednn") == (m.packed.blocked_key is not None) for m in kept_packed)


@pytest.mark.parametrize("bits", [1, 2])
def test_kept_packed_weights_unpack_into_onednns_prepacked_weight(bits, monkeypatch):
    """``int8-packed`` on oneDNN: a BERT-sized weight re-packed once in oneDNN's blocked order (same bits per
    weight) gives the exact products, through the prepacked weight of its role, after another weight of the same
    shape and another role used its own."""
    if not _use_matmul(monkeypatch, "onednn"):
        return
    g = torch.Generator().manual_seed(bits)
    encoding = "sign" if bits == 1 else "ternary"
    mul, sub = code_mapping(encoding, bits)
    linears, codes = [], []
    for role in ("a", "b"):
        w = torch.randint(-1, 2, (768, 256), generator=g, dtype=torch.int8)  # (out, in)
        if bits == 1:
            w[w == 0] = 1
        data = pack_bits(((w.int() + sub) // mul).to(torch.uint8), bits)
        linear = Int8Linear(PackedWeight(data, bits, mul, sub, 768, 256), torch.ones(768), None, 8)
        linear.role = role
        linears.append(linear)
        codes.append(w)
    x = torch.randint(-128, 128, (40, 256), generator=g, dtype=torch.int8)
    for _ in range(2):  # alternating uses: each role's prepacked weight holds its own codes
        for linear, w in zip(linears, codes, strict=True):
            assert torch.equal(linear.matmul(x).double(), x.double() @ w.double().t())
            assert linear.kernel == "onednn" and linear.packed.blocked_key[0] == linear.role
            assert linear.packed.data.numel() == 768 * 256 * bits // 8  # still the stored width


def test_auto_takes_onednn_only_where_amx_is_and_its_probe_passes(monkeypatch):
    monkeypatch.delenv(int8_module.MATMUL_ENV, raising=False)
    for var in int8_module.ONEDNN_ISA_ENVS:
        monkeypatch.delenv(var, raising=False)
    reset_kernels()
    amx = torch.cpu._is_amx_tile_supported()
    assert select_matmul()["matmul"] == ("onednn" if amx and _onednn_exact() else "int_mm")
    assert engine_status()["matmul"] == select_matmul()["matmul"]
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")  # oneDNN capped below AMX: its slow path
    reset_kernels()
    assert select_matmul()["matmul_reason"] == ("no AMX on this CPU" if not amx else
                                                "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI keeps oneDNN off AMX")
    assert select_matmul()["matmul"] == "int_mm"
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(int8_module, "_why_not_amx", lambda: None)  # as on an AMX CPU, but oneDNN computes wrong
    real = int8_module.onednn_product
    monkeypatch.setattr(int8_module, "onednn_product", lambda *args: real(*args) + 1)
    reset_kernels()
    status = select_matmul()
    assert status["matmul"] == "int_mm" and "disagrees with the exact int8 sums" in status["matmul_reason"]
    monkeypatch.setenv(int8_module.MATMUL_ENV, "onednn")
    reset_kernels()
    with pytest.raises(RuntimeError, match=f"{int8_module.MATMUL_ENV}=onednn, but oneDNN's int8 linear fails"):
        select_matmul()


def test_sdpa_layers_call_sdpa_as_transformers_does(tiny_config, tiny_batch, tmp_path):
    """A model on ``sdpa`` attention (the default outside tests): the engine calls SDPA directly, with the numbers of
    transformers' own ``sdpa_attention_forward`` exactly (padding mask as BertModel builds it), and serves within the
    bound of the fake-quant model on a padded batch."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from xtc.models import random_model

    tiny_config._attn_implementation = "sdpa"
    model = random_model(tiny_config, seed=0).eval()
    fake, engine = _pair(model, QuantConfig(weight_bits=1), tiny_batch, tmp_path)
    assert engine.config._attn_implementation == "sdpa"
    _check_bounded(fake, engine, tiny_batch)
    layer = engine.bert.encoder.layer[0]
    g = torch.Generator().manual_seed(0)
    q, key, v = (torch.randn(3, 4, 12, 8, generator=g) for _ in range(3))  # (B, nh, T, hs)
    padding = tiny_batch["attention_mask"][:, None, None, :] == 0  # (B, 1, 1, T): padded keys
    mask = torch.zeros(padding.shape).masked_fill(padding, torch.finfo(torch.float32).min)  # BertModel's additive form
    for m in (mask, None):
        want = sdpa_attention_forward(layer, q, key, v, m, dropout=0.0, scaling=layer.scaling)[0]
        assert torch.equal(layer._attention(q, key, v, m, {}), want)


# ---------------------------------------------------------------------------------------------- xtc's AMX kernel
def _use_amx(monkeypatch) -> None:
    """The C++ kernels on and the products forced onto xtc's AMX kernel: a skip, with its reason, on a CPU without
    AMX tiles (where the kernel is never chosen); a failure under XTC_REQUIRE_COMPILE=1 where AMX is there but the
    kernel does not build or pass its probe."""
    if not torch.cpu._is_amx_tile_supported():
        pytest.skip("no AMX on this CPU: xtc's AMX kernel is never chosen here")
    monkeypatch.setenv(int8_module.COMPILE_ENV, "1")
    monkeypatch.setenv(int8_module.MATMUL_ENV, "amx")
    reset_kernels()
    try:
        select_matmul()
    except RuntimeError as err:
        skip_unless(False, f"xtc's AMX kernel cannot run here: {err}", COMPILE)
    enable_compiled()
    assert compile_status()["mode"] == "compiled", compile_status()


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_the_amx_kernel_gives_the_exact_products(bits, monkeypatch):
    """Weights packed by the exporter (1/2/4/8-bit codes), re-packed once in the AMX kernel's panel order: exact int32
    sums for row counts below, at and past the 32-row block (rows split between threads, or panels), the packed
    bytes still at the stored width; with the rescale fused, the rescale kernel's floats exactly. Binary weights
    carry exact zeros (``sign+zeros``)."""
    _use_amx(monkeypatch)
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(96, 128, generator=g)  # (out, in)
    codes, _ = quantize_weight(w, bits, "tensor")
    if bits == 1:
        codes[codes == 0] = 1
        codes[3, 7] = codes[3, 9] = codes[50, 7] = 0  # sign+zeros: the panels hold signs there, the product fixes them
    stored = pack_codes(codes, bits)
    assert (stored.zeros is not None and stored.zeros.numel() == 3) == (bits == 1)
    mul, sub = code_mapping(stored.encoding, stored.stored_bits)
    w_scale, bias = torch.rand(96, generator=g), torch.randn(96, generator=g)
    packed = Int8Linear(PackedWeight(stored.data, stored.stored_bits, mul, sub, 96, 128, stored.zeros), w_scale,
                        bias, 8)
    plain = Int8Linear(codes.t().to(torch.int8).contiguous(), w_scale, bias, 8)
    for m in (1, 20, 32, 33, 130):
        x = torch.randint(-128, 128, (m, 128), generator=g, dtype=torch.int8)
        x[0] = -128
        exact = x.long() @ codes.long().t()
        x_scale = torch.rand(m, 1, generator=g) / 100
        rescaled = cpu_kernels.rescale(exact.int(), x_scale, w_scale, bias)  # the rescale kernel, on its own
        for linear in (packed, plain):
            got = linear.matmul(x)
            assert linear.kernel == "amx" and got.dtype == torch.int32 and torch.equal(got.long(), exact)
            assert torch.equal(linear.matmul_rescale(x, x_scale), rescaled)  # fused: the same floats
    assert packed.packed.data.numel() == 96 * 128 * stored.stored_bits // 8
    assert packed.packed.panel_bits == (0 if stored.stored_bits == 8 else stored.stored_bits)
    with pytest.raises(RuntimeError, match="re-packed in a kernel's order"):
        packed.packed.weight_codes()
    with pytest.raises(RuntimeError, match="in the amx kernel's layout already"):
        plain.int8_codes()  # its codes are panels now: never handed out as (in, out)


def test_the_amx_kernel_refuses_what_it_cannot_read(monkeypatch):
    _use_amx(monkeypatch)
    x, values = torch.zeros(4, 96, dtype=torch.int8), torch.tensor([-1, 1], dtype=torch.int8)
    with pytest.raises(ValueError, match="K % 64 == 0, N % 32 == 0"):
        cpu_kernels.amx_matmul(x, torch.zeros(96 * 64 // 8, dtype=torch.uint8), values, 1, 64)
    x = torch.zeros(4, 128, dtype=torch.int8)
    with pytest.raises(ValueError, match="a 128 x 64 weight at 1 bits is 1024 bytes"):
        cpu_kernels.amx_matmul(x, torch.zeros(1000, dtype=torch.uint8), values, 1, 64)
    with pytest.raises(ValueError, match="contiguous"):
        cpu_kernels.amx_matmul(torch.zeros(128, 4, dtype=torch.int8).t(), torch.zeros(1024, dtype=torch.uint8),
                               values, 1, 64)


AMX_SHAPES = {"hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128}  # every linear fits its panels


@pytest.mark.parametrize("cfg", [INTEGER["W1A8"], INTEGER["W2A8-ternary"]], ids=["W1A8", "W2A8"])
def test_the_engine_on_the_amx_kernel_gives_the_int_mm_logits(cfg, monkeypatch, tiny_batch, tmp_path):
    """Both engines with every product on xtc's AMX kernel: the logits of the same engine on ``_int_mm`` bit for bit
    (the same C++ row kernels around both), within the bound of the fake-quant model; a model whose shapes the
    kernel does not take (hidden 32: K = 32) run on ``_int_mm`` instead, same logits."""
    from xtc.models import random_model, tiny_bert_config

    for shapes in (AMX_SHAPES, {}):
        model = random_model(tiny_bert_config(**shapes), seed=0).eval()
        quantize_(model, cfg)
        path = tmp_path / f"model{len(shapes)}.safetensors"
        export_packed(model, path)
        monkeypatch.setenv(int8_module.COMPILE_ENV, "1")
        monkeypatch.setenv(int8_module.MATMUL_ENV, "int_mm")
        reset_kernels()
        enable_compiled()
        skip_unless(compile_status()["mode"] == "compiled",
                    f"the C++ kernels are unavailable here: {compile_status()['reason']}", COMPILE)
        want = _logits(load_packed(path, engine="int8"), tiny_batch)
        _use_amx(monkeypatch)
        for engine in ("int8", "int8-packed"):
            served = load_packed(path, engine=engine)
            assert torch.equal(_logits(served, tiny_batch), want), engine
            linears = [m for m in served.modules() if isinstance(m, Int8Linear)]
            fits = {m: m.in_features % 64 == 0 and m.out_features % 32 == 0 for m in linears}
            assert linears and all(m.kernel == ("amx" if fits[m] else "int_mm") for m in linears)
            assert all(fits.values()) if shapes else not all(fits.values())
            if engine == "int8-packed" and shapes:
                assert all(m.packed.panel_bits == m.packed.stored_bits for m in linears)
        _check_bounded(load_packed(path), served, tiny_batch)


def test_auto_takes_the_amx_kernel_where_it_runs_and_passes_its_probe(monkeypatch):
    """auto: xtc's AMX kernel where AMX tiles and the C++ kernels are; not with XTC_ENGINE_COMPILE=0 (forcing it
    then is refused by name); a kernel that computes wrong falls back (auto) or is refused (forced)."""
    _use_amx(monkeypatch)
    monkeypatch.delenv(int8_module.MATMUL_ENV)
    reset_kernels()
    assert select_matmul()["matmul"] == "amx" and engine_status()["matmul"] == "amx"
    monkeypatch.setenv(int8_module.COMPILE_ENV, "0")
    reset_kernels()
    assert select_matmul()["matmul"] != "amx"
    monkeypatch.setenv(int8_module.MATMUL_ENV, "amx")
    reset_kernels()
    with pytest.raises(RuntimeError, match="XTC_ENGINE_MATMUL=amx, but xtc's AMX kernel cannot run here.*COMPILE=0"):
        select_matmul()
    monkeypatch.setenv(int8_module.COMPILE_ENV, "1")
    real = cpu_kernels.amx_matmul
    monkeypatch.setattr(cpu_kernels, "amx_matmul", lambda *args: real(*args) + 1)
    reset_kernels()
    with pytest.raises(RuntimeError, match="disagrees with the exact int8 sums"):
        select_matmul()
    monkeypatch.delenv(int8_module.MATMUL_ENV)
    reset_kernels()
    status = select_matmul()
    assert status["matmul"] != "amx" and "xtc's AMX kernel failed" in status["matmul_reason"]


def test_an_unknown_matmul_kernel_is_refused_by_name(monkeypatch):
    monkeypatch.setenv(int8_module.MATMUL_ENV, "tiles")
    reset_kernels()
    with pytest.raises(ValueError, match=r"XTC_ENGINE_MATMUL='tiles' is not a matmul kernel.*auto, amx, onednn, int_mm"):
        select_matmul()


# ---------------------------------------------------------------------------------------------- kernels
def test_eager_fallback_is_chosen_and_reported(monkeypatch):
    assert kernels()["quantize_tokens"] is quantize_tokens  # eager until enable_compiled() succeeds
    enable_compiled()
    assert compile_status() == {"mode": "eager", "reason": f"{int8_module.COMPILE_ENV}=0"}
    reset_kernels()
    monkeypatch.setenv(int8_module.COMPILE_ENV, "1")

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(cpu_kernels, "build", broken)
    enable_compiled()
    assert kernels()["quantize_tokens"] is quantize_tokens
    assert compile_status()["mode"] == "eager" and "no C++ compiler" in compile_status()["reason"]


def test_compiled_kernels_match_the_eager_ones(monkeypatch, tiny_bert, tiny_batch, tmp_path):
    monkeypatch.setenv(int8_module.COMPILE_ENV, "1")
    reset_kernels()
    enable_compiled()
    skip_unless(compile_status()["mode"] == "compiled",
                f"the C++ kernels are unavailable here: {compile_status()['reason']}", COMPILE)
    x = torch.randn(33, 64)
    codes, scale = kernels()["quantize_tokens"](x, 8)
    want_codes, want_scale = quantize_tokens(x, 8)
    assert torch.equal(scale, want_scale) and (codes.int() - want_codes.int()).abs().max() <= 1
    fake, engine = _pair(tiny_bert, QuantConfig(weight_bits=1), tiny_batch, tmp_path)
    _check_bounded(fake, engine, tiny_batch)


@pytest.mark.parametrize("acc_dtype", [torch.float32, torch.int32])
def test_row_kernels_compute_the_eager_kernels(acc_dtype):
    """Each C++ row kernel against its eager definition, on rows that are and are not whole vectors: the quantizer's
    codes and scales exactly; rescale exactly (same operations, no fused multiply-add); GELU and LayerNorm to float
    rounding, their codes exactly the quantizer's of the floats they produced."""
    try:
        cpu_kernels.build(acc_dtype)
    except Exception as err:  # noqa: BLE001 -- any build failure means no toolchain here
        skip_unless(False, f"the C++ kernels cannot be built here: {err}", COMPILE)
    g = torch.Generator().manual_seed(3)
    with torch.inference_mode():
        for m, k in ((5, 768), (17, 100), (1, 3)):
            x = torch.randn(m, k, generator=g) * 4
            x[0, 0] = 0.0
            codes, scale = cpu_kernels.quantize_tokens(x, 8)
            want_codes, want_scale = quantize_tokens(x, 8)
            assert torch.equal(codes, want_codes) and torch.equal(scale, want_scale)
            assert torch.equal(cpu_kernels.quantize_tokens(torch.zeros(m, k))[1], torch.ones(m, 1))  # scale 0 -> 1
            for bits in (4, 8):
                assert torch.equal(cpu_kernels.quantize_tokens(x, bits)[0], quantize_tokens(x, bits)[0])
        for m, n in ((9, 3072), (4, 40)):
            acc = torch.randint(-40000, 40000, (m, n), generator=g, dtype=torch.int32).to(acc_dtype)
            xs, ws, b = torch.rand(m, 1, generator=g) / 4000, torch.rand(n, generator=g), torch.randn(n, generator=g)
            acc[0, :] = 40000 * 1000  # GELU far in its tails: erf +-1, no slow denormal path taken wrongly
            assert torch.equal(cpu_kernels.rescale(acc, xs, ws, b), int8_module.rescale(acc, xs, ws, b))
            codes, scale = cpu_kernels.rescale_gelu_quantize(acc, xs, ws, b, 8)
            inner = torch.nn.functional.gelu(int8_module.rescale(acc, xs, ws, b))
            want_codes, want_scale = quantize_tokens(inner, 8)
            assert torch.allclose(scale, want_scale, rtol=1e-6, atol=0)
            assert (codes.int() - want_codes.int()).abs().max() <= 1
            res, nw, nb = torch.randn(m, n, generator=g), torch.rand(n, generator=g), torch.randn(n, generator=g)
            args = (acc, xs, ws, b, res, nw, nb, 1e-12)
            h, codes, scale = cpu_kernels.rescale_residual_norm_quantize(*args, 8)
            want_h = int8_module.rescale_residual_norm(*args)
            assert torch.allclose(h, want_h, rtol=1e-5, atol=1e-5)
            assert torch.equal(cpu_kernels.rescale_residual_norm(*args), h)
            want_codes, want_scale = quantize_tokens(h, 8)
            assert torch.equal(codes, want_codes) and torch.equal(scale, want_scale)


@pytest.mark.parametrize("stored_bits", [1, 2, 4, 8])
def test_the_unpack_kernel_copies_each_bytes_table_row(stored_bits):
    try:
        cpu_kernels.build(torch.float32)
    except Exception as err:  # noqa: BLE001
        skip_unless(False, f"the C++ kernels cannot be built here: {err}", COMPILE)
    table = int8_module.byte_table(stored_bits, 2 if stored_bits == 1 else 1, 1)
    data = torch.randint(0, 256, (1001,), generator=torch.Generator().manual_seed(stored_bits), dtype=torch.uint8)
    got = cpu_kernels.unpack_bytes(data, table, torch.empty(1001 * (8 // stored_bits), dtype=torch.int8))
    assert torch.equal(got, table[data.long()].reshape(-1))


def test_row_kernels_refuse_what_they_cannot_read():
    try:
        cpu_kernels.build(torch.float32)
    except Exception as err:  # noqa: BLE001
        skip_unless(False, f"the C++ kernels cannot be built here: {err}", COMPILE)
    acc, xs, ws, b = torch.randn(6, 8), torch.rand(6, 1), torch.rand(8), torch.randn(8)
    # a static (per-tensor) activation scale is repeated per row, as the eager kernel broadcasts it
    assert torch.equal(cpu_kernels.rescale(acc, xs[:1], ws, b), int8_module.rescale(acc, xs[:1], ws, b))
    with pytest.raises(ValueError, match="6 activation scales and 8 weight scales"):
        cpu_kernels.rescale(acc, xs[:3], ws, b)
    with pytest.raises(ValueError, match="8 weight scales"):
        cpu_kernels.rescale_gelu_quantize(acc, xs, ws[:4], b)
    with pytest.raises(ValueError, match="an equal residual"):
        cpu_kernels.rescale_residual_norm(acc, xs, ws, b, torch.randn(5, 8), ws, b, 1e-12)
    with pytest.raises(ValueError, match=r"an \(M, K\) matrix"):
        cpu_kernels.quantize_tokens(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="contiguous"):
        cpu_kernels.rescale(torch.zeros(8, 4).t(), torch.ones(4, 1), torch.ones(8), torch.zeros(8))
    with pytest.raises(ValueError, match="float32 or int32"):
        cpu_kernels.rescale(torch.zeros(4, 8, dtype=torch.float64), torch.ones(4, 1), torch.ones(8), torch.zeros(8))
    with pytest.raises(ValueError, match="float32"):
        cpu_kernels.quantize_tokens(torch.zeros(4, 8, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------- errors
def test_engine_cannot_be_trained_or_put_on_another_device(tiny_bert, tmp_path):
    quantize_(tiny_bert, QuantConfig(weight_bits=1))
    export_packed(tiny_bert, tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="cannot be trained: drop trainable=True"):
        load_packed(tmp_path / "m.safetensors", trainable=True, engine="int8")
    with pytest.raises(ValueError, match="unknown engine 'int4'"):
        load_packed(tmp_path / "m.safetensors", engine="int4")


# ---------------------------------------------------------------------------------------------- the CLI
def test_evaluate_on_the_engine_matches_the_float_metrics(packed_with_tokenizer, capsys):
    import json

    from xtc.cli import main

    packed, dev = packed_with_tokenizer
    args = ["evaluate", "--model", str(packed), "--task", "sst2", "--data-dir", str(dev.parent.parent),
            "--max-seq-length", "32"]  # the tiny model has 64 positions
    assert main([*args, "--engine", "int8"]) == 0
    int8 = json.loads(capsys.readouterr().out)["metrics"]
    assert main(args) == 0
    assert int8 == json.loads(capsys.readouterr().out)["metrics"]


@pytest.mark.parametrize("engine", ["float", "int8", "int8-packed"])
def test_evaluate_records_its_engine_in_metrics_json(packed_with_tokenizer, tmp_path, capsys, engine):
    import json

    from xtc.cli import main

    packed, dev = packed_with_tokenizer
    assert main(["evaluate", "--model", str(packed), "--task", "sst2", "--data-dir", str(dev.parent.parent),
                 "--max-seq-length", "32", "--engine", engine, "--out", str(tmp_path / "eval")]) == 0
    assert json.loads(capsys.readouterr().out)["engine"] == engine
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["engine"] == engine


@pytest.mark.parametrize("engine", ["int8", "int8-packed"])
def test_evaluate_on_the_engine_refuses_a_model_dir(tmp_path, capsys, engine):
    """A run or model dir has no packed weights: the integer engine cannot serve it, and its float model is not
    what --engine asked for."""
    from xtc.cli import main

    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / "model" / "config.json").write_text("{}")
    assert main(["evaluate", "--model", str(tmp_path / "run"), "--task", "sst2", "--engine", engine]) == 2
    err = capsys.readouterr().err
    assert f"--engine {engine} serves a packed checkpoint, but {tmp_path / 'run'} is not one" in err
    assert err.count("\n") == 1
