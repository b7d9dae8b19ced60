"""The cheaper W1A8 KD step (docs/performance.md, "A cheaper KD step"): what is on by default is bitwise the old step.

Shared Q/K/V input quantization (``xtc.quant.modules``) reuses one quantized copy of the hidden states for the
three projections; these tests run real ``Trainer`` steps with the reuse and with it switched off (every call
quantizes again, the old path) and compare every parameter with ``torch.equal``.
"""

from __future__ import annotations

import copy

import pytest
import torch

from bench import kd_step
from xtc.quant import ActQuantizer
from xtc.quant import modules as quant_modules
from xtc.quant.primitives import fake_quantize_symmetric

TINY = kd_step.Setting(batch=4, seq=16, rounds=1, model=(
    ("hidden_size", 32), ("num_hidden_layers", 2), ("num_attention_heads", 2), ("intermediate_size", 64),
    ("vocab_size", 120)))


@pytest.fixture
def no_reuse(monkeypatch):
    """The old path: every dynamic activation quantizer quantizes its input itself."""
    def off():
        monkeypatch.setattr(quant_modules._LastQuantizedInput, "get", lambda self, x, key: None)
    return off


def _steps(student, teacher, batch, n=3):
    step = kd_step.kd_step(student, teacher, batch)
    torch.manual_seed(1)  # dropout masks
    for _ in range(n):
        step()
    return dict(student.named_parameters())


def test_shared_qkv_input_quantization_trains_bitwise_like_quantizing_three_times(no_reuse):
    teacher = kd_step.teacher_model(TINY)
    batch = kd_step.features(TINY, teacher.config.vocab_size)
    calls = []
    real = quant_modules.SharedActSTE.apply
    quant_modules.SharedActSTE.apply = lambda *a: calls.append(1) or real(*a)
    try:
        shared = _steps(kd_step.xtc_student(teacher), teacher, batch)
    finally:
        quant_modules.SharedActSTE.apply = real
    no_reuse()
    separate = _steps(kd_step.xtc_student(teacher), teacher, batch)
    assert len(calls) == 3 * 2 * 2  # steps x layers x (key, value)
    assert shared.keys() == separate.keys()
    for name in shared:
        assert torch.equal(shared[name], separate[name]), name
    assert not torch.equal(shared["bert.encoder.layer.0.attention.self.query.weight"],
                           teacher.bert.encoder.layer[0].attention.self.query.weight)  # it did train


def test_reuse_needs_the_same_unmodified_tensor_and_the_same_settings():
    quantizer, other_bits = ActQuantizer(8), ActQuantizer(4)
    x = torch.randn(3, 5, 8, requires_grad=True)
    first = quantizer(x)
    assert quantizer(x).grad_fn.name().endswith("SharedActSTEBackward")
    assert other_bits(x).grad_fn.name().endswith("SymmetricActSTEBackward")  # different bits: quantized anew
    y = x.detach().clone()
    quantizer(y)
    y.mul_(2)  # modified in place: its cached quantization is stale
    assert torch.equal(quantizer(y), fake_quantize_symmetric(y, 8, "token"))
    with torch.no_grad():
        assert quantizer(x).grad_fn is None  # grad mode is part of the key
    z = x.detach().clone()
    out = quantizer(z)
    out.add_(1)  # the first consumer modified its copy in place: not reused
    assert torch.equal(quantizer(z), fake_quantize_symmetric(z, 8, "token"))
    assert torch.equal(first, fake_quantize_symmetric(x.detach(), 8, "token"))


def test_reused_quantization_passes_the_gradient_straight_through():
    quantizer = ActQuantizer(8)
    x = torch.randn(2, 4, 6, requires_grad=True)
    a, b = quantizer(x), quantizer(x)
    assert torch.equal(a, b)
    g = torch.randn_like(a)
    (a * 0 + b * g).sum().backward()
    assert torch.equal(x.grad, g)
    x2 = copy.deepcopy(x.detach()).requires_grad_()
    assert torch.equal(fake_quantize_symmetric(x2, 8, "token"), a.detach())


def test_train_compile_runs_the_same_step_up_to_float_rounding():
    """``train.compile`` (opt-in): torch.compile fuses elementwise ops, so sums round differently; the step is the
    same math (losses and parameters agree to float rounding, attention captured through the compiled model)."""
    teacher = kd_step.teacher_model(TINY)
    batch = kd_step.features(TINY, teacher.config.vocab_size)
    eager_student, compiled_student = kd_step.xtc_student(teacher), kd_step.xtc_student(teacher)
    eager = kd_step.kd_step(eager_student, teacher, batch)
    compiled = kd_step.kd_step(compiled_student, teacher, batch, compile=True)
    for _ in range(2):
        torch.manual_seed(1)
        eager()
        torch.manual_seed(1)
        compiled()
    assert teacher.config._attn_implementation != "xtc_capture"  # the teacher module is left as it was
    _assert_trained_alike(eager_student, compiled_student, teacher)


def _assert_trained_alike(reference, other, teacher) -> None:
    """Every parameter of ``other`` equals ``reference``'s to float rounding, and the step moved some of them."""
    moved = 0
    for (name, a), (_, b) in zip(reference.named_parameters(), other.named_parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
        moved += not torch.equal(b, teacher.get_parameter(name))
    assert moved > 0


def test_quantizing_under_inference_mode_works_and_is_never_cached():
    """Serving (``torch.inference_mode``, e.g. ``python -m bench --only serve``) makes inference tensors, which keep
    no version counter: the quantizer quantizes them without the cache, twice with the same result."""
    quantizer = ActQuantizer(8)
    with torch.inference_mode():
        x = torch.randn(2, 4, 8)
        first, second = quantizer(x), quantizer(x)
    expected = fake_quantize_symmetric(x.clone(), 8, "token")
    assert torch.equal(first, expected) and torch.equal(second, expected)


# ---------------------------------------------------------------------------------------------- train.int8_forward
def test_int8_forward_linear_equals_the_fake_quant_linear_and_its_gradients_exactly():
    """``Int8TrainLinear``: the forward up to float rounding of the sums (exact int32 products), the backward the
    fake-quant linear's operation for operation (same upstream gradient -> bitwise the same gradients)."""
    from xtc.quant import QuantLinear

    g = torch.Generator().manual_seed(0)
    for bits, granularity in ((1, "tensor"), (2, "row"), (1, "row")):
        linear = QuantLinear.from_float(torch.nn.Linear(48, 24), bits, granularity).train()
        with torch.no_grad():
            linear.weight.copy_(torch.randn(24, 48, generator=g))
            linear.weight[3, :5] = 0  # exact zeros (ternary codes 0)
        x = torch.randn(3, 7, 48, generator=g)
        upstream = torch.randn(3, 7, 24, generator=g)
        results = []
        for on in (False, True):
            linear.int8_forward = on
            linear.zero_grad()
            xi = x.clone().requires_grad_()
            y = linear(xi)
            y.backward(upstream)
            results.append((y.detach(), xi.grad, linear.weight.grad.clone(), linear.bias.grad.clone()))
        (y_fq, *grads_fq), (y_int, *grads_int) = results
        torch.testing.assert_close(y_int, y_fq, rtol=1e-5, atol=1e-5)
        for a, b in zip(grads_fq, grads_int, strict=True):
            assert torch.equal(a, b)


def test_int8_forward_trains_the_same_step_up_to_float_rounding(monkeypatch):
    from xtc.quant.int8 import Int8TrainLinear

    calls = []
    real = Int8TrainLinear.apply
    monkeypatch.setattr(Int8TrainLinear, "apply", lambda *a: calls.append(1) or real(*a))
    teacher = kd_step.teacher_model(TINY)
    batch = kd_step.features(TINY, teacher.config.vocab_size)
    float_student, int8_student = kd_step.xtc_student(teacher), kd_step.xtc_student(teacher)
    steps = kd_step.kd_step(float_student, teacher, batch), kd_step.kd_step(int8_student, teacher, batch,
                                                                             int8_forward=True)
    for _ in range(2):
        for step in steps:
            torch.manual_seed(1)
            step()
    assert len(calls) == 2 * 2 * 6  # steps x layers x linears: every encoder linear trained on integers
    _assert_trained_alike(float_student, int8_student, teacher)


def test_int8_forward_refuses_what_it_cannot_run():
    from xtc.config import QuantConfig, TrainConfig

    with pytest.raises(ValueError, match="cannot be combined with train.compile"):
        TrainConfig(int8_forward=True, compile=True)
    teacher = kd_step.teacher_model(TINY)
    batch = kd_step.features(TINY, teacher.config.vocab_size)
    with pytest.raises(ValueError, match="no linear of the student fits.*4-bit"):
        kd_step.kd_step(kd_step.xtc_student(teacher, QuantConfig(weight_bits=4)), teacher, batch, int8_forward=True)
    kd_step.kd_step(kd_step.xtc_student(teacher, None), teacher, batch, int8_forward=True)()  # FP: nothing to do
