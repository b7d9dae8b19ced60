"""KD maps, losses, stage schedules and attention capture (docs/method.md, "Knowledge distillation")."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xtc.config import DistillConfig
from xtc.distill import (
    CAPTURE_IMPLEMENTATION, Internals, LayerMaps, Stage, attention_mse, capture_attention, capture_attention_forward,
    forward_with_internals, hidden_mse, kd_loss, kd_terms, label_loss, layer_maps, prediction_loss,
    soft_cross_entropy, stages,
)
from xtc.models import random_model, tiny_bert_config
from xtc.reduce import XTC_LAYERS, build_student, encoder_layers


def _eager_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    twin = random_model(model.config.__class__(**model.config.to_dict()), seed=seed)
    twin.load_state_dict(model.state_dict())
    twin.set_attn_implementation("eager")
    return twin.train(model.training)


# ---------------------------------------------------------------------------------------------- maps
def test_maps_for_xtc_6_and_5_layers_are_the_originals():
    # DeepSpeedExamples compression/bert/util.py, _kd_function: rep_list = [teacher_layers[0]-1] + [x+1 ...]
    assert layer_maps(XTC_LAYERS[6], 12) == LayerMaps((1, 3, 5, 7, 9, 11), (0, 2, 4, 6, 8, 10, 12))
    assert layer_maps(XTC_LAYERS[5], 12) == LayerMaps((2, 4, 6, 8, 10), (1, 3, 5, 7, 9, 11))
    att_map, rep_map = layer_maps((2, 5, 8, 11), 12)
    assert att_map == (2, 5, 8, 11) and rep_map == (1, 3, 6, 9, 12)


def test_default_distill_config_and_cli_give_the_original_map(capsys):
    from xtc.cli import main

    cfg = DistillConfig()
    assert (cfg.rep_first, cfg.att_mask) == ("original", "original")
    assert layer_maps(XTC_LAYERS[6], 12, cfg.rep_first).rep_map == (0, 2, 4, 6, 8, 10, 12)
    assert main(["layers", "--layers", "6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rep_map"] == [0, 2, 4, 6, 8, 10, 12]


def test_maps_without_reduction_are_the_identity():
    for rule in ("original", "input"):
        assert layer_maps(range(12), 12, rule) == LayerMaps(tuple(range(12)), tuple(range(13)))


def test_input_rep_first_is_a_named_option_and_original_is_guarded():
    assert layer_maps(XTC_LAYERS[6], 12, "input").rep_map == (1, 2, 4, 6, 8, 10, 12)
    assert layer_maps(XTC_LAYERS[5], 12, "input").rep_map == (2, 3, 5, 7, 9, 11)
    with pytest.raises(ValueError, match="hidden_states\\[-1\\].*use distill.rep_first=input"):
        layer_maps((0, 4, 8), 12)
    assert layer_maps((0, 4, 8), 12, "input").rep_map == (0, 1, 5, 9)
    with pytest.raises(ValueError, match="rep_first='deepspeed' is not supported"):
        layer_maps(XTC_LAYERS[6], 12, "deepspeed")
    with pytest.raises(ValueError, match="distill.rep_first='deepspeed'.*now called 'original'"):
        DistillConfig(rep_first="deepspeed")


def test_maps_validate_teacher_layer():
    with pytest.raises(ValueError, match=r"contains 12, out of range for a 12-layer teacher"):
        layer_maps((1, 12), 12)


def test_rep_map_matches_the_role_of_each_state(tiny_bert, tiny_batch):
    """For a student made of the teacher's first layers, every mapped state and score is the teacher's own."""
    student = build_student(tiny_bert, (0, 1, 2)).eval()
    maps = layer_maps((0, 1, 2), 4, "input")
    with torch.no_grad():
        s, t = forward_with_internals(student, tiny_batch), forward_with_internals(tiny_bert, tiny_batch)
    for j, k in enumerate(maps.rep_map):
        assert torch.equal(s.hidden_states[j], t.hidden_states[k])
    for i, k in enumerate(maps.att_map):
        assert torch.equal(s.scores[i], t.scores[k])


# ---------------------------------------------------------------------------------------------- losses
def test_soft_cross_entropy_is_tinyberts_mean_over_all_elements():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    per_example = F.cross_entropy(s, F.softmax(t, dim=-1))  # mean over the batch of the soft CE
    torch.testing.assert_close(soft_cross_entropy(s, t), per_example / 3)
    torch.testing.assert_close(soft_cross_entropy(s, t, temperature=2.0), soft_cross_entropy(s / 2, t / 2))


def test_soft_cross_entropy_at_its_minimum_when_student_equals_teacher():
    t = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    s = t.clone().requires_grad_()
    loss = soft_cross_entropy(s, t)
    p = F.softmax(t, dim=-1)
    torch.testing.assert_close(loss, -(p * p.log()).sum(-1).mean() / 3)  # teacher entropy / C
    loss.backward()
    torch.testing.assert_close(s.grad, torch.zeros_like(s), atol=1e-8, rtol=0)


def test_soft_cross_entropy_shape_mismatch():
    with pytest.raises(ValueError, match=r"student logits \(2, 3\) and teacher logits \(2, 2\) differ"):
        soft_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 2))


def test_regression_prediction_and_label_losses():
    s, t = torch.tensor([[1.0], [2.0]]), torch.tensor([[1.5], [2.0]])
    assert prediction_loss(s, t) == pytest.approx(0.125)
    assert prediction_loss(t, t) == 0
    assert label_loss(s, torch.tensor([1.0, 3.0])) == pytest.approx(0.5)
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    assert torch.equal(label_loss(logits, labels), F.cross_entropy(logits, labels))


def _hidden(n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 5, 8, generator=g) for _ in range(n)]


def test_hidden_mse_zero_when_equal_and_sums_over_the_map():
    teacher = _hidden(5, 0)
    assert hidden_mse([teacher[1], teacher[2], teacher[4]], teacher, (1, 2, 4)) == 0
    student = _hidden(3, 1)
    expected = sum(F.mse_loss(student[j], teacher[k]) for j, k in enumerate((1, 2, 4)))
    assert torch.equal(hidden_mse(student, teacher, (1, 2, 4)), expected)


def _scores(seed: int, mask_value: float) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(2, 1, 4, 4)
    mask[1, ..., 3:] = mask_value
    return [torch.randn(2, 3, 4, 4, generator=g) + mask for _ in range(2)]


@pytest.mark.parametrize("mask_value", [-1e4, torch.finfo(torch.float32).min, float("-inf")])
def test_zero_rule_ignores_masked_entries(mask_value):
    teacher = _scores(0, torch.finfo(torch.float32).min)
    remasked = [a.clone() for a in teacher]
    for a in remasked:  # the same scores under another mask constant (old HF BERT: -1e4; -inf)
        a[1, ..., 3:] = mask_value
    assert attention_mse(remasked, teacher, (0, 1), att_mask="zero") == 0
    assert attention_mse(teacher, teacher, (0, 1), att_mask="zero") == 0
    assert attention_mse(teacher, teacher, (0, 1), target="probs") == 0
    student = _scores(1, mask_value)
    loss = attention_mse(student, teacher, (0, 1), att_mask="zero")
    assert torch.isfinite(loss) and 0 < loss < 10


@pytest.mark.parametrize("mask_value", [torch.finfo(torch.float32).min, float("-inf")])
def test_zero_rule_gradient_is_finite_with_masked_entries(mask_value):
    student = [a.requires_grad_() for a in _scores(1, mask_value)]
    attention_mse(student, _scores(0, torch.finfo(torch.float32).min), (0, 1), att_mask="zero").backward()
    for a in student:
        assert torch.isfinite(a.grad).all()
        assert (a.grad[1, ..., 3:] == 0).all()


def test_original_rule_keeps_masked_entries_in_the_mean():
    """The original's MSELoss over the whole padded tensor: at masked keys, the raw score difference counts."""
    student, teacher = _scores(1, -1e4), _scores(0, -1e4)
    expected = sum(F.mse_loss(s, t) for s, t in zip(student, teacher))
    assert torch.equal(attention_mse(student, teacher, (0, 1)), expected)
    assert attention_mse(student, teacher, (0, 1)) > attention_mse(student, teacher, (0, 1), att_mask="zero")
    student = [a.requires_grad_() for a in student]
    attention_mse(student, teacher, (0, 1)).backward()
    assert all((a.grad[1, ..., 3:] != 0).all() for a in student)
    with pytest.raises(ValueError, match="att_mask='tinybert' is not supported"):
        attention_mse(student, teacher, (0, 1), att_mask="tinybert")
    with pytest.raises(ValueError, match="distill.att_mask='tinybert' is not supported"):
        DistillConfig(att_mask="tinybert")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: hidden_mse(_hidden(3, 0), _hidden(5, 0), (0, 1)),
         r"rep_map has 2 entries but the student gave 3 tensors"),
        (lambda: hidden_mse(_hidden(2, 0), _hidden(5, 0), (0, 5)),
         r"rep_map=\[0, 5\] points at \[5\], but the teacher gave 5 tensors"),
        (lambda: attention_mse(_scores(0, -1e4), _scores(0, -1e4), (0,)),
         r"att_map has 1 entries but the student gave 2 tensors"),
        (lambda: attention_mse(_scores(0, -1e4), _scores(0, -1e4), (0, 1), target="prob"),
         r"attention target 'prob' is not supported: use 'scores' \(XTC\) or 'probs'"),
    ],
)
def test_loss_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------- stages
@pytest.mark.parametrize(
    "kd, terms",
    [
        ("none", {"labels": 1.0}),
        ("logits", {"pred": 1.0}),
        ("logits_hidden", {"pred": 1.0, "rep": 1.0}),
        ("one_stage", {"pred": 1.0, "att": 1.0, "rep": 1.0}),
    ],
)
def test_single_stage_variants(kd, terms):
    (stage,) = stages(DistillConfig(kd=kd), 4)
    assert stage == Stage(kd, 4.0, 1.0, terms)
    assert dict(stage.terms) == kd_terms(DistillConfig(kd=kd)) == terms
    assert stage.needs_teacher == (kd != "none")
    assert stage.needs_attention == (kd == "one_stage")


def test_weights_come_from_the_config():
    cfg = DistillConfig(kd="one_stage", pred_weight=2.0, att_weight=0.5, rep_weight=0.0)
    assert kd_terms(cfg) == {"pred": 2.0, "att": 0.5, "rep": 0.0}


def test_two_stage_defaults_to_half_the_epochs():
    first, second = stages(DistillConfig(kd="two_stage"), 6)
    assert first == Stage("intermediate", 3.0, 2.5, {"att": 1.0, "rep": 1.0})
    assert second == Stage("prediction", 3.0, 1.0, {"pred": 1.0})
    assert not second.needs_attention and first.needs_attention


def test_two_stage_with_explicit_stage1_epochs():
    first, second = stages(DistillConfig(kd="two_stage", stage1_epochs=1.5, stage1_lr_scale=3.0), 4)
    assert (first.epochs, first.lr_scale, second.epochs, second.lr_scale) == (1.5, 3.0, 2.5, 1.0)


def test_stage_terms_are_read_only():
    (stage,) = stages(DistillConfig(), 1)
    with pytest.raises(TypeError):
        stage.terms["pred"] = 3.0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: stages(DistillConfig(kd="two_stage", stage1_epochs=4), 4),
         r"distill.stage1_epochs=4 leaves no epochs for stage II of train.epochs=4; set stage1_epochs below 4"),
        (lambda: stages(DistillConfig(), 0), r"epochs=0 must be a number > 0"),
        (lambda: kd_terms(DistillConfig(kd="two_stage")), r"distill.kd='two_stage' has two stages; call stages"),
        (lambda: Stage("x", 1.0, 1.0, {"hidden": 1.0}), r"stage 'x' has unknown loss terms \['hidden'\]"),
    ],
)
def test_stage_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------- attention capture
def test_capture_gives_the_eager_logits_exactly(tiny_bert, tiny_batch):
    eager = _eager_copy(tiny_bert)
    with torch.no_grad():
        captured = forward_with_internals(tiny_bert, tiny_batch)
        reference = eager(**tiny_batch, output_hidden_states=True)
    assert torch.equal(captured.logits, reference.logits)
    for a, b in zip(captured.hidden_states, reference.hidden_states, strict=True):
        assert torch.equal(a, b)
    assert tiny_bert.config._attn_implementation == "sdpa"  # restored


def test_capture_in_train_mode_matches_eager_with_dropout(tiny_bert, tiny_batch):
    model = tiny_bert.train()
    eager = _eager_copy(model)
    torch.manual_seed(7)
    captured = forward_with_internals(model, tiny_batch)
    torch.manual_seed(7)
    reference = eager(**tiny_batch)
    assert torch.equal(captured.logits, reference.logits)
    torch.manual_seed(8)
    assert not torch.equal(forward_with_internals(model, tiny_batch).logits, captured.logits)  # dropout is on


def test_captured_scores_are_qk_over_sqrt_d_plus_the_original_mask(tiny_bert, tiny_batch):
    with torch.no_grad():
        out = forward_with_internals(tiny_bert, tiny_batch)
    B, T = tiny_batch["input_ids"].shape
    H = tiny_bert.config.num_attention_heads
    d = tiny_bert.config.hidden_size // H
    keep = tiny_batch["attention_mask"].bool()[:, None, None, :].expand(B, H, T, T)  # (B, H, T, T)
    additive = (1.0 - keep.float()) * -10000.0  # transformers 4.15's extended attention mask
    assert len(out.scores) == len(out.probs) == 4
    for i, layer in enumerate(encoder_layers(tiny_bert)):
        attention, h = layer.attention.self, out.hidden_states[i]
        with torch.no_grad():
            q = attention.query(h).view(B, T, H, d).transpose(1, 2)  # (B, H, T, d)
            k = attention.key(h).view(B, T, H, d).transpose(1, 2)  # (B, H, T, d)
        by_hand = q @ k.transpose(-1, -2) / d**0.5 + additive  # (B, H, T, T)
        assert out.scores[i].shape == (B, H, T, T)
        torch.testing.assert_close(out.scores[i], by_hand, atol=1e-6, rtol=0)
        assert ((out.scores[i][~keep] < -9000) & (out.scores[i][~keep] > -11000)).all()
        assert torch.equal(out.probs[i], F.softmax(out.scores[i], dim=-1))  # -10000 and finfo.min: same softmax
        assert (out.probs[i][~keep] == 0).all()


class _Projection(nn.Module):
    """Stands in for a quantized linear: an nn.Module (not an nn.Linear) around a weight."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.inner = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_capture_works_with_replaced_qkv_modules(tiny_bert, tiny_batch):
    with torch.no_grad():
        before = forward_with_internals(tiny_bert, tiny_batch)
        for layer in encoder_layers(tiny_bert):
            for name in ("query", "key", "value"):
                setattr(layer.attention.self, name, _Projection(getattr(layer.attention.self, name)))
        after = forward_with_internals(tiny_bert, tiny_batch)
    assert torch.equal(before.logits, after.logits)
    for a, b in zip(before.scores, after.scores, strict=True):
        assert torch.equal(a, b)


def test_without_attention_no_switch_and_labels_ignored(tiny_bert, tiny_batch):
    out = forward_with_internals(tiny_bert, {**tiny_batch, "labels": torch.tensor([0, 1, 0])}, need_attention=False)
    assert out.scores is None and out.probs is None and len(out.hidden_states) == 5


def test_capture_restores_the_implementation_after_an_error(tiny_bert):
    with pytest.raises(RuntimeError, match="boom"):
        with capture_attention(tiny_bert):
            assert tiny_bert.config._attn_implementation == CAPTURE_IMPLEMENTATION
            raise RuntimeError("boom")
    assert tiny_bert.config._attn_implementation == "sdpa"


class _NoInterface(nn.Module):
    def forward(self, hidden_states: torch.Tensor, **kwargs) -> tuple[torch.Tensor, None]:
        return torch.zeros_like(hidden_states), None


def test_capture_errors(tiny_bert, tiny_batch):
    with pytest.raises(ValueError, match=r"Linear is not a transformers PreTrainedModel"):
        with capture_attention(nn.Linear(2, 2)):
            pass
    module = encoder_layers(tiny_bert)[0].attention.self
    q = torch.zeros(1, 4, 3, 8)
    with pytest.raises(ValueError, match=r"encoder layer 0 ran attention twice in one forward"):
        with capture_attention(tiny_bert):
            capture_attention_forward(module, q, q, q, None)
            capture_attention_forward(module, q, q, q, None)
    encoder_layers(tiny_bert)[2].attention.self = _NoInterface()
    with pytest.raises(ValueError, match=r"no attention was captured for encoder layers \[2\]"):
        forward_with_internals(tiny_bert, tiny_batch)


# ---------------------------------------------------------------------------------------------- kd_loss
def test_every_kd_loss_is_zero_for_an_identical_student(tiny_bert, tiny_batch):
    student = build_student(tiny_bert, range(4)).eval()
    maps = layer_maps(range(4), 4)
    cfg = DistillConfig()
    with torch.no_grad():
        s, t = forward_with_internals(student, tiny_batch), forward_with_internals(tiny_bert, tiny_batch)
    terms = {"att": 1.0, "rep": 1.0}
    for target in ("scores", "probs"):
        values = kd_loss(s, t, None, terms, maps, DistillConfig(attention_target=target))
        assert values["att"] == 0 and values["rep"] == 0 and values["loss"] == 0
    pred = kd_loss(s, t, None, {"pred": 1.0}, maps, cfg)["pred"]
    assert pred == soft_cross_entropy(t.logits, t.logits)  # the minimum: teacher entropy / C


def test_kd_loss_is_positive_and_reaches_the_student(tiny_bert, tiny_batch):
    teacher = tiny_bert.eval()
    student = build_student(random_model(tiny_bert.config, seed=5), (1, 3)).train()
    with torch.no_grad():
        t = forward_with_internals(teacher, tiny_batch)
    s = forward_with_internals(student, tiny_batch)
    terms = stages(DistillConfig(), 3)[0].terms
    values = kd_loss(s, t, None, terms, layer_maps((1, 3), 4), DistillConfig())
    assert set(values) == {"pred", "att", "rep", "loss", "att_masked"}
    assert all(v > 0 for v in values.values())
    torch.testing.assert_close(values["loss"], values["pred"] + values["att"] + values["rep"])
    values["loss"].backward()
    for name in ("bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.attention.self.query.weight",
                 "bert.encoder.layer.1.output.dense.weight", "classifier.weight"):
        grad = dict(student.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert all(p.grad is None for p in teacher.parameters())


def test_att_masked_is_the_part_of_the_attention_loss_at_the_batch_padded_keys(tiny_bert, tiny_batch):
    """The logged diagnostic splits L_att by the batch's own padding (not by the score threshold it uses)."""
    student = build_student(random_model(tiny_bert.config, seed=5), (1, 3)).eval()
    maps = layer_maps((1, 3), 4)
    with torch.no_grad():
        s, t = forward_with_internals(student, tiny_batch), forward_with_internals(tiny_bert, tiny_batch)
    padded_key = (tiny_batch["attention_mask"] == 0)[:, None, None, :]  # (B, 1, 1, S): row 1's last 4 keys
    at_padded = sum(torch.where(padded_key, (s.scores[i] - t.scores[j]).square(), 0.0).mean()
                    for i, j in enumerate(maps.att_map))
    values = kd_loss(s, t, None, {"att": 1.0}, maps, DistillConfig())
    assert 0 < values["att_masked"] < values["att"]
    torch.testing.assert_close(values["att_masked"], at_padded)
    zeroed = kd_loss(s, t, None, {"att": 1.0}, maps, DistillConfig(att_mask="zero"))
    assert zeroed["att_masked"] == 0 and zeroed["att"] < values["att"]
    torch.testing.assert_close(zeroed["att"], values["att"] - values["att_masked"])
    probs = kd_loss(s, t, None, {"att": 1.0}, maps, DistillConfig(attention_target="probs"))
    assert "att_masked" not in probs


def test_kd_loss_weights_and_probs_target(tiny_bert, tiny_batch):
    student = build_student(random_model(tiny_bert.config, seed=5), (0, 2)).eval()
    with torch.no_grad():
        s, t = forward_with_internals(student, tiny_batch), forward_with_internals(tiny_bert, tiny_batch)
    maps = layer_maps((0, 2), 4, "input")
    cfg = DistillConfig(attention_target="probs")
    values = kd_loss(s, t, None, {"att": 2.0, "rep": 0.0}, maps, cfg)
    assert torch.equal(values["att"], attention_mse(s.probs, t.probs, maps.att_map, "probs"))
    torch.testing.assert_close(values["loss"], 2 * values["att"])


def test_regression_kd_and_label_paths(tiny_batch):
    config = tiny_bert_config(num_labels=1)
    teacher, student = random_model(config, seed=0).eval(), random_model(config, seed=1).eval()
    with torch.no_grad():
        t = forward_with_internals(teacher, tiny_batch, need_attention=False)
        s = forward_with_internals(student, tiny_batch, need_attention=False)
    labels = torch.tensor([0.5, 2.0, 4.5])
    values = kd_loss(s, t, labels, {"pred": 1.0, "labels": 1.0}, None, DistillConfig())
    assert torch.equal(values["pred"], F.mse_loss(s.logits, t.logits))
    assert torch.equal(values["labels"], F.mse_loss(s.logits.squeeze(-1), labels))
    assert kd_loss(t, t, None, {"pred": 1.0}, None, DistillConfig())["loss"] == 0


def test_kd_loss_errors(tiny_bert, tiny_batch):
    with torch.no_grad():
        full = forward_with_internals(tiny_bert, tiny_batch)
        plain = forward_with_internals(tiny_bert, tiny_batch, need_attention=False)
    maps, cfg = layer_maps(range(4), 4), DistillConfig()
    cases = [
        ((full, full, None, {"labels": 1.0}, None), r"the 'labels' term \(distill.kd='none'\) needs labels"),
        ((full, None, None, {"pred": 1.0}, None), r"terms \['pred'\] need teacher outputs"),
        ((full, full, None, {"rep": 1.0}, None), r"the att/rep terms need layer maps"),
        ((plain, full, None, {"att": 1.0}, maps), r"the 'att' term needs captured attention from both models"),
        ((full, full, None, {"hidden": 1.0}, maps), r"unknown loss terms \['hidden'\]"),
        ((full, full, None, {}, maps), r"no loss terms given"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            kd_loss(*args, cfg)


def test_internals_is_a_plain_value(tiny_bert, tiny_batch):
    with torch.no_grad():
        out = forward_with_internals(tiny_bert, tiny_batch)
    assert isinstance(out, Internals) and out.logits.shape == (3, 2)
