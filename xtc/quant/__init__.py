"""XTC quantization in three layers: ``primitives`` (pure tensor functions) -> ``modules`` (``QuantLinear``,
``QuantEmbedding``) -> ``apply`` (``quantize_(model, cfg)``, by module name). ``ste`` holds the
straight-through estimators; ``packed`` the inference modules a packed checkpoint loads into."""

from xtc.quant.apply import dequantize_, module_group, quantize_, quantized_modules
from xtc.quant.modules import ActQuantizer, QuantEmbedding, QuantLinear, WeightQuantizer
from xtc.quant.packed import PackedEmbedding, PackedLinear

__all__ = [
    "ActQuantizer", "PackedEmbedding", "PackedLinear", "QuantEmbedding", "QuantLinear", "WeightQuantizer",
    "dequantize_", "module_group", "quantize_", "quantized_modules",
]
