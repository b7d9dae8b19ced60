"""Knowledge distillation for XTC (docs/method.md, "Knowledge distillation"): layer maps, losses, stage schedules, attention capture.

XTC's setting is 1-stage KD, ``loss = L_pred + L_att + L_rep`` with ground-truth labels unused; the other
variants of the study (``DistillConfig.kd``) are returned by ``stages`` as data that a training loop follows.
Attention *scores* (pre-softmax, scaled, with the additive mask) are not an output of transformers 5 BERT, so
``capture_attention`` routes attention through an ``AttentionInterface`` function of ours that records them,
without editing the installed library.
"""

from __future__ import annotations

import contextlib
import contextvars
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from xtc.config import DistillConfig
from xtc.reduce import encoder_layers, select_layers

# TinyBERT's threshold: score entries at or below it are masked positions and carry no signal.
MASKED_SCORE = -1e2
# transformers 4.15 (pinned by the original) adds (1 - mask) * -10000 to the scores; transformers 5 adds finfo.min.
ORIGINAL_MASK_VALUE = -10000.0
ATT_MASK_RULES = ("original", "zero")
CAPTURE_IMPLEMENTATION = "xtc_capture"
TERMS = ("labels", "pred", "att", "rep")
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds")


# ---------------------------------------------------------------------------------------------- layer maps
class LayerMaps(NamedTuple):
    """Student -> teacher indices: ``att_map[i]`` is a teacher layer, ``rep_map[j]`` a ``hidden_states`` index."""

    att_map: tuple[int, ...]
    rep_map: tuple[int, ...]


def layer_maps(teacher_layer: Sequence[int], n_teacher: int, rep_first: str = "original") -> LayerMaps:
    """KD maps for a student built by copying ``teacher_layer`` (``xtc.reduce.build_student``).

    Convention (HF): ``hidden_states[0]`` is the embedding output and ``hidden_states[k + 1]`` the output of layer
    ``k``, for teacher and student alike. Student layer ``i`` is a copy of teacher layer ``t_i = teacher_layer[i]``,
    so ``att_map = teacher_layer`` and the output of student layer ``i`` maps to the teacher's ``t_i + 1``.
    The student's embedding output maps to (``rep_first``):

    * ``original`` (default): ``hidden_states[t_0 - 1]``, the original's ``rep_list = [teacher_layers[0] - 1] +
      [x + 1 for x in teacher_layers]`` (DeepSpeedExamples ``compression/bert/util.py``, ``_kd_function``):
      6 layers -> ``[0, 2, 4, 6, 8, 10, 12]``, 5 layers -> ``[1, 3, 5, 7, 9, 11]``. Refused when layer 0 is kept
      (the original would read ``hidden_states[-1]``, the teacher's last state);
    * ``input``: ``hidden_states[t_0]``, the state entering the first kept teacher layer.

    With every layer kept both are the identity (the original's skip map with one layer per block).
    """
    teacher_layer = select_layers(n_teacher, None, teacher_layer)
    if len(teacher_layer) == n_teacher:
        first = 0
    elif rep_first == "input":
        first = teacher_layer[0]
    elif rep_first == "original":
        if teacher_layer[0] == 0:
            raise ValueError(
                "distill.rep_first='original' maps the embedding output to hidden_states[teacher_layer[0] - 1] = "
                "hidden_states[-1] (the teacher's last layer) when layer 0 is kept; use distill.rep_first=input"
            )
        first = teacher_layer[0] - 1
    else:
        raise ValueError(f"rep_first={rep_first!r} is not supported: use 'original' (the default) or 'input'")
    return LayerMaps(teacher_layer, (first,) + tuple(t + 1 for t in teacher_layer))


# ---------------------------------------------------------------------------------------------- losses
def soft_cross_entropy(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``mean(-softmax(z_t / T) * log_softmax(z_s / T))``, the mean over *all* ``B x C`` elements.

    Exactly TinyBERT's / DeepSpeedExamples' ``(-targets_prob * student_likelihood).mean()``: the per-example soft
    cross-entropy divided by the number of classes, and no ``T^2`` factor. Its minimum (student == teacher) is the
    teacher's entropy / C, not 0; its gradient there is 0.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ; both models need the same num_labels")
    targets = F.softmax(teacher_logits / temperature, dim=-1)
    return (-targets * F.log_softmax(student_logits / temperature, dim=-1)).mean()


def prediction_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``L_pred``: soft cross-entropy for classification; MSE of the two outputs for regression (one label)."""
    if student_logits.shape[-1] == 1:
        return F.mse_loss(student_logits, teacher_logits)
    return soft_cross_entropy(student_logits, teacher_logits, temperature)


def label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The no-KD loss: cross-entropy with the labels, or MSE for regression (as HF's sequence classifiers)."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    return F.cross_entropy(logits, labels)


def _check_map(kind: str, n_student: int, n_teacher: int, index_map: Sequence[int]) -> None:
    if len(index_map) != n_student:
        raise ValueError(f"{kind} has {len(index_map)} entries but the student gave {n_student} tensors; "
                         f"build the maps from the student's teacher_layer (layer_maps) for this student")
    bad = [i for i in index_map if not 0 <= i < n_teacher]
    if bad:
        raise ValueError(f"{kind}={list(index_map)} points at {bad}, but the teacher gave {n_teacher} tensors; "
                         "build the maps for this teacher's depth")


def hidden_mse(
    student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor], rep_map: Sequence[int]
) -> torch.Tensor:
    """``L_rep = sum_j MSE(H_s[j], H_t[rep_map[j]])`` over hidden states including the embedding output."""
    _check_map("rep_map", len(student_hidden), len(teacher_hidden), rep_map)
    return sum(F.mse_loss(h, teacher_hidden[t]) for h, t in zip(student_hidden, rep_map, strict=True))


def _unmask(scores: torch.Tensor) -> torch.Tensor:
    """TinyBERT's ``torch.where(att <= -1e2, 0, att)``; also catches transformers 5's ``finfo.min`` and ``-inf``."""
    return torch.where(scores <= MASKED_SCORE, torch.zeros_like(scores), scores)


def attention_mse(
    student_att: Sequence[torch.Tensor], teacher_att: Sequence[torch.Tensor], att_map: Sequence[int],
    target: str = "scores", att_mask: str = "original",
) -> torch.Tensor:
    """``L_att = sum_i MSE(A_s[i], A_t[att_map[i]])``, each ``A`` of shape (B, H, T, T).

    ``target="scores"`` (XTC): pre-softmax scores as captured (``Internals.scores``: the -10000 additive mask of
    transformers 4.15); ``att_mask`` says what happens at masked positions: ``original`` keeps them, so there the
    MSE sees the student's and teacher's raw score difference (the original's ``MSELoss`` over the whole padded
    tensor); ``zero`` zeroes every entry <= -100 in both first (TinyBERT's rule), so padding carries no signal.
    ``"probs"``: softmax probabilities, plain MSE (masked entries are 0 in both).
    """
    if target not in ("scores", "probs"):
        raise ValueError(f"attention target {target!r} is not supported: use 'scores' (XTC) or 'probs'")
    if att_mask not in ATT_MASK_RULES:
        raise ValueError(f"att_mask={att_mask!r} is not supported: use 'original' (the default) or 'zero'")
    _check_map("att_map", len(student_att), len(teacher_att), att_map)
    prepare = _unmask if target == "scores" and att_mask == "zero" else (lambda a: a)
    return sum(
        F.mse_loss(prepare(a), prepare(teacher_att[t])) for a, t in zip(student_att, att_map, strict=True)
    )


@torch.no_grad()
def attention_mse_at_masked(
    student_att: Sequence[torch.Tensor], teacher_att: Sequence[torch.Tensor], att_map: Sequence[int],
    att_mask: str = "original",
) -> torch.Tensor:
    """The part of ``attention_mse`` (scores target) that sits at masked keys (the teacher's entries <= -100): the
    same sum of per-layer means, with every other entry's squared error left out. A diagnostic (the training log's
    ``att_masked``): with ``att_mask="original"`` and padding to a fixed length, most of ``L_att`` can sit where the
    model never attends; with ``"zero"`` it is 0."""
    prepare = _unmask if att_mask == "zero" else (lambda a: a)
    total = torch.zeros(())
    for a, t in zip(student_att, att_map, strict=True):
        target = teacher_att[t]
        error = (prepare(a.float()) - prepare(target.float())).square()
        total = total.to(error.device) + torch.where(target <= MASKED_SCORE, error, 0.0).mean()
    return total


# ---------------------------------------------------------------------------------------------- stages
@dataclass(frozen=True)
class Stage:
    """One training stage: ``epochs`` at ``lr * lr_scale`` minimising ``sum(weight * term)`` over ``terms``.

    Terms: ``labels`` (ground truth), ``pred`` (``L_pred``), ``att`` (``L_att``), ``rep`` (``L_rep``).
    """

    name: str
    epochs: float
    lr_scale: float
    terms: Mapping[str, float]

    def __post_init__(self) -> None:
        unknown = set(self.terms) - set(TERMS)
        if unknown:
            raise ValueError(f"stage {self.name!r} has unknown loss terms {sorted(unknown)}; use {list(TERMS)}")
        object.__setattr__(self, "terms", types.MappingProxyType(dict(self.terms)))

    @property
    def needs_teacher(self) -> bool:
        return any(term in self.terms for term in ("pred", "att", "rep"))

    @property
    def needs_attention(self) -> bool:
        return "att" in self.terms


def kd_terms(cfg: DistillConfig) -> dict[str, float]:
    """The weighted terms of a single-stage variant (``two_stage`` is two of these; see ``stages``)."""
    pred, att, rep = ("pred", cfg.pred_weight), ("att", cfg.att_weight), ("rep", cfg.rep_weight)
    table = {"none": [("labels", 1.0)], "logits": [pred], "logits_hidden": [pred, rep], "one_stage": [pred, att, rep]}
    if cfg.kd not in table:
        raise ValueError(f"distill.kd={cfg.kd!r} has two stages; call stages(cfg, epochs) instead of kd_terms")
    return dict(table[cfg.kd])


def stages(cfg: DistillConfig, epochs: float) -> tuple[Stage, ...]:
    """The training schedule of a KD variant, as data.

    ``two_stage`` (TinyBERT / BinaryBERT): stage I ``intermediate`` trains ``att + rep`` for ``stage1_epochs``
    (half of ``epochs`` when None) at ``lr * stage1_lr_scale`` (2.5 in BinaryBERT's code); stage II
    ``prediction`` trains ``pred`` for the remaining epochs at ``lr``. Other variants are one stage at ``lr``.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or epochs <= 0:
        raise ValueError(f"epochs={epochs!r} must be a number > 0 (train.epochs)")
    if cfg.kd != "two_stage":
        return (Stage(cfg.kd, float(epochs), 1.0, kd_terms(cfg)),)
    first = epochs / 2 if cfg.stage1_epochs is None else cfg.stage1_epochs
    if first >= epochs:
        raise ValueError(f"distill.stage1_epochs={cfg.stage1_epochs} leaves no epochs for stage II of "
                         f"train.epochs={epochs}; set stage1_epochs below {epochs} (or null for half)")
    return (
        Stage("intermediate", float(first), cfg.stage1_lr_scale, {"att": cfg.att_weight, "rep": cfg.rep_weight}),
        Stage("prediction", float(epochs - first), 1.0, {"pred": cfg.pred_weight}),
    )


# ---------------------------------------------------------------------------------------------- attention capture
@dataclass(frozen=True)
class Internals:
    """What KD needs from one forward pass; ``scores``/``probs`` are None when attention was not captured."""

    logits: torch.Tensor  # (B, C)
    hidden_states: tuple[torch.Tensor, ...]  # L + 1 of (B, T, D); [0] is the embedding output
    scores: tuple[torch.Tensor, ...] | None = None  # L of (B, H, T, T), pre-softmax, scaled, + 4.15's -10000 mask
    probs: tuple[torch.Tensor, ...] | None = None  # L of (B, H, T, T), softmax(scores) before attention dropout


class _Recorder:
    """Per-forward storage; ``index`` maps id(submodule) -> encoder layer so calls land in their layer's slot."""

    def __init__(self, layers: nn.ModuleList) -> None:
        self.index = {id(m): i for i, layer in enumerate(layers) for m in layer.modules()}
        self.scores: list[torch.Tensor | None] = [None] * len(layers)
        self.probs: list[torch.Tensor | None] = [None] * len(layers)


_RECORDER: contextvars.ContextVar[_Recorder | None] = contextvars.ContextVar("xtc_attention_recorder", default=None)


def capture_attention_forward(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0, **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention, op for op as transformers' ``eager_attention_forward`` (so outputs are bitwise equal),
    that also records scores and probabilities into the active ``capture_attention`` recorder, if any.

    The recorded scores carry transformers 4.15's additive mask, ``-10000`` at masked keys (the original pins
    4.15 and its patched BERT returns these scores), not transformers 5's ``finfo.min``: the softmax, and so the
    model's output, is the same with either (``exp`` underflows to 0 at both), but the scores at masked positions
    enter the original's attention MSE.
    """
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    raw = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, T, S)
    scores = raw if attention_mask is None else raw + attention_mask  # (B, 1, T, S) additive: 0 or finfo.min
    probs = F.softmax(scores, dim=-1)
    recorder = _RECORDER.get()
    layer = None if recorder is None else recorder.index.get(id(module))
    if layer is not None:
        if recorder.scores[layer] is not None:
            raise ValueError(f"encoder layer {layer} ran attention twice in one forward (cross-attention?); "
                             "attention capture supports encoder self-attention only")
        recorder.scores[layer], recorder.probs[layer] = _original_scores(raw, attention_mask), probs
    attn_weights = F.dropout(probs, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()  # (B, T, H, d)
    return attn_output, attn_weights


def _original_scores(raw: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """``raw + (1 - mask) * -10000``, transformers 4.15's extended attention mask, from transformers 5's mask."""
    if attention_mask is None:
        return raw
    masked = ~attention_mask if attention_mask.dtype == torch.bool else attention_mask < 0
    return raw + torch.where(masked, ORIGINAL_MASK_VALUE, 0.0).to(raw.dtype)  # (B, H, T, S)


AttentionInterface.register(CAPTURE_IMPLEMENTATION, capture_attention_forward)
# Without a mask function of its own, transformers would build *no* mask for an unknown implementation.
AttentionMaskInterface.register(CAPTURE_IMPLEMENTATION, eager_mask)


@contextlib.contextmanager
def capture_attention(model: nn.Module) -> Iterator[_Recorder]:
    """Run ``model`` with capturing eager attention inside the block; restore its implementation after.

    Cost: eager attention instead of SDPA/flash, and one extra (B, H, T, T) scores tensor kept alive per layer
    (the probabilities are kept by autograd for the backward pass anyway).
    """
    if not hasattr(model, "set_attn_implementation"):
        raise ValueError(f"{type(model).__name__} is not a transformers PreTrainedModel; attention capture "
                         "switches its attention implementation with set_attn_implementation")
    recorder = _Recorder(encoder_layers(model))
    previous = model.config._attn_implementation
    if previous != CAPTURE_IMPLEMENTATION:
        model.set_attn_implementation(CAPTURE_IMPLEMENTATION)
    token = _RECORDER.set(recorder)
    try:
        yield recorder
    finally:
        _RECORDER.reset(token)
        if previous != CAPTURE_IMPLEMENTATION:
            model.set_attn_implementation(previous)


def forward_with_internals(
    model: nn.Module, batch: Mapping[str, torch.Tensor], need_attention: bool = True
) -> Internals:
    """Logits, hidden states and (if ``need_attention``) per-layer attention scores and probabilities.

    Only the model inputs of ``batch`` are passed (``labels`` is not, so the model computes no loss). Works in
    train mode (dropout on) and with q/k/v replaced by any module: capture sees the projected tensors only.
    """
    inputs = {k: v for k, v in batch.items() if k in _MODEL_INPUTS}
    if not need_attention:
        out = model(**inputs, output_hidden_states=True, return_dict=True)
        return Internals(out.logits, tuple(out.hidden_states))
    with capture_attention(model) as recorder:
        out = model(**inputs, output_hidden_states=True, return_dict=True)
    missing = [i for i, s in enumerate(recorder.scores) if s is None]
    if missing:
        raise ValueError(f"no attention was captured for encoder layers {missing}: the model's attention does not "
                         "dispatch through transformers' AttentionInterface")
    return Internals(out.logits, tuple(out.hidden_states), tuple(recorder.scores), tuple(recorder.probs))


# ---------------------------------------------------------------------------------------------- the KD loss
def kd_loss(
    student_out: Internals, teacher_out: Internals | None, labels: torch.Tensor | None,
    terms: Mapping[str, float], maps: LayerMaps | None, cfg: DistillConfig,
) -> dict[str, torch.Tensor]:
    """Each active term of ``terms`` (unweighted) and ``loss = sum(weight * term)``.

    Teacher tensors are detached (the teacher is never trained); ``att`` uses ``cfg.attention_target``. With the
    scores target, ``att_masked`` (a diagnostic, not in ``loss``) is the part of ``att`` at masked keys.
    """
    unknown = set(terms) - set(TERMS)
    if unknown:
        raise ValueError(f"unknown loss terms {sorted(unknown)}; use {list(TERMS)}")
    if teacher_out is None and any(t in terms for t in ("pred", "att", "rep")):
        raise ValueError(f"terms {sorted(terms)} need teacher outputs; pass teacher_out (forward_with_internals)")
    if maps is None and any(t in terms for t in ("att", "rep")):
        raise ValueError("the att/rep terms need layer maps; pass maps=layer_maps(teacher_layer, n_teacher)")
    if not terms:
        raise ValueError("no loss terms given; use a stage's terms, e.g. stages(cfg, epochs)[0].terms")
    values: dict[str, torch.Tensor] = {}
    if "labels" in terms:
        if labels is None:
            raise ValueError("the 'labels' term (distill.kd='none') needs labels; pass the batch's labels")
        values["labels"] = label_loss(student_out.logits, labels)
    if "pred" in terms:
        values["pred"] = prediction_loss(student_out.logits, teacher_out.logits.detach(), cfg.temperature)
    if "rep" in terms:
        teacher_hidden = [h.detach() for h in teacher_out.hidden_states]
        values["rep"] = hidden_mse(student_out.hidden_states, teacher_hidden, maps.rep_map)
    if "att" in terms:
        target = cfg.attention_target
        student_att, teacher_att = getattr(student_out, target), getattr(teacher_out, target)
        if student_att is None or teacher_att is None:
            raise ValueError("the 'att' term needs captured attention from both models; "
                             "call forward_with_internals(model, batch, need_attention=True)")
        values["att"] = attention_mse(student_att, [a.detach() for a in teacher_att], maps.att_map, target,
                                      cfg.att_mask)
    values["loss"] = sum(terms[name] * value for name, value in values.items())
    if "att" in terms and cfg.attention_target == "scores":  # logged beside the terms, never trained on
        values["att_masked"] = attention_mse_at_masked(student_att, teacher_att, maps.att_map, cfg.att_mask)
    return values
