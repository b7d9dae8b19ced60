"""Lightweight layer reduction (XTC step 1; docs/method.md, "Layer reduction").

The student is the fine-tuned teacher with some encoder layers removed: student layer ``i`` keeps every parameter
of teacher layer ``teacher_layer[i]``; embeddings, pooler and classifier are the teacher's. No pre-training
distillation is needed, which is the point of XTC's "lightweight" reduction.

``teacher_layer`` (0-based, strictly increasing) is the one expensive decision here, so it is returned as data by
``select_layers`` and recorded in the student's config as ``config.xtc_teacher_layer``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn

from xtc.config import ReduceConfig, suggest

# Teacher layers kept by XTC for a 12-layer BERT-base teacher (docs/method.md, "Layer reduction"; DeepSpeedExamples configs).
# For 4 layers the paper also used (2, 5, 8, 11), which is what the "even" rule gives; pass it explicitly.
XTC_LAYERS: dict[int, tuple[int, ...]] = {
    6: (1, 3, 5, 7, 9, 11),
    5: (2, 4, 6, 8, 10),
    4: (1, 4, 7, 10),
}
XTC_TEACHER_DEPTH = 12
STRATEGIES = ("xtc", "even")


def even_layers(n_teacher: int, n_student: int) -> tuple[int, ...]:
    """The last layer of each of ``n_student`` equal blocks of the teacher: ``t_j = (j + 1) * L // L' - 1``.

    This is the "skip" rule of TinyBERT / DeepSpeed's uniform KD map, extended to depths that do not divide:
    12 -> 6 gives (1, 3, 5, 7, 9, 11) and 12 -> 4 gives (2, 5, 8, 11) (both XTC choices), 12 -> 5 gives
    (1, 3, 6, 8, 11), and ``n_student == n_teacher`` keeps every layer. The top layer is always kept.
    """
    _check_depths(n_teacher, n_student)
    return tuple((j + 1) * n_teacher // n_student - 1 for j in range(n_student))


def select_layers(
    n_teacher: int, n_student: int | None = None, strategy: str | Sequence[int] = "xtc"
) -> tuple[int, ...]:
    """0-based teacher layers to keep, one per student layer, in increasing order.

    ``strategy``: ``"xtc"`` uses ``XTC_LAYERS`` for a 12-layer teacher and falls back to ``"even"`` otherwise;
    ``"even"`` is ``even_layers``; an explicit sequence of indices is validated and returned as a tuple
    (``n_student``, when given, must match its length). Explicit lists must be strictly increasing: XTC keeps the
    teacher's layer order, and the KD layer maps (``xtc.distill.layer_maps``) assume it.
    """
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            raise ValueError(
                f"layer strategy {strategy!r} is not supported: expected one of {list(STRATEGIES)} or a list of "
                f"0-based teacher layer indices{suggest(strategy, STRATEGIES)}"
            )
        if n_student is None:
            raise ValueError(f"strategy {strategy!r} needs n_student (the number of student layers)")
        _check_depths(n_teacher, n_student)
        if strategy == "xtc" and n_teacher == XTC_TEACHER_DEPTH and n_student in XTC_LAYERS:
            return XTC_LAYERS[n_student]
        return even_layers(n_teacher, n_student)
    return _check_explicit(n_teacher, n_student, strategy)


def resolve_teacher_layer(cfg: ReduceConfig, n_teacher: int) -> tuple[int, ...]:
    """The kept teacher layers of a recipe: ``cfg.teacher_layer`` wins, ``cfg.layers=None`` keeps all layers."""
    if cfg.teacher_layer is not None:
        return select_layers(n_teacher, cfg.layers, cfg.teacher_layer)
    return select_layers(n_teacher, n_teacher if cfg.layers is None else cfg.layers, cfg.strategy)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's layer list of a BERT-style model (``<base>.encoder.layer``), found without class names."""
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(
            f"{type(model).__name__} has no BERT-style encoder (expected `<base_model>.encoder.layer` to be an "
            "nn.ModuleList); layer reduction and KD maps need BERT module names"
        )
    return layers


def build_student(teacher: nn.Module, teacher_layer: Sequence[int]) -> nn.Module:
    """A new model of the teacher's class whose layer ``i`` is a copy of teacher layer ``teacher_layer[i]``.

    Everything else (embeddings, pooler, classifier, config) is copied from the teacher, which is not modified.
    The whole teacher is deep-copied first so that every copied module keeps pointing at the *student's* shared
    config object (HF modules hold a reference to it); the dropped layers are then discarded. The student's
    config records ``num_hidden_layers`` and ``xtc_teacher_layer`` (relative to this teacher), so it saves and
    reloads with ``save_pretrained`` / ``from_pretrained``.
    """
    n_teacher = len(encoder_layers(teacher))
    teacher_layer = select_layers(n_teacher, None, teacher_layer)
    student = copy.deepcopy(teacher)
    copied = encoder_layers(student)
    kept = nn.ModuleList([copied[t] for t in teacher_layer])
    for i, layer in enumerate(kept):
        # Cache bookkeeping (`layer_idx`) must follow the student's own numbering.
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = i
    getattr(student, "base_model", student).encoder.layer = kept
    # The model and its base model normally share one config object; update each distinct one once.
    configs = {id(c): c for c in (student.config, getattr(student, "base_model", student).config)}
    for config in configs.values():
        config.num_hidden_layers = len(teacher_layer)
        config.xtc_teacher_layer = list(teacher_layer)
    return student


# ---------------------------------------------------------------------------------------------- validation
def _check_depths(n_teacher: int, n_student: int) -> None:
    for name, value in (("n_teacher", n_teacher), ("n_student", n_student)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}={value!r} must be an integer number of layers")
    if n_teacher < 1:
        raise ValueError(f"n_teacher={n_teacher} must be >= 1: the teacher has no encoder layers")
    if n_student < 1:
        raise ValueError(f"n_student={n_student}: a student needs at least 1 layer; use 1..{n_teacher}")
    if n_student > n_teacher:
        raise ValueError(
            f"n_student={n_student} is more layers than the teacher has ({n_teacher}); use 1..{n_teacher}"
        )


def _check_explicit(n_teacher: int, n_student: int | None, teacher_layer: Sequence[int]) -> tuple[int, ...]:
    given = list(teacher_layer)
    if not given:
        raise ValueError(f"teacher_layer={given} keeps zero layers; give at least one 0-based teacher index")
    for index in given:
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError(f"teacher_layer={given} contains {index!r}; use 0-based integer layer indices")
        if not 0 <= index < n_teacher:
            raise ValueError(
                f"teacher_layer={given} contains {index}, out of range for a {n_teacher}-layer teacher; "
                f"use 0-based indices 0..{n_teacher - 1}"
            )
    duplicates = sorted({i for i in given if given.count(i) > 1})
    if duplicates:
        raise ValueError(f"teacher_layer={given} repeats {duplicates}; each teacher layer can be kept once")
    if given != sorted(given):
        raise ValueError(
            f"teacher_layer={given} is not increasing; XTC keeps the teacher's layer order: use {sorted(given)}"
        )
    if n_student is not None and n_student != len(given):
        raise ValueError(
            f"teacher_layer={given} has {len(given)} entries but n_student={n_student}; give one index per layer"
        )
    return tuple(given)
