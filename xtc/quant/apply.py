"""``quantize_(model, cfg)``: swap XTC's module set for fake-quant modules, by full module name.

The XTC set (docs/method.md, "Quantization"), in Hugging Face BERT names, for every encoder layer ``N``:
``encoder.layer.N.attention.self.{query,key,value}`` (group ``qkv``), ``encoder.layer.N.attention.output.dense``
(``attn_out``), ``encoder.layer.N.intermediate.dense`` (``ffn_in``), ``encoder.layer.N.output.dense``
(``ffn_out``), and ``embeddings.word_embeddings`` (``word_embeddings``). Everything else (LayerNorms, biases,
position and token-type embeddings, pooler, classifier) stays in full precision. Any model whose modules carry
these names works (BERT, MiniLM, ...); a model with none of them is an error, never a silent no-op.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from torch import nn

from xtc.config import MODULE_GROUPS, QuantConfig
from xtc.quant.modules import QuantEmbedding, QuantLinear

_LAYER = r"(?:^|\.)encoder\.layer\.\d+\."
GROUP_PATTERNS: dict[str, re.Pattern[str]] = {
    "qkv": re.compile(_LAYER + r"attention\.self\.(?:query|key|value)$"),
    "attn_out": re.compile(_LAYER + r"attention\.output\.dense$"),
    "ffn_in": re.compile(_LAYER + r"intermediate\.dense$"),
    "ffn_out": re.compile(_LAYER + r"output\.dense$"),
    "word_embeddings": re.compile(r"(?:^|\.)embeddings\.word_embeddings$"),
}
assert tuple(GROUP_PATTERNS) == MODULE_GROUPS


def module_group(name: str) -> str | None:
    """The XTC module group of a full module name, or None (``attention.output.dense`` is not ``ffn_out``)."""
    for group, pattern in GROUP_PATTERNS.items():
        if pattern.search(name):
            return group
    return None


def quantize_(
    model: nn.Module, cfg: QuantConfig, filter_fn: Callable[[str, nn.Module], bool] | None = None
) -> dict[str, str]:
    """Replace the XTC module set of ``model`` in place; returns ``{module name: group}`` of what was swapped.

    ``filter_fn(name, module)`` can exclude further modules. Raises ``ValueError`` if ``cfg`` quantizes nothing,
    the model is already quantized, or no module matches the XTC names.
    """
    if not cfg.enabled:
        raise ValueError("quant.weight_bits is null (a full-precision recipe); set quant.weight_bits to 1, 2 or 3..8")
    already = [name for name, m in model.named_modules() if isinstance(m, (QuantLinear, QuantEmbedding))]
    if already:
        raise ValueError(f"model is already quantized (e.g. {already[0]!r}); quantize the float model once")
    swapped: dict[str, str] = {}
    for name, module in list(model.named_modules()):
        group = module_group(name)
        bits = cfg.bits_for(group) if group else None
        if bits is None or (filter_fn is not None and not filter_fn(name, module)):
            continue
        if group == "word_embeddings":
            if not isinstance(module, nn.Embedding):
                raise ValueError(f"{name!r} is a {type(module).__name__}, expected nn.Embedding")
            new = QuantEmbedding.from_float(module, bits, cfg.embedding_granularity, cfg.weight_symmetric)
        else:
            if not isinstance(module, nn.Linear):
                raise ValueError(f"{name!r} is a {type(module).__name__}, expected nn.Linear")
            new = QuantLinear.from_float(
                module, bits, cfg.weight_granularity, cfg.act_bits, cfg.act_range, cfg.act_granularity,
                cfg.act_momentum, cfg.weight_symmetric,
            )
        model.set_submodule(name, new)
        swapped[name] = group
    if not swapped:
        raise ValueError(
            f"no quantizable module found in {type(model).__name__}: expected BERT module names such as "
            f"'encoder.layer.0.attention.self.query' or 'embeddings.word_embeddings' (groups {list(cfg.groups)}); "
            "xtc quantizes BERT-architecture models (BERT, MiniLM, ...)"
        )
    missing = [g for g in cfg.groups if cfg.bits_for(g) is not None and g not in swapped.values()]
    if missing and filter_fn is None:
        raise ValueError(
            f"{type(model).__name__} has no module of group(s) {missing}; remove them from quant.groups "
            f"or check the model's module names"
        )
    return swapped


def dequantize_(model: nn.Module, quantized: bool = False) -> list[str]:
    """Swap every fake-quant module back to ``nn.Linear``/``nn.Embedding`` (latent weights, or quantized ones)."""
    names = []
    for name, module in list(quantized_modules(model)):
        model.set_submodule(name, module.to_float(quantized=quantized))
        names.append(name)
    return names


def quantized_modules(model: nn.Module) -> Iterator[tuple[str, QuantLinear | QuantEmbedding]]:
    """``(name, module)`` for every quantized module (fake-quant, or packed by ``xtc.packed.load``), in model order."""
    for name, module in model.named_modules():
        if isinstance(module, (QuantLinear, QuantEmbedding)):
            yield name, module
