"""One KD training step on CPU: XTC's W1A8 12-layer student vs the same step with an FP32 student.

The step is ``xtc.train.Trainer``'s own (``_train_step``), so the benchmark times what training runs: the teacher
forward (eval mode, ``no_grad``, attention captured), the student forward (train mode, dropout on, attention
captured), XTC's 1-stage KD loss ``L_pred + L_att + L_rep`` (``xtc.distill.kd_loss``: soft cross-entropy of the
logits, MSE of every hidden state including the embedding output, MSE of every layer's pre-softmax attention
scores, with the identity layer maps of a full-depth student), backward, gradient clipping at 1.0, and the **AdamW
step and lr-schedule step included**. Both students are copies of the teacher (XTC's 12-layer step 2); the W1A8
one is quantized by ``quantize_(student, QuantConfig(weight_bits=1, act_bits=8))``, which is how ``xtc distill
--weight-bits 1 --act-bits 8`` builds it: binary weights with one scale per matrix in every encoder linear, per-row
binary word embeddings, 8-bit symmetric dynamic per-token inputs to every encoder linear.

Method: both candidates are built once on the same teacher and batch, then alternate for ``rounds`` rounds (the
order rotating, after one warm-up round); the figure is the ratio of the median step times, ``w1a8_over_fp32``,
with the quartiles of the per-round ratios beside it as the noise it carries. Target: <= 1.15.
A third candidate, ``w1a8_compiled``, is the same W1A8 step with ``train.compile`` (student and teacher forwards
through ``torch.compile``; compiled by one step before the rounds, its seconds reported as
``compile_first_step_s``): ``w1a8_compiled_over_fp32``, target <= 0.95 of the eager FP32 step. A fourth,
``w1a8_int8``, is the W1A8 step with ``train.int8_forward`` (the student's quantized linears forward as int8
``torch._int_mm``, backward as before): ``w1a8_int8_over_fp32``, the same target.

Full mode: BERT-base (``xtc.models.bert_config('bert-base')``, random weights, 2 labels), batch 8 x 128 tokens.
Quick mode: the same code on a 4-layer, 256-wide BERT (BERT's vocabulary) and 8 x 64 tokens.
"""

from __future__ import annotations

import copy
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from bench.timing import interleaved_samples, summary
from xtc.config import DistillConfig, QuantConfig, TrainConfig
from xtc.distill import layer_maps
from xtc.collate import PaddingCollator
from xtc.models import bert_config, random_model
from xtc.quant import quantize_
from xtc.train import Trainer

XTC_W1A8 = QuantConfig(weight_bits=1, act_bits=8)


@dataclass(frozen=True)
class Setting:
    """Model width/depth and batch of a KD-step benchmark; ``model`` overrides ``bert_config('bert-base')``."""

    batch: int
    seq: int
    rounds: int
    model: tuple[tuple[str, int], ...] = ()

    def config(self):
        return bert_config("bert-base", num_labels=2, **dict(self.model))

    @classmethod
    def from_dict(cls, raw: dict) -> Setting:
        """The inverse of ``dataclasses.asdict`` after a JSON round trip (child processes get settings as JSON)."""
        return cls(raw["batch"], raw["seq"], raw["rounds"], tuple((k, v) for k, v in raw["model"]))

    def describe(self) -> dict:
        config = self.config()
        return {"batch": self.batch, "seq": self.seq, "rounds": self.rounds, "layers": config.num_hidden_layers,
                "hidden": config.hidden_size, "heads": config.num_attention_heads,
                "intermediate": config.intermediate_size, "vocab": config.vocab_size}


SMALL = (("hidden_size", 256), ("num_hidden_layers", 4), ("num_attention_heads", 4), ("intermediate_size", 1024))
FULL = Setting(batch=8, seq=128, rounds=5)
QUICK = Setting(batch=8, seq=64, rounds=8, model=SMALL)


def features(setting: Setting, vocab_size: int, seed: int = 0) -> list[dict]:
    """``batch`` random sequences of exactly ``seq`` tokens ([CLS] ... [SEP], no padding) with random labels.

    Word ids avoid BERT's special and unused ids (below 1000) when the vocabulary is BERT's."""
    g = torch.Generator().manual_seed(seed)
    bert_vocab = vocab_size > 2000
    ids = torch.randint(1000 if bert_vocab else 5, vocab_size, (setting.batch, setting.seq), generator=g)  # (B, T)
    ids[:, 0], ids[:, -1] = (101, 102) if bert_vocab else (2, 3)
    labels = torch.randint(0, 2, (setting.batch,), generator=g)
    return [{"input_ids": row.tolist(), "token_type_ids": [0] * setting.seq, "attention_mask": [1] * setting.seq,
             "labels": int(label)} for row, label in zip(ids, labels, strict=True)]


def teacher_model(setting: Setting, seed: int = 0) -> nn.Module:
    return random_model(setting.config(), seed=seed).eval()


def xtc_student(teacher: nn.Module, quant: QuantConfig | None = XTC_W1A8) -> nn.Module:
    """A full-depth copy of the teacher, quantized as ``xtc distill`` does when ``quant`` is given."""
    student = copy.deepcopy(teacher)
    if quant is not None:
        quantize_(student, quant)
    return student.train()


def kd_step(student: nn.Module, teacher: nn.Module, batch: list[dict], compile: bool = False,
            int8_forward: bool = False) -> Callable[[], None]:
    """One call = one real ``Trainer`` training step of ``student`` on ``batch`` (1-stage KD, AdamW);
    ``compile``: with ``train.compile`` (the first call compiles); ``int8_forward``: with ``train.int8_forward``."""
    n_teacher = teacher.config.num_hidden_layers
    train_cfg = TrainConfig(lr=2e-5, epochs=10_000.0, batch_size=len(batch), warmup_epochs=0.0, compile=compile,
                            int8_forward=int8_forward)
    trainer = Trainer(student, "sst2", batch, {"validation": batch}, PaddingCollator(0), train_cfg,
                      DistillConfig(kd="one_stage"), teacher=teacher, maps=layer_maps(range(n_teacher), n_teacher),
                      device=torch.device("cpu"), progress=False)
    stage = trainer.stages[0]
    trainer.optimizer, trainer.scheduler = trainer._optimizer(stage)
    trainer.model.train()

    def step() -> None:
        trainer._train_step(stage, batch)

    return step


def compiled_step(student: nn.Module, teacher: nn.Module, batch: list[dict]) -> tuple[Callable[[], None], float]:
    """The ``train.compile`` step, already compiled by one first step; returns it and that first step's seconds."""
    step = kd_step(student, teacher, batch, compile=True)  # compile wraps the teacher, leaves the module as it is
    started = time.perf_counter()
    step()
    return step, time.perf_counter() - started


def run(quick: bool = False, setting: Setting | None = None, compiled: bool = True) -> dict:
    """``compiled``: also time the ``train.compile`` W1A8 step (compiling takes a minute or more)."""
    setting = setting or (QUICK if quick else FULL)
    torch.manual_seed(0)
    teacher = teacher_model(setting)
    batch = features(setting, teacher.config.vocab_size)
    candidates = {"fp32": kd_step(xtc_student(teacher, None), teacher, batch),
                  "w1a8": kd_step(xtc_student(teacher), teacher, batch),
                  "w1a8_int8": kd_step(xtc_student(teacher), teacher, batch, int8_forward=True)}
    if compiled:
        candidates["w1a8_compiled"], compile_s = compiled_step(xtc_student(teacher), teacher, batch)
    samples = interleaved_samples(candidates, setting.rounds, warmup=1)
    del candidates, teacher, batch
    torch._dynamo.reset()  # compiled graphs hold their student: free it (and its AdamW state) for the next benchmark
    gc.collect()
    timing = summary(samples, "w1a8", "fp32")
    int8 = summary(samples, "w1a8_int8", "fp32")
    result = {
        "what": "one KD training step (teacher fwd no_grad + student fwd/bwd with XTC's 1-stage loss + clip + AdamW "
                "step), W1A8 12-layer-recipe student vs FP32 student; median over interleaved rounds",
        "method": "xtc.train.Trainer._train_step on one fixed batch; candidates alternate each round, the order "
                  "rotating; ratio of medians",
        "optimizer_step": True, "setting": setting.describe(), "threads": torch.get_num_threads(),
        "fp32_s": round(timing["medians"]["fp32"], 4), "w1a8_s": round(timing["medians"]["w1a8"], 4),
        "w1a8_over_fp32": timing["ratio"], "round_ratio_quartiles": timing["round_ratio_quartiles"],
        "target": "<= 1.15",
        "w1a8_int8_s": round(int8["medians"]["w1a8_int8"], 4), "w1a8_int8_over_fp32": int8["ratio"],
        "int8_round_ratio_quartiles": int8["round_ratio_quartiles"],
        "int8_target": "<= 0.95 (train.int8_forward=true vs the eager FP32 step)",
    }
    if compiled:
        fast = summary(samples, "w1a8_compiled", "fp32")
        result.update({
            "w1a8_compiled_s": round(fast["medians"]["w1a8_compiled"], 4),
            "w1a8_compiled_over_fp32": fast["ratio"], "compiled_round_ratio_quartiles": fast["round_ratio_quartiles"],
            "compiled_target": "<= 0.95 (train.compile=true vs the eager FP32 step)",
            "compile_first_step_s": round(compile_s, 1),
        })
    return result

