"""The benchmark suite's machinery (``python -m bench``) on the smallest shapes: structure and sanity, never speed.

(The library changes the benchmarks called for are tested where they live: test_train.py, test_primitives.py.)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import pytest
import torch

from bench import __main__ as bench_main
from bench import export_ratio, kd_step, machine, memory, packed_eval, peers, serve, timing, tradeoff, workflow
from bench.kd_step import Setting
from guards import import_peer

REPO = Path(__file__).resolve().parent.parent

TINY_MODEL = (("vocab_size", 128), ("hidden_size", 32), ("num_hidden_layers", 2), ("num_attention_heads", 2),
              ("intermediate_size", 64), ("max_position_embeddings", 64))
TINY = Setting(batch=2, seq=8, rounds=2, model=TINY_MODEL)


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


# ---------------------------------------------------------------------------------------------- timing
def test_summary_is_the_ratio_of_medians_with_per_round_quartiles():
    samples = {"a": [1.0, 2.0, 3.0, 4.0, 100.0], "b": [2.0, 2.0, 2.0, 2.0, 2.0]}
    result = timing.summary(samples, "a", "b")
    assert result["medians"] == {"a": 3.0, "b": 2.0} and result["ratio"] == 1.5
    assert result["round_ratio_quartiles"] == [0.75, 1.5, 26.0]


def test_interleaved_alternates_candidates_and_rotates_who_goes_first():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "xyz"}
    samples = timing.interleaved_samples(fns, 3, warmup=1)
    assert "".join(calls) == "xyz" + "xyz" + "yzx" + "zxy" and all(len(v) == 3 for v in samples.values())
    calls.clear()
    timing.interleaved(fns, 2, warmup=0)
    assert "".join(calls) == "xyzxyz"  # the fixed order of bench/quant_linear.py


# ---------------------------------------------------------------------------------------------- KD steps
def test_kd_step_ratio_and_setting():
    result = kd_step.run(setting=TINY)  # with the train.compile candidate
    assert _positive(result["w1a8_over_fp32"]) and _positive(result["fp32_s"]) and _positive(result["w1a8_s"])
    assert _positive(result["w1a8_compiled_over_fp32"]) and _positive(result["compile_first_step_s"])
    assert _positive(result["w1a8_int8_over_fp32"]) and _positive(result["w1a8_int8_s"])
    assert result["optimizer_step"] is True
    assert result["setting"] == {"batch": 2, "seq": 8, "rounds": 2, "layers": 2, "hidden": 32, "heads": 2,
                                 "intermediate": 64, "vocab": 128}


def test_kd_step_trains_the_quantized_student():
    teacher = kd_step.teacher_model(TINY)
    student = kd_step.xtc_student(teacher)
    before = student.bert.encoder.layer[0].intermediate.dense.weight.detach().clone()
    kd_step.kd_step(student, teacher, kd_step.features(TINY, 128))()
    assert not torch.equal(before, student.bert.encoder.layer[0].intermediate.dense.weight)  # AdamW stepped
    assert type(student.bert.encoder.layer[0].intermediate.dense).__name__ == "QuantLinear"


def test_setting_round_trips_through_json():
    assert Setting.from_dict(json.loads(json.dumps(dataclasses.asdict(TINY)))) == TINY


def test_deepspeed_step_ratios_without_memory():
    import_peer("deepspeed.compression.compress")
    from bench import deepspeed_step

    result = deepspeed_step.run(setting=TINY, measure_memory=False, compiled=False)  # kd_step's test compiles
    assert _positive(result["xtc_over_deepspeed"]) and _positive(result["fp32_over_deepspeed"])
    assert set(result) >= {"xtc_s", "deepspeed_s", "fp32_s", "round_ratio_quartiles"} and "memory" not in result
    assert "xtc_compiled_over_deepspeed" not in result and _positive(result["xtc_int8_over_deepspeed"])


def test_deepspeed_student_really_quantizes():
    import_peer("deepspeed.compression.compress")
    from bench import deepspeed_step

    teacher = kd_step.teacher_model(TINY)
    batch = {"input_ids": torch.tensor([[2, 40, 50, 3]])}
    ds, ours = deepspeed_step.deepspeed_student(teacher).eval(), kd_step.xtc_student(teacher).eval()
    with torch.no_grad():
        ds_logits, our_logits, fp_logits = (m(**batch).logits for m in (ds, ours, teacher))
    assert not torch.allclose(ds_logits, fp_logits) and torch.allclose(ds_logits, our_logits, atol=1e-5)


# ---------------------------------------------------------------------------------------------- memory
def test_memory_method_measures_a_known_allocation():
    results = memory.in_children({"big": ("bench.memory:calibration_step", {"mib": 64}),
                                  "small": ("bench.memory:calibration_step", {"mib": 8})}, steps=1)
    if "step_peak_mib" not in results["big"]:
        pytest.skip("no /proc/self/clear_refs here: only the whole-process peak is available")
    assert 60 <= results["big"]["step_peak_mib"] <= 70 and 6 <= results["small"]["step_peak_mib"] <= 14
    assert results["big"]["peak_mib"] >= results["big"]["resident_mib"] + 60


def test_memory_of_a_kd_step_in_a_child():
    job = ("bench.deepspeed_step:candidate", {"name": "xtc", "setting": dataclasses.asdict(TINY)})
    result = memory.in_children({"xtc": job}, steps=1)["xtc"]
    assert _positive(result["peak_mib"]) and result["peak_mib"] >= result.get("resident_mib", 0)


def test_memory_child_failure_is_reported():
    with pytest.raises(RuntimeError, match="memory child bad .*failed"):
        memory.in_children({"bad": ("bench.memory:no_such_function", {})}, steps=1)


# ---------------------------------------------------------------------------------------------- packed eval
def test_packed_eval_logits_equal_and_ratios():
    result = packed_eval.run(setting=TINY, eval_batch=4)
    assert result["logits_equal"] is True
    assert _positive(result["packed_over_fake_quant_throughput"]) and _positive(result["packed_over_fp32_dir_load"])
    assert all(_positive(v) for v in result["examples_per_s"].values())
    assert result["bytes"]["packed"] < result["bytes"]["fp32_dir"]


# ---------------------------------------------------------------------------------------------- serving
needs_serve_extra = pytest.mark.skipif(peers.missing_extra() is not None, reason=str(peers.missing_extra()))
SERVE_TINY = {"depths": (1,), "batch": 2, "seq": 8, "rounds": 1, "calls": 2, "latency_rounds": 1, "latency_calls": 2,
              "model": tuple((k, v) for k, v in TINY_MODEL if k != "num_hidden_layers")}


@needs_serve_extra
def _matmul(monkeypatch, kernel: str) -> None:
    """The engine's matmul kernel for this test and its children (oneDNN forced: its slow path without AMX is
    fine at these sizes)."""
    from xtc.quant import int8

    monkeypatch.setenv(int8.MATMUL_ENV, kernel)
    int8.reset_kernels()
    monkeypatch.setattr(int8, "_matmul_status", {})  # forgotten again after the test


@needs_serve_extra
def test_serve_reports_engine_ratios_against_fp32_and_the_fastest_ort_int8(monkeypatch):
    monkeypatch.setenv("XTC_ENGINE_COMPILE", "0")  # the memory children inherit it: no compile in a test
    _matmul(monkeypatch, "onednn")
    result = serve.run(mode={**SERVE_TINY, "peers": ("ort_int8",)})
    assert {"engine_speedup_vs_fp32", "engine_memory_ratio_vs_fp32", "engine_load_ratio_vs_fp32"} <= set(result)
    assert all(_positive(result[k]) for k in ("engine_speedup_vs_fp32", "engine_memory_ratio_vs_fp32"))
    depth = result["depths"]["1L"]
    # on oneDNN's products, the same engine on torch._int_mm beside it: same logits, its own speed and memory
    assert set(depth["memory"]) == {*serve.CANDIDATES, serve.INT_MM, "ort_int8", "engine_eager"}
    assert depth["numerics"]["engine_int_mm_logits_equal_engine"] is True
    assert _positive(depth["throughput_2x8"]["engine_speedup_vs_engine_int_mm"])
    assert depth["kernels"]["matmul"] == "onednn"
    assert depth["numerics"]["within_bound"] is True
    assert depth["numerics"]["engine_packed_logits_equal_engine"] is True
    assert all(_positive(result[f"engine_packed_{k}_vs_fp32"]) for k in ("speedup", "memory_ratio"))
    assert all(_positive(v) for k, v in depth["throughput_2x8"].items() if k.endswith("_per_s"))
    # the one ONNX Runtime int8 variant is the fastest; the engine's ratios against it, at both shapes and in memory
    assert result["best_ort_int8"] == "ort_int8"
    for engine in serve.ENGINES:
        for key in ("speedup_vs_best_ort_int8", "latency_ratio_vs_best_ort_int8", "resident_ratio_vs_best_ort_int8"):
            assert _positive(result[f"{engine}_{key}"])
    for figures in depth["memory"].values():  # cold start and resident weights, each in a fresh process
        assert _positive(figures["cold_start_s"]) and _positive(figures["first_forward_s"])
        assert figures["resident_mib"] <= figures["model_mib"]
    assert depth["memory"]["engine_eager"]["compile_s"] is not None


@needs_serve_extra
def test_serve_peers_are_built_from_the_same_fp32_model_and_timed_alongside(monkeypatch):
    names = ("ort_fp32", "ort_int8", "ort_int8_per_channel", "ort_int8_fused", "torch_ao_int8")
    _matmul(monkeypatch, "int_mm")
    result = serve.run(mode={**SERVE_TINY, "peers": names}, measure_memory=False)
    depth = result["depths"]["1L"]
    diffs = depth["numerics"]["peers_max_abs_logit_diff_vs_fp32"]
    assert diffs["ort_fp32"] < 1e-5  # the same FP32 model through ONNX Runtime
    max_logit = depth["numerics"]["max_abs_logit"]
    assert all(diffs[n] < 0.1 * max_logit + 1e-3 for n in names)  # int8 peers: close, not equal
    for shape in ("throughput_2x8", "latency_1x8"):
        assert all(_positive(depth[shape][f"{n}_speedup_vs_fp32"]) for n in names)
        assert depth[shape]["best_ort_int8"] in peers.ORT_INT8
    assert depth["peer_files"]["ort_int8_fused"]["ops"].get("QAttention") == 1  # the fused variant is fused
    assert "MatMulInteger" in depth["peer_files"]["ort_int8"]["ops"]
    assert set(depth["load_s"]) == {*serve.CANDIDATES, *names}  # on torch._int_mm: no second engine
    assert "engine_speedup_vs_engine_int_mm" not in depth["throughput_2x8"]


@pytest.mark.skipif("torchao_int8" not in peers.available(), reason="torchao not installed (serve-torchao extra)")
def test_torchao_peer_quantizes_every_linear(tmp_path):
    setting = dataclasses.replace(TINY, batch=2)
    paths = serve.write_files(setting, tmp_path)
    model = peers.load_peer("torchao_int8", paths["fp32"])
    eager = model._orig_mod  # torch.compile's wrapper: the quantized module, run eagerly (no compile in a test)
    assert all("Int8" in type(m.weight).__name__ for m in eager.modules() if isinstance(m, torch.nn.Linear))
    inputs = serve._inputs(setting, 128, 2)
    with torch.inference_mode():
        got, want = eager(**inputs).logits, serve.load("fp32", paths["fp32"])(**inputs).logits
    assert float((got - want).abs().max()) < 0.1 * float(want.abs().max()) + 1e-3


@needs_serve_extra
def test_serve_profile_splits_both_sides_into_the_same_components():
    from bench import serve_profile

    result = serve_profile.profile(TINY, peer="ort_int8")
    parts = result["engine_components_s"]
    assert set(parts) == {"activation quantization", "int8 matmul", "attention (float)", "epilogues",
                          "whole layer (one chunk)"} and _positive(parts["whole layer (one chunk)"])
    assert all(v >= 0 for v in (*parts.values(), *result["ort_components_s"].values()))
    assert set(result["ort_components_s"]) == {*serve_profile.ORT_COMPONENTS, "other"}
    assert "MatMulInteger" in result["ort_ops_s"] or "DynamicQuantizeMatMul" in result["ort_ops_s"]
    assert set(result["whole_model_s"]) == {"engine", "ort_int8"} and result["machine"]["isa"]


@needs_serve_extra
def test_serve_sweep_times_every_cell_against_that_cell_s_fastest_ort_int8(monkeypatch):
    """threads x batch x sequence: every cell holds every candidate's throughput and the engine's ratio against the
    fastest ONNX Runtime int8 variant of that same cell; the thread count is restored afterwards."""
    from bench import serve_sweep

    monkeypatch.setenv("XTC_ENGINE_COMPILE", "0")
    before = torch.get_num_threads()
    mode = {"depth": 1, "threads": (1, 2, 10_000), "batches": (1, 2), "seqs": (8, 16), "rounds": 1,
            "model": SERVE_TINY["model"]}
    result = serve_sweep.run(mode=mode)
    assert torch.get_num_threads() == before
    threads = [t for t in (1, 2) if t <= (os.cpu_count() or 1)]
    assert result["threads"] == threads  # 10,000 threads: more than the machine's cores, left out
    assert set(result["cells"]) == {f"threads{t}_{b}x{s}" for t in threads for b in (1, 2) for s in (8, 16)}
    for cell in result["cells"].values():
        assert set(cell["sentences_per_s"]) == set(serve_sweep.CANDIDATES)
        assert all(_positive(v) for v in cell["sentences_per_s"].values())
        per_s = cell["sentences_per_s"]
        assert cell["best_ort_int8"] == max(serve_sweep.ORT_INT8, key=per_s.get)
        for engine in serve.ENGINES:  # the ratio of medians: the engine's sentences/s over the best variant's
            assert cell[f"{engine}_speedup_vs_best_ort_int8"] == pytest.approx(
                per_s[engine] / per_s[cell["best_ort_int8"]], rel=0.02, abs=1e-3)
    ratios = [c[f"{e}_speedup_vs_best_ort_int8"] for c in result["cells"].values() for e in serve.ENGINES]
    assert result["engine_vs_best_ort_int8_min"] == min(ratios)
    assert 0 <= result["cells_engine_at_or_above_best_ort_int8"] <= len(result["cells"])


def test_serve_refuses_in_one_line_without_the_serve_extra(monkeypatch, capsys):
    monkeypatch.setattr(peers, "missing_extra", lambda: "the serve benchmark needs the serve extra (onnxruntime "
                                                        "missing): pip install -c constraints.txt -e '.[serve]'")
    assert bench_main.main(["--only", "serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "serve extra" in err and ".[serve]" in err


def test_missing_extra_names_what_is_missing(monkeypatch):
    real = peers.importlib.util.find_spec
    monkeypatch.setattr(peers.importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else real(name))
    assert "(onnxruntime missing)" in peers.missing_extra()


def test_machine_block_records_cpu_model_isa_and_threads():
    cpuinfo = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480C\nflags\t\t: fpu avx2 avx512f "
               "avx512_vnni amx_tile amx_int8\n\nprocessor\t: 1\nmodel name\t: other\nflags\t: fpu\n")
    block = machine.machine(cpuinfo)
    assert block["cpu"] == "Intel(R) Xeon(R) Platinum 8480C" and block["threads"] == torch.get_num_threads()
    assert block["isa"]["avx512_vnni"] and block["isa"]["amx_int8"] and not block["isa"]["avx_vnni"]
    threads = torch.get_num_threads()
    assert machine.isa_line(block) == (f"Intel(R) Xeon(R) Platinum 8480C, AVX2 yes, AVX512-VNNI yes, AMX yes, "
                                       f"{threads} thread{'' if threads == 1 else 's'}")
    here = machine.machine()
    assert set(here["isa"]) == set(machine.ISA_FLAGS.values()) and here["cpu"]


# ---------------------------------------------------------------------------------------------- export ratio
def _tiny_theoretical_bytes(layers: int, bits: int) -> float:
    """Theoretical minimum of a tiny W{bits} student, by hand: the XTC module set at ``bits`` bits plus one float32
    scale per linear and per embedding row, and every other tensor of the tiny BERT in float32."""
    h, f, v, p, labels = 32, 64, 128, 64, 2
    linears = layers * (4 * h * h + 2 * h * f)
    quantized = linears + v * h
    scales = layers * 6 + v
    per_layer_fp = 4 * h + (f + h) + 2 * 2 * h  # q/k/v/attn-out biases, the two FFN biases, two LayerNorms
    remainder = (p * h + 2 * h + 2 * h  # position and token-type embeddings, embedding LayerNorm
                 + layers * per_layer_fp + h * h + h + labels * h + labels)  # pooler, classifier
    return quantized * bits / 8 + 4 * scales + 4 * remainder


def test_export_ratio_accounts_for_every_byte():
    model = {k: v for k, v in TINY_MODEL if k != "num_hidden_layers"}
    result = export_ratio.run(layers=(2, 1), bits=(1, 2), model=model)
    assert set(result["students"]) == {"2L_W1", "2L_W2", "1L_W1", "1L_W2"}
    for name, entry in result["students"].items():
        layers, bits = int(name.split("L_W")[0]), int(name.split("L_W")[1])
        assert entry["theoretical_bytes"] == _tiny_theoretical_bytes(layers, bits)
        overhead = entry["overhead"]
        assert overhead["rounding"] == 0  # every tiny weight holds a multiple of 8 elements
        # a random BERT's padding row of the word embeddings is all zero: 32 int32 positions in the 1-bit file
        assert overhead["zero_positions"] == (32 * 4 if bits == 1 else 0)
        assert entry["file_bytes"] == entry["theoretical_bytes"] + overhead["safetensors_header"] + \
            overhead["zero_positions"]
        assert entry["ratio"] >= 1.0
    assert result["max_ratio"] == max(e["ratio"] for e in result["students"].values())


# ---------------------------------------------------------------------------------------------- workflow
JOB_STATS = """Job stats:
job        count
-------  -------
reduce         1
all            1
total          2
"""
# A dry run prints the table before and after the job list.
SNAKEMAKE_OUTPUT = f"""Building DAG of jobs...
{JOB_STATS}
rule reduce:
    output: a
localrule all:
    input: a
{JOB_STATS}"""


def test_job_counts_are_parsed_from_snakemakes_table():
    assert workflow.job_total(SNAKEMAKE_OUTPUT) == 2 and workflow.listed_jobs(SNAKEMAKE_OUTPUT) == 2


def test_dry_run_job_count_is_what_snakemake_reports():
    seconds, output = workflow.dry_run(None)  # the default study: the smallest grid
    table = output.rsplit("Job stats:", 1)[1].split("total")[0]
    rows = [int(line.split()[-1]) for line in table.splitlines() if line.split() and line.split()[-1].isdigit()]
    assert workflow.job_total(output) == sum(rows) == workflow.listed_jobs(output) > 0
    assert _positive(seconds)


def test_xtc_help_startup_is_measured():
    assert _positive(workflow.help_seconds(1))


def test_distill_startup_reaches_the_first_step(tmp_path):
    inputs = workflow.tiny_inputs(tmp_path)
    wall, cpu = workflow.distill_startup(inputs, tmp_path / "run")
    assert _positive(wall) and wall < 120 and (cpu is None or _positive(cpu))
    first = json.loads((tmp_path / "run" / "train_log.jsonl").read_text().splitlines()[0])
    assert first["kind"] == "train" and first["global_step"] == 1


# ---------------------------------------------------------------------------------------------- the CLI
def _fake(quick: bool = False) -> dict:
    return {"w1a8_over_fp32": 1.0 if quick else 2.0}


def test_json_report_holds_every_requested_benchmark(monkeypatch, capsys):
    monkeypatch.setattr(bench_main, "SUITE", {"kd_step": _fake, "export_ratio": lambda quick: {"max_ratio": 1.0}})
    assert bench_main.main(["--quick", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mode"] == "quick" and report["kd_step"]["w1a8_over_fp32"] == 1.0
    assert {"cpu", "isa", "threads", "torch"} <= set(report["machine"])
    assert report["export_ratio"]["max_ratio"] == 1.0 and report["kd_step"]["bench_seconds"] >= 0


def test_only_runs_one_benchmark_and_the_summary_shows_its_target(monkeypatch, capsys):
    monkeypatch.setattr(bench_main, "SUITE", {"kd_step": _fake, "export_ratio": lambda quick: 1 / 0})
    assert bench_main.main(["--only", "kd_step"]) == 0
    out = capsys.readouterr().out
    assert "kd_step" in out and "w1a8_over_fp32 = 2.0  (target <= 1.15)" in out and "export_ratio" not in out


def test_every_benchmark_has_a_cli_name():
    assert set(bench_main.SUITE) == {"quant_linear", "kd_step", "deepspeed_step", "packed_eval", "export_ratio",
                                     "workflow", "serve", "serve_sweep", "tradeoff"}
    assert set(bench_main.OPT_IN) <= set(bench_main.SUITE)
    assert set(bench_main.HEADLINES) <= set(bench_main.SUITE)


@needs_serve_extra
def test_tradeoff_puts_each_demo_model_s_dev_accuracy_beside_its_speed(tmp_path, monkeypatch):
    """A tiny stand-in for `make demo`'s results (teacher dir, packed student, runs table, SST-2 dev file): every
    model and ONNX Runtime peer is evaluated on the same dev set; the ORT FP32 export predicts as its source does."""
    from textdata import tiny_tokenizer, write_glue_tsv
    from xtc.checkpoint import save_model_dir
    from xtc.config import QuantConfig
    from xtc.models import random_model, tiny_bert_config
    from xtc.packed.export import export_packed
    from xtc.quant import quantize_

    with pytest.raises(SystemExit, match="run `make demo` first"):
        tradeoff.demo_models(tmp_path)
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    teacher = random_model(tiny_bert_config(vocab_size=len(tokenizer)), seed=0).eval()
    teacher_dir = tmp_path / "results/teachers/task~sst2/seed~42"
    save_model_dir(teacher, teacher_dir / "model")
    tokenizer.save_pretrained(teacher_dir / "model")
    student = random_model(tiny_bert_config(vocab_size=len(tokenizer)), seed=1).eval()
    quantize_(student, QuantConfig(weight_bits=1))
    run = "results/runs/task~sst2/layers~4/wbits~1/abits~8/kd~one_stage/epochs~1/lr~0.0001/da~0/seed~42"
    export_packed(student, tmp_path / run / "packed/model.xtc.safetensors")
    (tmp_path / "results/demo").mkdir(parents=True)
    (tmp_path / tradeoff.RUNS).write_text(
        "study\ttask\tlayers\twbits\tabits\trun_dir\tpacked_dir\n"
        f"demo\tsst2\t4\tfp\tfp\tresults/teachers/task~sst2/seed~42\t\n"
        f"demo\tsst2\t4\t1\t8\t{run}\t{run}/packed\n")
    write_glue_tsv(tmp_path / "glue", "sst2", "validation", 40, seed=3)
    monkeypatch.setenv("GLUE_DIR", str(tmp_path / "glue"))
    result = tradeoff.run(quick=True, root=tmp_path)
    rows = result["models"]
    assert set(rows) == {"FP32 teacher 4L", "W1A8 4L (xtc int8 engine)", "ONNX Runtime fp32 (teacher)",
                         "ONNX Runtime int8 (teacher)", "ONNX Runtime int8 per channel (teacher)",
                         "ONNX Runtime int8 fused (teacher)"}
    assert rows["ONNX Runtime fp32 (teacher)"]["accuracy"] == rows["FP32 teacher 4L"]["accuracy"]
    assert all(0 <= r["accuracy"] <= 100 and _positive(r["sentences_per_s"]) for r in rows.values())
    assert rows["W1A8 4L (xtc int8 engine)"]["size_vs_fp32"] < 0.5  # 1-bit codes (a tiny model: FP embeddings weigh)
    assert result["best_ort_int8"] in rows and rows[result["best_ort_int8"]]["speedup_vs_best_ort_int8"] == 1.0


def test_block_samples_time_each_candidate_in_a_row_without_its_first_call():
    """A candidate slow on the first call of each block (a thread pool waking up) is timed on the rest."""
    import time as _time

    from bench.timing import block_samples

    count = {"a": 0, "b": 0}

    def make(name):
        def call() -> None:
            if count[name] % 3 == 0:  # the first of each block of 3 (no warm-up calls below)
                _time.sleep(0.05)
            count[name] += 1
        return call

    samples = block_samples({"a": make("a"), "b": make("b")}, rounds=2, calls=3, warmup=0)
    assert count == {"a": 6, "b": 6} and all(len(v) == 2 for v in samples.values())
    assert all(s < 0.02 for v in samples.values() for s in v)
    with pytest.raises(ValueError, match="calls >= 2"):
        block_samples({"a": make("a")}, rounds=1, calls=1)
