"""The integer engine against the fake-quant model on real trained students and real dev sets.

For each run directory given (a quantized `xtc distill` run with its `packed/model.xtc.safetensors`), the run's
best model (``model/``, reloaded by ``load_model_dir`` as the fake-quant model, float arithmetic) and its packed file
on the integer engine (``xtc.packed.load(..., engine="int8")``) predict the task's whole dev set with the same
tokenizer, batches and length (``xtc.packed.predict.predict_logits``). Reported per run: the dev metrics of each, the
number of predictions that differ, the max abs logit difference, the fake-quant model's own float noise (its
logits under another thread count: the same arithmetic summed in another order), ``xtc.packed.engine.logit_bound`` of the
fake-quant logits and that noise, and whether every differing prediction lies within that bound of the fake-quant decision boundary
(``differences_within_margin``: its fake-quant top-2 margin is at most twice the bound).

    python -m bench.engine_agreement --data-dir $GLUE_DIR RUN_DIR [RUN_DIR ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def agreement(run_dir: str | Path, data_dir: str | Path, max_length: int = 128) -> dict:
    from xtc.checkpoint import load_model_dir, load_tokenizer
    from xtc.tasks import get_task
    from xtc.glue import load_local
    from xtc.metrics import compute_metrics
    from xtc.packed import load as load_packed
    from xtc.packed.engine import logit_bound
    from xtc.packed.predict import predict_logits

    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    task = config["recipe"]["data"]["task"]
    spec = get_task(task)
    split = spec.eval_splits[0].name
    examples = load_local(task, data_dir, split)
    texts = [(e["text_a"], e["text_b"]) for e in examples]
    labels = [e["label"] for e in examples]
    tokenizer = load_tokenizer(run_dir / "model")
    fake = load_model_dir(run_dir / "model").eval()
    engine = load_packed(run_dir / "packed" / "model.xtc.safetensors", engine="int8")
    want = predict_logits(fake, tokenizer, texts, 32, max_length)
    got = predict_logits(engine, tokenizer, texts, 32, max_length)
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if threads == 1 else 1)  # the fake-quant model's own float noise: other thread count
    try:
        again = predict_logits(fake, tokenizer, texts, 32, max_length)
    finally:
        torch.set_num_threads(threads)
    noise = float((again - want).abs().max())
    bound = logit_bound(want, noise)
    differ = (want.argmax(-1) != got.argmax(-1)).nonzero().flatten()
    top2 = want.topk(2, dim=-1).values
    margins = (top2[:, 0] - top2[:, 1])[differ]
    return {
        "run": str(run_dir), "task": task, "split": split, "examples": len(examples),
        "fake_quant_metrics": compute_metrics(task, want.numpy(), labels, split),
        "engine_metrics": compute_metrics(task, got.numpy(), labels, split),
        "predictions_differing": int(differ.numel()),
        "max_abs_logit_diff": float((got - want).abs().max()),
        "max_abs_logit": float(want.abs().max()),
        "fake_quant_float_noise": noise,
        "fake_quant_noise_predictions_differing": int((again.argmax(-1) != want.argmax(-1)).sum()),
        "logit_bound": bound,
        "differing_margins": [round(float(m), 6) for m in margins],
        "differences_within_margin": bool((margins <= 2 * bound).all()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine_agreement", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="quantized run directories (with packed/model.xtc.safetensors)")
    parser.add_argument("--data-dir", required=True, help="a glue_data/ folder (official layout)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = [agreement(run, args.data_dir, args.max_length) for run in args.runs]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['run']}: {r['predictions_differing']}/{r['examples']} predictions differ, max |dlogit| "
                  f"{r['max_abs_logit_diff']:.2e} (fake-quant float noise {r['fake_quant_float_noise']:.2e}, bound "
                  f"{r['logit_bound']:.2e}, max |logit| {r['max_abs_logit']:.2f}); "
                  f"fake-quant {r['fake_quant_metrics']} engine {r['engine_metrics']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
