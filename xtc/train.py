"""The XTC training loop (docs/method.md, "Budgets"): one loop for teacher fine-tuning, step 1 and step 2.

* AdamW (``train.optimizer``: the original's transformers 4.x rule or torch's, ``xtc.optim``), weight decay 0.01
  except on biases and LayerNorm weights; transformers' linear schedule (warmup in epochs or a ratio, from lr 0)
  then linear decay to 0; gradient clipping; FP32 by default (bf16 autocast and TF32 on CUDA when asked).
* KD: the teacher is in eval mode under ``no_grad``, its outputs computed once per batch; the loss terms of each
  stage come from ``xtc.distill.stages`` (two-stage KD restarts the optimizer and schedule for stage II).
  ``train.compile`` runs both forwards through ``torch.compile`` (opt-in; docs/performance.md, "A cheaper KD step").
* Evaluation every ``eval_every_steps`` and at each epoch end on every dev split; the caller's ``on_best`` hook
  saves the best model by the task's selection metric, ``on_checkpoint`` the resumable state.
* Resume: batch order is a permutation drawn from ``seed + epoch``, so a resumed run skips to its position in the
  epoch; model, optimizer, scheduler, RNG, step, stage and best score are restored; on CPU the metrics are exactly
  those of an uninterrupted run.
* Each train record carries ``started_at``, the Unix time its step began: step throughput over wall-clock time,
  and the start-up cost of a run (process start to first step; ``bench/workflow.py``), can be read from the log.

This module never touches files: the CLI decides paths and writes everything (atomically).
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from xtc.config import DistillConfig, TrainConfig
from xtc.distill import LayerMaps, Stage, forward_with_internals, kd_loss, stages
from xtc.tasks import get_task
from xtc.optim import build_optimizer, linear_schedule, warmup_steps

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
Collate = Callable[[Sequence[Mapping[str, Any]]], Batch]


@dataclass
class TrainState:
    """Everything a killed run needs to continue exactly; saved by the caller's ``on_checkpoint`` hook."""

    stage: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0  # optimizer steps in the current stage
    global_step: int = 0
    best_score: float = -math.inf
    best_step: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Hooks:
    """Callbacks through which the loop hands results to the caller (the CLI writes them to disk)."""

    on_best: Callable[[nn.Module, dict[str, Any]], None] = lambda model, record: None
    on_checkpoint: Callable[[dict[str, Any]], None] = lambda state: None
    on_log: Callable[[dict[str, Any]], None] = lambda record: None


def select_device(prefer: str | None = None) -> torch.device:
    """The given device, checked to work (``xtc.device.require_device``), or CUDA when present."""
    from xtc.device import require_device

    return require_device(prefer)


GROUP_WINDOW = 50  # batches per length-sorting window (HF's LengthGroupedSampler uses the same 50)


def batch_order(
    n_examples: int, seed: int, epoch: int, lengths: torch.Tensor | None = None, batch_size: int = 1,
) -> torch.Tensor:
    """The example order of one epoch: a pure function of (seed, epoch), which is what makes resuming exact.

    With ``lengths`` (``train.group_by_length``), consecutive ``batch_size`` slices of the order are batches of
    similar length: the shuffled examples are cut into windows of ``GROUP_WINDOW`` batches, each window is sorted
    by length, and the full batches are shuffled (a short last batch stays last, so slicing still finds it).
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n_examples, generator=generator)
    if lengths is None:
        return order
    window = GROUP_WINDOW * batch_size
    ranked = torch.cat([chunk[torch.argsort(lengths[chunk], descending=True, stable=True)]
                        for chunk in order.split(window)])
    batches = list(ranked.split(batch_size))
    tail = [batches.pop()] if len(batches[-1]) < batch_size else []
    shuffled = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return torch.cat(shuffled + tail)


@torch.no_grad()
def evaluate(
    model: nn.Module, task: str, eval_sets: Mapping[str, Sequence[Mapping[str, Any]]], collate: Collate,
    batch_size: int = 128, device: torch.device | None = None,
) -> dict[str, float]:
    """Metrics on every dev split (MNLI: matched and mismatched), merged into one dict of task metric keys."""
    from xtc.metrics import compute_metrics  # scikit-learn and scipy: ~0.6 s of imports no training step needs

    spec = get_task(task)
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    for split, features in eval_sets.items():
        # batches of similar length pad less (metrics do not depend on the order of the examples)
        order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
        predictions, labels = [], []
        for start in range(0, len(features), batch_size):
            batch = collate([features[i] for i in order[start:start + batch_size]])
            labels.append(batch.pop("labels"))
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
            predictions.append(logits.squeeze(-1) if spec.is_regression else logits)
        metrics.update(compute_metrics(task, torch.cat(predictions).numpy(), torch.cat(labels).numpy(), split=split))
    model.train(was_training)
    return metrics


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Runs the stages of one recipe; ``fit`` returns the final state (history, best score and step)."""

    def __init__(
        self, model: nn.Module, task: str, train_features: Sequence[Mapping[str, Any]],
        eval_sets: Mapping[str, Sequence[Mapping[str, Any]]], collate: Collate, train_cfg: TrainConfig,
        distill_cfg: DistillConfig, teacher: nn.Module | None = None, maps: LayerMaps | None = None,
        hooks: Hooks | None = None, device: torch.device | None = None, progress: bool | None = None,
        stop: Callable[[], str | None] | None = None,
    ) -> None:
        if not train_features:
            raise ValueError("no training examples; check data.task, data.data_dir and data.max_train_examples")
        self.spec = get_task(task)
        self.cfg, self.distill_cfg = train_cfg, distill_cfg
        self.stages: tuple[Stage, ...] = stages(distill_cfg, train_cfg.epochs)
        if teacher is None and any(stage.needs_teacher for stage in self.stages):
            raise ValueError(f"distill.kd={distill_cfg.kd!r} needs a teacher; pass one, or use distill.kd=none")
        self.device = device or select_device()
        self.model = model.to(self.device)
        # The teacher runs in eval mode under no_grad; its requires_grad flags are left alone (a student copied
        # from it later must still be trainable).
        self.teacher = teacher.to(self.device).eval() if teacher is not None else None
        self.train_features, self.eval_sets, self.collate = train_features, eval_sets, collate
        self.maps, self.hooks = maps, hooks or Hooks()
        self.stop = stop or (lambda: None)  # a signal's name once the run must stop (xtc.preempt)
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.steps_per_epoch = math.ceil(len(train_features) / train_cfg.batch_size)
        self.lengths = (torch.tensor([len(f["input_ids"]) for f in train_features])
                        if train_cfg.group_by_length else None)
        self.state = TrainState()
        # Set by the first ``fit`` of a fresh run, or restored by ``load_state_dict`` (then ``fit`` continues).
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        # ``train.compile``: the KD forwards run through torch.compile'd wrappers of the same modules (parameters,
        # state and evaluation stay on the plain modules); attention capture works through them unchanged. Random
        # ops fall back to torch's own kernels, so dropout draws the same masks from the seed as in eager mode.
        if train_cfg.compile:
            from torch._dynamo import config as dynamo_config
            from torch._inductor import config as inductor_config

            inductor_config.fallback_random = True
            # attention capture specialises one graph per encoder layer and model (BERT-base KD: 24 > the default 8)
            dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
        if train_cfg.int8_forward:
            self._enable_int8_forward()
        self._student_fn = torch.compile(self.model) if train_cfg.compile else self.model
        self._teacher_fn = (torch.compile(self.teacher) if train_cfg.compile and self.teacher is not None
                            else self.teacher)
        if self.device.type == "cuda" and train_cfg.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def _enable_int8_forward(self) -> None:
        """``train.int8_forward``: the student's W1/W2 + A8 linears train on integer forwards (CPU only)."""
        from xtc.quant.modules import QuantLinear, enable_int8_forward

        if self.device.type != "cpu":
            raise ValueError(f"train.int8_forward runs on CPU (torch._int_mm), but the device is {self.device}; "
                             "drop train.int8_forward or train on CPU")
        from xtc.quant.int8 import enable_compiled

        left = enable_int8_forward(self.model)
        on = sum(isinstance(m, QuantLinear) and m.int8_forward for m in self.model.modules())
        if not on and not left:
            log.info("train.int8_forward: the student has no quantized linear; its forward stays float")
            return
        if not on:
            raise ValueError("train.int8_forward: no linear of the student fits (binary/ternary weights with "
                             "per-tensor or per-row scales, dynamic per-token inputs): "
                             f"{next(iter(left.values()))}; drop train.int8_forward for this student")
        log.info("train.int8_forward: %d linears train on integer forwards%s; their quantizer and rescale: %s", on,
                 f"; {len(left)} keep the float forward ({next(iter(left.values()))})" if left else "",
                 enable_compiled()["mode"])  # the C++ row kernels where they build (the same codes), else eager

    # -- schedule -------------------------------------------------------------------------------------------------
    def stage_steps(self, stage: Stage) -> int:
        return max(1, math.ceil(stage.epochs * self.steps_per_epoch))

    def _optimizer(self, stage: Stage):
        """``train.optimizer`` (``xtc.optim``) and transformers' linear schedule, warmup as the original counts it."""
        optimizer = build_optimizer(self.model, self.cfg.optimizer, self.cfg.lr * stage.lr_scale, self.cfg.weight_decay)
        total = self.stage_steps(stage)
        warmup = warmup_steps(total, self.steps_per_epoch, self.cfg.warmup_epochs, self.cfg.warmup_ratio)
        return optimizer, linear_schedule(optimizer, warmup, total)

    # -- resumable state ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": _rng_state(), "state": self.state.to_dict(),
        }

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        """Restore a run saved by ``on_checkpoint``; ``fit`` then continues where it stopped."""
        self.model.load_state_dict(saved["model"])
        self.state = TrainState(**saved["state"])
        self.optimizer, self.scheduler = self._optimizer(self.stages[self.state.stage])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        _set_rng_state(saved["rng"])

    # -- the loop -------------------------------------------------------------------------------------------------
    def fit(self) -> TrainState:
        """Run every remaining stage; a fresh run is seeded first, a restored one (``load_state_dict``) is not."""
        if self.optimizer is None:
            self._start()
        self.model.train()
        while self.state.stage < len(self.stages):
            self._run_stage(self.stages[self.state.stage])
            self._next_stage()
        self._check_selected()
        return self.state

    def _start(self) -> None:
        torch.manual_seed(self.cfg.seed)
        random.seed(self.cfg.seed)
        self.optimizer, self.scheduler = self._optimizer(self.stages[0])

    def _run_stage(self, stage: Stage) -> None:
        total = self.stage_steps(stage)
        bar = tqdm(total=total, initial=self.state.step, desc=stage.name, disable=not self.progress, dynamic_ncols=True)
        while self.state.step < total:
            for features in self._epoch_batches():
                self._step(stage, features, total, bar)
                if self.state.step >= total:
                    break
        bar.close()

    def _epoch_batches(self) -> Iterator[list[Mapping[str, Any]]]:
        """The batches of the current epoch from the current position on (the order is a function of the seed)."""
        st, size = self.state, self.cfg.batch_size
        order = batch_order(len(self.train_features), self.cfg.seed + 7919 * st.stage, st.epoch, self.lengths, size)
        for offset in range(st.batch_in_epoch * size, len(order), size):
            yield [self.train_features[i] for i in order[offset:offset + size].tolist()]

    def _step(self, stage: Stage, features: Sequence[Mapping[str, Any]], total: int, bar) -> None:
        """One optimizer step, its log record, and the epoch-end / every-N-steps evaluation."""
        st = self.state
        record = self._train_step(stage, features)
        st.step, st.global_step, st.batch_in_epoch = st.step + 1, st.global_step + 1, st.batch_in_epoch + 1
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.4f}")
        self.hooks.on_log(record)
        if not self.progress and st.global_step % 50 == 0:
            log.info("%s step %d/%d loss %.4f", stage.name, st.step, total, record["loss"])
        epoch_end = st.batch_in_epoch == self.steps_per_epoch
        if epoch_end:
            st.epoch, st.batch_in_epoch = st.epoch + 1, 0
        evaluated = epoch_end or st.step % self.cfg.eval_every_steps == 0 or st.step == total
        if evaluated:
            self._evaluate_and_checkpoint(stage)
        signame = self.stop()
        if signame:  # time limit or preemption near: keep this step, not only the last evaluation
            if not evaluated:
                self.hooks.on_checkpoint(self.state_dict())
            from xtc.preempt import Preempted

            raise Preempted(signame, st.global_step)

    def _next_stage(self) -> None:
        st = self.state
        st.stage, st.step, st.epoch, st.batch_in_epoch = st.stage + 1, 0, 0, 0
        if st.stage < len(self.stages):
            self.optimizer, self.scheduler = self._optimizer(self.stages[st.stage])
            self.hooks.on_checkpoint(self.state_dict())

    def _check_selected(self) -> None:
        """Every evaluation of the final stage was NaN (e.g. constant STS-B predictions): nothing to select."""
        if self.state.best_step < 0:
            scores = [r["score"] for r in self.state.history if r["stage"] == self.stages[-1].name]
            raise ValueError(
                f"no best checkpoint: all {len(scores)} evaluations of stage {self.stages[-1].name!r} gave "
                f"{self.spec.selection_metric} = nan (constant predictions?); lower the learning rate (--lr) or check "
                "the train data, then rerun with --overwrite"
            )

    def _forward_loss(self, stage: Stage, batch: Batch) -> dict[str, torch.Tensor]:
        labels = batch.get("labels")
        teacher_out = None
        if stage.needs_teacher:
            with torch.no_grad():
                teacher_out = forward_with_internals(self._teacher_fn, batch, need_attention=stage.needs_attention)
        student_out = forward_with_internals(self._student_fn, batch, need_attention=stage.needs_attention)
        return kd_loss(student_out, teacher_out, labels, stage.terms, self.maps, self.distill_cfg)

    def _train_step(self, stage: Stage, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        started_at, started = time.time(), time.perf_counter()
        batch = {k: v.to(self.device) for k, v in self.collate(features).items()}
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                    if self.cfg.bf16 and self.device.type == "cuda" else nullcontext())
        with autocast:
            losses = self._forward_loss(stage, batch)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        return {
            "kind": "train", "stage": stage.name, "step": self.state.step + 1, "global_step": self.state.global_step + 1,
            "lr": lr, "started_at": round(started_at, 3), "step_time_s": round(time.perf_counter() - started, 4),
            **{name: float(value.detach()) for name, value in losses.items()},
        }

    def _evaluate_and_checkpoint(self, stage: Stage) -> None:
        st = self.state
        metrics = evaluate(self.model, self.spec.name, self.eval_sets, self.collate, device=self.device)
        from xtc.metrics import selection_score

        score = selection_score(self.spec.name, metrics)
        record = {"kind": "eval", "stage": stage.name, "step": st.step, "global_step": st.global_step,
                  "epoch": st.epoch, "metrics": metrics, "score": score}
        st.history.append(record)
        self.hooks.on_log(record)
        log.info("eval %s step %d: %s = %.4f", stage.name, st.step, self.spec.selection_metric, score)
        # The best checkpoint is chosen within the final stage: stage I of two-stage KD never trains predictions.
        if st.stage == len(self.stages) - 1 and score > st.best_score:
            st.best_score, st.best_step = score, st.global_step
            self.hooks.on_best(self.model, record)
        self.hooks.on_checkpoint(self.state_dict())
