"""The run directory: its layout, the one "run dir -> model dir" rule, its manifest and what training writes there.

A run directory (``--out``) holds: ``model/`` (best on dev), ``last/``, ``metrics.json`` (best and last, the
selection rule, the eval history), ``config.json`` (the resolved recipe and the run's inputs), ``manifest.json``
(versions, git commit, device, wall time), ``train_log.jsonl`` and ``state/train_state.pt`` (to resume a killed
run). Every file is written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from xtc.atomic import atomic_write_json, atomic_write_text
from xtc.sources import prefetched_record

log = logging.getLogger(__name__)

# "replace": a run directory made by another recipe is discarded and trained again instead of refused. The workflow
# sets it for its jobs (workflow/rules/common.smk): Snakemake reruns a job whose parameters changed (e.g. a study's
# teacher.epochs), and the run directory it owns then holds the old recipe's state. Unset, xtc refuses (never mixes
# runs); the same recipe always resumes.
RECIPE_CHANGE_ENV = "XTC_RECIPE_CHANGE"


def replace_changed_recipes() -> None:
    """Let this process's child jobs replace a run directory of another recipe (``--config recipe_change=replace``)."""
    os.environ[RECIPE_CHANGE_ENV] = "replace"


# Where a run's sources were read from, not what it trained: the local GLUE folder and the directory a model name
# resolved to (a venv's package, a prefetched store). A run whose sources only moved -- another GLUE_DIR, a new venv,
# a cluster's other mount -- is the same run: it resumes, and the study's clash check passes it. Hub or local GLUE
# still differ (the hub's copy may order examples otherwise, and the seeded subset with them): ``data_dir`` keeps
# whether it is set.
LOCATION_KEYS = (("recipe", "data", "data_dir"), ("inputs", "model_dir"))


def without_locations(run_config: dict[str, Any]) -> dict[str, Any]:
    """``run_config`` (``config.json``'s content) with ``LOCATION_KEYS`` reduced to what decides whether two runs are
    the same: ``data_dir`` to "local" or None (the hub), ``model_dir`` dropped."""
    out = json.loads(json.dumps(run_config))
    for *parents, key in LOCATION_KEYS:
        node = out
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict) and key in node:
            if key == "data_dir":
                node[key] = None if node[key] is None else "local"
            else:
                del node[key]
    return out


def recipe_clashes(commands: dict[str, list[str]], recipe_of) -> dict[str, str]:
    """The run directories whose ``config.json`` holds another recipe than their job's command would train:
    dir -> its first differences; ``recipe_of(argv)`` is the CLI's own argv -> recipe dict. Locations
    (``LOCATION_KEYS``) are not part of a recipe."""
    clashes = {}
    for path, argv in commands.items():
        try:
            stored = json.loads((Path(path) / "config.json").read_text())["recipe"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # no run there yet (or not an xtc run: the job itself refuses it)
        wanted = json.loads(json.dumps(recipe_of(argv)))
        diffs = _diff(without_locations({"recipe": stored})["recipe"], without_locations({"recipe": wanted})["recipe"])
        if diffs:
            clashes[path] = "; ".join(diffs[:3])
    return clashes


def refuse_recipe_clashes(commands: dict[str, list[str]], recipe_of) -> None:
    """One line naming the first run directory of another recipe (``recipe_clashes``), and the fix."""
    clashes = recipe_clashes(commands, recipe_of)
    if clashes:
        path, diffs = next(iter(clashes.items()))
        more = f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""
        raise ValueError(f"{path} ({diffs}): this run directory holds another recipe than its job would train{more}; "
                         "the study changed, or another study shares this run key with a different setting: restore "
                         "the setting, or retrain such runs with --config recipe_change=replace")


MODEL, LAST, STATE_DIR = "model", "last", "state"


def _git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def manifest(device: str, started: float, argv: Sequence[str], device_info: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    """Versions, commit, command and wall time of a run; ``device_info`` (``xtc.device``) says where it ran, and
    the sources it read at pinned revisions are listed when they came from a prefetched store (``xtc.study.prefetch``)."""
    versions = {}
    for package in ("xtc", "torch", "transformers", "datasets", "safetensors", "numpy", "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "command": ["xtc", *argv], "versions": versions, "python": platform.python_version(),
        "platform": platform.platform(), "git_commit": _git_commit(), "device": device,
        **({"device_info": device_info} if device_info is not None else {}),
        **({"prefetched": prefetched} if (prefetched := prefetched_record()) else {}),
        "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(time.time() - started, 2),
    }


def prepare_out_dir(out: Path, run_config: dict[str, Any], overwrite: bool) -> str:
    """``'new'``, ``'resume'`` or ``'done'``; refuses a directory made by a different recipe (never mixes runs).

    The caller holds the run's lock (``xtc.study.runlock``, the ``.owner`` file inside ``out``): a directory that is
    overwritten or replaced is emptied around that file, never deleted, so no second trainer can lock a fresh one
    and train alongside.
    """
    config_path = out / "config.json"
    if overwrite and out.exists():
        _check_is_run_dir(out)
        _empty(out)
    if config_path.is_file():
        previous = json.loads(config_path.read_text())
        if previous != run_config and without_locations(previous) == without_locations(run_config):
            log.info("%s: the same recipe, its sources read from elsewhere now (%s); config.json keeps where the run "
                     "began", out, "; ".join(_diff(previous, run_config)[:3]))
        elif previous != run_config:
            diffs = _diff(without_locations(previous), without_locations(run_config))
            if os.environ.get(RECIPE_CHANGE_ENV) != "replace":
                raise ValueError(
                    f"{out} was made by a different recipe ({'; '.join(diffs[:5])}); use another --out, "
                    "or --overwrite to discard it"
                )
            log.warning("%s was made by a different recipe (%s): discarding it and training anew (%s=replace)",
                        out, "; ".join(diffs[:5]), RECIPE_CHANGE_ENV)
            _empty(out)
            atomic_write_json(config_path, run_config)
            return "new"
        if (out / "metrics.json").is_file():
            return "done"
        return "resume" if (out / STATE_DIR / "train_state.pt").is_file() else "new"
    if out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise ValueError(f"{out} exists and is not an xtc run directory; choose an empty or new --out")
    atomic_write_json(config_path, run_config)
    return "new"


def _check_is_run_dir(out: Path) -> None:
    """``--overwrite`` discards a run directory (its ``config.json`` holds a recipe) or an empty one, nothing else."""
    try:
        config = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        config = None
    if isinstance(config, dict) and {"recipe", "inputs"} <= set(config):
        return
    others = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    if others:
        raise ValueError(f"--overwrite discards only an xtc run directory, and {out} is none (it holds "
                         f"{', '.join(others[:3])}{', ...' if len(others) > 3 else ''} but no run config.json); "
                         "choose the run directory itself or a new --out")


def _empty(out: Path) -> None:
    """Delete everything in ``out`` but the run lock (``xtc.study.runlock.OWNER``), which its holder keeps."""
    import shutil

    from xtc.study.runlock import OWNER

    for path in out.iterdir():
        if path.name == OWNER:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} -> {b!r}"]


class RunWriter:
    """The training loop's hooks: best/last model dirs, the JSONL log, and the resumable state."""

    def __init__(self, out: Path, tokenizer, resumed_step: int | None) -> None:
        self.out, self.tokenizer = out, tokenizer
        self.log_path = out / "train_log.jsonl"
        if resumed_step is None:  # a fresh start (e.g. after a damaged state was deleted): no records of before
            self.log_path.unlink(missing_ok=True)
        elif self.log_path.is_file():  # drop records the killed run made after its state
            keep = [ln for ln in self.log_path.read_text().splitlines()
                    if ln.strip() and json.loads(ln)["global_step"] <= resumed_step]

            atomic_write_text(self.log_path, "".join(f"{ln}\n" for ln in keep))

    def on_log(self, record: dict[str, Any]) -> None:
        with self.log_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def on_best(self, model, record: dict[str, Any]) -> None:
        from xtc.checkpoint import save_model_dir

        save_model_dir(model, self.out / MODEL, self.tokenizer)

    def on_checkpoint(self, state: dict[str, Any]) -> None:
        from xtc.checkpoint import save_train_state

        save_train_state(state, self.out / STATE_DIR / "train_state.pt")


@dataclass(frozen=True)
class RunPaths:
    """Where a training command writes and how: the run directory, whether to discard it, the device, the argv."""

    out: Path
    overwrite: bool = False
    device: str | None = None
    argv: tuple[str, ...] = ()


def model_dir(path: str | Path) -> Path:
    """The one "run dir -> model dir" rule: a run directory resolves to its best ``model/``; anything else as is."""
    path = Path(path)
    return path / MODEL if (path / MODEL / "config.json").is_file() else path


def run_config_of(path: str | Path) -> dict[str, Any] | None:
    """The ``config.json`` (recipe + inputs) of the run a model dir (``model/`` or ``last/``) belongs to, if any."""
    path = model_dir(path)
    config = path.parent / "config.json"
    return json.loads(config.read_text()) if path.name in (MODEL, LAST) and config.is_file() else None


def model_config(path: Path, key: str) -> dict[str, Any]:
    """A model dir's ``config.json`` as a dict (cheap: no weights), or a one-line error naming ``key``."""
    config = path / "config.json"
    if not config.is_file():
        raise ValueError(f"{key} {path} is not a model directory (no config.json); pass the output dir of "
                         "xtc finetune/distill (or its model/ dir)")
    return json.loads(config.read_text())


