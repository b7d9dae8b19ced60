"""Integer kernels of the CPU engine: W{1,2,k}A8 linears as ``torch._int_mm`` and embeddings gathered from packed rows.

A quantized linear of the fake-quant model computes ``y = (q_x s_x) (q_w s_w)^T + b`` in float, where ``q_x, s_x``
come from the 8-bit symmetric per-token activation quantizer and ``q_w, s_w`` from the weight quantizer. Both code
tensors are small integers, so the same product is ``(q_x q_w^T) * s_x * s_w + b`` with ``q_x q_w^T`` computed
**exactly** in int32 (``torch._int_mm``, int8 x int8 -> int32; |sum| <= 128 * 128 * K, far below 2^31 at BERT
sizes). The activation codes come from ``quantize_tokens``, the training quantizer's arithmetic operation for
operation (``xtc.quant.primitives.quantize_symmetric``: ``scale = 2 max|x| / 2^k``, division, round, clamp), so they
equal the fake-quant codes for the same input. The only differences from the fake-quant logits are float rounding:
the float model sums ``K`` products in float32 where the engine sums exactly, and the rescale is one multiply
instead of two; a code at a rounding boundary can then flip by one step in a later layer (bound: ``xtc.packed.engine``).

The elementwise passes around the matmul cost more than the matmul itself in eager mode (quantizing a 512 x 768
activation: 1.6 ms eagerly, 0.1 ms in a row kernel, 2 threads), so they are written as small pure functions here
(quantize; rescale; rescale + residual + LayerNorm; and, fused with the next product's quantizer, rescale + GELU and
rescale + residual + LayerNorm) -- the eager reference -- and run as C++ row kernels (``xtc.quant.cpu_kernels``,
``enable_compiled()``) that read each token's row once; without a working compiler the eager ones run, with the
reason logged once.

The int8 products themselves have three kernels (``select_matmul()``, decided once per process): ``torch._int_mm``
(oneDNN's s8s8 GEMM on a plain weight each call); on CPUs with AMX, oneDNN's int8 linear on a weight prepacked once
(``torch.ops.onednn.qlinear_pointwise``, scales 1, zero points 0), which returns the same exact sums as float32 --
``_int_mm``'s int32 converted, bit for bit, sums beyond 2^24 included (checked at selection); and, on AMX with the
C++ kernels on, xtc's own tile kernel (``xtc.quant.cpu_kernels.amx_matmul``, the default there): the weight re-packed
once in 32-column panels of AMX's weight-tile order, kept as int8 (``int8``) or as bit planes of the stored width
(``int8-packed``), each panel unpacked into the thread's cache right before its tile products, so a 1-bit weight is
read as 1 bit per weight and never written out as int8 (at 128 x 768 x 2304, 1-bit, 2 threads: 0.10 ms against
oneDNN's 0.20 ms on an int8 prepacked weight, AMX Xeon). Its sums are exact int32, probed at selection. Every
rescale kernel converts the sums to float first, so the choice never changes a logit. Without AMX oneDNN runs its
op on a reference path (42-187 s for one 512 x 768 x 2304 product), so ``auto`` takes the AMX kernels only where
AMX is present; shapes the tile kernel does not take (``K % 64``, ``N % 32``) run on ``_int_mm``.

Without VNNI (AVX2 CPUs), ``_int_mm`` itself is exact only for weight codes within +-64: its kernel adds pairs of
products in int16 with saturation. The selection probes for it; where it saturates, weights with larger codes (8-bit)
run as two exact products (``int_mm_exact``). 1- to 7-bit weights never reach it.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from xtc.quant.packing import code_mapping, pack_bits

log = logging.getLogger(__name__)

COMPILE_ENV = "XTC_ENGINE_COMPILE"  # "0": the eager kernels, no C++ build
MATMUL_ENV = "XTC_ENGINE_MATMUL"  # the int8 products' kernel: one of MATMULS
MATMULS = ("auto", "amx", "onednn", "int_mm")  # auto: amx where AMX and the C++ kernels are, else onednn on AMX,
# else int_mm
ONEDNN_ISA_ENVS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")  # oneDNN's own cap on the instruction sets it uses


# ---------------------------------------------------------------------------------------------- pure kernels
def quantize_tokens(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``(codes int8 (M, K), scale (M, 1))``: XTC's dynamic symmetric per-token quantizer on a ``(M, K)`` matrix."""
    max_abs = torch.maximum(x.amax(dim=-1, keepdim=True), x.amin(dim=-1, keepdim=True).neg())  # (M, 1)
    scale = 2 * max_abs / 2**bits
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    half = 2**bits // 2
    return (x / scale).round().clamp(-half, half - 1).to(torch.int8), scale


def rescale(acc: torch.Tensor, x_scale: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``(M, N)`` products (int32, or oneDNN's equal float32) -> float ``acc * s_x * s_w + b`` (``s_x`` (M, 1), ``s_w`` and
    ``b`` (N,))."""
    return acc.to(torch.float32) * x_scale * w_scale + bias


def rescale_residual_norm(acc: torch.Tensor, x_scale: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor,
                          residual: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor,
                          eps: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """BERT's output dense + residual + LayerNorm: ``LN(acc s_x s_w + b + residual)`` (into ``out`` if given: a
    contiguous ``(M, N)`` float32 tensor, e.g. the rows of the layer's output)."""
    y = rescale(acc, x_scale, w_scale, bias) + residual  # (M, N)
    y = F.layer_norm(y, (y.shape[-1],), norm_weight, norm_bias, eps)
    return y if out is None else out.copy_(y)


def rescale_gelu_quantize(acc: torch.Tensor, x_scale: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor,
                          bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's intermediate dense epilogue and the output dense's input quantizer: codes of ``GELU(rescale(...))``."""
    return quantize_tokens(F.gelu(rescale(acc, x_scale, w_scale, bias)), bits)


def rescale_residual_norm_quantize(acc: torch.Tensor, x_scale: torch.Tensor, w_scale: torch.Tensor,
                                   bias: torch.Tensor, residual: torch.Tensor, norm_weight: torch.Tensor,
                                   norm_bias: torch.Tensor, eps: float,
                                   bits: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(h, codes, scale)``: the attention output's residual + LayerNorm ``h`` and the intermediate's input
    codes."""
    h = rescale_residual_norm(acc, x_scale, w_scale, bias, residual, norm_weight, norm_bias, eps)
    return (h, *quantize_tokens(h, bits))


def byte_table(stored_bits: int, mul: int, sub: int) -> torch.Tensor:
    """``(256, 8 // stored_bits)`` int8: the codes ``u * mul - sub`` that each byte value packs (LSB first)."""
    shifts = torch.arange(0, 8, stored_bits, dtype=torch.int16)  # (per_byte,)
    unsigned = (torch.arange(256, dtype=torch.int16).unsqueeze(1) >> shifts) & (2**stored_bits - 1)  # (256, per_byte)
    return (unsigned * mul - sub).to(torch.int8)


def unpack_bytes(data: torch.Tensor, table: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` (int8, ``data.numel() * per_byte`` codes) = the ``table`` row of each packed byte, in order (one
    gather of whole rows; the C++ kernel copies them without the int32 index)."""
    return torch.index_select(table, 0, data.int(), out=out.view(-1, table.shape[1])).view(-1)


def unpack_int8(data: torch.Tensor, table: torch.Tensor, numel: int) -> torch.Tensor:
    """Packed bytes -> the first ``numel`` int8 codes in stored order (an ``(out, in)`` weight stays ``(out, in)``),
    one table row per byte: the per-forward unpack of ``engine="int8-packed"``. A gather of whole rows; 5x faster
    than the shift-and-mask expansion eagerly and 20x faster than inductor's code for it (1.77M 1-bit codes, 2 threads:
    0.2 ms vs 1.0 vs 4.2 ms); the C++ row copy (``unpack_bytes``) is 6x faster again (2.36M codes: 0.055 against
    0.345 ms, AMX Xeon)."""
    out = torch.empty(data.numel() * table.shape[1], dtype=torch.int8)
    return kernels()["unpack_bytes"](data, table, out)[:numel]


def unpack_transposed(data: torch.Tensor, stored_bits: int, mul: int, sub: int, out_features: int,
                      in_features: int) -> torch.Tensor:
    """Packed ``(out, in)`` weight codes (``xtc.quant.packing`` layout, ``stored_bits`` in 1, 2, 4, 8) -> int8 ``(in, out)``
    codes ``u * mul - sub`` (sign: 2u - 1, ternary: u - 1, offset: u - 2^(k-1)): the int8 engine's unpack at a
    weight's first use. A table gather then one transposing copy (768 x 2304 1-bit codes, 2 threads: 0.9 ms; the
    shift-and-mask expansion took 1.3 ms eagerly and 9.3 ms compiled by inductor)."""
    codes = unpack_int8(data, byte_table(stored_bits, mul, sub), out_features * in_features)
    return codes.view(out_features, in_features).t().contiguous()


def amx_panels(codes: torch.Tensor) -> torch.Tensor:
    """``(K, N)`` codes (``K % 64 == 0``, ``N % 32 == 0``) -> flat, in the order the AMX kernel reads a weight
    (``xtc.quant.cpu_kernels.amx_matmul``): panels of 32 columns, each ``[k / 4][column][k % 4]`` (the VNNI order of
    an AMX weight tile: four consecutive ``k`` of one column side by side)."""
    k, n = codes.shape
    return codes.reshape(k // 4, 4, n // 32, 32).permute(2, 0, 3, 1).reshape(-1)


def amx_fits(in_features: int, out_features: int) -> bool:
    """Whether the AMX kernel takes a weight of this shape (whole 64-deep steps and 32-column panels)."""
    return in_features % 64 == 0 and out_features % 32 == 0


def bit_planes(unsigned: torch.Tensor, bits: int) -> torch.Tensor:
    """Flat unsigned codes (``uint8 < 2^bits``, a multiple of 64) -> their bit planes per 64 codes: ``bits`` words of
    64 bits each (word ``j``: bit ``j`` of every code, LSB first), the AMX kernel's packed form. Same size as
    ``pack_bits``; one byte blend per plane expands 64 codes."""
    groups = unsigned.reshape(-1, 64)
    planes = [pack_bits(((groups >> j) & 1).contiguous(), 1).view(-1, 8) for j in range(bits)]  # each (G, 8)
    return torch.stack(planes, dim=1).reshape(-1)


EAGER: dict[str, Callable] = {"quantize_tokens": quantize_tokens, "rescale": rescale,
                              "rescale_residual_norm": rescale_residual_norm,
                              "rescale_gelu_quantize": rescale_gelu_quantize,
                              "rescale_residual_norm_quantize": rescale_residual_norm_quantize,
                              "unpack_bytes": unpack_bytes}
_kernels: dict[str, Callable] | None = None
_status: dict[str, str] = {}


def _probe(built: dict[str, Callable]) -> None:
    """Run every built kernel once on small inputs (rows of 40: vector loops and their tails) and check it against
    the eager kernel: a toolchain that builds but computes differently must not be used. The products come in the
    dtype of the selected matmul kernel (int32, or oneDNN's float32), so the kernels probed are those the engine
    runs. Codes must be equal, except one step where a float differs in the last bit (GELU, LayerNorm)."""
    g = torch.Generator().manual_seed(0)
    acc_dtype = ACC_DTYPES[select_matmul()["matmul"]]
    m, k, n = 3, 40, 40
    x = torch.randn(m, k, generator=g) * 3
    acc = torch.randint(-500, 500, (m, n), generator=g, dtype=torch.int32).to(acc_dtype)
    xs, ws, b, res = torch.rand(m, 1, generator=g) / 50, torch.rand(n, generator=g), torch.randn(n, generator=g), \
        torch.randn(m, n, generator=g)
    nw, nb = torch.rand(n, generator=g), torch.randn(n, generator=g)  # distinct tensors: aliasing is guarded too
    cases = {"quantize_tokens": (x, 8), "rescale": (acc, xs, ws, b), "rescale_gelu_quantize": (acc, xs, ws, b, 8),
             "rescale_residual_norm": (acc, xs, ws, b, res, nw, nb, 1e-12),
             "rescale_residual_norm_quantize": (acc, xs, ws, b, res, nw, nb, 1e-12, 8),
             "unpack_bytes": (torch.randint(0, 256, (37,), generator=g, dtype=torch.uint8), byte_table(1, 2, 1),
                              torch.empty(37 * 8, dtype=torch.int8))}
    for name, args in cases.items():
        got, want = built[name](*args), EAGER[name](*args)
        for g_, w_ in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,),
                          strict=True):
            if g_.shape != w_.shape or g_.dtype != w_.dtype:
                raise RuntimeError(f"built {name} returns {g_.dtype} {tuple(g_.shape)}, not {w_.dtype} "
                                   f"{tuple(w_.shape)}")
            close = torch.equal(g_, w_) if g_.dtype == torch.int8 else torch.allclose(g_, w_, rtol=1e-5, atol=1e-5)
            if not close and not (g_.dtype == torch.int8 and (g_.int() - w_.int()).abs().max() <= 1):
                raise RuntimeError(f"built {name} disagrees with the eager kernel")


def _reason(err: Exception) -> str:
    """One line for a status report: the error's type and first line."""
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]


def kernels() -> dict[str, Callable]:
    """The engine's elementwise kernels in use: the C++ row kernels once ``enable_compiled()`` succeeded, else
    eager."""
    return _kernels if _kernels is not None else EAGER


def enable_compiled() -> dict[str, str]:
    """Switch to the C++ row kernels (``xtc.quant.cpu_kernels``, built by inductor's C++ toolchain) if they build
    and pass the probe here; returns ``compile_status()``.

    Decided once per process (~10 s the first time on a 2-core CPU, then from the on-disk cache); when building
    fails or ``XTC_ENGINE_COMPILE=0`` the eager kernels stay, with the reason logged and reported.
    """
    global _kernels
    if _status:
        return dict(_status)
    if os.environ.get(COMPILE_ENV, "1") == "0":
        _status.update(mode="eager", reason=f"{COMPILE_ENV}=0")
        return dict(_status)
    try:
        from xtc.quant import cpu_kernels

        cpu_kernels.build(ACC_DTYPES[select_matmul()["matmul"]])
        with torch.inference_mode():  # the engine runs its kernels on inference tensors only (as_inference)
            _probe(cpu_kernels.KERNELS)
    except Exception as err:  # no compiler, no headers, a toolchain bug: all mean "run eagerly"
        reason = _reason(err)
        log.warning("the integer engine's C++ kernels are unavailable (%s); running the eager kernels, which are "
                    "slower", reason)
        _status.update(mode="eager", reason=reason)
        return dict(_status)
    _status.update(mode="compiled", reason="C++ row kernels (inductor's toolchain) built, probe passed")
    _kernels = cpu_kernels.KERNELS
    return dict(_status)


def compile_status() -> dict[str, str]:
    """``{"mode": "compiled" | "eager", "reason": ...}`` once ``enable_compiled()`` has decided; empty before."""
    return dict(_status)


def reset_kernels() -> None:
    """Forget the decisions (tests switch ``XTC_ENGINE_COMPILE`` and ``XTC_ENGINE_MATMUL``)."""
    global _kernels
    _kernels = None
    _status.clear()
    _matmul_status.clear()


_matmul_status: dict[str, str] = {}
ACC_DTYPES = {"amx": torch.int32, "onednn": torch.float32, "int_mm": torch.int32}  # each kernel's products


def prepack(codes: torch.Tensor) -> torch.Tensor:
    """int8 ``(in, out)`` weight codes -> oneDNN's prepacked weight for ``onednn_product`` (once per weight)."""
    with torch.inference_mode():
        return torch.ops.onednn.qlinear_prepack(codes.t().contiguous(), None)


def onednn_product(codes: torch.Tensor, packed: torch.Tensor, ones: torch.Tensor,
                   zero_points: torch.Tensor) -> torch.Tensor:
    """``(M, out)`` float32: the exact int8 sums of ``(M, in)`` codes with a ``prepack``ed weight, converted to float
    as ``_int_mm(codes, w).to(torch.float32)`` (all scales 1, zero points 0; ``ones`` (out,) float32,
    ``zero_points`` (out,) int64)."""
    return torch.ops.onednn.qlinear_pointwise(codes, 1.0, 0, packed, ones, zero_points, None, 1.0, 0,
                                              torch.float32, "none", [], "")


def _why_not_amx() -> str | None:
    """None where oneDNN's int8 linear runs on AMX here, else why not."""
    if not torch.cpu._is_amx_tile_supported():
        return "no AMX on this CPU"
    for var in ONEDNN_ISA_ENVS:
        cap = os.environ.get(var, "").upper()
        if cap and "AMX" not in cap and cap != "ALL":
            return f"{var}={os.environ[var]} keeps oneDNN off AMX"
    return None


def _probe_onednn() -> None:
    """oneDNN's product must equal the exact sums converted to float, as ``_int_mm``'s are, bit for bit: extreme
    codes, sums past 2^24 (without VNNI oneDNN saturates like ``_int_mm``: the probe refuses it there)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-128, 128, (20, 3072), generator=g, dtype=torch.int8)  # (M, K); M > 16 for _int_mm
    x[0], x[1], x[2, ::2], x[2, 1::2] = 127, -128, 127, -128  # extreme rows: pairs past int16 where it saturates
    w = torch.randint(-128, 128, (3072, 48), generator=g, dtype=torch.int8)  # (in, out)
    w[:, 0], w[:, 1], w[::2, 2], w[1::2, 2] = -128, 127, 127, -128  # |sums| up to 50M > 2^24: float rounding too
    got = onednn_product(x, prepack(w), torch.ones(48), torch.zeros(48, dtype=torch.long))
    if not torch.equal(got, (x.long() @ w.long()).to(torch.float32)):
        raise RuntimeError("oneDNN's int8 linear disagrees with the exact int8 sums")


def _why_not_tiles() -> str | None:
    """None where xtc's own AMX kernel can be built and run here, else why not."""
    if not torch.cpu._is_amx_tile_supported():
        return "no AMX on this CPU"
    if os.environ.get(COMPILE_ENV, "1") == "0":
        return f"{COMPILE_ENV}=0: no C++ kernels"
    return None


def _probe_amx() -> None:
    """Build the AMX kernel, get the tile state from Linux, and check its products against exact sums: int8 panels
    and 1/2/4-bit planes, extreme codes, a row count that is not a multiple of the 32-row block; and its fused
    rescale against the rescale kernel's floats."""
    from xtc.quant import cpu_kernels

    if not cpu_kernels.amx_permit():
        raise RuntimeError("Linux refused this process the AMX tile state (arch_prctl)")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-128, 128, (37, 128), generator=g, dtype=torch.int8)  # (M, K)
    x[0], x[1] = 127, -128
    for bits in (0, 1, 2, 4):
        levels = 2**(bits or 8)
        unsigned = torch.randint(0, levels, (128, 64), generator=g, dtype=torch.int16)  # (K, N)
        unsigned[:, 0], unsigned[:, 1] = 0, levels - 1
        w = (unsigned - levels // 2).to(torch.int8)  # codes -2^(b-1) .. 2^(b-1) - 1, full range at 8 bits
        values = torch.arange(levels, dtype=torch.int16).sub(levels // 2).to(torch.int8)
        weight = amx_panels(w) if not bits else bit_planes(amx_panels(unsigned.to(torch.uint8)), bits)
        got = cpu_kernels.amx_matmul(x, weight.contiguous(), values, bits, 64)
        if not torch.equal(got.long(), x.long() @ w.long()):
            raise RuntimeError(f"the AMX kernel disagrees with the exact int8 sums ({bits or 8}-bit weights)")
    scales = torch.rand(37, 1, generator=g), torch.rand(64, generator=g), torch.randn(64, generator=g)
    fused = cpu_kernels.amx_matmul(x, weight.contiguous(), values, bits, 64, rescale=scales)
    if not torch.equal(fused, cpu_kernels.rescale(got, *scales)):
        raise RuntimeError("the AMX kernel's fused rescale disagrees with the rescale kernel")


SAFE_CODE = 64  # the largest |weight code| whose products a saturating _int_mm still sums exactly (2 * 255 * 64 < 2^15)


def _int_mm_saturates() -> bool:
    """Whether ``torch._int_mm`` gets full-range int8 products wrong here. Without VNNI (AVX2, or AVX-512 without
    VNNI, or oneDNN capped below it), oneDNN's s8s8 GEMM shifts the activations to u8 and adds pairs of products in
    int16 with saturation (``vpmaddubsw``): exact while ``2 * 255 * |w| <= 32767``, i.e. weight codes within +-64 (1-
    to 7-bit weights), wrong for 8-bit ones, without a word."""
    x = torch.full((20, 64), 127, dtype=torch.int8)  # (M, K); shifted: 255
    w = torch.full((64, 8), 127, dtype=torch.int8)  # (K, N)
    w[:, 1::2] = -128
    return not torch.equal(torch._int_mm(x, w).long(), x.long() @ w.long())


def int_mm_exact(codes: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``_int_mm(codes, weight)`` made exact where it saturates: the weight split as ``2 h + l`` (``h = w >> 1`` in
    [-64, 63], ``l = w & 1``), two products within the exact range, ``2 (x h) + x l`` in int32."""
    high, low = weight >> 1, weight & 1
    return torch._int_mm(codes, high).mul_(2).add_(torch._int_mm(codes, low))


def select_matmul() -> dict[str, str]:
    """``{"matmul": "amx" | "onednn" | "int_mm", "matmul_reason": ..., "int_mm_range": ...}``: the int8 products'
    kernel, decided once per process from ``XTC_ENGINE_MATMUL`` (``auto``, the default: xtc's own AMX tile kernel
    where AMX is present, the C++ kernels are on and its products pass the equality probe; else oneDNN's prepacked
    int8 linear where AMX is present and its probe passes; else ``torch._int_mm``). All give the same numbers
    (module docstring)."""
    if _matmul_status:
        return dict(_matmul_status)
    choice = os.environ.get(MATMUL_ENV, "auto")
    if choice not in MATMULS:
        raise ValueError(f"{MATMUL_ENV}={choice!r} is not a matmul kernel of the integer engine: use one of "
                         f"{', '.join(MATMULS)} (or leave it unset for auto)")
    kernel, reason = _choose_matmul(choice)
    _matmul_status.update(matmul=kernel, matmul_reason=reason)
    _matmul_status["int_mm_range"] = (f"saturates: weights with codes beyond +-{SAFE_CODE} (8-bit) run as two "
                                      "products" if _int_mm_saturates() else "exact")
    log.info("integer engine products: %s (%s); torch._int_mm %s", _matmul_status["matmul"],
             _matmul_status["matmul_reason"], _matmul_status["int_mm_range"])
    return dict(_matmul_status)


def _choose_matmul(choice: str) -> tuple[str, str]:
    """``(kernel, reason)`` for ``XTC_ENGINE_MATMUL=choice``; a forced kernel that cannot run here is refused."""
    tiles = None if choice in ("auto", "amx") else f"{MATMUL_ENV}={choice}"  # why not xtc's AMX kernel
    failed = ""  # auto: the AMX kernel's failure, kept in the reason of the kernel taken instead
    if tiles is None and (tiles := _why_not_tiles()) is None:
        try:
            _probe_amx()
        except Exception as err:
            tiles = f"xtc's AMX kernel failed ({_reason(err)})"
            failed = f"; {tiles}"
            log.warning("integer engine: %s; the products take another kernel", tiles)
    if tiles is None:
        return "amx", f"{MATMUL_ENV}=amx" if choice == "amx" else "AMX: xtc's tile kernel, weights unpacked per panel"
    if choice == "amx":
        raise RuntimeError(f"{MATMUL_ENV}=amx, but xtc's AMX kernel cannot run here ({tiles}); unset {MATMUL_ENV} "
                           "to let the engine choose")
    why = f"{MATMUL_ENV}=int_mm" if choice == "int_mm" else None if choice == "onednn" else _why_not_amx()
    if why is None:
        try:
            _probe_onednn()
        except Exception as err:
            if choice == "onednn":
                raise RuntimeError(f"{MATMUL_ENV}=onednn, but oneDNN's int8 linear fails here ({_reason(err)}); "
                                   f"unset {MATMUL_ENV} to let the engine choose") from err
            why = f"oneDNN's int8 linear failed its probe ({_reason(err)})"
    if why is None:
        return "onednn", (f"{MATMUL_ENV}=onednn" if choice == "onednn" else
                          "AMX: oneDNN's int8 linear on prepacked weights") + failed
    return "int_mm", why + failed


def engine_status() -> dict[str, str]:
    """What the engine runs in this process: ``compile_status()`` and ``select_matmul()`` together (reports)."""
    return {**compile_status(), **select_matmul()}


def release_free_memory() -> None:
    """Return the allocator's free memory to the system (glibc ``malloc_trim``): loading leaves freed unpacking
    temporaries behind, which would otherwise stay resident; no-op off glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def as_inference(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t`` as an inference tensor (a copy if it is not one). Compiled graphs are guarded on each argument's
    dispatch keys, so the engine hands its kernels inference tensors only, and ``inference_mode`` throughout: one
    graph per kernel instead of a recompile for every mix of normal and inference tensors."""
    if t is None or t.is_inference():
        return t
    with torch.inference_mode():
        return t.clone()


# ---------------------------------------------------------------------------------------------- training
class Int8TrainLinear(torch.autograd.Function):
    """A W1A8/W2A8 ``QuantLinear``'s training forward on integers (``train.int8_forward``), backward as usual.

    Forward: ``x`` is quantized per token by the training quantizer's arithmetic (``quantize_tokens``: the codes of
    ``SymmetricActSTE``), the binary or ternary weight ``wq = alpha * {-1, 0, +1}`` (the weight quantizer's output, its
    STE node in the graph) splits exactly into codes and one scale per row (with per-tensor or per-row scales, every
    non-zero ``|wq|`` of a row is that row's ``alpha``: ``QuantLinear.int8_forward_fits``), and the product is one int8
    ``torch._int_mm`` with exact int32 sums, rescaled once. It equals the fake-quant ``F.linear(A(x), wq, b)`` up to
    float rounding of the sums (the engine's numerics, ``xtc.packed.engine``).

    Backward is the fake-quant linear's, operation for operation: ``grad_x = grad_y wq`` (the activation STE is
    identity), ``grad_wq = grad_y^T A(x)`` with ``A(x) = codes * scale`` rebuilt from the saved int8 codes (a
    quarter of the float copy the fake-quant path saves), ``grad_b = sum grad_y``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, wq: torch.Tensor, bias: torch.Tensor | None, bits: int) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])  # (M, K)
        k = kernels()  # the C++ row kernels once enable_compiled() succeeded (train.int8_forward asks), else eager
        codes, scale = k["quantize_tokens"](flat, bits)  # (M, K) int8, (M, 1): the same codes either way
        w_scale = wq.abs().amax(dim=1)  # (N,)
        w_scale = torch.where(w_scale == 0, torch.ones_like(w_scale), w_scale)
        w_codes = (wq / w_scale.unsqueeze(1)).round_().to(torch.int8)  # (N, K), exact: wq / alpha = -1, 0, 1
        out = k["rescale"](torch._int_mm(codes, w_codes.t()), scale, w_scale.detach(),
                           torch.zeros_like(w_scale) if bias is None else bias.detach())  # (M, N): acc s_x s_w + b
        ctx.save_for_backward(codes, scale, wq)
        ctx.has_bias = bias is not None
        return out.view(*x.shape[:-1], wq.shape[0])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        codes, scale, wq = ctx.saved_tensors
        grad = grad_out.reshape(-1, wq.shape[0])  # (M, N)
        grad_x = (grad @ wq).view(*grad_out.shape[:-1], wq.shape[1]) if ctx.needs_input_grad[0] else None
        grad_w = grad.t() @ (codes.to(grad.dtype) * scale) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


SCRATCH: dict[tuple[str, int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # (role, in, out) -> (prepacked, bytes)


def _prepacked_bytes(packed: torch.Tensor) -> torch.Tensor:
    """An int8 tensor over the memory of oneDNN's prepacked weight (its blocked codes, then int32 compensation sums),
    valid while ``packed`` lives."""
    size = torch.ops.mkldnn._nbytes(packed)
    return torch.frombuffer((ctypes.c_int8 * size).from_address(torch.ops.mkldnn.data_ptr(packed)), dtype=torch.int8)


# ---------------------------------------------------------------------------------------------- modules
class PackedWeight(nn.Module):
    """An ``(out, in)`` weight kept as its packed 1/2/4/8-bit codes in memory, unpacked to int8 on every use.

    ``weight_codes()`` returns a fresh ``(in, out)`` int8 view (``_int_mm`` takes the transposed view as fast as a
    contiguous ``(in, out)`` matrix), which the caller drops after its matmul: the model holds 1 or 2 bits per
    weight, plus one layer's int8 codes while that layer runs. ``zeros`` are the flat ``(out, in)`` positions of a
    ``sign+zeros`` weight's exact zeros.

    For oneDNN's int8 linear (AMX), ``to_blocked`` re-packs the codes once in the order of oneDNN's prepacked weight
    (its blocked layout, then its per-column compensation sums, kept as raw bytes in ``tail``), and
    ``blocked_weight()`` unpacks them straight into a prepacked weight kept per role and shape (``SCRATCH``): the
    same table gather as ``weight_codes()``, no reorder per use, and the model still holds 1 or 2 bits per weight
    plus one prepacked weight per role. Not for concurrent forwards of models that share a role and shape.
    """

    def __init__(self, data: torch.Tensor, stored_bits: int, mul: int, sub: int, out_features: int,
                 in_features: int, zeros: torch.Tensor | None = None) -> None:
        super().__init__()
        if stored_bits not in (1, 2, 4, 8) or out_features * in_features * stored_bits % 8:
            raise ValueError(f"PackedWeight needs 1/2/4/8-bit codes filling whole bytes, got {stored_bits} bits x "
                             f"{out_features} x {in_features}")
        self.stored_bits, self.mul, self.sub = stored_bits, mul, sub
        self.out_features, self.in_features = out_features, in_features
        self.register_buffer("data", data.reshape(-1)[: out_features * in_features * stored_bits // 8])  # (bytes,)
        self.register_buffer("zeros", None if zeros is None or not zeros.numel() else zeros.long().reshape(-1))
        self.register_buffer("table", byte_table(stored_bits, mul, sub), persistent=False)  # (256, per_byte)
        self.register_buffer("tail", None, persistent=False)  # oneDNN's compensation bytes, once ``to_blocked``
        self.blocked_key: tuple[str, int, int] | None = None  # (role, in, out) of its SCRATCH entry
        self.register_buffer("values", None, persistent=False)  # (2^bits,) codes of each unsigned u, ``to_panels``
        self.zero_in = self.zero_out = self.zero_fix = None  # sign+zeros on panels: each zero's (in, out, -code)
        self.panel_bits: int | None = None  # the width of ``data``'s planes (0: int8 panels) once ``to_panels``

    def to_blocked(self, role: str) -> bool:
        """Re-pack the codes in oneDNN's prepacked order (module docstring); False, changing nothing, where they
        cannot be: a ``sign+zeros`` weight, or a prepacked layout that is not exactly the codes (permuted) and one
        int32 per column (oneDNN pads blocks of small shapes; BERT's 768/2304/3072 fill them)."""
        if self.blocked_key is not None:
            return True
        if self.zeros is not None:
            return False
        key, body = (role, self.in_features, self.out_features), self.out_features * self.in_features
        with torch.inference_mode():
            packed = prepack(self.weight_codes().contiguous())
            raw = _prepacked_bytes(packed)
            if raw.numel() != body + 4 * self.out_features:  # padded blocks: not just the codes and one int32 each
                return False
            unsigned = raw[:body].int() + self.sub
            fits = bool((unsigned % self.mul == 0).all()) if self.mul != 1 else True
            unsigned = unsigned // self.mul
            if not fits or int(unsigned.min()) < 0 or int(unsigned.max()) >= 2**self.stored_bits:
                return False
            data, tail = pack_bits(unsigned.to(torch.uint8), self.stored_bits), raw[body:].clone()
            scratch = SCRATCH.setdefault(key, (packed, raw))
            if scratch[1].numel() != raw.numel():
                return False
            self.data, self.tail, self.blocked_key = data, tail, key
            if not torch.equal(_prepacked_bytes(self.blocked_weight()), raw):  # the round trip, byte for byte
                raise RuntimeError(f"re-packing a {self.in_features} x {self.out_features} weight in oneDNN's order "
                                   "did not give its bytes back")
        return True

    def to_panels(self) -> bool:
        """Re-pack the codes once in the AMX kernel's panel order (``amx_panels``), as bit planes of the stored width
        (``bit_planes``; 8-bit codes as int8 panels): the same bytes per weight, unpacked per 32-column panel inside
        the product. A ``sign+zeros`` weight's exact zeros stay what its bits say there (a sign) in the panels;
        ``zero_in``, ``zero_out`` and ``zero_fix`` (minus that code) let the product take their terms back out.
        False, changing nothing, for a shape the kernel does not take."""
        if self.panel_bits is not None:
            return True
        k, n = self.in_features, self.out_features
        if self.blocked_key is not None or not amx_fits(k, n):
            return False
        with torch.inference_mode():
            stored = unpack_int8(self.data, self.table, n * k)  # (out, in) flat, exact zeros not applied
            codes = stored.view(n, k).t()  # (in, out) int8
            if self.zeros is not None:
                self.zero_in, self.zero_out = self.zeros % k, self.zeros // k
                self.zero_fix = stored[self.zeros].int().neg()
            if self.stored_bits == 8:
                data, bits = amx_panels(codes).contiguous(), 0
            else:
                unsigned = (amx_panels(codes).int() + self.sub) // self.mul
                data, bits = bit_planes(unsigned.to(torch.uint8), self.stored_bits), self.stored_bits
            values = (torch.arange(2**bits, dtype=torch.int16) * self.mul - self.sub).to(torch.int8)
        self.data, self.values, self.panel_bits = data, values, bits
        return True

    def blocked_weight(self) -> torch.Tensor:
        """The prepacked weight for ``onednn_product``, its bytes unpacked now from ``to_blocked``'s codes."""
        packed, raw = SCRATCH[self.blocked_key]
        body = self.out_features * self.in_features
        with torch.inference_mode():
            kernels()["unpack_bytes"](self.data, self.table, raw[:body])
            raw[body:].copy_(self.tail)
        return packed

    def weight_codes(self) -> torch.Tensor:
        if self.blocked_key is not None or self.panel_bits is not None:
            raise RuntimeError("PackedWeight.weight_codes: the codes are re-packed in a kernel's order (oneDNN's or "
                               "the AMX kernel's); use blocked_weight() or the panels in data")
        with torch.inference_mode():
            codes = unpack_int8(self.data, self.table, self.out_features * self.in_features)
            if self.zeros is not None:
                codes[self.zeros] = 0
            return codes.view(self.out_features, self.in_features).t()  # (in, out)

    @classmethod
    def cat(cls, parts: list[PackedWeight]) -> PackedWeight | None:
        """The weights stacked along ``out`` (fused Q/K/V), or None when their code mappings differ."""
        first = parts[0]
        if any((p.stored_bits, p.mul, p.sub, p.in_features) != (first.stored_bits, first.mul, first.sub,
                                                               first.in_features) for p in parts):
            return None
        offsets = torch.tensor([0] + [p.out_features * p.in_features for p in parts[:-1]]).cumsum(0)
        zeros = [p.zeros + int(o) for p, o in zip(parts, offsets, strict=True) if p.zeros is not None]
        return cls(torch.cat([p.data for p in parts]), first.stored_bits, first.mul, first.sub,
                   sum(p.out_features for p in parts), first.in_features, torch.cat(zeros) if zeros else None)

    def extra_repr(self) -> str:
        return f"({self.out_features}, {self.in_features}) {self.stored_bits}-bit codes, unpacked per use"


class Int8Linear(nn.Module):
    """``y = (q_x @ q_w^T) s_x s_w + b`` with int8 weight codes stored ``(in, out)`` (``_int_mm``'s layout).

    ``w_scale`` is one float per output feature (per-tensor scales are repeated), so a fused Q/K/V weight can hold
    three scales. ``act_bits`` is the dynamic per-token activation width; ``act_max_abs`` a static range instead.
    ``codes`` may be a function that unpacks them: it runs on first use (the packed bytes are what loading reads,
    as an FP32 checkpoint's pages are read by its first forward), then the int8 codes stay. Or a ``PackedWeight``:
    the codes stay packed and are unpacked for every matmul (``engine="int8-packed"``): to plain int8 for
    ``_int_mm``,
    or, on oneDNN, re-packed once in its prepacked order and unpacked into the prepacked weight of this linear's
    ``role`` (``PackedWeight.to_blocked``; a fused layer names its four roles, so a layer's weights never share
    one). At first use the kept codes go to the process's matmul kernel (``select_matmul``): as they are for
    ``_int_mm``, or prepacked once for oneDNN (the same int8 bytes, blocked).
    """

    def __init__(self, codes: torch.Tensor | Callable[[], torch.Tensor] | PackedWeight, w_scale: torch.Tensor,
                 bias: torch.Tensor | None, act_bits: int, act_max_abs: torch.Tensor | None = None,
                 shape: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.packed = codes if isinstance(codes, PackedWeight) else None
        if self.packed is not None:
            shape, codes = (self.packed.in_features, self.packed.out_features), None
        elif callable(codes):
            if shape is None:
                raise ValueError("Int8Linear with codes to unpack later needs their (in, out) shape")
            self._unpack, codes = codes, None
        elif codes.dtype != torch.int8 or codes.dim() != 2:
            raise ValueError(f"Int8Linear needs (in, out) int8 codes, got {codes.dtype} {tuple(codes.shape)}")
        self.in_features, self.out_features = shape or codes.shape
        self.act_bits = act_bits
        self.register_buffer("codes", None if codes is None else codes.contiguous())  # (in, out)
        self.register_buffer("w_scale", w_scale.reshape(-1).to(torch.float32))  # (out,)
        self.register_buffer("bias", torch.zeros(self.out_features) if bias is None else bias.detach().reshape(-1))
        self.register_buffer("act_max_abs", None if act_max_abs is None else act_max_abs.reshape(()))
        # the matmul kernel: select_matmul()'s at first use unless set before it ("int_mm" or "onednn")
        self.kernel: str | None = None
        self._ready = False  # codes unpacked and in the kernel's form
        self.role = "own"  # which prepacked weight a packed one is unpacked into on oneDNN (set before first use)
        self.split: bool | None = None  # whether _int_mm needs the exact two-product form (``int_mm_exact``)
        self._ones = self._zero_points = None  # oneDNN's unit weight scales and zero points, (out,)
        self._amx: tuple | None = None  # the AMX kernel's weight mapping, once ready (``_set_ready``)

    def int8_codes(self) -> torch.Tensor:
        """The plain int8 ``(in, out)`` codes, unpacked now if they were not yet (every time if kept packed); before
        ``weight_codes()`` hands them to the matmul kernel (a fused Q/K/V weight is built from these)."""
        if self.packed is not None:
            return self.packed.weight_codes()  # refuses once re-packed for a kernel
        if self._ready and self.kernel in ("onednn", "amx"):
            raise RuntimeError(f"Int8Linear.int8_codes: the codes are in the {self.kernel} kernel's layout already "
                               "(prepacked, or AMX panels)")
        if self.codes is None:
            with torch.inference_mode():
                self.codes = as_inference(self._unpack())
            del self._unpack
        return self.codes

    def weight_codes(self) -> torch.Tensor:
        """The weight in the matmul kernel's form: ``int8_codes()``, or at first use oneDNN's prepacked weight made
        from them; pass it back to ``matmul``."""
        if self.packed is not None:
            if not self._ready:
                self.kernel = self.kernel or select_matmul()["matmul"]
                if (self.kernel == "onednn" and not self.packed.to_blocked(self.role)
                        or self.kernel == "amx" and not self.packed.to_panels()):
                    self.kernel = "int_mm"  # a layout it cannot re-pack: plain int8 codes per use
                self._set_ready()
            if self.kernel == "amx":
                return self.packed.data  # unpacked panel by panel inside the product
            return self.packed.blocked_weight() if self.kernel == "onednn" else self.packed.weight_codes()
        if not self._ready:
            self.int8_codes()
            self.kernel = self.kernel or select_matmul()["matmul"]  # set before first use, it stays
            if self.kernel == "amx" and not amx_fits(self.in_features, self.out_features):
                self.kernel = "int_mm"
            if self.kernel == "onednn":
                self.codes = prepack(self.codes)
            elif self.kernel == "amx":
                self.codes = amx_panels(self.codes).contiguous()
            self._set_ready()
        return self.codes

    def _set_ready(self) -> None:
        if self.kernel == "amx":  # (values, bits, exact zeros' (out, in, -code) or None), read on every product
            p = self.packed
            self._amx = ((torch.zeros(0, dtype=torch.int8), 0, None) if p is None else
                         (p.values, p.panel_bits, None if p.zeros is None else (p.zero_out, p.zero_in, p.zero_fix)))
        if self.kernel == "onednn":
            self._ones, self._zero_points = torch.ones(self.out_features), torch.zeros(self.out_features,
                                                                                         dtype=torch.long)
        self._ready = True

    def quantize_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(codes (M, in), scale (M, 1) or (1, 1))`` of a ``(M, in)`` input."""
        if self.act_max_abs is None:
            return kernels()["quantize_tokens"](x, self.act_bits)
        from xtc.quant.primitives import quantize_symmetric

        codes, scale = quantize_symmetric(x, self.act_bits, "tensor", self.act_max_abs)
        return codes.to(torch.int8), scale

    def matmul(self, codes: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``(M, out)`` exact products of ``(M, in)`` activation codes with ``weight`` (default: this linear's; else
        what its ``weight_codes()`` returned): int32 from ``_int_mm``, or the same sums as float32 from oneDNN."""
        weight = self.weight_codes() if weight is None else weight
        if self.kernel == "onednn":
            return onednn_product(codes, weight, self._ones, self._zero_points)
        if self.kernel == "amx":
            from xtc.quant.cpu_kernels import amx_matmul

            values, bits, zeros = self._amx
            acc = amx_matmul(codes, weight, values, bits, self.out_features)
            if zeros is not None:  # the panels hold a sign at each exact zero: take its term out
                zero_out, zero_in, zero_fix = zeros
                acc.index_add_(1, zero_out, codes[:, zero_in].int() * zero_fix)
            return acc
        if self.split is None:  # once: codes beyond +-SAFE_CODE on a CPU whose _int_mm saturates them
            self.split = select_matmul()["int_mm_range"] != "exact" and self._max_code(weight) > SAFE_CODE
        return int_mm_exact(codes, weight) if self.split else torch._int_mm(codes, weight)

    def matmul_rescale(self, codes: torch.Tensor, x_scale: torch.Tensor,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
        """``rescale(matmul(codes, weight), x_scale, w_scale, bias)``, float ``(M, out)``: on the AMX kernel with the
        C++ kernels in use, in the same pass (each block of sums rescaled while in the cache, by the rescale kernel's
        own row function: the same floats)."""
        weight = self.weight_codes() if weight is None else weight
        if self.kernel == "amx" and _kernels is not None and self._amx[2] is None:
            from xtc.quant.cpu_kernels import amx_matmul

            return amx_matmul(codes, weight, *self._amx[:2], self.out_features,
                              rescale=(x_scale, self.w_scale, self.bias))
        return kernels()["rescale"](self.matmul(codes, weight), x_scale, self.w_scale, self.bias)

    def _max_code(self, weight: torch.Tensor) -> int:
        if self.packed is not None:  # every code the stored width can hold: u * mul - sub for u in 0 .. 2^b - 1
            p = self.packed
            return max(abs(p.sub), abs((2**p.stored_bits - 1) * p.mul - p.sub))
        return max(int(weight.max()), -int(weight.min())) if weight.numel() else 0  # int8 abs() wraps at -128

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            flat = as_inference(x).reshape(-1, self.in_features)  # (M, in)
            codes, scale = self.quantize_input(flat)
            out = self.matmul_rescale(codes, scale)  # (M, out)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        act = f"static A{self.act_bits}" if self.act_max_abs is not None else f"A{self.act_bits} per token"
        return f"in_features={self.in_features}, out_features={self.out_features}, {act}" + (
            ", weights packed" if self.packed is not None else "")


class PackedRowEmbedding(nn.Module):
    """Word embeddings gathered from the packed rows: only the looked-up rows are ever unpacked.

    ``data`` is the packed file's codes viewed ``(num_embeddings, bytes_per_row)``; ``scale`` ``(V, 1)`` (per row) or
    ``(1, 1)``. Rows holding exact zeros of a ``sign+zeros`` binary table (a random BERT's padding row) are kept
    unpacked in ``exception_codes``. The result is ``codes * scale`` with the same float codes and the same multiply
    as ``xtc.quant.primitives.dequantize``, so it equals the fake-quant embedding exactly.
    """

    def __init__(self, data: torch.Tensor, scale: torch.Tensor, encoding: str, stored_bits: int,
                 num_embeddings: int, embedding_dim: int, zeros: torch.Tensor | None = None) -> None:
        super().__init__()
        if stored_bits not in (1, 2, 4, 8) or embedding_dim * stored_bits % 8:
            raise ValueError(f"rows of {embedding_dim} x {stored_bits}-bit codes do not start on a byte")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.encoding, self.stored_bits = encoding, stored_bits
        self.register_buffer("data", data.reshape(num_embeddings, embedding_dim * stored_bits // 8))  # (V, bytes)
        self.register_buffer("scale", scale)  # (V, 1) or (1, 1)
        self.register_buffer("table", byte_table(stored_bits, *code_mapping(encoding, stored_bits)), persistent=False)
        rows = torch.empty(0, dtype=torch.long) if zeros is None else (zeros.long() // embedding_dim).unique()
        codes = self._codes(self.data[rows])  # (R, D)
        if zeros is not None and zeros.numel():
            flat = codes.view(-1)
            position = torch.searchsorted(rows, zeros.long() // embedding_dim) * embedding_dim + zeros % embedding_dim
            flat[position] = 0
        self.register_buffer("exception_rows", rows)  # (R,) sorted
        self.register_buffer("exception_codes", codes)  # (R, D)

    def _codes(self, rows: torch.Tensor) -> torch.Tensor:
        """``(n, bytes_per_row)`` packed rows -> ``(n, D)`` float codes ``u * mul - sub``: one byte-table row per
        packed byte (the unpack kernel of ``engine="int8-packed"``), then exact small integers as float."""
        codes = torch.empty(rows.shape[0], self.embedding_dim, dtype=torch.int8)
        kernels()["unpack_bytes"](rows.reshape(-1), self.table, codes.view(-1))
        return codes.to(torch.float32)  # (n, D)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        ids = input_ids.reshape(-1)  # (n,)
        codes = self._codes(self.data[ids])  # (n, D)
        if self.exception_rows.numel():
            hit = torch.isin(ids, self.exception_rows)
            if bool(hit.any()):
                codes[hit] = self.exception_codes[torch.searchsorted(self.exception_rows, ids[hit])]
        scale = self.scale[ids] if self.scale.shape[0] > 1 else self.scale  # (n, 1) or (1, 1)
        return codes.mul_(scale).reshape(*input_ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, {self.encoding} {self.stored_bits}-bit rows"
