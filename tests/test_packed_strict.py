"""The packed file's one reader is strict for every engine: each corrupt file is refused by `float`, `int8` and
`int8-packed` alike, with the same one-line message, before any model is built; a small file that asks for a huge
model fails fast without allocating it."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from xtc.config import QuantConfig
from xtc.packed import load as load_packed
from xtc.packed.export import export_packed
from xtc.quant import quantize_

ENGINES = ("float", "int8", "int8-packed")
REPO = Path(__file__).resolve().parent.parent
QUERY = "bert.encoder.layer.0.attention.self.query"  # sign+zeros: three exact zeros
EMBEDDING = "bert.embeddings.word_embeddings"  # sign+zeros: the zero [PAD] row
FFN = "bert.encoder.layer.1.intermediate.dense"  # sign


@pytest.fixture
def packed(tiny_bert, tmp_path) -> Path:
    with torch.no_grad():
        tiny_bert.bert.encoder.layer[0].attention.self.query.weight[0, :3] = 0
    quantize_(tiny_bert, QuantConfig(weight_bits=1))
    path = tmp_path / "model.xtc.safetensors"
    header = export_packed(tiny_bert, path)["header"]
    assert header["modules"][QUERY]["encoding"] == header["modules"][EMBEDDING]["encoding"] == "sign+zeros"
    return path


# ---------------------------------------------------------------------------------------------- file surgery
def _parts(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8: 8 + length]), raw[8 + length:]


def _write(path: Path, framing, data: bytes) -> None:
    text = json.dumps(framing).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def edit_framing(edit):
    def apply(path: Path) -> None:
        framing, data = _parts(path)
        framing = edit(framing) or framing
        _write(path, framing, data)
    return apply


def edit_header(edit):
    def apply(path: Path) -> None:
        framing, data = _parts(path)
        header = json.loads(framing["__metadata__"]["xtc"])
        edit(header)
        framing["__metadata__"]["xtc"] = json.dumps(header)
        _write(path, framing, data)
    return apply


def replace_tensor(key: str, make):
    """Store ``make(old)`` as tensor ``key``, the header's record of it updated to match (a consistent edit)."""
    def apply(path: Path) -> None:
        framing, _ = _parts(path)
        header = json.loads(framing["__metadata__"]["xtc"])
        tensors = load_file(str(path))
        tensors[key] = make(tensors[key])
        header["tensors"][key] = {"shape": list(tensors[key].shape),
                                  "dtype": str(tensors[key].dtype).removeprefix("torch.")}
        save_file(tensors, str(path), metadata={"xtc": json.dumps(header)})
    return apply


def _first_offsets_as_strings(framing: dict) -> None:
    key = next(k for k in framing if k != "__metadata__")
    framing[key]["data_offsets"] = [str(v) for v in framing[key]["data_offsets"]]


def _first_shape_negative(framing: dict) -> None:
    key = next(k for k in framing if k != "__metadata__" and len(framing[k]["shape"]) == 1)
    framing[key]["shape"] = [-framing[key]["shape"][0]]


CORRUPT = {
    # the safetensors framing
    "framing-a-list": (edit_framing(lambda f: [f]), "the safetensors header is not a JSON object"),
    "offsets-as-strings": (edit_framing(_first_offsets_as_strings), "data_offsets"),
    "negative-framing-shape": (edit_framing(_first_shape_negative), "shape"),
    "metadata-not-text": (edit_framing(lambda f: f["__metadata__"].update(xtc=5)), "the xtc header is not"),
    # the xtc header's own framing
    "header-a-list": (edit_framing(lambda f: f["__metadata__"].update(xtc="[]")), "the xtc header is not a JSON "
                                                                                  "object"),
    "modules-a-list": (edit_header(lambda h: h.update(modules=[])), "modules"),
    "negative-module-shape": (edit_header(lambda h: h["modules"][FFN].update(shape=[-64, -32])),
                              f"module '{FFN}' has shape [-64, -32]"),
    "token-weight-granularity": (edit_header(lambda h: h["modules"][FFN].update(granularity="token")),
                                 f"module '{FFN}' has granularity 'token'"),
    "unknown-kind": (edit_header(lambda h: h["modules"][FFN].update(kind="conv")), f"module '{FFN}' has kind 'conv'"),
    "linear-without-act": (edit_header(lambda h: h["modules"][FFN].pop("act")), f"module '{FFN}'"),
    "embedding-called-linear": (edit_header(lambda h: h["modules"][EMBEDDING].update(
        kind="linear", bias=False, act=h["modules"][FFN]["act"])), f"module '{EMBEDDING}' (linear) is not a Linear"),
    "encoding-of-other-bits": (edit_header(lambda h: h["modules"][FFN].update(bits=4)), f"module '{FFN}'"),
    "bits-as-text": (edit_header(lambda h: h["modules"][FFN].update(bits="1")), f"module '{FFN}'"),
    "dtype-int8": (edit_header(lambda h: h.update(dtype="int8")), "dtype 'int8'"),
    "attn-implementation": (edit_header(lambda h: h.update(attn_implementation="kernels-community/flash-attn")),
                            "attn_implementation 'kernels-community/flash-attn' is not one of"),
    # tensors that the header describes truly, but that no export writes
    "negative-zero-position": (replace_tensor(f"{QUERY}.weight.zeros", lambda z: torch.full_like(z, -1)),
                               f"module '{QUERY}' has zero positions outside its 1024 elements"),
    "zero-position-past-the-end": (replace_tensor(f"{QUERY}.weight.zeros", lambda z: z + 32 * 32),
                                   f"module '{QUERY}' has zero positions outside its 1024 elements"),
    "float-zero-positions": (replace_tensor(f"{QUERY}.weight.zeros", lambda z: z.float()),
                             f"module '{QUERY}' stores zeros as float32"),
    "float-codes": (replace_tensor(f"{FFN}.weight.codes", lambda c: c.float()),
                    f"module '{FFN}' stores codes as float32"),
    "float16-scale": (replace_tensor(f"{FFN}.weight.scale", lambda s: s.half()),
                      f"module '{FFN}' stores scale as float16"),
}
# A small file asking for a huge model: run only under an address-space limit (the unchecked loaders allocate it).
HUGE = {
    "1e5-layers": (edit_header(lambda h: h["model_config"].update(num_hidden_layers=100_000)),
                   "its config asks for 100000 layers"),
    "1e10-row-embedding": (edit_header(lambda h: h["model_config"].update(vocab_size=10**10)),
                           f"module '{EMBEDDING}' is [128, 32] in the header but [10000000000, 32] in the model"),
}


@pytest.mark.parametrize("corrupt", CORRUPT)
def test_every_engine_refuses_a_corrupt_file_with_the_same_line(packed, corrupt):
    edit, fragment = CORRUPT[corrupt]
    edit(packed)
    messages = []
    for engine in ENGINES:
        with pytest.raises(ValueError) as error:
            load_packed(packed, engine=engine)
        messages.append(str(error.value))
    assert messages[0] == messages[1] == messages[2], messages
    assert fragment in messages[0] and "\n" not in messages[0] and str(packed) in messages[0], messages[0]


def test_the_untouched_file_loads_on_every_engine(packed, tiny_batch):
    for engine in ENGINES:
        load_packed(packed, engine=engine)


# ---------------------------------------------------------------------------------------------- resource limits
LIMITED = """
import resource, sys, time
import torch
from xtc.packed import load as load_packed
import xtc.packed.engine, xtc.packed.fakequant, transformers.models.bert.modeling_bert  # imported before the limit: what the loaders need
vm = int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmSize:"))) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))  # 1 GiB more address space
for engine in ("float", "int8", "int8-packed"):
    started = time.time()
    try:
        load_packed(sys.argv[1], engine=engine)
    except ValueError as err:
        print(f"{engine}\\t{time.time() - started:.2f}\\t{err}")
    else:
        print(f"{engine}\\tloaded")
print("maxrss_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.parametrize("corrupt", HUGE)
def test_a_small_file_asking_for_a_huge_model_fails_fast_in_little_memory(packed, corrupt):
    edit, fragment = HUGE[corrupt]
    edit(packed)
    assert packed.stat().st_size < 200_000
    done = subprocess.run([sys.executable, "-c", LIMITED, str(packed)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    for engine, line in zip(ENGINES, lines):
        name, seconds, message = line.split("\t")
        assert name == engine and float(seconds) < 10 and fragment in message, line
    assert int(lines[-1].split()[1]) < 1_500_000  # KiB: the process never held a big model
