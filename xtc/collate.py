"""Batching tokenized GLUE features (``data.padding``, docs/fidelity.md).

The original XTC scripts pad every example to ``--max_length 128`` (``--pad_to_max_length``), so every batch is
``(32, 128)`` and the attention/hidden-state MSEs are means over those fixed-size tensors, padding included.
Dynamic padding (each batch as long as its longest example) is cheaper, but the weight of ``L_att``/``L_rep``
against ``L_pred`` then changes with each batch's length; ``train.group_by_length`` saves more still.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


PADDINGS = ("max_length", "dynamic")


@dataclass(frozen=True)
class PaddingCollator:
    """Right-pads a batch and returns tensors: to ``max_length`` when given (the original's
    ``--pad_to_max_length``: every batch ``(B, max_length)``), else to the batch's longest example (dynamic).

    ``labels`` become float32 when any is a float (STS-B regression, MSE loss), else int64 (cross-entropy).
    Frozen and picklable, so it works in ``DataLoader`` worker processes.
    """

    pad_token_id: int = 0
    max_length: int | None = None

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        if not features:
            raise ValueError("cannot collate an empty batch")
        longest = max(len(f["input_ids"]) for f in features)
        if self.max_length is not None and longest > self.max_length:
            raise ValueError(f"an example has {longest} tokens but the batch pads to data.max_seq_length="
                             f"{self.max_length}; tokenize with the same max_seq_length")
        width = longest if self.max_length is None else self.max_length
        batch: dict[str, torch.Tensor] = {}
        for key, pad in (("input_ids", self.pad_token_id), ("token_type_ids", 0), ("attention_mask", 0)):
            if key in features[0]:
                rows = [list(f[key]) + [pad] * (width - len(f[key])) for f in features]
                batch[key] = torch.tensor(rows, dtype=torch.long)  # (B, T)
        if "labels" in features[0]:
            labels = [f["labels"] for f in features]
            regression = any(isinstance(label, (float, np.floating)) for label in labels)
            batch["labels"] = torch.tensor(labels, dtype=torch.float32 if regression else torch.long)  # (B,)
        return batch


def make_collator(tokenizer: PreTrainedTokenizerBase, padding: str = "dynamic",
                  max_length: int | None = None) -> PaddingCollator:
    """The collator for a tokenizer's padding id; ``padding="max_length"`` (``data.padding``) needs ``max_length``."""
    if tokenizer.pad_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no pad token; set tokenizer.pad_token first")
    if padding not in PADDINGS:
        raise ValueError(f"data.padding={padding!r} is not supported: use 'max_length' (the original's) or 'dynamic'")
    if padding == "max_length" and max_length is None:
        raise ValueError("padding='max_length' needs max_length (data.max_seq_length)")
    return PaddingCollator(pad_token_id=int(tokenizer.pad_token_id),
                           max_length=max_length if padding == "max_length" else None)
