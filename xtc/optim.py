"""The optimizer and learning-rate schedule of the XTC recipe (``train.optimizer``, docs/fidelity.md).

The original script (DeepSpeedExamples ``compression/bert/run_glue_no_trainer.py``) builds transformers 4.x
``AdamW`` over two parameter groups (no weight decay on ``bias`` and ``LayerNorm.weight``), clips gradients at 1.0
(DeepSpeed config ``gradient_clipping``) and follows ``get_scheduler("linear")`` with
``int(num_warmup_epochs * steps_per_epoch)`` warmup steps, which starts from lr 0. transformers 5 no longer ships
that ``AdamW``; ``OriginalAdamW`` is its update rule, operation for operation. ``torch.optim.AdamW`` differs in two
places: it adds eps *after* dividing by the bias correction, and it decays the weights *before* the update.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

OPTIMIZERS = ("original", "torch")


class OriginalAdamW(torch.optim.Optimizer):
    """transformers 4.x ``AdamW`` (``correct_bias=True``), the original XTC optimizer.

    Per parameter, with step ``t``, gradient ``g``, ``lr`` of the group and weight decay ``wd``::

        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * sqrt(1 - b2**t) / (1 - b1**t) * m / (sqrt(v) + eps)   # eps before the bias correction
        p = p - lr * wd * p                                               # decoupled decay, after the update

    Defaults are the original's: ``betas=(0.9, 0.999)``, ``eps=1e-6``.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, correct_bias: bool = True) -> None:
        if lr < 0.0 or eps < 0.0 or weight_decay < 0.0 or not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid AdamW settings lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      correct_bias=correct_bias))

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter with a gradient; parameters that share a step count are updated together
        with ``torch._foreach_*`` ops (the same elementwise operations, in one call per tensor list)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            by_step: dict[int, list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("OriginalAdamW does not support sparse gradients; use train.optimizer=torch")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                by_step.setdefault(state["step"], []).append(p)
            for step, params in by_step.items():
                grads = [p.grad for p in params]
                exp_avg = [self.state[p]["exp_avg"] for p in params]
                exp_avg_sq = [self.state[p]["exp_avg_sq"] for p in params]
                torch._foreach_mul_(exp_avg, beta1)
                torch._foreach_add_(exp_avg, grads, alpha=1.0 - beta1)
                torch._foreach_mul_(exp_avg_sq, beta2)
                torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1.0 - beta2)
                denom = torch._foreach_sqrt(exp_avg_sq)
                torch._foreach_add_(denom, group["eps"])
                step_size = group["lr"]
                if group["correct_bias"]:
                    step_size = step_size * math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step)
                torch._foreach_addcdiv_(params, exp_avg, denom, value=-step_size)
                if group["weight_decay"] > 0.0:
                    torch._foreach_add_(params, params, alpha=-group["lr"] * group["weight_decay"])
        return loss


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay every weight except biases and LayerNorm parameters (BERT's recipe).

    The original matches names (``no_decay = ["bias", "LayerNorm.weight"]``); this finds LayerNorm modules by type,
    which selects the same parameters in BERT (the LayerNorm biases are biases) and also in models whose norm
    layers are named otherwise.
    """
    no_decay = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters(recurse=False)}
    decay, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (rest if name.endswith("bias") or id(p) in no_decay else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, rule: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """``original``: ``OriginalAdamW`` (eps 1e-6); ``torch``: ``torch.optim.AdamW`` with its defaults (eps 1e-8)."""
    groups = parameter_groups(model, weight_decay)
    if rule == "original":
        return OriginalAdamW(groups, lr=lr)
    if rule == "torch":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"train.optimizer={rule!r} is not supported: use 'original' (the default) or 'torch'")


def warmup_steps(total_steps: int, steps_per_epoch: int, warmup_epochs: float, warmup_ratio: float | None) -> int:
    """The original's ``int(num_warmup_epochs * steps_per_epoch)``; with ``warmup_ratio`` HF Trainer's
    ``ceil(ratio * total_steps)``. Never more than ``total_steps``."""
    steps = (math.ceil(warmup_ratio * total_steps) if warmup_ratio is not None
             else int(warmup_epochs * steps_per_epoch))
    return min(steps, total_steps)


def linear_schedule(optimizer: torch.optim.Optimizer, num_warmup_steps: int, num_training_steps: int):
    """transformers' ``get_scheduler("linear")``: lr ``0 -> peak`` over the warmup (step 0 runs at lr 0 when there
    is any warmup), then linearly to 0 at ``num_training_steps``."""
    from transformers import get_scheduler

    return get_scheduler("linear", optimizer=optimizer, num_warmup_steps=num_warmup_steps,
                         num_training_steps=num_training_steps)
