"""The recipe ablation's runs (config/findings/recipe.yaml) from their training logs: per recipe, depth and budget,
the best dev score (mean ± sample std over seeds) and the share of the attention loss at masked keys (the log's
``att_masked`` over ``att``, mean over steps and seeds). Run from the repository root after the study:

    python docs/findings-cpu/att_masked.py [TASK]      # default sst2
"""

import json
import statistics
import sys
from pathlib import Path

task = sys.argv[1] if len(sys.argv) > 1 else "sst2"
groups: dict[tuple, list] = {}
for run in sorted(Path("results/runs").glob(f"recipe~*/task~{task}/layers~*/wbits~1/abits~8/*/epochs~*/*/*/seed~*")):
    if not (run / "metrics.json").is_file():
        continue  # not finished
    parts = dict(p.split("~", 1) for p in run.parts if "~" in p)
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    scores = [r["score"] for r in log if r.get("kind") == "eval"]
    steps = [r for r in log if r.get("kind") == "train" and "att_masked" in r]
    share = statistics.mean(r["att_masked"] / r["att"] for r in steps) if steps else float("nan")
    groups.setdefault((int(parts["layers"]), int(parts["epochs"]), parts["recipe"]), []).append(
        (100 * max(scores), share, sum(r["step_time_s"] for r in log if r.get("kind") == "train")))
print(f"{'layers':>6} {'epochs':>6}  {'recipe':<16} {'n':>2}  {'best dev':>12}  {'att@masked':>10}  {'train s':>7}")
for (layers, epochs, recipe), runs in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1], kv[0][2])):
    best = [r[0] for r in runs]
    spread = statistics.stdev(best) if len(best) > 1 else float("nan")
    print(f"{layers:>6} {epochs:>6}  {recipe:<16} {len(runs):>2}  {statistics.mean(best):5.1f} ± {spread:4.1f}  "
          f"{statistics.mean(r[1] for r in runs):>10.3f}  {statistics.mean(r[2] for r in runs):>7.0f}")
