"""The int8 models a user would deploy instead of xtc's packed one, built from the same FP32 model (the serve extra).

* ONNX Runtime: the FP32 model exported with ``torch.onnx.export`` (TorchScript exporter, opset 17, dynamic batch
  and sequence; attention exported in its eager form so that ONNX Runtime's BERT fusions recognise it), then
  ``onnxruntime.quantization.quantize_dynamic`` with int8 weights (what Hugging Face Optimum's dynamic quantization
  does) in three variants: ``ort_int8`` (per-tensor weight scales), ``ort_int8_per_channel`` (per output channel)
  and ``ort_int8_fused`` (``onnxruntime.transformers.optimizer`` fusions first -- Attention, SkipLayerNormalization,
  BiasGelu, EmbedLayerNormalization -- then ``quantize_dynamic``, which turns Attention into QAttention); and
  ``ort_fp32``, the exported model itself. Every session: ``ORT_ENABLE_ALL``, intra-op threads equal to torch's,
  one inter-op thread, the CPU execution provider.
* PyTorch: ``torchao_int8``, torchao's ``Int8DynamicActivationInt8WeightConfig`` (int8 weights per channel,
  activations quantized per token at run time, like XTC's), only where torchao is installed (the ``serve-torchao``
  extra, kept out of ``make test``'s environment: transformers imports an installed torchao in every process that
  loads a model, seconds of start-up for every ``xtc`` command), run through ``torch.compile`` (torchao's way:
  eagerly its int8 tensor subclass was slower than the FP32 model here), and ``torch_ao_int8``, the deprecated
  ``torch.ao.quantization.quantize_dynamic`` (FBGEMM/oneDNN int8 linears, per-tensor activation scales), eager.

Each peer is loaded from its file the way a user would (an ONNX session; the FP32 directory then quantized) and
called like a transformers model: ``peer(**inputs).logits``.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from types import SimpleNamespace

import torch

log = logging.getLogger(__name__)

SERVE_EXTRA = ("onnx", "onnxruntime")
ORT_PEERS = ("ort_fp32", "ort_int8", "ort_int8_per_channel", "ort_int8_fused")
ORT_INT8 = ORT_PEERS[1:]
TORCH_PEERS = ("torchao_int8", "torch_ao_int8")
PEERS = ORT_PEERS + TORCH_PEERS


def available() -> tuple[str, ...]:
    """The peers this environment can build: all of them, less ``torchao_int8`` without torchao."""
    has_torchao = importlib.util.find_spec("torchao") is not None
    return tuple(name for name in PEERS if name != "torchao_int8" or has_torchao)
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 17


def missing_extra() -> str | None:
    """One line naming what is missing when the serve extra is not installed, else None."""
    absent = [name for name in SERVE_EXTRA if importlib.util.find_spec(name) is None]
    if not absent:
        return None
    return (f"the serve benchmark needs the serve extra ({', '.join(absent)} missing): "
            "pip install -c constraints.txt -e '.[serve]'")


# ---------------------------------------------------------------------------------------------- files
def export_onnx(fp32_dir: Path, out: Path) -> Path:
    """The FP32 model directory as ONNX (opset 17, dynamic batch and sequence, eager attention)."""
    from xtc.checkpoint import load_model_dir

    model = load_model_dir(fp32_dir).eval()
    model.set_attn_implementation("eager")  # the same numbers; a graph that ONNX Runtime's fusions recognise
    ids = torch.ones(2, 8, dtype=torch.long)  # (B, T); any shape and ids: both axes are dynamic
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    torch.onnx.export(model, args, str(out), input_names=list(INPUT_NAMES), output_names=["logits"],
                      dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    return out


def write_ort_files(fp32_dir: Path, out: Path) -> dict[str, Path]:
    """Every ONNX Runtime peer's file, built from the FP32 model directory (module docstring)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.onnx" for name in ORT_PEERS}
    export_onnx(fp32_dir, paths["ort_fp32"])
    quantize_dynamic(paths["ort_fp32"], paths["ort_int8"], weight_type=QuantType.QInt8)
    quantize_dynamic(paths["ort_fp32"], paths["ort_int8_per_channel"], weight_type=QuantType.QInt8, per_channel=True)
    config = _config(fp32_dir)
    fused = optimizer.optimize_model(str(paths["ort_fp32"]), model_type="bert", num_heads=config["heads"],
                                     hidden_size=config["hidden"], opt_level=0)
    log.info("onnxruntime fusions: %s", fused.get_fused_operator_statistics())
    fused_path = out / "ort_fp32_fused.onnx"
    fused.save_model_to_file(str(fused_path))
    # the fused ops are outside the default domain: shape inference cannot type their outputs, which are float
    quantize_dynamic(fused_path, paths["ort_int8_fused"], weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    fused_path.unlink()
    return paths


def _config(fp32_dir: Path) -> dict:
    import json

    raw = json.loads((Path(fp32_dir) / "config.json").read_text())
    return {"heads": raw["num_attention_heads"], "hidden": raw["hidden_size"]}


COMPUTE_OPS = ("MatMul", "Gemm", "Quantize", "Attention", "Gelu", "Normalization")


def op_counts(path: Path) -> dict[str, int]:
    """How many nodes of each compute op type an ONNX file holds (which variant quantized and fused what; shape
    plumbing left out)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if any(part in node.op_type for part in COMPUTE_OPS):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


# ---------------------------------------------------------------------------------------------- loading
class OrtModel:
    """An ONNX Runtime session called like a transformers model: ``model(**inputs).logits`` (a torch tensor)."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, **inputs: torch.Tensor) -> SimpleNamespace:
        feeds = {name: inputs[name].numpy() for name in self.names}
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(["logits"], feeds)[0]))


def load_peer(name: str, path: Path, threads: int | None = None):
    """The peer ``name`` from its file: an ONNX session, or the FP32 directory quantized by PyTorch."""
    threads = threads or torch.get_num_threads()
    if name in ORT_PEERS:
        return OrtModel(path, threads)
    from xtc.checkpoint import load_model_dir

    model = load_model_dir(path).eval()
    if name == "torchao_int8":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        quantize_(model, Int8DynamicActivationInt8WeightConfig())
        return torch.compile(model)
    if name == "torch_ao_int8":
        import warnings

        with warnings.catch_warnings():  # its deprecation notice, once per call
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    raise ValueError(f"unknown peer {name!r}: use one of {list(PEERS)}")


def peer_files(fp32_dir: Path, out: Path) -> dict[str, Path]:
    """Every peer's file: the ONNX files, and the FP32 directory for the PyTorch peers (quantized at load)."""
    paths = write_ort_files(fp32_dir, out)
    paths.update({name: fp32_dir for name in TORCH_PEERS})
    return paths
