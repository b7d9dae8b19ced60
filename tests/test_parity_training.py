"""XTC training steps against an oracle built from the original's pieces (docs/fidelity.md).

Side A is xtc's own code path, the functions ``xtc distill`` calls: ``commands.prepare_student`` (``build_student``
-> ``quantize_`` -> ``layer_maps``) -> ``Trainer`` (``make_collator`` padding, ``forward_with_internals``,
``kd_loss``, ``xtc.optim``). Side B, the oracle, is what DeepSpeedExamples' ``run_glue_no_trainer.py`` does, made of:
DeepSpeed 0.19.6's ``init_compression`` (its ``student_initialization`` for the layer reduction) and its
``compression_scheduler`` stepped as DeepSpeed's engine steps it; transformers 4.x ``AdamW`` (written out below from
transformers 4.15's source) over the script's two parameter groups; DeepSpeed's gradient clipping at 1.0 (its
``clip_grad_norm_`` formula, written out: the real one needs torch.distributed); transformers'
``get_scheduler("linear")`` with ``int(num_warmup_epochs * steps_per_epoch)`` warmup steps; and the KD loss of
``util.py``'s ``_kd_function``, with attention scores computed here from the query/key projections and
transformers 4.15's -10000 mask, independently of xtc's attention capture.

Runs under ``make test`` (XTC_REQUIRE_PEER=1: a missing DeepSpeed fails instead of skipping), in seconds.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import types

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification, get_scheduler

if os.environ.get("XTC_REQUIRE_PEER") == "1":
    import deepspeed.compression.compress  # noqa: F401  (fail loudly: make test promises these tests run)
ds_compress = pytest.importorskip("deepspeed.compression.compress", reason="install the peer extra: make test does")
from deepspeed.compression.config import get_compression_config  # noqa: E402
from deepspeed.compression.scheduler import compression_scheduler  # noqa: E402
from deepspeed.compression.utils import AsymQuantizer  # noqa: E402

from bench.deepspeed_step import xtc_ds_config  # noqa: E402
from xtc.commands import prepare_student  # noqa: E402
from xtc.config import QuantConfig, Recipe, apply_overrides  # noqa: E402
from xtc.distill import forward_with_internals, kd_loss, layer_maps, stages  # noqa: E402
from xtc.collate import make_collator  # noqa: E402
from xtc.models import random_model  # noqa: E402
from xtc.quant import quantize_  # noqa: E402
from xtc.quant.primitives import fake_quantize_weight  # noqa: E402
from xtc.reduce import build_student, encoder_layers  # noqa: E402
from xtc.train import Hooks, Trainer  # noqa: E402

TOL = 1e-6
K, B, T = 6, 4, 16  # optimizer steps, batch size, padded length
TEACHER = dict(vocab_size=96, hidden_size=64, num_hidden_layers=12, num_attention_heads=4, intermediate_size=128,
               max_position_embeddings=32, type_vocab_size=2, num_labels=2, hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0)  # head size 16: /sqrt(d) (4.15) and *d**-0.5 (5.x) agree exactly
XTC_6 = [1, 3, 5, 7, 9, 11]


def _teacher() -> BertForSequenceClassification:
    teacher = random_model(BertConfig(**TEACHER), seed=0).eval()
    with torch.no_grad():  # a pretrained [PAD] row is not zero: padded positions then carry real hidden states
        teacher.bert.embeddings.word_embeddings.weight[0].normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    return teacher


def _features(n: int, seed: int) -> list[dict]:
    """Unpadded token-id features (as ``xtc.glue.tokenize`` makes them), most shorter than T: real padding."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(5, T + 1, (1,), generator=g))
        ids = torch.randint(4, TEACHER["vocab_size"], (length,), generator=g).tolist()
        split = int(torch.randint(2, length - 1, (1,), generator=g))
        out.append({"input_ids": [2, *ids[1:-1], 3], "token_type_ids": [0] * split + [1] * (length - split),
                    "attention_mask": [1] * length, "labels": int(torch.randint(0, 2, (1,), generator=g))})
    return out


def _ds_config(layer_reduction: bool = True) -> dict:
    config = copy.deepcopy(xtc_ds_config(1))  # DeepSpeedExamples' ds_config_layer_reduction_W1Q8_fp32.json
    config["compression_training"]["layer_reduction"] = {
        "enabled": layer_reduction, "keep_number_layer": 6, "module_name_prefix": "bert.encoder.layer",
        "teacher_layer": XTC_6, "other_module_name": ["bert.pooler", "bert.embeddings", "classifier"],
    }
    return config


# ---------------------------------------------------------------------------------------------- the oracle
class TransformersAdamW(torch.optim.Optimizer):
    """transformers 4.15 ``AdamW.step`` (the optimizer ``run_glue_no_trainer.py`` builds), line for line."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, correct_bias=True):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      correct_bias=correct_bias))

    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.data
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p.data)
                    state["exp_avg_sq"] = torch.zeros_like(p.data)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                beta1, beta2 = group["betas"]
                state["step"] += 1
                exp_avg.mul_(beta1).add_(grad, alpha=(1.0 - beta1))
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = group["lr"]
                if group["correct_bias"]:
                    bias_correction1 = 1.0 - beta1 ** state["step"]
                    bias_correction2 = 1.0 - beta2 ** state["step"]
                    step_size = step_size * math.sqrt(bias_correction2) / bias_correction1
                p.data.addcdiv_(exp_avg, denom, value=-step_size)
                if group["weight_decay"] > 0.0:
                    p.data.add_(p.data, alpha=(-group["lr"] * group["weight_decay"]))


def _deepspeed_clip(parameters, max_norm: float = 1.0) -> None:
    """``deepspeed.runtime.utils.clip_grad_norm_`` on one process (world size 1), as the engine calls it."""
    parameters = [p for p in parameters if p.grad is not None]
    total_norm = torch.stack([p.grad.data.detach().float().norm(2) for p in parameters]).square().sum().float()
    total_norm = total_norm.pow(1.0 / 2) * 1.0 / 1.0
    clip_coef = torch.min(torch.tensor([1.0]), torch.tensor([float(max_norm)]) / (total_norm + 1e-6))
    for p in parameters:
        p.grad.data.mul_(clip_coef)


def _pad(features: list[dict]) -> dict[str, torch.Tensor]:
    """``tokenizer(..., padding="max_length")`` + ``default_data_collator``: every row padded to T."""
    return {key: torch.tensor([f[key] + [0] * (T - len(f[key])) for f in features])
            for key in ("input_ids", "token_type_ids", "attention_mask")}


@contextlib.contextmanager
def _qk(model):
    """Record each layer's query and key projections (forward hooks on the modules DeepSpeed put there)."""
    seen: dict[int, dict[str, torch.Tensor]] = {}
    handles = []
    for i, layer in enumerate(encoder_layers(model)):
        for name in ("query", "key"):
            module = getattr(layer.attention.self, name)
            handles.append(module.register_forward_hook(
                lambda m, args, out, i=i, name=name: seen.setdefault(i, {}).__setitem__(name, out)))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def _scores_415(seen, mask: torch.Tensor, heads: int) -> list[torch.Tensor]:
    """transformers 4.15 ``BertSelfAttention``: ``q k^T / sqrt(d)`` + ``(1 - mask) * -10000``."""
    extended = (1.0 - mask[:, None, None, :].float()) * -10000.0  # (B, 1, 1, T)
    out = []
    for i in sorted(seen):
        q, k = seen[i]["query"], seen[i]["key"]
        b, t, hd = q.shape
        d = hd // heads
        q = q.view(b, t, heads, d).permute(0, 2, 1, 3)  # (B, H, T, d)
        k = k.view(b, t, heads, d).permute(0, 2, 1, 3)  # (B, H, T, d)
        out.append(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d) + extended)  # (B, H, T, T)
    return out


def _kd_function(student, teacher, batch):
    """``util.py`` ``_kd_function`` with ``layer_reduction_enabled``: [loss, rep, cls, att]."""
    loss_mse = torch.nn.MSELoss()
    heads = TEACHER["num_attention_heads"]
    with _qk(student) as seen:
        outputs = student(**batch, output_hidden_states=True)
    student_logits, student_reps = outputs.logits, outputs.hidden_states
    student_atts = _scores_415(seen, batch["attention_mask"], heads)
    with torch.no_grad(), _qk(teacher) as seen:
        outputs_teacher = teacher(**batch, output_hidden_states=True)
        teacher_atts = _scores_415(seen, batch["attention_mask"], heads)
    teacher_logits, teacher_reps = outputs_teacher.logits, outputs_teacher.hidden_states
    targets_prob = F.softmax(teacher_logits, dim=-1)
    cls_loss = (-targets_prob * F.log_softmax(student_logits, dim=-1)).mean()  # soft_cross_entropy
    att_loss, rep_loss, loss = 0.0, 0.0, 0.0
    loss += cls_loss
    att_list = list(XTC_6)
    rep_list = [XTC_6[0] - 1] + [x + 1 for x in XTC_6]
    for student_att, teacher_att in zip(student_atts, [teacher_atts[i] for i in att_list]):
        att_loss += loss_mse(student_att, teacher_att)
    for student_rep, teacher_rep in zip(student_reps, [teacher_reps[i] for i in rep_list]):
        rep_loss += loss_mse(student_rep, teacher_rep)
    loss += att_loss + rep_loss
    return loss, rep_loss, cls_loss, att_loss


def _ds_student(teacher):
    """``run_glue_no_trainer.py``: a ``keep_number_layer``-deep BERT, ``init_compression`` with the teacher."""
    config = BertConfig(**{**TEACHER, "num_hidden_layers": 6})
    student = random_model(config, seed=99)  # every parameter is overwritten by student_initialization
    with contextlib.redirect_stdout(None):  # it prints the names of the copied modules
        student = ds_compress.init_compression(student, _ds_config(), teacher_model=teacher)
    return student


def oracle(teacher, batches, lr, warmup, weight_decay=0.01):
    """K steps of the original script; returns the student, per-step loss terms and step-1 / step-K gradients."""
    teacher = copy.deepcopy(teacher).eval()
    teacher.set_attn_implementation("eager")
    student = _ds_student(teacher)
    student.set_attn_implementation("eager")
    no_decay = ["bias", "LayerNorm.weight"]
    groups = [
        {"params": [p for n, p in student.named_parameters() if not any(nd in n for nd in no_decay)],
         "weight_decay": weight_decay},
        {"params": [p for n, p in student.named_parameters() if any(nd in n for nd in no_decay)],
         "weight_decay": 0.0},
    ]
    optimizer = TransformersAdamW(groups, lr=lr)
    lr_scheduler = get_scheduler("linear", optimizer=optimizer, num_warmup_steps=warmup,
                                 num_training_steps=len(batches))
    scheduler = compression_scheduler(student, get_compression_config(_ds_config()))
    scheduler.step(step_zero_check=True)  # the engine, before its first forward
    terms, grads = [], {}
    student.train()
    for k, features in enumerate(batches):
        loss, rep, cls, att = _kd_function(student, teacher, _pad(features))
        terms.append({"loss": loss.detach(), "pred": cls.detach(), "att": att.detach(), "rep": rep.detach()})
        loss.backward()
        if k == 0:
            grads["first"] = {n: p.grad.clone() for n, p in student.named_parameters()}
        _deepspeed_clip(student.parameters(), 1.0)
        if k == len(batches) - 1:
            grads["last"] = {n: p.grad.clone() for n, p in student.named_parameters()}
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        lr_scheduler.step()
    return student, terms, grads


# ---------------------------------------------------------------------------------------------- side A: xtc
def _xtc_student(teacher, recipe):
    """What ``xtc distill`` trains (no --init): the very function ``xtc.commands.distill`` calls."""
    student, maps, _ = prepare_student(recipe, teacher)
    return student, maps


def _recipe(lr: float, switched: tuple[str, ...] = ()) -> Recipe:
    recipe = apply_overrides(Recipe(), [
        "data.task=sst2", f"data.max_seq_length={T}", "reduce.layers=6", "train.epochs=1", f"train.batch_size={B}",
        f"train.lr={lr}", f"train.warmup_epochs={1 / K}", "train.eval_every_steps=1000", *switched,
    ])
    # Recipe() leaves quantization off; the XTC W1A8 setting, as `--weight-bits 1 --act-bits 8` sets it
    return Recipe(data=recipe.data, reduce=recipe.reduce, quant=QuantConfig(weight_bits=1, act_bits=8),
                  distill=recipe.distill, train=recipe.train)


def _steps_against_the_original(switched: tuple[str, ...] = ()) -> dict[str, bool]:
    """K steps of xtc's Trainer (the recipe, with ``switched`` fidelity keys) and of the oracle on the same batches;
    which agreements hold (each is one assertion of the step-parity test)."""
    lr = 1e-3
    teacher = _teacher()
    recipe = _recipe(lr, switched)
    student, maps = _xtc_student(teacher, recipe)
    initial = {n: p.detach().clone() for n, p in student.named_parameters()}
    train = _features(K * B, seed=2)
    base = make_collator(types.SimpleNamespace(pad_token_id=0), recipe.data.padding, recipe.data.max_seq_length)
    batches, logged = [], []

    def collate(features):  # xtc's own collator; the features of each training step are kept for the oracle
        if len(batches) < K:
            batches.append([dict(f) for f in features])
        return base(features)

    # step-1 loss terms and gradients through the functions the Trainer calls
    first = copy.deepcopy(student)
    stage = stages(recipe.distill, recipe.train.epochs)[0]

    trainer = Trainer(student, recipe.data.task, train, {"validation": _features(8, seed=3)}, collate, recipe.train,
                      recipe.distill, teacher=teacher, maps=maps, hooks=Hooks(on_log=logged.append),
                      device=torch.device("cpu"), progress=False)
    trainer.fit()
    steps = [r for r in logged if r["kind"] == "train"]
    assert len(steps) == len(batches) == K and all(len(b) == B for b in batches)
    assert (_pad(batches[0])["attention_mask"] == 0).any()  # real padding

    with torch.no_grad():
        teacher_out = forward_with_internals(teacher, base(batches[0]))
    values = kd_loss(forward_with_internals(first, base(batches[0])), teacher_out, None, stage.terms, maps,
                     recipe.distill)
    values["loss"].backward()

    theirs, terms, grads = oracle(teacher, batches, lr, warmup=int(1 / K * K))
    ours_first, ours = dict(first.named_parameters()), dict(trainer.model.named_parameters())
    assert set(ours_first) == set(grads["first"])
    grad_diff = max((ours_first[n].grad - g).abs().max().item() for n, g in grads["first"].items())
    last_diff = max((ours[n].grad - g).abs().max().item() for n, g in grads["last"].items())
    param_diff = max((ours[n] - p).abs().max().item() for n, p in theirs.named_parameters())
    moved = max((ours[n] - initial[n]).abs().max().item() for n in ours)
    print(f"{switched or 'original'}: step-1 grad diff {grad_diff:.3g}, step-{K} grad diff {last_diff:.3g}, "
          f"param diff {param_diff:.3g}, max move {moved:.3g}")
    assert moved >= 100 * TOL, moved  # the parameters really moved
    return {
        # step 1: each loss term equal, bit for bit (as computed and as logged); the step-1 gradients equal
        "step-1 loss terms": all(torch.equal(values[name].detach(), terms[0][name])
                                 and steps[0][name] == float(terms[0][name]) for name in ("pred", "att", "rep")),
        "step-1 gradients": grad_diff <= TOL,
        # every step's loss terms, and the clipped gradients of the last step
        "loss terms": all(steps[k][name] == pytest.approx(float(terms[k][name]), rel=1e-5, abs=1e-7)
                          for k in range(K) for name in ("pred", "att", "rep", "loss")),
        f"step-{K} gradients": last_diff <= TOL,
        # after K steps: every parameter within TOL
        "parameters": param_diff <= TOL,
    }


def test_k_steps_of_step2_w1a8_kd_equal_the_original():
    recipe = _recipe(1e-3)
    # the paper recipe, as the defaults give it
    assert (recipe.data.padding, recipe.distill.rep_first, recipe.distill.att_mask, recipe.train.optimizer) == (
        "max_length", "original", "original", "original")
    assert layer_maps(tuple(XTC_6), 12, recipe.distill.rep_first).rep_map == (0, 2, 4, 6, 8, 10, 12)
    agreements = _steps_against_the_original()
    assert all(agreements.values()), agreements


@pytest.mark.parametrize("switched", ["train.optimizer=torch", "distill.att_mask=zero", "distill.rep_first=input",
                                      "data.padding=dynamic"])
def test_each_fidelity_key_switched_breaks_the_step_parity(switched):
    """docs/fidelity.md: the step test tells each fidelity key's other value from the original's rule."""
    agreements = _steps_against_the_original((switched,))
    assert not all(agreements.values()), f"{switched} still agrees with the original: {agreements}"


def test_build_student_equals_deepspeed_student_initialization():
    teacher = _teacher()
    ours = build_student(teacher, XTC_6)
    config = BertConfig(**{**TEACHER, "num_hidden_layers": 6})
    theirs = random_model(config, seed=7)
    with contextlib.redirect_stdout(None):
        ds_compress.student_initialization(theirs, teacher, _ds_config())
    ours_params = dict(ours.named_parameters())
    assert set(ours_params) == {n for n, _ in theirs.named_parameters()}
    for name, p in theirs.named_parameters():
        assert torch.equal(ours_params[name], p), name
    # and the random init of `theirs` was really overwritten everywhere
    fresh = dict(random_model(config, seed=7).named_parameters())
    assert all(not torch.equal(fresh[n], p) for n, p in theirs.named_parameters() if fresh[n].std() > 0)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("shape", [(64, 33), (768, 768), (7,)])
def test_asymmetric_equals_deepspeed(bits, shape):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(8)) * 3 + 0.5
    for groups in sorted({1, shape[0]} if len(shape) > 1 else {1}):
        ours = fake_quantize_weight(w, bits, f"groups:{groups}", symmetric=False)
        assert torch.equal(ours, AsymQuantizer.apply(w, bits, None, None, groups))


def test_constant_group_is_nan_in_deepspeed_asymmetric_and_finite_in_xtc():
    w = torch.randn(4, 8, generator=torch.Generator().manual_seed(9))
    w[1] = 0.25  # max == min: DeepSpeed divides by a zero scale
    theirs = AsymQuantizer.apply(w, 4, None, None, 4)
    ours = fake_quantize_weight(w, 4, "row", symmetric=False)
    assert theirs[1].isnan().all() and torch.isfinite(ours).all()
    assert torch.equal(ours[[0, 2, 3]], theirs[[0, 2, 3]])


def test_static_activation_range_equals_deepspeed_quantact_over_training_then_eval():
    teacher = random_model(BertConfig(**{**TEACHER, "num_hidden_layers": 4}), seed=0)
    with torch.no_grad():
        teacher.bert.embeddings.word_embeddings.weight[0].normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    config = _ds_config(layer_reduction=False)
    config["compression_training"]["activation_quantization"]["shared_parameters"]["range_calibration"] = "static"
    theirs = ds_compress.init_compression(copy.deepcopy(teacher), config)
    compression_scheduler(theirs, get_compression_config(config)).step(step_zero_check=True)
    ours = copy.deepcopy(teacher)
    quantize_(ours, QuantConfig(weight_bits=1, act_bits=8, act_range="static", act_granularity="tensor"))
    ours.train(), theirs.train()
    for seed in (10, 11, 12):  # several training batches move the EMA ranges
        batch = _pad(_features(B, seed=seed))
        a, b = ours(**batch).logits, theirs(**batch).logits
        assert (a - b).abs().max() <= 1e-5
        assert (b - teacher.train()(**batch).logits).abs().max() > 1e-3  # DeepSpeed really quantizes
    ranges = {n: m.activation_quantizer.x_min_max for n, m in theirs.named_modules()
              if hasattr(m, "activation_quantizer") and hasattr(m.activation_quantizer, "x_min_max")}
    ours_modules = dict(ours.named_modules())
    assert len(ranges) == 6 * 4  # q, k, v, attention output, intermediate, output per layer
    for name, x_min_max in ranges.items():
        assert torch.equal(ours_modules[name].act_quantizer.min_max, x_min_max), name
    ours.eval(), theirs.eval()
    batch = _pad(_features(B, seed=13))
    assert (ours(**batch).logits - theirs(**batch).logits).abs().max() <= 1e-5
    for name, x_min_max in ranges.items():  # eval mode leaves the ranges alone
        assert torch.equal(ours_modules[name].act_quantizer.min_max, x_min_max), name
