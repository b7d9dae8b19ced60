"""Fake-quant modules: ``QuantLinear`` and ``QuantEmbedding`` (docs/method.md, "Quantization").

The trainable parameter is the latent full-precision weight; its quantized value is recomputed from it on every
forward pass (quantization is on from step 0, as in XTC). ``QuantLinear`` also quantizes its *input* activation:
8-bit symmetric with a dynamic range per token by default (the XTC setting), or a static range from an EMA of the
min/max seen in training (momentum 0.95, DeepSpeed's ``QuantAct``), or not at all.
``from_float`` / ``to_float`` convert from / back to the plain ``nn`` modules, keeping the latent weights.
"""

from __future__ import annotations

import threading
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from xtc.config import ACT_BITS, WEIGHT_BITS, Granularity, PerRow, PerTensor, parse_granularity
from xtc.quant.primitives import quantize_weight
from xtc.quant.ste import SharedActSTE, SymmetricActSTE, fake_quant_weight_ste


class _LastQuantizedInput(threading.local):
    """The last dynamic activation quantization of this thread: BERT's query, key and value read the same hidden
    states tensor, so the second and third would quantize exactly the same values again. A hit needs the very same
    tensor object (held by a weak reference), unmodified (``_version``), the same bits and granularity and the same
    grad mode; the quantized copy is then reused through ``SharedActSTE`` (identity backward to the input), so
    values and gradients are bitwise those of quantizing again. Holds one quantized activation until the next."""

    key: tuple | None = None
    source: weakref.ref | None = None
    result: torch.Tensor | None = None  # detached view of the quantized tensor (shares its version counter)

    def get(self, x: torch.Tensor, key: tuple) -> torch.Tensor | None:
        if self.result is None or self.key != key or self.source() is not x or x._version != self.version:
            return None
        return self.result if self.result._version == self.result_version else None

    def put(self, x: torch.Tensor, key: tuple, result: torch.Tensor) -> None:
        self.key, self.source, self.version = key, weakref.ref(x), x._version
        self.result = result.detach()
        self.result_version = self.result._version


_LAST_INPUT = _LastQuantizedInput()


def _check_weight_bits(bits: int) -> None:
    if bits not in WEIGHT_BITS:
        raise ValueError(f"weight bits {bits!r} are not supported: use 1 (binary), 2 (ternary) or 3..8")


class WeightQuantizer(nn.Module):
    """The XTC weight rule for one tensor: 1 bit binary, 2 bits ternary, 3..8 bits (a)symmetric k-bit."""

    def __init__(self, bits: int, granularity: Granularity | str = "tensor", symmetric: bool = True) -> None:
        super().__init__()
        _check_weight_bits(bits)
        self.bits = bits
        self.granularity = parse_granularity(granularity)
        self.symmetric = symmetric

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return fake_quant_weight_ste(w, self.bits, self.granularity, self.symmetric)

    def quantize(self, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(codes, scale[, zero_point])`` of ``w``: what the packed export stores."""
        return quantize_weight(w.detach(), self.bits, self.granularity, self.symmetric)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, granularity={self.granularity}, symmetric={self.symmetric}"


class ActQuantizer(nn.Module):
    """Symmetric k-bit fake quantization of an activation tensor.

    ``range='dynamic'``: the scale comes from each group's current ``max |x|`` (per token for XTC).
    ``range='static'``: one range per tensor, an EMA of the batch min/max updated in training mode,
    ``r <- momentum * r + (1 - momentum) * r_batch`` (DeepSpeed's ``QuantAct``: the first batch initialises
    ``r`` and is then averaged in too). A static quantizer that has never seen data calibrates on its first
    batch even in eval mode, rather than quantizing everything with an empty range.
    """

    def __init__(
        self, bits: int = 8, range: str = "dynamic", granularity: Granularity | str = "token", momentum: float = 0.95
    ) -> None:
        super().__init__()
        if bits not in ACT_BITS:
            raise ValueError(f"activation bits {bits!r} are not supported: use 8 (XTC), 4..7, or none")
        if range not in ("dynamic", "static"):
            raise ValueError(f"activation range {range!r} is not supported: use 'dynamic' or 'static'")
        self.bits = bits
        self.range = range
        self.granularity = parse_granularity("tensor" if range == "static" else granularity)
        self.momentum = momentum
        if range == "static":
            self.register_buffer("min_max", torch.zeros(2))
            self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.range == "dynamic":
            return self._dynamic(x)
        if self.training or not bool(self.calibrated):
            self._update_range(x.detach())
        max_abs = torch.maximum(self.min_max[0].abs(), self.min_max[1])
        return SymmetricActSTE.apply(x, self.bits, self.granularity, max_abs)

    def _dynamic(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() or x.is_inference():  # inference tensors keep no version counter
            return SymmetricActSTE.apply(x, self.bits, self.granularity, None)
        key = (self.bits, self.granularity, torch.is_grad_enabled())
        cached = _LAST_INPUT.get(x, key)
        if cached is not None:
            return SharedActSTE.apply(x, cached)
        out = SymmetricActSTE.apply(x, self.bits, self.granularity, None)
        _LAST_INPUT.put(x, key, out)
        return out

    @torch.no_grad()
    def _update_range(self, x: torch.Tensor) -> None:
        batch = torch.stack(torch.aminmax(x)).to(self.min_max.dtype)
        if not bool(self.calibrated):
            self.min_max.copy_(batch)
            self.calibrated.fill_(True)
        self.min_max.mul_(self.momentum).add_(batch * (1 - self.momentum))

    def extra_repr(self) -> str:
        extra = f", momentum={self.momentum}" if self.range == "static" else ""
        return f"bits={self.bits}, range={self.range}, granularity={self.granularity}{extra}"


class QuantLinear(nn.Module):
    """``y = A(x) Q(W)^T + b`` with a latent FP weight ``W``; ``A`` is the input quantizer (or identity)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        weight_quantizer: WeightQuantizer | None = None,
        act_quantizer: ActQuantizer | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype)) if bias else None
        self.weight_quantizer = weight_quantizer or WeightQuantizer(1)
        self.act_quantizer = act_quantizer

    # ``train.int8_forward`` (``enable_int8_forward``): the training forward as one integer matmul (CPU)
    int8_forward: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.int8_forward and self.training and x.device.type == "cpu" and torch.is_grad_enabled():
            from xtc.quant.int8 import Int8TrainLinear

            return Int8TrainLinear.apply(x, self.weight_quantizer(self.weight), self.bias, self.act_quantizer.bits)
        if self.act_quantizer is not None:
            x = self.act_quantizer(x)
        return F.linear(x, self.weight_quantizer(self.weight), self.bias)

    def int8_forward_fits(self) -> str | None:
        """None if ``Int8TrainLinear`` computes this linear's forward, else why not."""
        act, weight = self.act_quantizer, self.weight_quantizer
        if act is None or act.range != "dynamic" or act.granularity != parse_granularity("token"):
            return "its input is not quantized dynamically per token"
        if weight.bits not in (1, 2) or not weight.symmetric:
            return f"its weights are {weight.bits}-bit (binary and ternary only)"
        if not isinstance(weight.granularity, (PerRow, PerTensor)):
            return f"its weight scales are per {weight.granularity} (per tensor or per row only)"
        if self.weight.dtype != torch.float32:
            return f"its weights are {self.weight.dtype} (float32 only)"
        return None

    def quantized_weight(self) -> torch.Tensor:
        """The weight as the forward pass sees it (no gradient)."""
        with torch.no_grad():
            return self.weight_quantizer(self.weight)

    @classmethod
    def from_float(
        cls,
        linear: nn.Linear,
        weight_bits: int,
        weight_granularity: Granularity | str = "tensor",
        act_bits: int | None = 8,
        act_range: str = "dynamic",
        act_granularity: Granularity | str = "token",
        act_momentum: float = 0.95,
        symmetric: bool = True,
    ) -> QuantLinear:
        """Wrap an ``nn.Linear``; the new module shares no storage with it but starts from its exact values."""
        act = None if act_bits is None else ActQuantizer(act_bits, act_range, act_granularity, act_momentum)
        module = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            weight_quantizer=WeightQuantizer(weight_bits, weight_granularity, symmetric),
            act_quantizer=act,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
        with torch.no_grad():
            module.weight.copy_(linear.weight)
            if linear.bias is not None:
                module.bias.copy_(linear.bias)
        module.train(linear.training)
        return module

    def to_float(self, quantized: bool = False) -> nn.Linear:
        """Back to ``nn.Linear``: the latent weight (undoes ``from_float``), or with ``quantized=True`` the
        quantized weight (note: input activations are then no longer quantized)."""
        linear = nn.Linear(
            self.in_features, self.out_features, bias=self.bias is not None,
            device=self.weight.device, dtype=self.weight.dtype,
        )
        with torch.no_grad():
            linear.weight.copy_(self.quantized_weight() if quantized else self.weight)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        linear.train(self.training)
        return linear

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class QuantEmbedding(nn.Module):
    """An embedding table whose looked-up vectors are quantized weights (XTC: one scale per row = per token).

    With per-row scales, row ``i`` of ``Q(W)`` depends only on row ``i`` of ``W``, so only the rows a batch looks up
    are quantized (``Q(W)[ids] == Q(W[ids])`` exactly), instead of the whole 30522 x 768 table every step.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        weight_quantizer: WeightQuantizer | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype))
        self.weight_quantizer = weight_quantizer or WeightQuantizer(1, "row")

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if isinstance(self.weight_quantizer.granularity, PerRow):
            rows = F.embedding(input_ids, self.weight, self.padding_idx)  # (..., D)
            return self.weight_quantizer(rows.reshape(-1, self.embedding_dim)).reshape(rows.shape)
        return F.embedding(input_ids, self.weight_quantizer(self.weight), self.padding_idx)

    def quantized_weight(self) -> torch.Tensor:
        with torch.no_grad():
            return self.weight_quantizer(self.weight)

    @classmethod
    def from_float(
        cls, embedding: nn.Embedding, weight_bits: int, granularity: Granularity | str = "row", symmetric: bool = True
    ) -> QuantEmbedding:
        if embedding.max_norm is not None or embedding.sparse or embedding.scale_grad_by_freq:
            raise ValueError("QuantEmbedding supports plain embeddings only (no max_norm, sparse or scale_grad_by_freq)")
        module = cls(
            embedding.num_embeddings,
            embedding.embedding_dim,
            padding_idx=embedding.padding_idx,
            weight_quantizer=WeightQuantizer(weight_bits, granularity, symmetric),
            device=embedding.weight.device,
            dtype=embedding.weight.dtype,
        )
        with torch.no_grad():
            module.weight.copy_(embedding.weight)
        module.train(embedding.training)
        return module

    def to_float(self, quantized: bool = False) -> nn.Embedding:
        """Back to ``nn.Embedding`` with the latent (default) or the quantized weight."""
        embedding = nn.Embedding(
            self.num_embeddings, self.embedding_dim, padding_idx=self.padding_idx,
            device=self.weight.device, dtype=self.weight.dtype,
        )
        with torch.no_grad():
            embedding.weight.copy_(self.quantized_weight() if quantized else self.weight)
        embedding.train(self.training)
        return embedding

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, padding_idx={self.padding_idx}"


def enable_int8_forward(model: nn.Module) -> dict[str, str]:
    """Turn on ``train.int8_forward`` for every ``QuantLinear`` that fits (``QuantLinear.int8_forward_fits``);
    returns ``{name: why not}`` of those that keep the float forward."""
    left = {}
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear):
            why = module.int8_forward_fits()
            module.int8_forward = why is None
            if why is not None:
                left[name] = why
    return left
