"""``xtc plan``: what a study will cost before its first job (torch-free).

The plan builds the workflow's job graph from the same ``xtc.study.jobs.Jobs`` the rules call (one node per Snakemake
job, so its counts equal a dry run's), gives every job a duration (``xtc.study.cost``: calibrated rates, or the
documented default), memory and disk, and schedules the graph as soon as possible with unlimited GPUs: the
length of that schedule is the critical path, its widest moment the most GPUs usable at once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from xtc.sources import resolve_model
from xtc.study.cost import (
    CALIBRATION,
    GIB,
    SMALL_JOB_S,
    JobCosts,
    Shape,
    params,
    run_dir_bytes,
    safetensors_bytes,
    tensors,
)
from xtc.study.grid import (data_dir, is_quantized, per_task, run_dir, run_wildcards, step1_row, teacher_given,
                            teacher_record_dir)
from xtc.study.jobs import Jobs
from xtc.tasks import TASKS

# Download sizes that do not follow from a shape (bytes; estimates): GLUE's parquet files per task on the hub,
# and TinyBERT's GloVe (glove.840B.300d.zip, 2.03 GB; 5.65 GB unzipped).
GLUE_BYTES = {"cola": 0.4e6, "sst2": 3.2e6, "mrpc": 1.0e6, "stsb": 0.8e6, "qqp": 41e6, "mnli": 52e6, "qnli": 17e6,
              "rte": 1.3e6, "wnli": 0.1e6}
GLOVE_BYTES = 2_030_000_000


@dataclass
class PlanJob:
    name: str
    rule: str
    seconds: float
    gpus: int = 0
    threads: int = 1
    deps: list[str] = field(default_factory=list)
    disk: int = 0
    memory: int | None = None  # peak GPU memory (bytes) of a GPU job
    kind: str = ""
    folder: str = ""  # the run directory a training job writes


class Plan:
    """The jobs of one invocation's studies with their costs; ``summary()`` is what ``xtc plan`` prints."""

    def __init__(self, jobs: Jobs, gpu_name: str | None = None, calibration: Path = CALIBRATION):
        self.jobs, self.settings = jobs, jobs.settings
        self.costs = JobCosts(jobs.settings, jobs.device(), gpu_name, calibration)
        self.shape, self.teacher_layers = self.costs.shape, self.costs.teacher_layers
        self.gpu, self.threads = self.costs.gpu, self.costs.threads
        self.nodes: dict[str, PlanJob] = {}
        self._build()

    # ------------------------------------------------------------------------------------------------ the graph
    def _add(self, job: PlanJob) -> None:
        self.nodes[job.name] = job

    def _build(self) -> None:
        jobs, s = self.jobs, self.settings
        L = self.teacher_layers
        teacher_node = {}
        for task in jobs.tasks:
            labels = TASKS[task].num_labels
            if teacher_given(s, task):
                name = f"evaluate_given_teacher {task}"
                self._add(PlanJob(name, "evaluate_given_teacher",
                                  self.costs.evaluate(task, L), self.gpu, self.threads,
                                  disk=4_000, kind=f"eval:{L}:fp"))
            else:
                cost = self.costs.train(task, L, "fp", per_task(s["teacher"]["epochs"], task), 0, teacher=True)
                name = f"finetune_teacher {task}"
                self._add(PlanJob(name, "finetune_teacher", cost["seconds"], self.gpu,
                                  s["resources"]["teacher_threads"] or self.threads,
                                  disk=run_dir_bytes(self.shape, L, labels, cost["steps"], cost["evals"], None),
                                  memory=cost["memory"], kind=cost["kind"], folder=teacher_record_dir(s, task)))
            teacher_node[task] = name
        for path in jobs.augmented():
            task = path.split("task~")[1].split("/")[0]
            self._add(PlanJob(f"augment {task}", "augment", self.costs.augment(task), self.gpu, self.threads,
                              disk=self.costs.augmented_bytes(task), kind="augment"))
        for path, row in jobs.runs.items():
            task, layers, wbits = row["task"], row["layers"], row["wbits"]
            cost = self.costs.train(task, layers, wbits, row["epochs"], row["da"], teacher=False)
            deps = [teacher_node[task]]
            parent = step1_row(s, row)
            if parent is not None:
                deps.append(f"distill {run_dir(parent)}")
            if row["da"]:
                deps.append(f"augment {task}")
            bits = int(wbits) if wbits != "fp" else None
            self._add(PlanJob(f"distill {path}", "distill", cost["seconds"], self.gpu, self.threads, deps,
                              run_dir_bytes(self.shape, layers, TASKS[task].num_labels, cost["steps"], cost["evals"],
                                            bits), cost["memory"], cost["kind"], path))
            if is_quantized(row):
                self._add(PlanJob(f"export {path}", "export", self.costs.export(), 0, 1, [f"distill {path}"]))
                self._add(PlanJob(f"evaluate_packed {path}", "evaluate_packed",
                                  self.costs.evaluate(task, layers, packed=True), 0,
                                  self.threads, [f"export {path}"], 4_000))
        local = SMALL_JOB_S["local"]
        for study in jobs.studies:
            name = study["study"]
            metrics = [self._producer(p) for p in jobs.study_metrics(name)]
            self._add(PlanJob(f"runs_table {name}", "runs_table", local, deps=metrics))
            sizes = [f"export {p.removesuffix('/packed/size.json')}" for p in jobs.study_sizes(name)]
            self._add(PlanJob(f"aggregate {name}", f"aggregate_{name.replace('-', '_')}", local,
                              deps=[f"runs_table {name}", *metrics, *sizes]))
            serving = jobs.serving_plan(name)
            if serving["students"]:
                deps = [self._producer(p) for p in jobs.serving_inputs(name)]
                models = [(L, False) for _ in serving["teachers"]]
                models += [(run_wildcards(s["packed"])["layers"].split("_")[0], True) for s in serving["students"]]
                self._add(PlanJob(f"serving_report {name}", "serving_report",
                                  self.costs.serving_report([(int(n), packed) for n, packed in models]), 0,
                                  self.threads, deps))
        produced = [n for n in self.nodes if n.split()[0] in ("finetune_teacher", "evaluate_given_teacher", "distill",
                                                                "export", "evaluate_packed")]
        self._add(PlanJob("index_trained", "index_trained", local, deps=produced))
        self._add(PlanJob("all", "all", 0.0, deps=list(self.nodes)))

    def _producer(self, path: str) -> str:
        """The node that writes ``path`` (a metrics.json of a run or teacher, or a packed file)."""
        folder = path.split("/packed/")[0] if "/packed/" in path else path.rsplit("/", 1)[0]
        if "/packed/" in path:
            return f"export {folder}"
        if folder.startswith("results/runs/"):
            return f"distill {folder}"
        task = folder.split("task~")[1].split("/")[0]
        return next(n for n in (f"finetune_teacher {task}", f"evaluate_given_teacher {task}") if n in self.nodes)

    # ------------------------------------------------------------------------------------------------ schedule
    def schedule(self) -> tuple[float, int, list[str]]:
        """Critical path (seconds), the most GPUs busy at once, and the chain of jobs on the critical path."""
        finish, start, via = {}, {}, {}
        for name in self._order():
            job = self.nodes[name]
            start[name] = max((finish[d] for d in job.deps), default=0.0)
            via[name] = max(job.deps, key=lambda d: finish[d], default=None)
            finish[name] = start[name] + job.seconds
        events = sorted([(start[n], self.nodes[n].gpus) for n in self.nodes]
                        + [(finish[n], -self.nodes[n].gpus) for n in self.nodes], key=lambda e: (e[0], e[1]))
        busy = peak = 0
        for _, delta in events:
            busy += delta
            peak = max(peak, busy)
        chain, node = [], max(finish, key=finish.get)
        while node is not None:
            chain.append(node)
            node = via[node]
        return max(finish.values()), peak, chain[::-1]

    def _order(self) -> list[str]:
        done, order = set(), []
        for name in self.nodes:
            stack = [(name, False)]
            while stack:
                node, expanded = stack.pop()
                if node in done:
                    continue
                if expanded:
                    done.add(node)
                    order.append(node)
                    continue
                stack.append((node, True))
                stack += [(d, False) for d in self.nodes[node].deps if d not in done]
        return order

    # ------------------------------------------------------------------------------------------------ summary
    def downloads(self) -> dict[str, int]:
        """What the study's jobs fetch (bytes; model files from their shape, GLUE and GloVe estimated)."""
        s, out = self.settings, {}
        for task in self.jobs.tasks:
            name = teacher_given(s, task)
            if name and not Path(resolve_model(name)).exists():
                out[name] = safetensors_bytes(tensors(self.shape, self.teacher_layers, TASKS[task].num_labels))
        model = s["teacher"]["model"]
        if any(n.startswith("finetune_teacher") for n in self.nodes) and not Path(resolve_model(model)).exists():
            out[model] = safetensors_bytes(tensors(self.shape, self.teacher_layers, 2))
        if self.jobs.augmented():
            mlm = s["augment"]["mlm"]
            if not Path(resolve_model(mlm)).exists():
                out[mlm] = 4 * (params(Shape(), 12, 0) + 768 * 768 + 2 * 768 + 30522)
            glove = s["augment"]["glove"]
            if glove and not Path(glove).exists():
                out[f"GloVe {glove}"] = GLOVE_BYTES
        if not data_dir(s):
            for task in self.jobs.tasks:
                out[f"GLUE {task} (nyu-mll/glue)"] = int(GLUE_BYTES[task])
        return out

    def summary(self) -> dict:
        critical, peak_gpus, chain = self.schedule()
        rules: dict[str, dict] = {}
        for job in self.nodes.values():
            r = rules.setdefault(job.rule, {"jobs": 0, "gpu_hours": 0.0, "cpu_hours": 0.0, "disk_bytes": 0,
                                             "peak_gpu_memory_bytes": None})
            r["jobs"] += 1
            hours = job.seconds / 3600
            r["gpu_hours" if job.gpus else "cpu_hours"] += hours * (job.gpus or job.threads)
            r["disk_bytes"] += job.disk
            if job.gpus and job.memory:
                r["peak_gpu_memory_bytes"] = max(r["peak_gpu_memory_bytes"] or 0, job.memory)
        runs = [j for j in self.nodes.values() if j.rule in ("distill", "finetune_teacher")]
        disk = sum(j.disk for j in self.nodes.values())
        kinds = {}
        for job in runs:
            if job.memory:
                kinds[job.kind] = max(kinds.get(job.kind, 0), job.memory)
        return {
            "studies": [st["study"] for st in self.jobs.studies], "jobs": len(self.nodes), "rules": rules,
            "gpu_hours": sum(r["gpu_hours"] for r in rules.values()),
            "cpu_hours": sum(r["cpu_hours"] for r in rules.values()),
            "critical_path_hours": critical / 3600, "critical_path": chain, "max_gpus_at_once": peak_gpus,
            "disk_bytes": disk, "run_dir_bytes": {j.folder: j.disk for j in runs},
            "dvc_cache_bytes": disk,  # dvc.yaml caches results/teachers, results/runs and results/data
            "downloads": self.downloads(), "peak_gpu_memory_bytes": kinds,
            "device": self.costs.rates.device, "rates": self.costs.rates.note,
            "shape": asdict(self.shape),
        }


def format_summary(plan: dict) -> str:
    """The plan as text: jobs and hours per rule, then the totals."""
    lines = [f"plan of {', '.join(plan['studies'])}: {plan['jobs']} jobs; rates: {plan['rates']}",
             f"model: {plan['shape']['source']}", "",
             f"{'rule':<28}{'jobs':>6}{'GPU-h':>10}{'CPU-h':>10}{'disk GB':>10}{'peak GPU GiB':>14}"]
    for rule, r in plan["rules"].items():
        memory = f"{r['peak_gpu_memory_bytes'] / GIB:.1f}" if r["peak_gpu_memory_bytes"] else ""
        lines.append(f"{rule:<28}{r['jobs']:>6}{r['gpu_hours']:>10.1f}{r['cpu_hours']:>10.1f}"
                     f"{r['disk_bytes'] / 1e9:>10.1f}{memory:>14}")
    downloads, chain = plan["downloads"], plan["critical_path"][:-1]
    totals = (f"GPU-hours {plan['gpu_hours']:.1f}, CPU-hours {plan['cpu_hours']:.1f}; critical path "
              f"{plan['critical_path_hours']:.1f} h ({len(chain)} jobs: {' -> '.join(j.split(' ')[0] for j in chain)}); "
              f"at most {plan['max_gpus_at_once']} GPUs at once")
    fetched = ", ".join(f"{k} {v / 1e6:.0f} MB" for k, v in downloads.items()) or "none"
    disk = (f"disk: {plan['disk_bytes'] / 1e9:.1f} GB of run directories and data, plus "
            f"{plan['dvc_cache_bytes'] / 1e9:.1f} GB in DVC's cache; downloads {sum(downloads.values()) / 1e9:.2f} GB "
            f"({fetched})")
    lines += ["", totals, disk]
    return "\n".join(lines)


def counts(plan: Plan) -> Counter:
    return Counter(job.rule for job in plan.nodes.values())


def load(configfile: str, gpu_name: str | None = None, calibration: Path = CALIBRATION) -> Plan:
    """The plan of a study file (or of ``config/studies/all.yaml``), validated as the workflow validates it."""
    import yaml
    from snakemake.utils import validate

    from xtc.study.grid import load_studies

    raw = yaml.safe_load(Path(configfile).read_text())
    return Plan(Jobs(load_studies(raw, configfile, validate=validate)), gpu_name, calibration)

