"""The long-budget KD runs (config/findings/kd-long.yaml) from their training logs: per KD variant, the dev accuracy
after each epoch of the longest runs (mean ± sample std over seeds), and what the one-stage loss is made of at the
start and the end. Run from the repository root after the study:

    python docs/findings-cpu/kd_curves.py [EPOCHS] [--plot PNG]      # default: 27, no figure
"""

import json
import statistics
import sys
from pathlib import Path

args = [a for a in sys.argv[1:] if not a.startswith("--")]
epochs = int(args[0]) if args else 27
plot = sys.argv[sys.argv.index("--plot") + 1] if "--plot" in sys.argv else None
root = Path("results/runs/task~sst2/layers~6/wbits~1/abits~8")
curves: dict[str, list[list[float]]] = {}  # kd -> per seed, dev accuracy after each epoch
parts: dict[str, list[dict[str, float]]] = {}  # kd -> per seed, loss terms over the first and last epoch
for run in sorted(root.glob(f"kd~*/epochs~{epochs}/lr~0.0001/da~0/seed~*")):
    if not (run / "metrics.json").is_file():
        continue  # not finished
    kd = run.parts[-5].split("~", 1)[1]
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    train = [r for r in log if r.get("kind") == "train"]
    # evaluations at each epoch's end, by global step (two-stage numbers its second stage's epochs from 1 again)
    by_epoch = {round(r["global_step"] * epochs / len(train)): 100 * r["score"] for r in log if r.get("kind") == "eval"}
    curves.setdefault(kd, []).append([by_epoch[e] for e in range(1, epochs + 1) if e in by_epoch])
    per_epoch = len(train) // epochs
    terms = {}
    for name, rows in (("first", train[:per_epoch]), ("last", train[-per_epoch:])):
        for term in ("pred", "rep", "att", "loss"):
            values = [r[term] for r in rows if term in r]
            if values:
                terms[f"{term}@{name}"] = statistics.mean(values)
    parts.setdefault(kd, []).append(terms)

points = sorted({1, 3, 9, epochs // 2, epochs} & set(range(1, epochs + 1)))
print(f"dev accuracy (%) after epoch e of the {epochs}-epoch runs, mean ± std over seeds; best = best epoch's")
print(f"{'kd':<14} {'n':>2}  " + "  ".join(f"{'e=' + str(e):>11}" for e in points) + f"  {'best':>11}")
for kd, runs in sorted(curves.items()):
    cells = []
    for e in points:
        at = [r[e - 1] for r in runs if len(r) >= e]
        cells.append(f"{statistics.mean(at):5.1f} ± {statistics.stdev(at) if len(at) > 1 else float('nan'):3.1f}")
    best = [max(r) for r in runs]
    cells.append(f"{statistics.mean(best):5.1f} ± {statistics.stdev(best) if len(best) > 1 else float('nan'):3.1f}")
    print(f"{kd:<14} {len(runs):>2}  " + "  ".join(f"{c:>11}" for c in cells))
print("\nloss terms, mean over the first and the last epoch's steps and over seeds")
for kd, runs in sorted(parts.items()):
    keys = sorted({k for r in runs for k in r})
    print(f"{kd:<14} " + ", ".join(f"{k} {statistics.mean(r[k] for r in runs if k in r):.3f}" for k in keys))

if plot:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 3.0), layout="constrained")
    for kd, runs in sorted(curves.items()):
        length = min(len(r) for r in runs)
        mean = [statistics.mean(r[i] for r in runs) for i in range(length)]
        std = [statistics.stdev(r[i] for r in runs) if len(runs) > 1 else 0.0 for i in range(length)]
        xs = range(1, length + 1)
        ax.plot(xs, mean, marker="o", markersize=2.5, linewidth=1.0, label=kd)
        ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.15)
    ax.set_xlabel(f"epoch of the {epochs}-epoch run")
    ax.set_ylabel("SST-2 dev accuracy (%)")
    ax.grid(True, linewidth=0.3, alpha=0.5)
    ax.legend(frameon=False, fontsize=7)
    fig.savefig(plot, dpi=150)
    print(f"\nwrote {plot}")
