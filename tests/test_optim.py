"""The original optimizer rule (transformers 4.x AdamW), parameter groups and the linear schedule."""

from __future__ import annotations

import math

import pytest
import torch

from xtc.config import TrainConfig
from xtc.models import random_model, tiny_bert_config
from xtc.optim import OriginalAdamW, build_optimizer, linear_schedule, parameter_groups, warmup_steps


def test_one_step_equals_the_formula_computed_by_hand():
    # p = 1, g = 0.5, lr = 0.1, wd = 0.01, t = 1: eps is added to sqrt(v) *before* the bias correction, and the
    # decay multiplies the *updated* weight.
    p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    p.grad = torch.tensor([0.5], dtype=torch.float64)
    OriginalAdamW([p], lr=0.1, weight_decay=0.01).step()
    m, v = 0.1 * 0.5, 0.001 * 0.25
    step_size = 0.1 * math.sqrt(1 - 0.999) / (1 - 0.9)
    updated = 1.0 - step_size * m / (math.sqrt(v) + 1e-6)
    assert p.item() == pytest.approx(updated * (1 - 0.1 * 0.01), rel=1e-14, abs=0)


def _formula(params, grads, lr, wd, steps, eps=1e-6, b1=0.9, b2=0.999):
    """transformers 4.15 ``AdamW.step`` (correct_bias=True), written out again for several steps."""
    params = [p.clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for t in range(1, steps + 1):
        for i, p in enumerate(params):
            g = grads[t - 1][i]
            m[i].mul_(b1).add_(g, alpha=1 - b1)
            v[i].mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = v[i].sqrt().add_(eps)
            p.addcdiv_(m[i], denom, value=-(lr * math.sqrt(1 - b2**t) / (1 - b1**t)))
            p.add_(p, alpha=-lr * wd)
    return params


def test_several_steps_equal_the_formula_exactly_and_differ_from_torch_adamw():
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(5, 3, generator=g), torch.randn(7, generator=g)]
    grads = [[torch.randn(5, 3, generator=g) * 1e-3, torch.randn(7, generator=g) * 1e-3] for _ in range(4)]
    ours = [torch.nn.Parameter(p.clone()) for p in start]
    theirs = [torch.nn.Parameter(p.clone()) for p in start]
    opt, ref = OriginalAdamW(ours, lr=1e-2, weight_decay=0.01), torch.optim.AdamW(theirs, lr=1e-2, weight_decay=0.01)
    for step_grads in grads:
        for p, q, grad in zip(ours, theirs, step_grads):
            p.grad, q.grad = grad.clone(), grad.clone()
        opt.step()
        ref.step()
    for p, expected in zip(ours, _formula(start, grads, 1e-2, 0.01, len(grads))):
        assert torch.equal(p.detach(), expected)
    # Gradients of 1e-3 make eps matter: torch's rule (eps 1e-8 after the correction, decay first) is another rule.
    assert max((p - q).abs().max().item() for p, q in zip(ours, theirs)) > 1e-5


def test_build_optimizer_rules():
    model = random_model(tiny_bert_config())
    original = build_optimizer(model, "original", 5e-5, 0.01)
    assert isinstance(original, OriginalAdamW) and original.defaults["eps"] == 1e-6
    assert isinstance(build_optimizer(model, "torch", 5e-5, 0.01), torch.optim.AdamW)
    assert TrainConfig().optimizer == "original"
    with pytest.raises(ValueError, match="train.optimizer='adam'.*'original'"):
        build_optimizer(model, "adam", 5e-5, 0.01)
    with pytest.raises(ValueError, match="train.optimizer='adam' is not supported"):
        TrainConfig(optimizer="adam")


def test_no_weight_decay_on_bias_and_layernorm():
    model = random_model(tiny_bert_config())
    decay, rest = parameter_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(not names[id(p)].endswith("bias") and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert all(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in rest["params"])
    # the original's name rule, no_decay = ["bias", "LayerNorm.weight"], picks exactly the same parameters
    assert {names[id(p)] for p in rest["params"]} == {
        n for n, _ in model.named_parameters() if any(nd in n for nd in ("bias", "LayerNorm.weight"))}
    assert decay["weight_decay"] == 0.01 and rest["weight_decay"] == 0.0
    assert len(decay["params"]) + len(rest["params"]) == len(list(model.parameters()))


def test_linear_schedule_starts_from_zero_then_decays_to_zero():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_schedule(opt, num_warmup_steps=4, num_training_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:5] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert lrs[5:] == pytest.approx([5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])


def test_warmup_steps_count_as_the_original():
    assert warmup_steps(18 * 100, 100, 1.0, None) == 100  # int(num_warmup_epochs * steps_per_epoch)
    assert warmup_steps(100, 7, 0.5, None) == 3  # int(3.5): truncated, as the original's int()
    assert warmup_steps(10, 10, 0.0, None) == 0
    assert warmup_steps(50, 50, 0.0, 0.1) == 5 and warmup_steps(51, 51, 0.0, 0.1) == 6  # ceil, as HF Trainer
    assert warmup_steps(5, 10, 1.0, None) == 5  # never more than the job's steps


def test_parameters_without_a_gradient_keep_their_own_step_count():
    g = torch.Generator().manual_seed(1)
    a0, b0 = torch.randn(3, generator=g), torch.randn(2, 2, generator=g)
    grads_a = [torch.randn(3, generator=g) for _ in range(3)]
    grads_b = [torch.randn(2, 2, generator=g) for _ in range(2)]
    a, b = torch.nn.Parameter(a0.clone()), torch.nn.Parameter(b0.clone())
    opt = OriginalAdamW([a, b], lr=1e-2, weight_decay=0.1)
    for t in range(3):
        a.grad = grads_a[t].clone()
        b.grad = None if t == 0 else grads_b[t - 1].clone()  # b joins at the second step
        opt.step()
    assert torch.equal(a.detach(), _formula([a0], [[x] for x in grads_a], 1e-2, 0.1, 3)[0])
    assert torch.equal(b.detach(), _formula([b0], [[x] for x in grads_b], 1e-2, 0.1, 2)[0])
