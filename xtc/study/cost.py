"""What a job costs (torch-free): time from a calibration (or a documented default), memory and disk by formula.

The runtime model of one training job (teacher fine-tuning, step 1, step 2) is

    seconds = start-up + train samples x epochs / train rate(kind) + evaluations x dev samples / eval rate(depth)

where *kind* is (job, depth, weight bits) and the rates are samples per second at the study's batch size and
padded length. ``xtc calibrate`` (``xtc.study.calibrate``) measures them on the current device with random-weight models
of the study's shape and writes them to ``config/calibration.json``, keyed by device name; a kind the calibration
did not time takes the calibrated device's effective FLOP rate of its nearest timed kind; with no calibration the
rate is ``DEFAULT_FLOPS`` (stated as an estimate everywhere it is printed). Evaluations: one every
``train.eval_every`` steps plus one per epoch end, each over the whole dev set (MNLI: both halves).

Disk is exact arithmetic on parameter counts (``run_dir_bytes``): a run directory holds ``model/`` and ``last/``
(safetensors FP32 + config + tokenizer), ``state/train_state.pt`` (the model and AdamW's two moments),
``train_log.jsonl`` (one line per step), ``metrics.json`` and, for quantized students, ``packed/``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from xtc.sources import resolve_model
from xtc.study.grid import teacher_given, train_examples
from xtc.tasks import TASKS

CALIBRATION = Path(__file__).resolve().parents[2] / "config" / "calibration.json"
# Effective FP32 rates when nothing was calibrated (FLOP/s): a GPU of the A100 class in FP32 without TF32 (19.5
# TFLOP/s peak at ~50%), and one CPU thread. Estimates; a calibration replaces them.
DEFAULT_FLOPS = {"cuda": 10e12, "cpu": 20e9}
DEFAULT_NOTE = "no calibration for this device: the documented default rate (an estimate; run `xtc calibrate`)"
START_S = 45.0  # process start, imports, model loads; plus tokenization (TOKENIZE_PER_S examples per second)
TOKENIZE_PER_S = 20_000
SMALL_JOB_S = {"export": 60.0, "serving_report": 180.0, "local": 5.0}
# GLUE dev sizes (validation split(s); MNLI matched + mismatched) and mean words per example (train, dev):
# measured on the official files of CoLA, SST-2, MRPC (8,551 / 67,349 / 3,668 train examples); the others are
# estimates from the GLUE paper's statistics. Tokens ~ 1.3 x words + the [CLS]/[SEP] tokens.
DEV_SIZE = {"cola": 1043, "sst2": 872, "mrpc": 408, "stsb": 1500, "qqp": 40430, "mnli": 9815 + 9832, "qnli": 5463,
            "rte": 277, "wnli": 71}
MEAN_WORDS = {"cola": (7.7, 7.9), "sst2": (9.4, 19.5), "mrpc": (43.9, 44.0), "stsb": (20.0, 20.0),
              "qqp": (22.0, 22.0), "mnli": (33.0, 33.0), "qnli": (36.0, 36.0), "rte": (52.0, 52.0),
              "wnli": (31.0, 31.0)}
CONTENT_WORD_SHARE = 0.5  # words the MLM proposes candidates for (not stop-words, one wordpiece): augmentation
AUGMENT_ROW_TOKENS = 4096  # tokens per MLM forward (xtc.augment's max_batch_tokens)
GIB = 2**30


# ---------------------------------------------------------------------------------------------- model shape
@dataclass(frozen=True)
class Shape:
    """The BERT shape a study trains (its teacher's); students keep all but the depth."""

    vocab: int = 30522
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    positions: int = 512
    types: int = 2
    source: str = "BERT-base (built in)"

    @classmethod
    def from_config(cls, config: Mapping, source: str) -> Shape:
        return cls(config["vocab_size"], config["hidden_size"], config["num_hidden_layers"],
                   config["num_attention_heads"], config["intermediate_size"], config["max_position_embeddings"],
                   config.get("type_vocab_size", 2), source)

    def key(self) -> str:
        return f"V{self.vocab}-H{self.hidden}-A{self.heads}-I{self.intermediate}"


def tensors(shape: Shape, layers: int, labels: int) -> list[tuple[str, tuple[int, ...]]]:
    """The parameters of a ``BertForSequenceClassification`` of ``layers`` layers, by name and shape."""
    h, i = shape.hidden, shape.intermediate
    out = [("bert.embeddings.word_embeddings.weight", (shape.vocab, h)),
           ("bert.embeddings.position_embeddings.weight", (shape.positions, h)),
           ("bert.embeddings.token_type_embeddings.weight", (shape.types, h)),
           ("bert.embeddings.LayerNorm.weight", (h,)), ("bert.embeddings.LayerNorm.bias", (h,))]
    for n in range(layers):
        p = f"bert.encoder.layer.{n}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            out += [(p + name + ".weight", (h, h)), (p + name + ".bias", (h,))]
        out += [(p + "attention.output.LayerNorm.weight", (h,)), (p + "attention.output.LayerNorm.bias", (h,)),
                (p + "intermediate.dense.weight", (i, h)), (p + "intermediate.dense.bias", (i,)),
                (p + "output.dense.weight", (h, i)), (p + "output.dense.bias", (h,)),
                (p + "output.LayerNorm.weight", (h,)), (p + "output.LayerNorm.bias", (h,))]
    out += [("bert.pooler.dense.weight", (h, h)), ("bert.pooler.dense.bias", (h,)),
            ("classifier.weight", (labels, h)), ("classifier.bias", (labels,))]
    return out


def params(shape: Shape, layers: int, labels: int) -> int:
    return sum(math.prod(dims) for _, dims in tensors(shape, layers, labels))


# ---------------------------------------------------------------------------------------------- disk
def safetensors_bytes(named: list[tuple[str, tuple[int, ...]]], itemsize: int = 4) -> int:
    """A safetensors file of FP32 tensors: 8 bytes of length, the JSON header (padded to 8), the data."""
    header, offset = {}, 0
    for name, dims in sorted(named):
        size = math.prod(dims) * itemsize
        header[name] = {"dtype": "F32", "shape": list(dims), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps({"__metadata__": {"format": "pt"}, **header}, separators=(",", ":"))
    return 8 + math.ceil(len(text) / 8) * 8 + offset


# Small files, fitted on run directories written by xtc (tests/test_cost.py checks the sums): HF config.json, the
# tokenizer files (fixed + per vocabulary entry: bert-base-uncased's are 0.7 MB), torch.save's record per tensor of
# the state, one train_log line per step, one evaluation record in each of train_log, metrics.json and the state;
# config.json, manifest.json and metrics.json of the run; the packed file's JSON header (fixed + per tensor).
CONFIG_BYTES, TOKENIZER_BYTES, TOKENIZER_PER_WORD = 1_000, 2_800, 23
STATE_PER_TENSOR, STATE_FIXED = 338, 10_000
LOG_PER_STEP, PER_EVAL, RUN_FILES = 230, 200, 3_600
PACKED_HEADER, PACKED_PER_TENSOR, PACKED_FILES = 6_000, 350, 2_800
# a quantized student: its QuantConfig in each config.json, and the state of each quantized linear
QUANT_CONFIG, QUANT_STATE_PER_LINEAR = 450, 164


def model_dir_bytes(shape: Shape, layers: int, labels: int) -> int:
    return (safetensors_bytes(tensors(shape, layers, labels)) + CONFIG_BYTES + TOKENIZER_BYTES
            + TOKENIZER_PER_WORD * shape.vocab)


def packed_bytes(shape: Shape, layers: int, labels: int, wbits: int) -> int:
    """``packed/``: the packed file (``xtc.packed``: quantized encoder linears and word embeddings at ``wbits``,
    one FP32 scale per linear and per embedding row, everything else FP32, a JSON header), size.json, manifest and
    the tokenizer."""
    h, i = shape.hidden, shape.intermediate
    named = tensors(shape, layers, labels)
    quantized = layers * (4 * h * h + 2 * h * i) + shape.vocab * h
    rest = sum(math.prod(d) for _, d in named) - quantized
    file = math.ceil(quantized * wbits / 8) + 4 * (6 * layers + shape.vocab) + 4 * rest
    return (file + PACKED_HEADER + PACKED_PER_TENSOR * len(named) + PACKED_FILES + TOKENIZER_BYTES
            + TOKENIZER_PER_WORD * shape.vocab)


def run_dir_bytes(shape: Shape, layers: int, labels: int, steps: int, evals: int, wbits: int | None) -> int:
    """Bytes of a finished run directory (see the module docstring); ``wbits`` None: a full-precision run."""
    named = tensors(shape, layers, labels)
    state = 3 * sum(math.prod(d) for _, d in named) * 4 + 3 * len(named) * STATE_PER_TENSOR + STATE_FIXED
    size = 2 * model_dir_bytes(shape, layers, labels) + state + steps * LOG_PER_STEP + evals * 3 * PER_EVAL + RUN_FILES
    if wbits:
        size += 2 * QUANT_CONFIG + 6 * layers * QUANT_STATE_PER_LINEAR + packed_bytes(shape, layers, labels, wbits)
    return size


# ---------------------------------------------------------------------------------------------- compute
def mean_tokens(task: str, split: int, max_seq_length: int) -> float:
    """Mean tokens per example (``split`` 0 train, 1 dev), [CLS]/[SEP] included, truncated at max_seq_length."""
    specials = 3 if TASKS[task].is_pair else 2
    return min(1.3 * MEAN_WORDS[task][split] + specials, max_seq_length)


def padded_length(settings: Mapping, task: str, split: int) -> float:
    """The length batches are padded to: max_seq_length (the original's padding), else about the mean (dynamic
    padding of length-grouped batches) or 1.5x the mean (dynamic, shuffled batches)."""
    data = settings["data"]
    if data["padding"] == "max_length":
        return data["max_seq_length"]
    grouped = data["group_by_length"] or split == 1  # evaluation sorts by length
    return min(mean_tokens(task, split, data["max_seq_length"]) * (1.0 if grouped else 1.5), data["max_seq_length"])


def forward_flops(shape: Shape, layers: int, seq: float) -> float:
    """FLOPs of one example's forward: the encoder's matmuls and the attention products (2 per multiply-add)."""
    h, i = shape.hidden, shape.intermediate
    return layers * seq * (2 * (4 * h * h + 2 * h * i) + 4 * seq * h)


def train_flops(shape: Shape, layers: int, seq: float, teacher_layers: int | None) -> float:
    """Forward and backward of the student (3 forwards), plus the teacher's forward under KD."""
    return 3 * forward_flops(shape, layers, seq) + (forward_flops(shape, teacher_layers, seq) if teacher_layers else 0)


# ---------------------------------------------------------------------------------------------- calibration
def kind_key(job: str, layers: int, wbits: str = "fp") -> str:
    """``finetune:12:fp``, ``distill:6:1``, ``eval:12:fp``, ``augment:12:fp``: a timed job kind."""
    return f"{job}:{layers}:{wbits}"


def read_calibration(path: Path = CALIBRATION) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"version": 1, "devices": {}}


@dataclass(frozen=True)
class Rates:
    """Samples per second of each timed kind on one device, for one shape, batch and padded length."""

    device: str
    kinds: Mapping[str, Mapping]
    seq: float
    batch: int
    note: str = ""
    startup: Mapping[str, float] | None = None  # imports_s, load_s, export_s (calibrate.time_startup)

    def start_s(self, models: int) -> float:
        """A job's fixed cost before its first step: the imports and ``models`` model loads (calibrated), else
        START_S (an estimate)."""
        if not self.startup:
            return START_S
        return self.startup["imports_s"] + models * self.startup["load_s"]

    def flops_rate(self, key: str, flops_per_sample: float) -> float:
        """Effective FLOP/s of a calibrated kind (or of the calibrated kind nearest in depth and job)."""
        job, layers, bits = key.split(":")
        same = [k for k in self.kinds if k.split(":")[0] == job and k.split(":")[2] == bits] or \
               [k for k in self.kinds if k.split(":")[0] == job] or list(self.kinds)
        nearest = min(same, key=lambda k: abs(int(k.split(":")[1]) - int(layers)))
        return self.kinds[nearest]["samples_per_s"] * self.kinds[nearest]["flops_per_sample"]

    def samples_per_s(self, key: str, flops_per_sample: float, seq: float) -> float:
        """Calibrated rate at the calibrated length; otherwise (another kind or length) by effective FLOP/s."""
        if key in self.kinds and abs(seq - self.seq) < 0.5:
            return self.kinds[key]["samples_per_s"]
        return self.flops_rate(key, flops_per_sample) / flops_per_sample if self.kinds else 0.0

    def peak_memory(self, key: str) -> int | None:
        return (self.kinds.get(key) or {}).get("peak_memory_bytes")


def find_rates(device_type: str, shape: Shape, batch: int, seq: float, threads: int, device_name: str | None = None,
               path: Path = CALIBRATION, tf32: bool = False) -> Rates:
    """The calibration of ``device_name`` (default: the first calibrated device of ``device_type``) for this shape
    and batch, the one of the closest padded length; else the documented default (``Rates.note`` says so)."""
    devices = read_calibration(path)["devices"]
    names = [device_name] if device_name else [n for n in devices if n.startswith("cpu: ") == (device_type == "cpu")]
    for name in names:
        entries = [e for e in devices.get(name, []) if e["shape"] == shape.key() and e["batch_size"] == batch
                   and (device_type != "cpu" or e["threads"] == threads) and e.get("tf32", False) == tf32]
        if entries:
            best = min(entries, key=lambda e: abs(e["seq_length"] - seq))
            return Rates(name, best["kinds"], best["seq_length"], batch, f"calibrated on {name} ({best['measured']})",
                         best.get("startup"))
    rate = DEFAULT_FLOPS[device_type] * (threads if device_type == "cpu" else 1)
    default = {"default:0:fp": {"samples_per_s": 1.0, "flops_per_sample": rate}}
    return Rates(f"default {device_type}", default, seq, batch, DEFAULT_NOTE)


# ---------------------------------------------------------------------------------------------- a study's jobs
INT8_SPEEDUP = 4.0  # the integer engine over the FP32 model on CPU (docs/performance.md, section 7: 4.2-4.4x)
QUANT_OVERHEAD = 1.1  # a fake-quant KD step over the FP32 one, where no calibration timed it (CPU: 1.05x)
CUDA_CONTEXT = 1 * GIB
SAFETY = 1.5  # runtime request = overhead_minutes + SAFETY x the estimate (capped at max_runtime)


# Shapes of hub models the studies name, for a plan made before they are fetched (their config.json on the hub).
KNOWN_SHAPES = {"sentence-transformers/all-MiniLM-L6-v2": Shape(30522, 384, 6, 12, 1536, 512, 2,
                                                               "sentence-transformers/all-MiniLM-L6-v2 (hub config)")}


def model_shape(name: str, layers: int = 12, fallback: str = "BERT-base shape assumed") -> Shape:
    """A model's shape from its local config.json (a run dir's model/ too), else a known hub model's, else
    BERT-base's (``layers``)."""
    folder = Path(resolve_model(name))
    for config in (folder / "model" / "config.json", folder / "config.json"):
        if config.is_file():
            return Shape.from_config(json.loads(config.read_text()), f"{name} (config.json)")
    if name in KNOWN_SHAPES:
        return KNOWN_SHAPES[name]
    return Shape(layers=layers, source=f"{name}: {fallback} (no local config; `xtc prefetch` brings it)")


def study_shape(settings: Mapping) -> Shape:
    """The teacher's shape: its local config.json when there is one, else BERT-base (the paper's teachers)."""
    task = min(settings["grid"]["task"])
    return model_shape(teacher_given(settings, task) or settings["teacher"]["model"], settings["teacher"]["layers"])


class JobCosts:
    """Seconds, peak GPU memory and disk of a study's jobs: the runtime model of the module docstring.

    ``device`` is the training jobs' (``Jobs.device()``); rates come from the calibration of that device type
    (``gpu_name`` picks a calibrated GPU) or the documented default (``rates.note`` says which).
    """

    def __init__(self, settings: Mapping, device: str, gpu_name: str | None = None, calibration: Path = CALIBRATION):
        res = settings["resources"]
        self.settings, self.shape = settings, study_shape(settings)
        self.mlm = model_shape(settings["augment"]["mlm"])
        self.teacher_layers = settings["teacher"]["layers"]
        self.gpu = res["gpu"] if device == "cuda" else 0
        self.threads = res["threads"]
        tasks = settings["grid"]["task"]
        seq = max(padded_length(settings, t, 0) for t in tasks)
        batch = settings["data"]["batch_size"]
        tf32 = "train.tf32=true" in [o.replace(" ", "").lower() for o in settings["train"]["set"]]
        self.rates = find_rates("cuda" if self.gpu else "cpu", self.shape, batch, seq, self.threads, gpu_name,
                                calibration, tf32)
        self.cpu_rates = (self.rates if not self.gpu
                          else find_rates("cpu", self.shape, batch, seq, self.threads, None, calibration))

    def dev_examples(self, task: str) -> int:
        cap, splits = self.settings["data"]["max_eval_examples"], len(TASKS[task].eval_splits)
        return min(DEV_SIZE[task], cap * splits) if cap else DEV_SIZE[task]

    def _eval(self, task: str, layers: int, rates: Rates, speedup: float = 1.0) -> float:
        seq = padded_length(self.settings, task, 1)
        flops = forward_flops(self.shape, layers, seq)
        return self.dev_examples(task) / (rates.samples_per_s(kind_key("eval", layers), flops, seq) * speedup)

    def evaluate(self, task: str, layers: int, packed: bool = False) -> float:
        """A dev-set evaluation job: on the training device, or (``packed``) the integer engine on CPU."""
        if packed:
            return self.cpu_rates.start_s(1) + self._eval(task, layers, self.cpu_rates, INT8_SPEEDUP)
        return self.rates.start_s(1) + self._eval(task, layers, self.rates)

    def export(self) -> float:
        """An export job (CPU): start-up, the run's model loaded, quantized and written packed."""
        startup = self.cpu_rates.startup
        return startup["imports_s"] + startup["load_s"] + startup["export_s"] if startup else SMALL_JOB_S["export"]

    def serving_report(self, models: Sequence[tuple[int, bool]]) -> float:
        """The serving report (CPU): every (layers, packed) model loaded, then timed on 6 batches of the study's
        batch size at data.max_seq_length (``xtc.packed.serving.measure``: a warm-up round and 5)."""
        rates = self.cpu_rates
        if not rates.startup:
            return SMALL_JOB_S["serving_report"]
        batch, seq = self.settings["data"]["batch_size"], self.settings["data"]["max_seq_length"]
        seconds = rates.startup["imports_s"]
        for layers, packed in models:
            rate = rates.samples_per_s(kind_key("eval", layers), forward_flops(self.shape, layers, seq), seq)
            seconds += rates.startup["load_s"] + 6 * batch / (rate * (INT8_SPEEDUP if packed else 1.0))
        return seconds

    def train(self, task: str, layers: int, wbits: str, epochs, da, teacher: bool) -> dict:
        """Seconds, optimizer steps, evaluations and peak GPU memory of one training job."""
        s = self.settings
        examples, epochs = train_examples(s, task, da), max(int(epochs), 1)
        steps = math.ceil(examples / s["data"]["batch_size"]) * epochs
        evals = steps // s["train"]["eval_every"] + epochs
        seq = padded_length(s, task, 0)
        key = kind_key("finetune" if teacher else "distill", layers, wbits)
        flops = train_flops(self.shape, layers, seq, None if teacher else self.teacher_layers)
        rate = self.rates.samples_per_s(key, flops, seq)
        if wbits != "fp" and key not in self.rates.kinds:
            rate /= QUANT_OVERHEAD
        if teacher and not self.gpu:  # the teacher's own threads (resources.teacher_threads), scaled linearly
            rate *= (s["resources"]["teacher_threads"] or self.threads) / self.threads
        seconds = (self.rates.start_s(1 if teacher else 2) + (examples + self.dev_examples(task)) / TOKENIZE_PER_S
                   + examples * epochs / rate
                   + evals * self._eval(task, layers, self.rates))
        memory = self.rates.peak_memory(key) or self.memory_estimate(layers, wbits, seq, teacher)
        return {"seconds": seconds, "steps": steps, "evals": evals, "memory": memory, "kind": key}

    def memory_estimate(self, layers: int, wbits: str, seq: float, teacher: bool) -> int:
        """Peak GPU memory of a training step (an estimate; a calibration on the GPU measures it): weights,
        gradients and AdamW moments of the student (16 B/param), the FP32 teacher, FP32 activations (Korthikanti
        et al. 2022: 34 s b h + 5 a s^2 b per layer at 16 bits), the teacher's hidden states and attention scores
        kept for KD, the fake-quant weight copies, and the CUDA context."""
        sh, b = self.shape, self.settings["data"]["batch_size"]
        student = params(sh, layers, 3)
        total = 16 * student + CUDA_CONTEXT + 2 * layers * seq * b * (34 * sh.hidden + 5 * sh.heads * seq)
        if not teacher:
            total += 4 * params(sh, self.teacher_layers, 3)
            total += 4 * self.teacher_layers * b * (seq * sh.hidden + sh.heads * seq * seq)
        if wbits != "fp":
            total += 4 * student
        return int(total)

    def augment(self, task: str) -> float:
        """The masked LM's forwards: one row per content word of each sentence, rows of about twice the sentence
        (``[CLS] masked [SEP] sentence [SEP]``)."""
        examples = train_examples(self.settings, task, 0)
        sentences = 2 if TASKS[task].is_pair else 1
        row = 2 * (mean_tokens(task, 0, 512) / sentences) + 1
        rows = examples * MEAN_WORDS[task][0] * CONTENT_WORD_SHARE
        mlm = self.mlm
        flops = forward_flops(mlm, mlm.layers, row) + 2 * mlm.hidden * mlm.vocab * row  # LM head on every position
        rate = self.rates.samples_per_s(kind_key("augment", mlm.layers), flops, row)
        return self.rates.start_s(1) + examples / TOKENIZE_PER_S + rows / rate

    def augmented_bytes(self, task: str) -> int:
        copies = self.settings["augment"]["copies"] or TASKS[task].aug_copies
        return int(train_examples(self.settings, task, 0) * (1 + copies) * (6 * MEAN_WORDS[task][0] + 24))

    def minutes(self, seconds: float) -> int:
        """The runtime request of a job estimated at ``seconds``."""
        res = self.settings["resources"]
        return min(res["overhead_minutes"] + math.ceil(SAFETY * seconds / 60), res["max_runtime"])
