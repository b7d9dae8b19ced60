"""Config dataclasses: defaults, validation errors (each naming the value and the fix), overrides."""

from __future__ import annotations

import pytest

from xtc.config import (
    DataConfig,
    DistillConfig,
    NumGroups,
    PerGroup,
    PerRow,
    PerTensor,
    PerToken,
    QuantConfig,
    Recipe,
    ReduceConfig,
    TrainConfig,
    apply_overrides,
    parse_granularity,
)


def test_xtc_defaults():
    q = QuantConfig()
    assert (q.weight_bits, q.act_bits, q.act_range, q.act_momentum) == (1, 8, "dynamic", 0.95)
    assert (q.weight_granularity, q.embedding_granularity, q.act_granularity) == ("tensor", "row", "token")
    assert DistillConfig().kd == "one_stage" and DistillConfig().stage1_lr_scale == 2.5
    t = TrainConfig()
    assert (t.weight_decay, t.grad_clip, t.batch_size, t.warmup_epochs) == (0.01, 1.0, 32, 1.0)
    assert DataConfig().max_seq_length == 128


def test_bits_for_groups_and_mixed_setting():
    mixed = QuantConfig(weight_bits=1, attn_out_bits=2, ffn_out_bits=2)
    assert [mixed.bits_for(g) for g in ("qkv", "attn_out", "ffn_in", "ffn_out", "word_embeddings")] == [1, 2, 1, 2, 1]
    assert QuantConfig(weight_bits=None).bits_for("qkv") is None
    assert QuantConfig(groups=("qkv",)).bits_for("ffn_in") is None


@pytest.mark.parametrize("bits", [0, 9, 16, -1])
def test_weight_bits_outside_range(bits):
    with pytest.raises(ValueError, match=rf"quant.weight_bits={bits} is not supported: expected one of \[1, 2, 3"):
        QuantConfig(weight_bits=bits)


@pytest.mark.parametrize("bits", [1, 2, 3, 9])
def test_activation_bits_outside_range(bits):
    with pytest.raises(ValueError, match=rf"quant.act_bits={bits} is not supported: .*or null for none"):
        QuantConfig(act_bits=bits)


def test_unknown_task_suggests_the_right_name():
    with pytest.raises(ValueError, match="data.task='sst' is not supported.*did you mean 'sst2'"):
        DataConfig(task="sst")


def test_static_activation_range_needs_tensor_granularity():
    with pytest.raises(ValueError, match="set quant.act_granularity=tensor"):
        QuantConfig(act_range="static")
    assert QuantConfig(act_range="static", act_granularity="tensor").act_range == "static"


def test_granularity_parsing():
    assert parse_granularity("tensor") == PerTensor()
    assert parse_granularity("row") == PerRow() and parse_granularity("token") == PerToken()
    assert parse_granularity("group:64") == PerGroup(64) and parse_granularity("groups:64") == NumGroups(64)
    assert str(PerGroup(64)) == "group:64"
    for bad in ("group:", "groups:-2", "cols", "group:0"):
        with pytest.raises(ValueError):
            parse_granularity(bad)
    with pytest.raises(ValueError, match="'token' is for activations"):
        QuantConfig(weight_granularity="token")


def test_teacher_layer_must_match_layers():
    with pytest.raises(ValueError, match=r"reduce.teacher_layer=\[1, 3\] has 2 entries but reduce.layers=3"):
        ReduceConfig(layers=3, teacher_layer=(1, 3))
    assert ReduceConfig(teacher_layer=[1, 3]).teacher_layer == (1, 3)


def test_bad_numbers():
    with pytest.raises(ValueError, match="train.lr=0 must be > 0"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="train.warmup_ratio=1.5 must be in"):
        TrainConfig(warmup_ratio=1.5)
    with pytest.raises(ValueError, match="distill.temperature=-1 must be > 0"):
        DistillConfig(temperature=-1)


def test_recipe_round_trip_and_unknown_keys():
    recipe = Recipe(quant=QuantConfig(weight_bits=2), reduce=ReduceConfig(layers=6, teacher_layer=(1, 3, 5, 7, 9, 11)))
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    raw = recipe.to_dict()
    raw["quant"]["bitz"] = 3
    with pytest.raises(ValueError, match="unknown config key 'quant.bitz'"):
        Recipe.from_dict(raw)
    with pytest.raises(ValueError, match="recipe version 2 is not supported"):
        Recipe(version=2)


def test_overrides_apply_types_and_reject_unknown_keys():
    r = apply_overrides(Recipe(), ["quant.weight_bits=2", "train.lr=1e-4", "reduce.teacher_layer=[2,4]", "quant.act_bits=null"])
    assert r.quant.weight_bits == 2 and r.train.lr == 1e-4 and r.reduce.teacher_layer == (2, 4) and r.quant.act_bits is None
    assert apply_overrides(Recipe(), ["train.epochs=3"]).train.epochs == 3.0
    with pytest.raises(ValueError, match="unknown config key 'train.learning_rate'"):
        apply_overrides(Recipe(), ["train.learning_rate=1"])
    with pytest.raises(ValueError, match="unknown config section 'trian'.*did you mean 'train'"):
        apply_overrides(Recipe(), ["trian.lr=1"])
    with pytest.raises(ValueError, match="must look like section.key=value"):
        apply_overrides(Recipe(), ["lr=1"])
    with pytest.raises(ValueError, match="train.lr='fast' must be a number"):
        apply_overrides(Recipe(), ["train.lr=fast"])


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=32.5", "train.batch_size=32.5 must be a whole number, e.g. train.batch_size=32"),
    ("train.eval_every_steps=100.5", "train.eval_every_steps=100.5 must be a whole number"),
    ("data.max_train_examples=2000.5", "data.max_train_examples=2000.5 must be a whole number"),
    ("data.max_eval_examples=0.5", "data.max_eval_examples=0.5 must be a whole number, e.g. data.max_eval_examples=1"),
    ("data.max_seq_length=128.5", "data.max_seq_length=128.5 must be a whole number"),
    ("reduce.layers=6.5", "reduce.layers=6.5 must be a whole number"),
])
def test_counts_must_be_whole_numbers(override, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        apply_overrides(Recipe(), [override])
    assert apply_overrides(Recipe(), ["train.batch_size=32.0"]).train.batch_size == 32  # a whole float is fine


@pytest.mark.parametrize("momentum", [0, 0.0, 1, 1.0, -0.5, 1.5])
def test_act_momentum_is_inside_the_open_interval(momentum):
    with pytest.raises(ValueError, match=rf"quant.act_momentum={momentum!r} must be (in \(0, 1\)|> 0)"):
        QuantConfig(act_momentum=momentum)
    assert QuantConfig(act_momentum=0.5).act_momentum == 0.5


def test_kd_variants_are_defined_once():
    from typing import get_args

    from xtc.cli import build_parser
    from xtc.config import KD_VARIANTS, KDVariant

    assert KD_VARIANTS == get_args(KDVariant) == ("none", "logits", "logits_hidden", "one_stage", "two_stage")
    distill = build_parser()._subparsers._group_actions[0].choices["distill"]
    assert next(a for a in distill._actions if a.dest == "kd").choices == KD_VARIANTS


@pytest.mark.parametrize("override, message", [
    ("train.lr=NaN", "train.lr=NaN is not a finite number; give a finite value"),
    ("train.lr=Infinity", "train.lr=Infinity is not a finite number"),
    ("train.lr=-Infinity", "train.lr=-Infinity is not a finite number"),
    ("distill.temperature=NaN", "distill.temperature=NaN is not a finite number"),
    ("train.warmup_ratio=NaN", "train.warmup_ratio=NaN is not a finite number"),
    ("reduce.teacher_layer=[1, NaN]", "reduce.teacher_layer=[1, NaN] is not a finite number"),
])
def test_overrides_refuse_nan_and_infinity(override, message):
    """JSON reads NaN and Infinity, and NaN passes every `< 0` and `== 0` check: refused where they are parsed."""
    with pytest.raises(ValueError) as error:
        apply_overrides(Recipe(), [override])
    assert str(error.value).startswith(message)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_numbers_are_refused_by_the_dataclasses(value):
    """What the CLI's float flags (`--lr nan`, `--temperature inf`) build, refused all the same."""
    with pytest.raises(ValueError, match=r"train.lr=.* must be a finite number"):
        TrainConfig(lr=value)
    with pytest.raises(ValueError, match=r"distill.temperature=.* must be a finite number"):
        DistillConfig(temperature=value)
    with pytest.raises(ValueError, match=r"train.warmup_ratio=.* must be a finite number"):
        TrainConfig(warmup_ratio=value)
    with pytest.raises(ValueError, match=r"train.epochs=.* must be a finite number"):
        TrainConfig(epochs=value)
