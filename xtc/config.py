"""Frozen, validated settings for every part of the XTC recipe.

Every dataclass validates itself on creation and raises ``ValueError`` naming the bad value, the accepted
values and a fix. ``Recipe`` bundles the parts; ``Recipe.from_dict`` rejects unknown keys and
``apply_overrides`` implements the CLI's ``--set section.key=value`` on top of a recipe.
Threads, devices and paths are deliberately *not* config: they come from Snakemake and the CLI.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from xtc.granularity import (  # noqa: F401 (re-exported: the config's granularity vocabulary)
    GRANULARITY_SYNTAX,
    Granularity,
    NumGroups,
    PerGroup,
    PerRow,
    PerTensor,
    PerToken,
    parse_granularity,
)

CONFIG_VERSION = 1

WEIGHT_BITS = (1, 2, 3, 4, 5, 6, 7, 8)
ACT_BITS = (4, 5, 6, 7, 8)
# The XTC module groups (docs/method.md, "Quantization"), by the role of the module in a BERT layer.
MODULE_GROUPS = ("qkv", "attn_out", "ffn_in", "ffn_out", "word_embeddings")
GLUE_TASK_NAMES = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")

ActRange = Literal["dynamic", "static"]
# The KD variants, defined here once: the CLI's --kd choices, the report's order and the workflow derive from it.
KDVariant = Literal["none", "logits", "logits_hidden", "one_stage", "two_stage"]
KD_VARIANTS: tuple[str, ...] = get_args(KDVariant)
# The engines that run a packed checkpoint (xtc.packed.load): float, the exact fake-quant model; int8, weights
# unpacked to int8 codes once and kept; int8-packed, weights kept packed, each layer's unpacked for its forward
Engine = Literal["float", "int8", "int8-packed"]
ENGINES: tuple[str, ...] = get_args(Engine)
AttentionTarget = Literal["scores", "probs"]
LayerStrategy = Literal["xtc", "even"]
# The original XTC recipe is every default below (docs/fidelity.md); the other values are named deviations.
RepFirst = Literal["original", "input"]
AttMask = Literal["original", "zero"]
Padding = Literal["max_length", "dynamic"]
OptimizerRule = Literal["original", "torch"]


# Every way a study file or the command line may say "full precision" instead of a bit width (the one list).
FP_SPELLINGS = frozenset({"", "fp", "fp32", "32", "none", "null", "nan"})


def parse_bits(value: object) -> int | None:
    """A bit width from text or a number, or None for full precision (``FP_SPELLINGS``); ``ValueError`` otherwise."""
    text = "" if value is None else str(value).strip().lower()
    if text in FP_SPELLINGS:
        return None
    try:
        bits = int(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a bit width: use 1..31, or fp") from None
    if not 1 <= bits < 32:
        raise ValueError(f"{value!r} is not a bit width: use 1..31, or fp")
    return bits


def suggest(value: object, choices: typing.Iterable[object]) -> str:
    """``; did you mean 'x'?`` for the closest choice, or an empty string (the one "did you mean" of the project)."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_choice(name: str, value: object, choices: typing.Iterable[object], fix: str = "") -> None:
    choices = tuple(choices)
    if value not in choices:
        hint = suggest(value, choices) or (f"; {fix}" if fix else "")
        raise ValueError(f"{name}={value!r} is not supported: expected one of {list(choices)}{hint}")


def _check_integer(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} must be a whole number, e.g. {name}={_whole(value)}")


def _whole(value: object) -> int:
    try:
        return max(1, round(float(value)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 32


def _check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}={value!r} must be a number")
    if not math.isfinite(value):  # NaN passes every comparison below
        raise ValueError(f"{name}={value!r} must be a finite number")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


# ---------------------------------------------------------------------------------------------- recipe parts
@dataclass(frozen=True)
class QuantConfig:
    """Which modules are quantized and how (docs/method.md, "Quantization").

    ``weight_bits`` applies to every module group unless a per-group ``*_bits`` field overrides it; the
    DeepSpeed's mixed setting is ``weight_bits=1, attn_out_bits=2, ffn_out_bits=2``. ``act_bits=None``
    disables activation quantization. ``weight_bits=None`` means no quantization at all (an FP student).
    """

    weight_bits: int | None = 1
    qkv_bits: int | None = None
    attn_out_bits: int | None = None
    ffn_in_bits: int | None = None
    ffn_out_bits: int | None = None
    word_embeddings_bits: int | None = None
    groups: tuple[str, ...] = MODULE_GROUPS
    weight_granularity: str = "tensor"
    embedding_granularity: str = "row"
    act_bits: int | None = 8
    act_range: ActRange = "dynamic"
    act_granularity: str = "token"
    act_momentum: float = 0.95
    weight_symmetric: bool = True

    def __post_init__(self) -> None:
        if self.weight_bits is not None:
            _check_choice("quant.weight_bits", self.weight_bits, WEIGHT_BITS, "use 1 (binary), 2 (ternary) or 3..8")
        for group in MODULE_GROUPS:
            bits = getattr(self, f"{group}_bits")
            if bits is not None:
                _check_choice(f"quant.{group}_bits", bits, WEIGHT_BITS, "use 1 (binary), 2 (ternary) or 3..8")
        object.__setattr__(self, "groups", tuple(self.groups))
        for group in self.groups:
            _check_choice("quant.groups entry", group, MODULE_GROUPS)
        if self.act_bits is not None:
            _check_choice("quant.act_bits", self.act_bits, ACT_BITS, "use 8 (XTC), 4..7, or null for none")
        _check_choice("quant.act_range", self.act_range, get_args(ActRange))
        for name in ("weight_granularity", "embedding_granularity", "act_granularity"):
            parse_granularity(getattr(self, name))
        if isinstance(parse_granularity(self.weight_granularity), PerToken):
            raise ValueError("quant.weight_granularity='token' is for activations; use 'row' for weights")
        if self.act_range == "static" and str(parse_granularity(self.act_granularity)) != "tensor":
            raise ValueError(
                f"quant.act_range='static' keeps one EMA range per tensor, but act_granularity="
                f"{self.act_granularity!r}; set quant.act_granularity=tensor"
            )
        _check_positive("quant.act_momentum", self.act_momentum)
        if not 0.0 < self.act_momentum < 1.0:
            raise ValueError(f"quant.act_momentum={self.act_momentum!r} must be in (0, 1), exclusive; XTC uses 0.95")

    @property
    def enabled(self) -> bool:
        return self.weight_bits is not None

    def bits_for(self, group: str) -> int | None:
        """Weight bits of a module group, or None when that group stays in full precision."""
        _check_choice("module group", group, MODULE_GROUPS)
        if not self.enabled or group not in self.groups:
            return None
        override = getattr(self, f"{group}_bits")
        return override if override is not None else self.weight_bits


@dataclass(frozen=True)
class ReduceConfig:
    """Layer reduction (docs/method.md, "Layer reduction"): ``layers=None`` keeps the teacher's depth.

    ``teacher_layer`` (0-based indices) wins over ``strategy`` when given.
    """

    layers: int | None = None
    teacher_layer: tuple[int, ...] | None = None
    strategy: LayerStrategy = "xtc"

    def __post_init__(self) -> None:
        if self.layers is not None:
            _check_integer("reduce.layers", self.layers)
            _check_positive("reduce.layers", self.layers)
        if self.teacher_layer is not None:
            object.__setattr__(self, "teacher_layer", tuple(int(i) for i in self.teacher_layer))
            if self.layers is not None and len(self.teacher_layer) != self.layers:
                raise ValueError(
                    f"reduce.teacher_layer={list(self.teacher_layer)} has {len(self.teacher_layer)} entries but "
                    f"reduce.layers={self.layers}; give one teacher index per student layer"
                )
        _check_choice("reduce.strategy", self.strategy, get_args(LayerStrategy))


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation (docs/method.md, "Knowledge distillation"). Loss weights multiply each term.

    ``two_stage``: stage I trains the intermediate losses (attention + hidden) for ``stage1_epochs`` at
    ``lr * stage1_lr_scale``; stage II trains the prediction loss for the remaining epochs.
    ``rep_first`` (``xtc.distill.layer_maps``) and ``att_mask`` (``xtc.distill.attention_mse``): ``original`` is
    the original XTC code's rule, the other value a named deviation (docs/fidelity.md).
    """

    kd: KDVariant = "one_stage"
    temperature: float = 1.0
    attention_target: AttentionTarget = "scores"
    pred_weight: float = 1.0
    att_weight: float = 1.0
    rep_weight: float = 1.0
    stage1_epochs: float | None = None
    stage1_lr_scale: float = 2.5
    rep_first: RepFirst = "original"
    att_mask: AttMask = "original"

    def __post_init__(self) -> None:
        _check_choice("distill.kd", self.kd, KD_VARIANTS)
        _check_choice("distill.rep_first", self.rep_first, get_args(RepFirst),
                      "'deepspeed' is now called 'original' (the default)")
        _check_choice("distill.att_mask", self.att_mask, get_args(AttMask))
        _check_choice("distill.attention_target", self.attention_target, get_args(AttentionTarget))
        _check_positive("distill.temperature", self.temperature)
        for name in ("pred_weight", "att_weight", "rep_weight"):
            _check_positive(f"distill.{name}", getattr(self, name), allow_zero=True)
        _check_positive("distill.stage1_lr_scale", self.stage1_lr_scale)
        if self.stage1_epochs is not None:
            _check_positive("distill.stage1_epochs", self.stage1_epochs)


@dataclass(frozen=True)
class AugmentConfig:
    """TinyBERT's data augmentation (``xtc augment``): each word is replaced with probability ``p`` by one of its top
    ``k`` candidates (TinyBERT's ``data_augmentation.py``: 0.4 and 15). The one place these defaults live."""

    p: float = 0.4
    k: int = 15

    def __post_init__(self) -> None:
        if isinstance(self.p, bool) or not isinstance(self.p, (int, float)) or not 0 <= self.p <= 1:
            raise ValueError(f"augment p={self.p!r} must be a probability in [0, 1] (the chance to replace a word; "
                             "TinyBERT uses 0.4)")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"augment k={self.k!r} must be an integer >= 1 (the number of candidates per word; "
                             "TinyBERT uses 15)")


@dataclass(frozen=True)
class DataConfig:
    """Where GLUE comes from: the hub (``data_dir=None``) or a local ``glue_data/`` folder. ``padding``: every batch
    to ``max_seq_length`` (``max_length``, the original's) or to its longest example (``dynamic``)."""

    task: str = "rte"
    data_dir: str | None = None
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    max_seq_length: int = 128
    subsample_seed: int = 0
    train_file: str | None = None
    padding: Padding = "max_length"

    def __post_init__(self) -> None:
        _check_choice("data.task", self.task, GLUE_TASK_NAMES)
        _check_choice("data.padding", self.padding, get_args(Padding))
        for name in ("max_seq_length", "max_train_examples", "max_eval_examples", "subsample_seed"):
            if getattr(self, name) is not None:
                _check_integer(f"data.{name}", getattr(self, name))
                _check_positive(f"data.{name}", getattr(self, name), allow_zero=name == "subsample_seed")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (docs/method.md, "Budgets"). Warmup is in epochs (XTC: 1) unless ``warmup_ratio`` is set.
    ``optimizer``: ``original`` (transformers 4.x AdamW, ``xtc.optim``) or ``torch`` (``torch.optim.AdamW``)."""

    lr: float = 5e-5
    epochs: float = 3.0
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    warmup_ratio: float | None = None
    grad_clip: float = 1.0
    seed: int = 42
    eval_every_steps: int = 1000
    # Batches of similar length (HF's group_by_length): shuffle, cut into 50-batch windows, sort each window by
    # length, shuffle the batches. Off in XTC's recipe; on SST-2's short sentences it removes ~2/3 of the padding.
    group_by_length: bool = False
    bf16: bool = False
    tf32: bool = False
    optimizer: OptimizerRule = "original"
    # torch.compile the student's and teacher's forward in KD steps (opt-in: same math, float rounding differs;
    # the first step compiles for ~1-2 min). docs/performance.md, "A cheaper KD step".
    compile: bool = False
    # The W1A8/W2A8 student's training forward as int8 x int8 -> int32 matmuls (CPU; opt-in: backward as before,
    # forward equal up to float rounding). docs/performance.md, "A cheaper KD step".
    int8_forward: bool = False

    def __post_init__(self) -> None:
        for name in ("batch_size", "eval_every_steps", "seed"):
            _check_integer(f"train.{name}", getattr(self, name))
        _check_choice("train.optimizer", self.optimizer, get_args(OptimizerRule))
        for name in ("lr", "epochs", "batch_size", "eval_every_steps"):
            _check_positive(f"train.{name}", getattr(self, name))
        for name in ("weight_decay", "warmup_epochs", "grad_clip"):
            _check_positive(f"train.{name}", getattr(self, name), allow_zero=True)
        if self.warmup_ratio is not None:
            _check_positive("train.warmup_ratio", self.warmup_ratio, allow_zero=True)
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError(f"train.warmup_ratio={self.warmup_ratio!r} must be in [0, 1]")
        if self.int8_forward and (self.compile or self.bf16):
            raise ValueError("train.int8_forward runs the student's linears eagerly in float32 on integer matmuls; "
                             "it cannot be combined with train.compile or train.bf16: drop one of them")


@dataclass(frozen=True)
class Recipe:
    """The resolved recipe of one run; saved as ``config.json`` and inside packed checkpoints."""

    data: DataConfig = field(default_factory=DataConfig)
    reduce: ReduceConfig = field(default_factory=ReduceConfig)
    quant: QuantConfig = field(default_factory=lambda: QuantConfig(weight_bits=None))
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        if self.version != CONFIG_VERSION:
            raise ValueError(f"recipe version {self.version!r} is not supported by this xtc (expects {CONFIG_VERSION})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Recipe:
        """Build a recipe from nested dicts, rejecting unknown sections and keys."""
        return _build(cls, raw, "")


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"{prefix or 'recipe'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ValueError(f"unknown config key {prefix + key!r}{suggest(key, known)}; known keys: {sorted(known)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, prefix + key)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Convert a parsed value to the annotated type: tuples from lists, floats from ints, and back.

    Range and choice checks stay in each dataclass's ``__post_init__``.
    """
    args = typing.get_args(hint) or (hint,)
    if value is None:
        if type(None) in args:
            return None
        raise ValueError(f"{name} may not be null")
    if any(typing.get_origin(a) is tuple or a is tuple for a in (hint, *args)):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name}={value!r} must be a list, e.g. [1, 3, 5]")
        return tuple(value)
    if bool in args and not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be true or false")
    if float in args and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if int in args and float not in args and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class _NotFinite(ValueError):
    """JSON's NaN, Infinity or -Infinity in an override."""


def _refuse_constant(word: str) -> float:
    raise _NotFinite(word)


def parse_value(text: str) -> Any:
    """Parse the right-hand side of ``--set key=value``: JSON (numbers, null, true, lists) or a bare string.

    Only ``null`` means None: ``none`` is a value of its own (``distill.kd=none``). JSON's ``NaN`` and
    ``Infinity`` raise ``ValueError``: no recipe number may be one (NaN would pass every range check)."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except _NotFinite:
        raise
    except json.JSONDecodeError:
        return text


def parse_override(item: str) -> tuple[str, Any]:
    """``'section.key=value'`` -> ``('section.key', parsed value)``; the key is checked by :func:`with_values`."""
    key, sep, text = item.partition("=")
    if not sep or "." not in key:
        raise ValueError(f"override {item!r} must look like section.key=value, e.g. train.lr=5e-5")
    try:
        return key.strip(), parse_value(text.strip())
    except _NotFinite:
        raise ValueError(f"{key.strip()}={text.strip()} is not a finite number; give a finite value") from None


def with_values(recipe: Recipe, values: typing.Mapping[str, Any]) -> Recipe:
    """A copy of ``recipe`` with typed ``{'section.key': value}`` set; the result is validated once, as a whole."""
    raw = recipe.to_dict()
    for key, value in values.items():
        section, _, name = key.partition(".")
        if section not in raw or not isinstance(raw[section], dict):
            sections = [k for k, v in raw.items() if isinstance(v, dict)]
            raise ValueError(f"unknown config section {section!r} in {key!r}{suggest(section, sections)}; "
                             f"sections: {sections}")
        if name not in raw[section]:
            raise ValueError(
                f"unknown config key {key!r}{suggest(name, raw[section])}; keys of {section!r}: {sorted(raw[section])}"
            )
        raw[section][name] = value
    return Recipe.from_dict(raw)


def apply_overrides(recipe: Recipe, overrides: typing.Iterable[str]) -> Recipe:
    """Apply ``section.key=value`` strings (later ones win); unknown keys and bad values raise before anything runs."""
    return with_values(recipe, dict(parse_override(item) for item in overrides))
