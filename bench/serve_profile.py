"""Where the serving time goes, per component, in one run: xtc's integer engine against ONNX Runtime dynamic int8.

``python -m bench.serve_profile [--layers 12] [--batch 32] [--seq 128] [--rounds 5] [--peer ort_int8_per_channel]``

Both sides are built from the same random BERT-base-shaped FP32 model (``bench/serve.py``'s files). The engine's
first fused layer is taken apart into the steps of ``EngineBertLayer._forward`` on one 512-token chunk (its own
kernels, its own weights) -- activation quantization (the two passes of their own: layer input, attention context),
the four int8 products (its matmul kernel: xtc's AMX tile kernel, oneDNN's prepacked int8 linear or
``torch._int_mm``; the Q/K/V product with its rescale, fused into it on the AMX kernel), the epilogues with the two
quantizers fused into them (rescale + GELU + quantize, two rescale + residual + LayerNorm, the first with its
quantizer) and float attention -- each timed alone, the steps alternating
round by round (median of rounds), then scaled to the whole batch and all layers.
ONNX Runtime's side comes from its own profiler (``enable_profiling``): every node's time over ``rounds`` runs of
the whole batch, summed by op type and mapped onto the same components. Whole-model medians of both, interleaved,
sit beside the sums, so the per-component split can be read against what a request costs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from bench import peers, serve
from bench.kd_step import Setting
from bench.machine import machine
from bench.timing import interleaved_samples

# ONNX Runtime op type -> component (ops not listed count as "other")
ORT_COMPONENTS = {
    "int8 matmul (activation quantization fused)": ("DynamicQuantizeMatMul", "MatMulIntegerToFloat"),
    "int8 matmul": ("MatMulInteger", "QAttention", "QEmbedLayerNormalization"),
    "activation quantization": ("DynamicQuantizeLinear",),
    "attention (float)": ("Attention", "MultiHeadAttention", "Softmax", "MatMul", "FusedMatMul", "Transpose", "Where",
                          "Div"),
    "epilogues": ("Add", "Mul", "Cast", "LayerNormalization", "SkipLayerNormalization", "BiasGelu", "Gelu",
                  "FastGelu", "Erf", "EmbedLayerNormalization", "Gemm", "Tanh", "DequantizeLinear", "Gather"),
}


def engine_components(layer, hidden: torch.Tensor, mask, rounds: int) -> dict[str, float]:
    """Median seconds of each step of one fused layer on ``hidden`` (one chunk), steps alternating per round."""
    from xtc.quant.int8 import kernels

    k = kernels()
    w_qkv, w_ao, w_i, w_o = (m.weight_codes() for m in (layer.qkv, layer.attn_out, layer.intermediate, layer.out))
    batch, seq, width = hidden.shape
    x = hidden.reshape(batch * seq, width)  # (M, H)
    with torch.inference_mode():  # the tensors each step reads, computed once
        c0, s0 = k["quantize_tokens"](x, 8)
        qkv = layer.qkv.matmul_rescale(c0, s0, w_qkv)
        q, key, v = qkv.view(batch, seq, 3, layer.heads, layer.head_size).permute(2, 0, 3, 1, 4).unbind(0)
        context = layer._attention(q, key, v, mask, {}).reshape(batch * seq, width)
        c1, s1 = k["quantize_tokens"](context, 8)
        acc1 = layer.attn_out.matmul(c1, w_ao)
        h, c2, s2 = k["rescale_residual_norm_quantize"](acc1, s1, layer.attn_out.w_scale, layer.attn_out.bias, x,
                                                        layer.norm1_weight, layer.norm1_bias, layer.norm_eps[0], 8)
        acc2 = layer.intermediate.matmul(c2, w_i)
        c3, s3 = k["rescale_gelu_quantize"](acc2, s2, layer.intermediate.w_scale, layer.intermediate.bias, 8)
        acc3 = layer.out.matmul(c3, w_o)
    steps = {  # the quantizers fused into an epilogue (the intermediate's and the output dense's inputs) count there
        "activation quantization": lambda: [k["quantize_tokens"](t, 8) for t in (x, context)],
        "int8 matmul": lambda: [layer.qkv.matmul_rescale(c0, s0, w_qkv)] + [
            m.matmul(c, w) for m, c, w in ((layer.attn_out, c1, w_ao), (layer.intermediate, c2, w_i),
                                           (layer.out, c3, w_o))],
        "attention (float)": lambda: layer._attention(q, key, v, mask, {}),
        "epilogues": lambda: (
            k["rescale_residual_norm_quantize"](acc1, s1, layer.attn_out.w_scale, layer.attn_out.bias, x,
                                               layer.norm1_weight, layer.norm1_bias, layer.norm_eps[0], 8),
            k["rescale_gelu_quantize"](acc2, s2, layer.intermediate.w_scale, layer.intermediate.bias, 8),
            k["rescale_residual_norm"](acc3, s3, layer.out.w_scale, layer.out.bias, h, layer.norm2_weight,
                                       layer.norm2_bias, layer.norm_eps[1])),
        "whole layer (one chunk)": lambda: layer._forward(hidden, mask, (w_qkv, w_ao, w_i, w_o)),
    }

    def wrap(fn):
        def run() -> None:
            with torch.inference_mode():
                fn()
        return run

    samples = interleaved_samples({name: wrap(fn) for name, fn in steps.items()}, rounds, warmup=1)
    return {name: statistics.median(times) for name, times in samples.items()}


def ort_components(session_path: Path, feeds: dict, rounds: int, threads: int) -> tuple[dict[str, float], dict]:
    """Seconds per run of each component from ONNX Runtime's profiler (sum of node times / rounds), by op type."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(session_path), options, providers=["CPUExecutionProvider"])
        session.run(None, feeds)  # warm-up, left out below
        for _ in range(rounds):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= 0:
            op = event["args"].get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + event["dur"] / 1e6
    total_runs = rounds + 1  # the profiler saw the warm-up too
    by_op = {op: s / total_runs for op, s in sorted(by_op.items(), key=lambda kv: -kv[1])}
    components = {name: 0.0 for name in (*ORT_COMPONENTS, "other")}
    for op, seconds in by_op.items():
        name = next((c for c, ops in ORT_COMPONENTS.items() if op in ops), "other")
        components[name] += seconds
    return components, by_op


def profile(setting: Setting, peer: str = "ort_int8_per_channel") -> dict:
    """Both sides' per-component seconds for one forward of ``setting.batch x setting.seq`` tokens (module
    docstring), with the whole-model medians beside them."""
    from xtc.packed.engine import CHUNK_TOKENS, EngineBertLayer
    from xtc.quant.int8 import engine_status

    with tempfile.TemporaryDirectory(prefix="xtc-profile-") as tmp:
        paths = serve.write_files(setting, Path(tmp))
        ort_paths = peers.write_ort_files(paths["fp32"], Path(tmp) / "peers")
        engine = serve.load("engine", paths["engine"])
        session = peers.OrtModel(ort_paths[peer], torch.get_num_threads())
        inputs = serve._inputs(setting, engine.config.vocab_size, setting.batch)
        feeds = {n: inputs[n].numpy() for n in session.names}
        whole = interleaved_samples({"engine": serve._forward(engine, inputs), peer: serve._forward(session, inputs)},
                                    setting.rounds, warmup=1)
        ort_parts, ort_ops = ort_components(ort_paths[peer], feeds, setting.rounds, torch.get_num_threads())
    layer = next(m for m in engine.modules() if isinstance(m, EngineBertLayer))
    layers = sum(isinstance(m, EngineBertLayer) for m in engine.modules())
    rows = max(1, CHUNK_TOKENS // setting.seq)
    with torch.inference_mode():
        hidden = engine.bert.embeddings(input_ids=inputs["input_ids"][:rows],
                                        token_type_ids=inputs["token_type_ids"][:rows])  # (rows, T, H)
    chunks = setting.batch / min(rows, setting.batch)
    # no padding in the benchmark's batch: attention without a mask, as the model passes it
    parts = {name: s * chunks * layers for name, s in engine_components(layer, hidden, None, setting.rounds).items()}
    return {"machine": machine(), "setting": setting.describe(), "peer": peer, "kernels": engine_status(),
            "whole_model_s": {k: round(statistics.median(v), 6) for k, v in whole.items()},
            "engine_components_s": {k: round(v, 6) for k, v in parts.items()},
            "ort_components_s": {k: round(v, 6) for k, v in ort_parts.items()},
            "ort_ops_s": {k: round(v, 5) for k, v in ort_ops.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--peer", default="ort_int8_per_channel", choices=peers.ORT_INT8)
    args = parser.parse_args(argv)
    if why := peers.missing_extra():
        print(f"python -m bench.serve_profile: {why}", file=sys.stderr)
        return 2
    from xtc.quant.int8 import enable_compiled

    enable_compiled()
    setting = Setting(args.batch, args.seq, args.rounds, (("num_hidden_layers", args.layers),))
    json.dump(profile(setting, args.peer), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
