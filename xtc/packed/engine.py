"""The integer CPU engine: a packed checkpoint served at its packed size (``xtc.packed.load(path, engine="int8")``).

``load_engine`` rebuilds the model of a packed file like the float path (``xtc.packed.fakequant``), from the same
reader and model skeleton (``xtc.packed.format``), but every quantized linear
becomes an ``Int8Linear`` (weights as int8 codes, activations quantized per token by the training quantizer,
``torch._int_mm``, one rescale) and the word embeddings a ``PackedRowEmbedding`` (rows gathered from the packed
bytes). Nothing is ever unpacked to float: at rest the weights are the file's packed codes, in memory at most int8.
``engine="int8-packed"`` keeps the 1/2/4/8-bit codes packed in memory as well (``PackedWeight``): each fused layer
unpacks its four weights to int8 once per forward (for all its token chunks) and drops them after, so the model holds
1 or 2 bits per weight plus one layer's int8 codes; the integer products, hence the logits, are the int8 engine's
exactly.

Then every transformer layer shaped like BERT's (Q/K/V, attention output + LayerNorm, intermediate + GELU, output +
LayerNorm; found by its structure, not its class name) whose six linears are integer becomes one
``EngineBertLayer``: Q, K and V share one quantized input and one ``(hidden, 3 hidden)`` matmul, and every rescale
is fused with what follows it and with the next product's activation quantizer (bias + GELU + quantize; bias +
residual + LayerNorm + quantize), one pass over each token's row (``xtc.quant.cpu_kernels``).

**Numerics.** The engine computes the fake-quant model's arithmetic with exact integer dot products instead of
float32 sums, so its logits differ from the float path's by float rounding, amplified where a rounding difference
moves an activation code across a rounding boundary (one code step, ``2 max|x| / 256``, on that element) -- exactly
as the fake-quant model's own logits move when only its summation order changes (1 vs 2 threads). The documented
bound, ``logit_bound(logits, float_noise)``: ``max |engine - fake_quant| <= max(LOGIT_BOUND * max |logits| + 1e-6,
2 * float_noise)``, with ``float_noise`` the fake-quant model's own max logit change under a different thread count
(``bench/serve.py`` measures it). Wherever the fake-quant margin between the top two classes exceeds twice the
bound, the predicted labels are equal. Measured (random weights, 32 x 128 tokens): tiny 4-layer BERTs differ by
~1e-7 of max |logit|; BERT-base width, 2 layers: engine 0.16%, float noise 0.30%; 12 layers: engine 1.9%, float
noise 2.2% -- random binary 12-layer models are that sensitive to float rounding, whichever way it comes.

Modules the integer path cannot run keep the exact float path (``xtc.packed.format.float_module``, the dequantized weight), and say so
in the log: linears without an input quantizer (e.g. ``act_bits=None``), asymmetric k-bit weights (a zero point),
weight groups that do not cover whole rows, and embeddings whose rows do not start on a byte.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xtc.config import ENGINES, PerGroup, PerRow, PerTensor, parse_granularity
from xtc.packed.format import (
    build_skeleton,
    check_modules,
    check_state,
    dequantized_weight,
    float_module,
    read_packed,
    remainder_state,
)
from xtc.quant.packing import PackedCodes, code_mapping, unpack_codes
from xtc.quant.int8 import (
    Int8Linear,
    PackedRowEmbedding,
    PackedWeight,
    as_inference,
    enable_compiled,
    kernels,
    release_free_memory,
    unpack_transposed,
)

log = logging.getLogger(__name__)

CHUNK_TOKENS = 512  # tokens per chunk of a fused layer (EngineBertLayer.forward)
COMPILE_MIN_HIDDEN = 256  # compile the kernels for models at least this wide (MiniLM 384, BERT-base 768)
LOGIT_BOUND = 1e-3  # relative to max |logit|; see the module docstring


def logit_bound(logits: torch.Tensor, float_noise: float = 0.0) -> float:
    """The largest difference between engine and fake-quant logits that the engine promises (module docstring)."""
    return max(LOGIT_BOUND * float(logits.abs().max()) + 1e-6, 2 * float_noise)


# ---------------------------------------------------------------------------------------------- one module
EXPANDABLE = ("sign", "sign+zeros", "ternary", "offset")  # encodings whose codes are a bit expansion of signed ints


def _int8_codes(entry: dict[str, Any], tensors: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """The weight's int8 codes in ``_int_mm``'s ``(in, out)`` layout, unpacked straight from the packed bytes."""
    encoding, stored_bits, (out_features, in_features) = entry["encoding"], entry["stored_bits"], entry["shape"]
    zeros = tensors.get(f"{name}.weight.zeros")
    if stored_bits in (1, 2, 4, 8) and encoding in EXPANDABLE:
        mul, sub = code_mapping(encoding, stored_bits)
        codes = unpack_transposed(tensors[f"{name}.weight.codes"], stored_bits, mul, sub, out_features,
                                  in_features)  # (in, out)
        if zeros is not None and zeros.numel():
            zeros = zeros.long()
            codes[zeros % in_features, zeros // in_features] = 0
        return codes
    stored = PackedCodes(encoding, stored_bits, tensors[f"{name}.weight.codes"], zeros)
    codes = unpack_codes(stored, out_features * in_features, torch.int16)  # int16: 8-bit offsets must not wrap
    return codes.to(torch.int8).reshape(out_features, in_features).t().contiguous()  # (in, out)


def _row_scales(entry: dict[str, Any], scale: torch.Tensor) -> torch.Tensor | None:
    """One weight scale per output row, or None when a scale group does not cover whole rows."""
    out_features, in_features = entry["shape"]
    granularity = parse_granularity(entry["granularity"])
    if isinstance(granularity, PerTensor):
        return scale.reshape(1).expand(out_features).clone()
    if isinstance(granularity, PerRow):
        return scale.reshape(out_features)
    size = granularity.size if isinstance(granularity, PerGroup) else out_features * in_features // granularity.count
    if size % in_features:
        return None
    return scale.reshape(-1).repeat_interleave(size // in_features)  # (out,)


def _why_not_int8(entry: dict[str, Any]) -> str | None:
    act = entry.get("act")
    if act is None:
        return "its input is not quantized (no activation quantizer)"
    if not entry["symmetric"] and entry["bits"] >= 3:
        return "asymmetric weights have a zero point"
    if act["range"] == "dynamic" and act["granularity"] != "token":
        return f"its activations are quantized per {act['granularity']!r}, not per token"
    return None


def _packed_weight(entry: dict[str, Any], tensors: dict[str, torch.Tensor], name: str) -> PackedWeight | None:
    """The weight kept packed (``engine="int8-packed"``), or None when its codes need more than a bit expansion."""
    encoding, stored_bits, (out_features, in_features) = entry["encoding"], entry["stored_bits"], entry["shape"]
    if stored_bits not in (1, 2, 4, 8) or encoding not in EXPANDABLE or out_features * in_features * stored_bits % 8:
        return None
    mul, sub = code_mapping(encoding, stored_bits)
    return PackedWeight(as_inference(tensors[f"{name}.weight.codes"]), stored_bits, mul, sub, out_features,
                        in_features, tensors.get(f"{name}.weight.zeros"))


def int8_linear(name: str, entry: dict[str, Any], tensors: dict[str, torch.Tensor], bias: torch.Tensor | None,
                act_state: dict[str, torch.Tensor], keep_packed: bool = False) -> Int8Linear | None:
    """The ``Int8Linear`` of one packed linear, or None (with the reason logged) when it needs the float path."""
    why = _why_not_int8(entry)
    scales = None if why else _row_scales(entry, tensors[f"{name}.weight.scale"])
    if why is None and scales is None:
        why = f"its weight groups ({entry['granularity']}) do not cover whole rows"
    max_abs = None
    if why is None and entry["act"]["range"] == "static":
        min_max, calibrated = act_state.get("min_max"), act_state.get("calibrated")
        if min_max is None or calibrated is None or not bool(calibrated):
            why = "its static activation range was never calibrated"
        else:
            max_abs = torch.maximum(min_max[0].abs(), min_max[1])
    if why is not None:
        log.info("integer engine: %s keeps the float path: %s", name, why)
        return None
    codes = _packed_weight(entry, tensors, name) if keep_packed else None
    if keep_packed and codes is None:
        log.info("integer engine: %s is unpacked to int8 once (%s-bit %s codes are not kept packed)", name,
                 entry["stored_bits"], entry["encoding"])
    if codes is None:
        # only this weight's packed tensors: each is freed once its codes are unpacked (not when the last layer's are)
        own = {k: tensors[k] for k in (f"{name}.weight.codes", f"{name}.weight.zeros") if k in tensors}
        codes = functools.partial(_int8_codes, entry, own, name)
    return Int8Linear(codes, scales, bias, entry["act"]["bits"], max_abs, shape=tuple(entry["shape"][::-1]))


def row_embedding(name: str, entry: dict[str, Any], tensors: dict[str, torch.Tensor]) -> PackedRowEmbedding | None:
    vocab, dim = entry["shape"]
    granularity = parse_granularity(entry["granularity"])
    byte_rows = entry["stored_bits"] in (1, 2, 4, 8) and dim * entry["stored_bits"] % 8 == 0
    if not (isinstance(granularity, (PerRow, PerTensor)) and byte_rows and entry["encoding"] != "unsigned"):
        log.info("integer engine: embedding %s keeps the float path (rows not byte-aligned per-row codes)", name)
        return None
    return PackedRowEmbedding(tensors[f"{name}.weight.codes"], tensors[f"{name}.weight.scale"], entry["encoding"],
                              entry["stored_bits"], vocab, dim, tensors.get(f"{name}.weight.zeros"))


# ---------------------------------------------------------------------------------------------- BERT layers
class EngineBertLayer(nn.Module):
    """One BERT encoder layer on integer linears, with fused Q/K/V and fused epilogues (module docstring).

    Attention itself (scores, softmax, weighted sum) stays float, through the model's own attention function
    (``config._attn_implementation``), so masks behave exactly as in the float model.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        attn = layer.attention.self
        q, k, v = attn.query, attn.key, attn.value
        self.config, self.is_causal, self.scaling = attn.config, False, attn.scaling
        self.heads, self.head_size = attn.num_attention_heads, attn.attention_head_size

        def fused_codes() -> torch.Tensor:
            return torch.cat([q.int8_codes(), k.int8_codes(), v.int8_codes()], dim=1)  # (H, 3H)

        packed = [m.packed for m in (q, k, v)]
        fused = PackedWeight.cat(packed) if all(p is not None for p in packed) else None
        self.qkv = Int8Linear(fused or fused_codes, torch.cat([q.w_scale, k.w_scale, v.w_scale]),
                              torch.cat([q.bias, k.bias, v.bias]), q.act_bits,
                              shape=(q.in_features, 3 * q.out_features))
        self.attn_out, self.intermediate, self.out = (layer.attention.output.dense, layer.intermediate.dense,
                                                      layer.output.dense)
        for role in ("qkv", "attn_out", "intermediate", "out"):  # kept packed on oneDNN: one prepacked weight each
            getattr(self, role).role = role
        norms = layer.attention.output.LayerNorm, layer.output.LayerNorm
        self.norm_eps = norms[0].eps, norms[1].eps
        for i, norm in enumerate(norms, 1):
            self.register_buffer(f"norm{i}_weight", as_inference(norm.weight.detach()))
            self.register_buffer(f"norm{i}_bias", as_inference(norm.bias.detach()))
        self.act = layer.intermediate.intermediate_act_fn
        self.gelu_fused = _exact_gelu(layer.intermediate)

    @staticmethod
    def fits(layer: nn.Module) -> bool:
        """BERT's layer structure with six dynamic-per-token integer linears (Q/K/V of one activation width)."""
        try:
            attn = layer.attention.self
            linears = [attn.query, attn.key, attn.value, layer.attention.output.dense, layer.intermediate.dense,
                       layer.output.dense]
            norms = [layer.attention.output.LayerNorm, layer.output.LayerNorm]
            plain = getattr(layer, "chunk_size_feed_forward", 0) == 0 and not getattr(layer, "add_cross_attention",
                                                                                       False)
            _ = attn.scaling, attn.num_attention_heads, attn.attention_head_size, attn.config
        except AttributeError:
            return False
        return (plain and all(isinstance(m, Int8Linear) and m.act_max_abs is None for m in linears)
                and all(isinstance(n, nn.LayerNorm) for n in norms)
                and len({attn.query.act_bits, attn.key.act_bits, attn.value.act_bits}) == 1)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args: Any,
                **kwargs: Any) -> torch.Tensor:
        """The layer on chunks of about ``CHUNK_TOKENS`` tokens (whole sequences): every step is per token or per
        sequence, so chunking changes no number. It keeps the int32/GELU temporaries of a 32 x 128 batch at an
        eighth of their size, for the peak memory, and under glibc's 32 MiB ``mmap`` threshold, for speed: blocks
        above it are mapped fresh and page-faulted on every op (at 4096 x 3072 tokens the rescale + GELU pass took
        60 ms instead of 15 ms, the Q/K/V rescale 33 ms instead of 2 ms, one thread)."""
        batch, seq = hidden_states.shape[:2]
        rows = max(1, CHUNK_TOKENS // seq)
        with torch.inference_mode():
            hidden_states = as_inference(hidden_states)
            # kept int8 codes, or (int8-packed) this layer's codes unpacked now, once for all chunks, dropped after
            weights = tuple(m.weight_codes() for m in (self.qkv, self.attn_out, self.intermediate, self.out))
            if batch <= rows:
                return self._forward(hidden_states, attention_mask, weights, **kwargs)
            out = torch.empty_like(hidden_states)
            per_row_mask = (attention_mask is not None and attention_mask.dim() > 0
                            and attention_mask.shape[0] == batch)
            for start in range(0, batch, rows):  # each chunk's last epilogue writes its rows of out
                mask = attention_mask[start:start + rows] if per_row_mask else attention_mask
                self._forward(hidden_states[start:start + rows], mask, weights, into=out[start:start + rows],
                              **kwargs)
            return out

    def _forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None,
                 weights: tuple[torch.Tensor, ...], into: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        k = kernels()
        qkv_linear, attn_out, intermediate, out_linear = self.qkv, self.attn_out, self.intermediate, self.out
        w_qkv, w_attn_out, w_intermediate, w_out = weights  # each linear's weight in its kernel's form
        batch, seq, hidden = hidden_states.shape
        x = hidden_states.reshape(batch * seq, hidden)  # (M, H)
        codes, scale = k["quantize_tokens"](x, qkv_linear.act_bits)
        qkv = qkv_linear.matmul_rescale(codes, scale, w_qkv)  # (M, 3H) float
        # (M, 3H) -> (3, B, nh, T, hs) -> three (B, nh, T, hs) views
        q, key, v = qkv.view(batch, seq, 3, self.heads, self.head_size).permute(2, 0, 3, 1, 4).unbind(0)
        context = self._attention(q, key, v, attention_mask, kwargs).reshape(batch * seq, hidden)  # (M, H)
        codes, scale = k["quantize_tokens"](context, attn_out.act_bits)
        h, codes, scale = k["rescale_residual_norm_quantize"](
            attn_out.matmul(codes, w_attn_out), scale, attn_out.w_scale, attn_out.bias, x,
            self.norm1_weight, self.norm1_bias, self.norm_eps[0], intermediate.act_bits)  # (M, H), its codes
        acc = intermediate.matmul(codes, w_intermediate)  # (M, I)
        if self.gelu_fused:  # GELU and the next quantizer in the same pass over each row
            codes, scale = k["rescale_gelu_quantize"](acc, scale, intermediate.w_scale, intermediate.bias,
                                                      out_linear.act_bits)
        else:
            inner = self.act(k["rescale"](acc, scale, intermediate.w_scale, intermediate.bias))
            codes, scale = k["quantize_tokens"](inner, out_linear.act_bits)
        out = k["rescale_residual_norm"](out_linear.matmul(codes, w_out), scale, out_linear.w_scale, out_linear.bias,
                                         h, self.norm2_weight, self.norm2_bias, self.norm_eps[1],
                                         None if into is None else into.view(batch * seq, hidden))  # (M, H)
        return out.reshape(batch, seq, hidden)

    def _attention(self, q: torch.Tensor, key: torch.Tensor, v: torch.Tensor, attention_mask: torch.Tensor | None,
                   kwargs: dict[str, Any]) -> torch.Tensor:
        """``(B, T, nh, hs)`` context of ``(B, nh, T, hs)`` queries, keys and values, through the model's attention
        function (``config._attn_implementation``); for ``sdpa`` the call transformers' ``sdpa_attention_forward``
        makes for a BERT layer (no grouped heads, no cache, not causal), without its ~25 us of Python per layer."""
        if self.config._attn_implementation == "sdpa":
            return F.scaled_dot_product_attention(q, key, v, attn_mask=attention_mask, dropout_p=0.0,
                                                  scale=self.scaling, is_causal=False).transpose(1, 2)
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        from transformers.models.bert.modeling_bert import eager_attention_forward

        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        return attention(self, q, key, v, attention_mask, dropout=0.0, scaling=self.scaling,
                         **{n: a for n, a in kwargs.items() if n == "position_ids"})[0]


def _exact_gelu(intermediate: nn.Module) -> bool:
    """Whether the activation is ``F.gelu`` exactly (erf form), so that the fused kernel computes the same."""
    from transformers.activations import GELUActivation

    fn = intermediate.intermediate_act_fn
    return isinstance(fn, GELUActivation) and fn.act is nn.functional.gelu


# ---------------------------------------------------------------------------------------------- the model
def build_engine(path: Path, header: dict[str, Any], tensors: dict[str, torch.Tensor], fuse: bool = True,
                 keep_packed: bool = False) -> nn.Module:
    """The integer-engine model of ``read_packed(path)``'s ``(header, tensors)``, in eval mode; ``keep_packed``
    keeps the weights packed in memory (``engine="int8-packed"``)."""
    if header["dtype"] != "float32":
        raise ValueError(f"packed checkpoint {path} holds {header['dtype']} weights; the integer engine runs float32 "
                         "models only (load it with xtc.packed.load(path) instead)")
    model = build_skeleton(path, header)  # its FP32 parameters are never touched (not resident) and replaced
    check_modules(path, header, model)
    modules = header["modules"]
    state = remainder_state(header, tensors)
    floats: dict[str, dict[str, Any]] = {}
    for name, entry in modules.items():
        prefix = f"{name}."
        if entry["kind"] == "embedding":
            module = row_embedding(name, entry, tensors)
        else:
            act_state = {k.removeprefix(f"{prefix}act_quantizer."): v for k, v in state.items()
                         if k.startswith(f"{prefix}act_quantizer.")}
            module = int8_linear(name, entry, tensors, state.get(f"{prefix}bias"), act_state, keep_packed)
        if module is None:
            floats[name] = entry
            continue
        for key in [k for k in state if k.startswith(prefix)]:
            del state[key]  # the bias (and static range) now live in the engine module
        model.set_submodule(name, module)
    for name, entry in floats.items():  # the exact float path for the rest: same modules, same dequantized weights
        state[f"{name}.weight"] = dequantized_weight(name, entry, tensors)
        model.set_submodule(name, float_module(entry, False, torch.float32))
    engine_keys = {f"{n}.{b}" for n, m in model.named_modules()
                   if isinstance(m, (Int8Linear, PackedRowEmbedding, PackedWeight))
                   for b, _ in m.named_buffers(recurse=False)}
    check_state(path, {k: v.shape for k, v in model.state_dict().items() if k not in engine_keys}, state)
    model.load_state_dict(state, strict=False, assign=True)
    if fuse:
        layers = [(n, m) for n, m in model.named_modules() if EngineBertLayer.fits(m)]
        for name, layer in layers:
            model.set_submodule(name, EngineBertLayer(layer))
        log.info("integer engine: %d fused layers, %d float modules", len(layers), len(floats))
    model.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, (Int8Linear, EngineBertLayer, PackedWeight)):
            for key, buffer in module._buffers.items():
                module._buffers[key] = as_inference(buffer)
    release_free_memory()
    return model.eval()


def load_engine(path: str | os.PathLike, engine: str = "int8", compile: bool | None = None) -> nn.Module:
    """``xtc.packed.load(path, engine=...)``: the packed checkpoint on the integer CPU engine.

    ``compile`` (default: when ``hidden_size >= COMPILE_MIN_HIDDEN``) compiles the elementwise kernels once per
    process (``xtc.quant.int8.enable_compiled``); on tiny models the compile time would outweigh the forward.
    """
    if engine not in ENGINES[1:]:
        raise ValueError(f"unknown engine {engine!r}: use one of {list(ENGINES)}")
    path = Path(path)
    header, tensors = read_packed(path)
    hidden = header["model_config"].get("hidden_size", 0)
    if compile if compile is not None else hidden >= COMPILE_MIN_HIDDEN:
        enable_compiled()
    return build_engine(path, header, tensors, keep_packed=engine == "int8-packed")
