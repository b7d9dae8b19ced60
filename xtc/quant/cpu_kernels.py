"""The integer engine's elementwise kernels as C++ row kernels: each token's row is read once, kept in L1, and leaves
as the next linear's int8 codes.

Between two int8 products a BERT layer only runs per-token work: rescale the exact sums (``acc s_x s_w + b``), then
GELU or residual + LayerNorm, then quantize the result per token for the next product (``xtc.quant.int8``'s
``quantize_tokens``). Written as separate passes (eager ops, or ``torch.compile``'s loops, which also quantize in
three parallel loops with a serial step between), every pass streams the whole activation through memory again, and
each compiled call pays ~40 us of guard checks. Here one C++ function per epilogue walks the rows in parallel
(OpenMP), computes the row into a per-thread buffer, and writes only what the next step reads: the int8 codes and
one scale per row (plus LayerNorm's output, which is also the residual). Built once per machine by inductor's C++
toolchain (``CppPythonBindingsCodeCache``: the compiler, ISA flags and on-disk cache ``torch.compile`` uses;
vectorized with ``at::vec``), called through its thin Python binding.

Numerics, operation for operation those of ``xtc.quant.int8``'s eager kernels: the rescale ``((acc * s_x) * s_w) +
b`` without fused multiply-adds, GELU as ATen's formula (``(x * 0.5) * (1 + erf(x * sqrt(1/2)))``, with
``at::vec``'s erf, which ATen's own build may round differently in the last bit), the quantizer's ``scale = 2
max|x| / 2^k`` (1 where 0), division, round half to even, clamp -- so the codes of a row equal ``quantize_tokens``
of the same floats exactly. LayerNorm computes the mean and variance in two passes over the row in float32 (ATen
accumulates differently): its output may differ from ``F.layer_norm`` in the last bits, inside the engine's bound
(``xtc.packed.engine``). ``xtc.quant.int8.enable_compiled`` builds these, checks them against the eager kernels on
probe inputs and falls back to the eager ones, with the reason, when either fails.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ACC_TYPES = {torch.float32: "float", torch.int32: "int32_t"}  # the products' dtype: oneDNN's float32, _int_mm's int32

_PRELUDE = r"""
#include <torch/csrc/inductor/cpp_prefix.h>
#include <cmath>
#include <memory>
using Vec = at::vec::Vectorized<float>;
static constexpr int64_t VW = Vec::size();

// max |y| over a row (0 for an empty row)
static inline float row_absmax(const float* y, int64_t n) {
    Vec acc(0.0f);
    int64_t k = 0;
    for (; k + VW <= n; k += VW) acc = at::vec::maximum(acc, Vec::loadu(y + k).abs());
    float m = at::vec::vec_reduce_all<float, 1>(
        [](at::vec::Vectorized<float>& a, at::vec::Vectorized<float>& b) { return at::vec::maximum(a, b); }, acc);
    for (; k < n; ++k) m = max_propagate_nan(m, std::abs(y[k]));
    return m;
}

// VW whole numbers within int8 (rounded, clamped) -> int8; at::vec's generic convert goes lane by lane
static inline void store_codes(Vec q, int8_t* out) {
#if defined(CPU_CAPABILITY_AVX512)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(q)));
#else
    at::vec::convert<int8_t>(q).store(out, VW);
#endif
}

// xtc.quant.int8.quantize_tokens on one row: scale = 2 max|y| / levels (1 where 0), codes = clamp(round(y / scale))
static inline void quantize_row(const float* y, int64_t n, float levels, int8_t* codes, float* scale) {
    float s = 2.0f * row_absmax(y, n) / levels;
    if (s == 0.0f) s = 1.0f;
    *scale = s;
    const float half = levels / 2.0f;
    const Vec vs(s), lo(-half), hi(half - 1.0f);
    int64_t k = 0;
    for (; k + VW <= n; k += VW)
        store_codes(at::vec::minimum(at::vec::maximum((Vec::loadu(y + k) / vs).round(), lo), hi), codes + k);
    for (; k < n; ++k) codes[k] = static_cast<int8_t>(std::min(std::max(std::nearbyint(y[k] / s), -half), half - 1.0f));
}

template <typename A> static inline Vec load_float(const A* p);
template <> inline Vec load_float<float>(const float* p) { return Vec::loadu(p); }
template <> inline Vec load_float<int32_t>(const int32_t* p) {
    return at::vec::convert<float>(at::vec::Vectorized<int32_t>::loadu(p));
}

static inline float sum_all(Vec v) {
    return at::vec::vec_reduce_all<float, 1>(
        [](at::vec::Vectorized<float>& a, at::vec::Vectorized<float>& b) { return a + b; }, v);
}

// out[k] = ((acc[k] * xs) * ws[k]) + b[k]
template <typename A>
static inline void rescale_row(const A* acc, float xs, const float* ws, const float* b, int64_t n, float* out) {
    const Vec vx(xs);
    int64_t k = 0;
    for (; k + VW <= n; k += VW) (((load_float(acc + k) * vx) * Vec::loadu(ws + k)) + Vec::loadu(b + k)).store(out + k);
    for (; k < n; ++k) {
        float t = static_cast<float>(acc[k]) * xs;
        t = t * ws[k];
        out[k] = t + b[k];
    }
}

// ATen's erf GELU, in place
static inline void gelu_row(float* y, int64_t n) {
    const Vec half(0.5f), one(1.0f), alpha(static_cast<float>(M_SQRT1_2));
    int64_t k = 0;
    // erf(+-9) is +-1 in float32, as erf beyond; the clamp keeps exp(-t^2) out of the (slow) denormals
    const Vec lo(-9.0f), hi(9.0f);
    for (; k + VW <= n; k += VW) {
        Vec x = Vec::loadu(y + k);
        (x * half * (one + at::vec::clamp(x * alpha, lo, hi).erf())).store(y + k);
    }
    for (; k < n; ++k) y[k] = y[k] * 0.5f * (1.0f + std::erf(y[k] * static_cast<float>(M_SQRT1_2)));
}

// y = LayerNorm(y + r) in place: mean, then variance of the deviations, both in float32
static inline void residual_norm_row(float* y, const float* r, const float* gamma, const float* beta, int64_t n,
                                     float eps) {
    Vec vsum(0.0f);
    float sum = 0.0f;
    int64_t k = 0;
    for (; k + VW <= n; k += VW) {
        Vec v = Vec::loadu(y + k) + Vec::loadu(r + k);
        v.store(y + k);
        vsum = vsum + v;
    }
    for (; k < n; ++k) { y[k] = y[k] + r[k]; sum += y[k]; }
    const float mean = (sum_all(vsum) + sum) / static_cast<float>(n);
    const Vec vmean(mean);
    Vec vvar(0.0f);
    float var = 0.0f;
    for (k = 0; k + VW <= n; k += VW) { Vec d = Vec::loadu(y + k) - vmean; vvar = vvar + d * d; }
    for (; k < n; ++k) { const float d = y[k] - mean; var += d * d; }
    const float rstd = 1.0f / std::sqrt((sum_all(vvar) + var) / static_cast<float>(n) + eps);
    const Vec vrstd(rstd);
    for (k = 0; k + VW <= n; k += VW)
        (((Vec::loadu(y + k) - vmean) * vrstd) * Vec::loadu(gamma + k) + Vec::loadu(beta + k)).store(y + k);
    for (; k < n; ++k) y[k] = ((y[k] - mean) * rstd) * gamma[k] + beta[k];
}
"""

_SOURCES = {
    # (x (M, K) float, codes (M, K) int8, scale (M,) float, M, K, levels)
    "quantize": (("const float*", "int8_t*", "float*", "const int64_t", "const int64_t", "const float"), r"""
extern "C" void kernel(const float* x, int8_t* codes, float* scale, const int64_t M, const int64_t K,
                       const float levels) {
    #pragma omp parallel for
    for (int64_t i = 0; i < M; ++i) quantize_row(x + i * K, K, levels, codes + i * K, scale + i);
}
"""),
    # (acc (M, N), xs (M,), ws (N,), b (N,), out (M, N), M, N)
    "rescale": (("const ACC*", "const float*", "const float*", "const float*", "float*", "const int64_t",
                "const int64_t"), r"""
extern "C" void kernel(const ACC* acc, const float* xs, const float* ws, const float* b, float* out,
                       const int64_t M, const int64_t N) {
    #pragma omp parallel for
    for (int64_t i = 0; i < M; ++i) rescale_row(acc + i * N, xs[i], ws, b, N, out + i * N);
}
"""),
    # (acc, xs, ws, b, codes (M, N) int8, scale (M,), M, N, levels): GELU(rescale) quantized; the row never leaves
    "rescale_gelu_quantize": (("const ACC*", "const float*", "const float*", "const float*", "int8_t*", "float*",
                              "const int64_t", "const int64_t", "const float"), r"""
extern "C" void kernel(const ACC* acc, const float* xs, const float* ws, const float* b, int8_t* codes,
                       float* scale, const int64_t M, const int64_t N, const float levels) {
    #pragma omp parallel
    {
        std::unique_ptr<float[]> row(new float[N]);
        #pragma omp for
        for (int64_t i = 0; i < M; ++i) {
            float* y = row.get();
            rescale_row(acc + i * N, xs[i], ws, b, N, y);
            gelu_row(y, N);
            quantize_row(y, N, levels, codes + i * N, scale + i);
        }
    }
}
"""),
    # (acc, xs, ws, b, residual (M, N), gamma (N,), beta (N,), h (M, N) out, codes (M, N), scale (M,), M, N, eps,
    #  levels; levels 0: no codes) -- LayerNorm(rescale + residual), and its codes
    "rescale_residual_norm": (("const ACC*", "const float*", "const float*", "const float*", "const float*",
                              "const float*", "const float*", "float*", "int8_t*", "float*", "const int64_t",
                              "const int64_t", "const float", "const float"), r"""
extern "C" void kernel(const ACC* acc, const float* xs, const float* ws, const float* b, const float* residual,
                       const float* gamma, const float* beta, float* h, int8_t* codes, float* scale,
                       const int64_t M, const int64_t N, const float eps, const float levels) {
    #pragma omp parallel for
    for (int64_t i = 0; i < M; ++i) {
        float* y = h + i * N;
        rescale_row(acc + i * N, xs[i], ws, b, N, y);
        residual_norm_row(y, residual + i * N, gamma, beta, N, eps);
        if (levels > 0.0f) quantize_row(y, N, levels, codes + i * N, scale + i);
    }
}
"""),
    # (data (B,) uint8, table (256 * per_byte,) int8, out (B * per_byte,) int8, B, per_byte): each byte's codes
    "unpack_bytes": (("const uint8_t*", "const int8_t*", "int8_t*", "const int64_t", "const int64_t"), r"""
#include <cstring>
template <int P>
static void unpack(const uint8_t* data, const int8_t* table, int8_t* out, int64_t n) {
    #pragma omp parallel for
    for (int64_t i = 0; i < n; ++i) std::memcpy(out + i * P, table + data[i] * P, P);
}
extern "C" void kernel(const uint8_t* data, const int8_t* table, int8_t* out, const int64_t n,
                       const int64_t per_byte) {
    switch (per_byte) {
        case 8: unpack<8>(data, table, out, n); break;
        case 4: unpack<4>(data, table, out, n); break;
        case 2: unpack<2>(data, table, out, n); break;
        default: unpack<1>(data, table, out, n); break;
    }
}
"""),
    # (codes (M, K) int8, weight panels, values (2^bits,) int8, out (M, N) int32, M, K, N, bits): exact int8 products
    # on AMX tiles, the weight unpacked panel by panel into a thread's cache (``amx_matmul``)
    "amx_matmul": (("const int8_t*", "const uint8_t*", "const int8_t*", "int32_t*", "const int64_t", "const int64_t",
                    "const int64_t", "const int64_t"), r"""
#if !(defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__AVX512BW__))
#error "AMX int8 tiles are not in this build's instruction set"
#endif
#include <immintrin.h>
#include <omp.h>
#include <cstring>
struct TileConfig { uint8_t palette; uint8_t start_row; uint8_t reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; };
// one panel (K rows x 32 columns, VNNI order [k / 4][column][k % 4]) from its bit planes: per 64 codes, ``bits``
// words of 64 bits (plane j: bit j of each code's unsigned value u), then values[u] by a tree of byte blends
template <int BITS>
static inline void unpack_panel(const uint8_t* data, const int8_t* values, int64_t codes, int8_t* out) {
    constexpr int n = 1 << BITS;
    __m512i v[n];
    for (int u = 0; u < n; ++u) v[u] = _mm512_set1_epi8(values[u]);
    for (int64_t g = 0; g < codes / 64; ++g) {
        __m512i t[n];
        for (int u = 0; u < n; ++u) t[u] = v[u];
        for (int j = 0, m = n; j < BITS; ++j, m /= 2) {
            uint64_t plane;
            std::memcpy(&plane, data + (g * BITS + j) * 8, 8);
            for (int u = 0; u < m / 2; ++u) t[u] = _mm512_mask_blend_epi8(plane, t[2 * u], t[2 * u + 1]);
        }
        _mm512_storeu_si512(out + g * 64, t[0]);
    }
}
static inline void unpack_panel(const uint8_t* data, const int8_t* values, int64_t bits, int64_t codes, int8_t* out) {
    switch (bits) {
        case 1: unpack_panel<1>(data, values, codes, out); break;
        case 2: unpack_panel<2>(data, values, codes, out); break;
        default: unpack_panel<4>(data, values, codes, out); break;
    }
}
#ifdef RESCALE  // the rescale fused: C = ((sums * xs[row]) * ws[col]) + b[col], float, as the rescale kernel computes
extern "C" void kernel(const int8_t* A, const uint8_t* weight, const int8_t* values, float* C, const int64_t M,
                       const int64_t K, const int64_t N, const int64_t bits, const float* xs, const float* ws,
                       const float* b) {
#else
extern "C" void kernel(const int8_t* A, const uint8_t* weight, const int8_t* values, int32_t* C, const int64_t M,
                       const int64_t K, const int64_t N, const int64_t bits) {
#endif
    const int64_t panels = N / 32, panel_codes = K * 32, blocks = (M + 31) / 32;
    std::unique_ptr<int8_t[]> padded;  // rows up to a multiple of 32, zero (their sums are not stored)
    if (M % 32) {
        padded.reset(new int8_t[blocks * 32 * K]());
        std::memcpy(padded.get(), A, M * K);
        A = padded.get();
    }
    #pragma omp parallel
    {
        TileConfig cfg{};
        cfg.palette = 1;
        for (int t = 0; t < 8; ++t) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }
        _tile_loadconfig(&cfg);  // tiles 0-3: sums (2 x 2 blocks of 16 x 16), 4-5: activations, 6-7: weights
        std::unique_ptr<int8_t[]> panel(bits ? new int8_t[panel_codes] : nullptr);
        alignas(64) int32_t tail[32 * 32];
        // rows split between threads when each gets a block (its sums stay in its cache for the row kernels that
        // read them next, which split rows alike), else panels; ``[first, last)`` of each
        const int64_t threads = omp_get_num_threads(), me = omp_get_thread_num();
        const bool by_rows = bits && blocks >= threads;  // int8 panels: each thread would stream all of them
        const int64_t units = by_rows ? blocks : panels;
        const int64_t first = units * me / threads, last = units * (me + 1) / threads;
        const int64_t p0 = by_rows ? 0 : first, p1 = by_rows ? panels : last;
        const int64_t b0 = by_rows ? first : 0, b1 = by_rows ? last : blocks;
        for (int64_t p = p0; p < p1; ++p) {
            const int8_t* B = reinterpret_cast<const int8_t*>(weight) + p * panel_codes;
            if (bits) {
                unpack_panel(weight + p * panel_codes / 8 * bits, values, bits, panel_codes, panel.get());
                B = panel.get();
            }
            for (int64_t block = b0; block < b1; ++block) {
                const int8_t* a = A + block * 32 * K;
                _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
                for (int64_t k = 0; k < K; k += 64) {
                    _tile_loadd(4, a + k, K);
                    _tile_loadd(5, a + 16 * K + k, K);
                    _tile_loadd(6, B + k * 32, 128);
                    _tile_loadd(7, B + k * 32 + 64, 128);
                    _tile_dpbssd(0, 4, 6); _tile_dpbssd(1, 4, 7); _tile_dpbssd(2, 5, 6); _tile_dpbssd(3, 5, 7);
                }
                const int64_t rows = std::min<int64_t>(32, M - block * 32);
#ifdef RESCALE
                _tile_stored(0, tail, 128); _tile_stored(1, tail + 16, 128);
                _tile_stored(2, tail + 16 * 32, 128); _tile_stored(3, tail + 16 * 32 + 16, 128);
                for (int64_t r = 0; r < rows; ++r) {
                    const int64_t row = block * 32 + r;
                    rescale_row(tail + r * 32, xs[row], ws + p * 32, b + p * 32, 32, C + row * N + p * 32);
                }
#else
                int32_t* c = C + block * 32 * N + p * 32;
                int32_t* dst = rows == 32 ? c : tail;
                const int64_t stride = rows == 32 ? N * 4 : 128;
                const int64_t step = rows == 32 ? N : 32;
                _tile_stored(0, dst, stride); _tile_stored(1, dst + 16, stride);
                _tile_stored(2, dst + 16 * step, stride); _tile_stored(3, dst + 16 * step + 16, stride);
                if (rows < 32) for (int64_t r = 0; r < rows; ++r) std::memcpy(c + r * N, tail + r * 32, 128);
#endif
            }
        }
        _tile_release();
    }
}
"""),
    # amx_matmul with the rescale fused: (..., out (M, N) float, ..., xs (M,), ws (N,), b (N,))
    "amx_matmul_rescale": None,
    # (ok (1,) int64): ask Linux for the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)
    "amx_permit": (("int64_t*",), r"""
#include <sys/syscall.h>
#include <unistd.h>
extern "C" void kernel(int64_t* ok) { ok[0] = syscall(SYS_arch_prctl, 0x1023, 18) == 0; }
"""),
}

_SOURCES["amx_matmul_rescale"] = (
    tuple(t.replace("int32_t*", "float*") for t in _SOURCES["amx_matmul"][0]) + ("const float*",) * 3,
    "#define RESCALE\n" + _SOURCES["amx_matmul"][1])
ROW_KERNELS = ("quantize", "rescale", "rescale_gelu_quantize", "rescale_residual_norm", "unpack_bytes")
_built: dict[tuple[str, torch.dtype], Callable] = {}


def _kernel(name: str, acc_dtype: torch.dtype = torch.float32) -> Callable:
    """The built C++ function ``name`` (for products of ``acc_dtype``), compiled at first use (cached on disk)."""
    key = (name, acc_dtype)
    if key not in _built:
        from torch._inductor.codecache import CppPythonBindingsCodeCache

        argtypes, body = _SOURCES[name]
        acc = ACC_TYPES[acc_dtype]
        _built[key] = CppPythonBindingsCodeCache.load_pybinding(
            [t.replace("ACC", acc) for t in argtypes], _PRELUDE + body.replace("ACC", acc), needs_vec_isa=True)
    return _built[key]


def build(acc_dtype: torch.dtype) -> None:
    """Compile every kernel for products of ``acc_dtype`` now (raises where the toolchain cannot)."""
    for name in ROW_KERNELS:
        _kernel(name, acc_dtype if "ACC" in "".join(_SOURCES[name][0]) else torch.float32)


def _rows(*tensors: torch.Tensor) -> None:
    for t in tensors:
        if not (t.is_cpu and t.is_contiguous()):
            raise ValueError(f"xtc.quant.cpu_kernels needs contiguous CPU tensors, got {tuple(t.shape)} strides "
                             f"{t.stride()} on {t.device}")


def _acc(acc: torch.Tensor) -> torch.dtype:
    if acc.dtype not in ACC_TYPES:
        raise ValueError(f"products must be float32 or int32, got {acc.dtype}")
    return acc.dtype


def _f32(*tensors: torch.Tensor) -> None:
    for t in tensors:
        if t.dtype != torch.float32:
            raise ValueError(f"xtc.quant.cpu_kernels needs float32 tensors, got {t.dtype} {tuple(t.shape)}")


def _epilogue(acc: torch.Tensor, x_scale: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor
              ) -> tuple[int, int, torch.Tensor]:
    """Check what a rescale kernel reads (contiguous float32 or int32 products) before C++ reads it (``_scales``).
    Returns ``(M, N, x_scale)``."""
    _acc(acc)
    if acc.dim() != 2:
        raise ValueError(f"products must be (M, N), got {tuple(acc.shape)}")
    _rows(acc)
    return (*acc.shape, _scales(*acc.shape, x_scale, w_scale, bias))


def _scales(m: int, n: int, x_scale: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Check the rescale of ``(m, n)`` products (contiguous float32; one ``x_scale`` per row, one ``w_scale`` and
    ``bias`` per column); a per-tensor ``(1, 1)`` activation scale (a static range) is repeated per row. Returns
    ``x_scale``."""
    _f32(x_scale, w_scale, bias)
    if x_scale.numel() == 1 and m != 1:
        x_scale = x_scale.reshape(1, 1).expand(m, 1).contiguous()
    if x_scale.numel() != m or w_scale.numel() != n or bias.numel() != n:
        raise ValueError(f"({m}, {n}) products need {m} activation scales and {n} weight scales and biases, got "
                         f"{tuple(x_scale.shape)}, {tuple(w_scale.shape)}, {tuple(bias.shape)}")
    _rows(x_scale, w_scale, bias)
    return x_scale


def quantize_tokens(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``xtc.quant.int8.quantize_tokens``: ``(codes int8 (M, K), scale (M, 1))``."""
    _f32(x)
    if x.dim() != 2:
        raise ValueError(f"quantize_tokens needs an (M, K) matrix, got {tuple(x.shape)}")
    x = x.contiguous()
    m, k = x.shape
    codes, scale = torch.empty(m, k, dtype=torch.int8), torch.empty(m, 1)
    _kernel("quantize")(x, codes, scale, m, k, float(2**bits))
    return codes, scale


def rescale(acc: torch.Tensor, x_scale: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``xtc.quant.int8.rescale``: ``acc * s_x * s_w + b``, float ``(M, N)``."""
    m, n, x_scale = _epilogue(acc, x_scale, w_scale, bias)
    out = torch.empty(m, n)
    _kernel("rescale", acc.dtype)(acc, x_scale, w_scale, bias, out, m, n)
    return out


def rescale_gelu_quantize(acc: torch.Tensor, x_scale: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor,
                          bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``quantize_tokens(F.gelu(rescale(acc, ...)), bits)``; the GELU output itself is never written."""
    m, n, x_scale = _epilogue(acc, x_scale, w_scale, bias)
    codes, scale = torch.empty(m, n, dtype=torch.int8), torch.empty(m, 1)
    _kernel("rescale_gelu_quantize", acc.dtype)(acc, x_scale, w_scale, bias, codes, scale, m, n, float(2**bits))
    return codes, scale


def _residual_norm(acc, x_scale, w_scale, bias, residual, norm_weight, norm_bias, eps, bits, out=None):
    m, n, x_scale = _epilogue(acc, x_scale, w_scale, bias)
    _f32(residual, norm_weight, norm_bias)
    residual = residual.contiguous()
    _rows(norm_weight, norm_bias)
    if residual.shape != acc.shape or norm_weight.numel() != n or norm_bias.numel() != n:
        raise ValueError(f"({m}, {n}) products need an equal residual and {n} LayerNorm weights and biases, got "
                         f"{tuple(residual.shape)}, {tuple(norm_weight.shape)}, {tuple(norm_bias.shape)}")
    h = torch.empty(m, n) if out is None else out
    if out is not None:
        _f32(out)
        _rows(out)
        if out.shape != (m, n):
            raise ValueError(f"out must be {(m, n)}, got {tuple(out.shape)}")
    codes, scale = (torch.empty(m, n, dtype=torch.int8), torch.empty(m, 1)) if bits else (h, h)
    _kernel("rescale_residual_norm", acc.dtype)(acc, x_scale, w_scale, bias, residual, norm_weight, norm_bias, h,
                                                 codes, scale, m, n, float(eps), float(2**bits) if bits else 0.0)
    return h, codes, scale


def rescale_residual_norm(acc: torch.Tensor, x_scale: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor,
                          residual: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor,
                          eps: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """``xtc.quant.int8.rescale_residual_norm``: ``LN(acc s_x s_w + b + residual)`` (written into ``out`` if given)."""
    return _residual_norm(acc, x_scale, w_scale, bias, residual, norm_weight, norm_bias, eps, 0, out)[0]


def rescale_residual_norm_quantize(acc: torch.Tensor, x_scale: torch.Tensor, w_scale: torch.Tensor,
                                   bias: torch.Tensor, residual: torch.Tensor, norm_weight: torch.Tensor,
                                   norm_bias: torch.Tensor, eps: float,
                                   bits: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(h, *quantize_tokens(h, bits))`` with ``h = rescale_residual_norm(...)``, in one pass."""
    return _residual_norm(acc, x_scale, w_scale, bias, residual, norm_weight, norm_bias, eps, bits)


def unpack_bytes(data: torch.Tensor, table: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``xtc.quant.int8.unpack_bytes``: ``out`` (``data.numel() * per_byte`` int8) = each byte's row of ``table``
    (``(256, per_byte)`` int8), in order."""
    if data.dtype != torch.uint8 or table.dtype != torch.int8 or out.dtype != torch.int8:
        raise ValueError(f"unpack_bytes needs uint8 data, int8 table and out, got {data.dtype}, {table.dtype}, "
                         f"{out.dtype}")
    _rows(data, table, out)
    if table.shape != (256, table.shape[1]) or out.numel() != data.numel() * table.shape[1]:
        raise ValueError(f"unpack_bytes: {data.numel()} bytes x {tuple(table.shape)} table do not fill "
                         f"{out.numel()} codes")
    _kernel("unpack_bytes")(data, table, out, data.numel(), table.shape[1])
    return out


def amx_permit() -> bool:
    """Whether Linux lets this process use AMX tiles (``select_matmul`` asks once; oneDNN asks the same)."""
    ok = torch.zeros(1, dtype=torch.int64)
    _kernel("amx_permit")(ok)
    return bool(ok[0])


AMX_PANEL = (64, 32)  # (K, N) multiples the AMX kernel takes: one 64-deep tile step, one 32-column panel


def amx_matmul(codes: torch.Tensor, weight: torch.Tensor, values: torch.Tensor, bits: int, out_features: int,
               rescale: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``(M, N)`` int32: the exact sums of ``(M, K)`` int8 ``codes`` with a weight in panel order
    (``xtc.quant.int8.amx_panels``): int8 codes (``bits`` 0), or 1/2/4-bit planes of unsigned codes mapped through
    ``values`` (``2^bits`` int8). Needs AMX (``amx_permit()``), ``K % 64 == 0`` and ``N % 32 == 0``.

    ``rescale=(x_scale, w_scale, bias)``: float ``rescale(sums, ...)`` instead, each 32 x 32 block of sums rescaled
    by the rescale kernel's own row function while it is in the cache (the sums are never written)."""
    if codes.dtype != torch.int8 or codes.dim() != 2 or values.dtype != torch.int8:
        raise ValueError(f"amx_matmul needs (M, K) int8 codes and int8 values, got {codes.dtype} "
                         f"{tuple(codes.shape)}, {values.dtype}")
    _rows(codes, weight, values)
    m, k = codes.shape
    n = out_features
    if k % AMX_PANEL[0] or n % AMX_PANEL[1] or bits not in (0, 1, 2, 4):
        raise ValueError(f"amx_matmul takes K % {AMX_PANEL[0]} == 0, N % {AMX_PANEL[1]} == 0 and 0/1/2/4 bits, got "
                         f"K={k}, N={n}, bits={bits}")
    if weight.element_size() != 1 or weight.numel() * 8 != k * n * (bits or 8) or bits and values.numel() != 2**bits:
        raise ValueError(f"amx_matmul: a {k} x {n} weight at {bits or 8} bits is {k * n * (bits or 8) // 8} bytes "
                         f"(and {2**bits} values), got {weight.numel()} x {weight.dtype}, {values.numel()} values")
    if rescale is None:
        out = torch.empty(m, n, dtype=torch.int32)
        if m:
            _kernel("amx_matmul")(codes, weight.view(torch.uint8), values, out, m, k, n, bits)
        return out
    x_scale = _scales(m, n, *rescale)
    out = torch.empty(m, n)
    if m:
        _kernel("amx_matmul_rescale")(codes, weight.view(torch.uint8), values, out, m, k, n, bits, x_scale,
                                      rescale[1], rescale[2])
    return out


KERNELS: dict[str, Callable] = {"quantize_tokens": quantize_tokens, "rescale": rescale,
                                "rescale_gelu_quantize": rescale_gelu_quantize,
                                "rescale_residual_norm": rescale_residual_norm,
                                "rescale_residual_norm_quantize": rescale_residual_norm_quantize,
                                "unpack_bytes": unpack_bytes}
