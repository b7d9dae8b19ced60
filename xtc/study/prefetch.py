"""Offline compute nodes: fetch once on the login node (``xtc prefetch``), then no job touches the network.

``xtc prefetch --configfile config/studies/xtc-main.yaml`` (``make prefetch STUDY=xtc-main``) lists every source
the study's jobs open -- the pretrained model of the teachers fine-tuned here or the given fine-tuned teachers,
the masked LM and the GloVe file of augmentation, GLUE from the hub when no ``glue_data/`` folder is set -- and
fetches each into the *store* (default ``prefetched/`` in the repository, which must be on the file system the
compute nodes share), at the revision the study pins (``revisions:``; ``main`` otherwise), printing sizes as it
goes. ``<store>/prefetch.json`` records what was fetched and the commit each revision resolved to; every run's
``manifest.json`` copies it (``xtc.study.rundir.manifest``).

The workflow reads the store whenever it exists (``$XTC_STORE``, ``--config store=DIR``, or ``prefetched/``):
hub ids resolve to their copies (``xtc.sources.resolve_model``), GLUE to the datasets cache inside it. With
``--config offline=true`` it also switches the hub off for itself and every job (``HF_HUB_OFFLINE=1``), and the
onstart check (``xtc.study.jobs.Jobs.check_sources``) stops the workflow before its first submission when a source is
not local. ``$XTC_HUB_MIRROR`` (a folder laid out as ``<owner>/<name>/`` and ``glove/<file>``) replaces the hub
for the fetch itself: the offline test serves tiny stand-ins that way.

Torch-free: the fetch uses ``huggingface_hub``, ``datasets`` and ``urllib`` only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from xtc.atomic import atomic_dir, atomic_write_json
from xtc.sources import HUB_DATASET, STORE_ENV, is_hub_id, resolve_file, resolve_model
from xtc.study.grid import data_dir, teacher_given
from xtc.tasks import TASKS

log = logging.getLogger(__name__)
DEFAULT_STORE = "prefetched"  # relative to the repository (the workflow's working directory)
MIRROR_ENV = "XTC_HUB_MIRROR"
RECORD = "prefetch.json"
# Model files a job reads (no PyTorch .bin / TF / Flax / ONNX duplicates of the safetensors weights).
MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model"]
# GloVe files TinyBERT's augmentation uses: file name -> (download URL, size of the download in bytes).
GLOVE = {"glove.840B.300d.txt": ("https://nlp.stanford.edu/data/glove.840B.300d.zip", 2_176_768_927),
         "glove.6B.300d.txt": ("https://nlp.stanford.edu/data/glove.6B.zip", 862_182_613)}
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass(frozen=True)
class Source:
    """One thing a study's jobs open: a hub model, a GLUE task of the hub dataset, or a GloVe file."""

    kind: str  # "model", "glue" or "glove"
    name: str  # hub id, GLUE config, or GloVe file name
    revision: str = "main"
    key: str = ""  # the study key that names it

    @property
    def label(self) -> str:
        return {"model": self.name, "glue": f"{HUB_DATASET} {self.name}", "glove": f"GloVe {self.name}"}[self.kind]


# ---------------------------------------------------------------------------------------------- the workflow's side
def store_of(value: object, base: str | os.PathLike[str]) -> Path | None:
    """The store the workflow reads: ``--config store=DIR``, else ``$XTC_STORE``, else ``<base>/prefetched``
    when it exists (None: no store)."""
    if value:
        return (Path(base) / str(value)).resolve()
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV]).expanduser().resolve()
    default = Path(base) / DEFAULT_STORE
    return default.resolve() if default.is_dir() else None


def is_on(value: object) -> bool:
    return value is True or str(value).strip().lower() in ("1", "true", "yes", "on")


def use_store(store: Path) -> None:
    """This process and the jobs it starts read models, GLUE and GloVe from ``store``."""
    os.environ[STORE_ENV] = str(store)
    os.environ["HF_DATASETS_CACHE"] = str(store / "datasets")


def offline_environment() -> None:
    """Switch the Hugging Face hub off for this process and every job it starts."""
    for var in OFFLINE_VARS:
        os.environ[var] = "1"


# ---------------------------------------------------------------------------------------------- what a study opens
def study_sources(jobs) -> list[Source]:
    """Every source the jobs of ``jobs`` (an ``xtc.study.jobs.Jobs``) open, each once, with its pinned revision."""
    settings, out = jobs.settings, {}
    revisions = settings.get("revisions") or {}

    def add(kind: str, name: str, key: str) -> None:
        if kind == "model" and (Path(name).expanduser().exists() or not is_hub_id(name)):
            return  # a local directory: nothing to fetch
        out.setdefault((kind, name), Source(kind, name, str(revisions.get(name, "main")), key))

    given = {task: teacher_given(settings, task) for task in jobs.tasks}
    if not all(given.values()):
        add("model", settings["teacher"]["model"], "teacher.model")
    for task, name in given.items():
        if name:
            add("model", name, "teacher.finetuned")
    if jobs.augmented():
        add("model", settings["augment"]["mlm"], "augment.mlm")
        glove = settings["augment"]["glove"]
        if glove and not Path(glove).expanduser().exists():
            out[("glove", Path(glove).name)] = Source("glove", Path(glove).name, "", "augment.glove")
    if not data_dir(settings):
        for task in jobs.tasks:
            out[("glue", TASKS[task].hub_config)] = Source("glue", TASKS[task].hub_config,
                                                          str(revisions.get(HUB_DATASET, "main")), "data.glue_dir")
    return list(out.values())


def missing(sources: Iterable[Source], store: Path | None) -> list[Source]:
    """The sources that are neither local nor in ``store``."""
    lost = []
    for source in sources:
        if source.kind == "model":
            found = Path(resolve_model(source.name)).exists()
        elif source.kind == "glove":
            found = Path(resolve_file(source.name)).is_file()
        else:
            found = store is not None and (store / "datasets" / HUB_DATASET.replace("/", "___") / source.name).is_dir()
        if not found:
            lost.append(source)
    return lost


# ---------------------------------------------------------------------------------------------- fetching
def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _fetch_model(source: Source, store: Path, mirror: Path | None) -> dict:
    dest = store / "models" / source.name
    commit = source.revision
    with atomic_dir(dest) as tmp:
        if mirror is not None:
            shutil.copytree(mirror / source.name, tmp, dirs_exist_ok=True)
        else:
            from huggingface_hub import HfApi, snapshot_download

            commit = HfApi().model_info(source.name, revision=source.revision).sha
            snapshot_download(source.name, revision=commit, local_dir=tmp, allow_patterns=MODEL_FILES)
            shutil.rmtree(tmp / ".cache", ignore_errors=True)
    return {"path": str(dest), "commit": commit}


def _fetch_glue(source: Source, store: Path, mirror: Path | None) -> dict:
    if mirror is not None:
        raise ValueError(f"{MIRROR_ENV} serves models and GloVe only; give the study a local glue_data/ folder "
                         f"(data.glue_dir) to fetch nothing for GLUE")
    import datasets

    os.environ["HF_DATASETS_CACHE"] = str(store / "datasets")
    loaded = datasets.load_dataset(HUB_DATASET, source.name, revision=source.revision,
                                   cache_dir=str(store / "datasets"))
    return {"path": str(store / "datasets"), "commit": source.revision,
            "rows": {split: len(part) for split, part in loaded.items()}}


def _fetch_glove(source: Source, store: Path, mirror: Path | None) -> dict:
    dest = store / "glove" / source.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if mirror is not None:
        shutil.copy2(mirror / "glove" / source.name, dest)
        return {"path": str(dest)}
    if source.name not in GLOVE:
        raise ValueError(f"augment.glove = {source.name!r} is neither a local file nor a known GloVe download "
                         f"({', '.join(GLOVE)}); give a path, or one of those names")
    url, size = GLOVE[source.name]
    archive = dest.parent / Path(url).name
    if not archive.is_file() or archive.stat().st_size != size:
        log.info("downloading %s (%.2f GB)", url, size / 1e9)
        urllib.request.urlretrieve(url, archive.with_suffix(".part"))
        archive.with_suffix(".part").rename(archive)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extract(source.name, dest.parent)
    archive.unlink()
    return {"path": str(dest), "url": url}


FETCH: dict[str, Callable[[Source, Path, Path | None], dict]] = {
    "model": _fetch_model, "glue": _fetch_glue, "glove": _fetch_glove}


def prefetch(jobs, store: Path, mirror: Path | None = None, report: Callable[[str], None] = print) -> dict:
    """Fetch every source of the study into ``store`` (what is there already is kept) and write the record."""
    store.mkdir(parents=True, exist_ok=True)
    use_store(store)
    record_path = store / RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    sources = study_sources(jobs)
    for n, source in enumerate(sources, start=1):
        held = record.get(source.label)
        if held and held.get("revision") == source.revision and not missing([source], store):
            report(f"[{n}/{len(sources)}] {source.label}: already in {store} ({held['bytes'] / 1e6:.1f} MB)")
            continue
        entry = FETCH[source.kind](source, store, mirror)
        held = (store / "datasets" / HUB_DATASET.replace("/", "___") / source.name if source.kind == "glue"
                else Path(entry["path"]))
        entry |= {"kind": source.kind, "revision": source.revision, "key": source.key,
                  "bytes": _bytes(held) if held.exists() else 0}
        record[source.label] = entry
        atomic_write_json(record_path, record)
        report(f"[{n}/{len(sources)}] {source.label} @ {entry.get('commit') or source.revision}: "
               f"{entry['bytes'] / 1e6:.1f} MB -> {entry['path']}")
    lost = missing(sources, store)
    total = sum(_bytes(store / part) for part in ("models", "datasets", "glove") if (store / part).exists())
    report(f"store {store}: {len(sources)} sources of {', '.join(s['study'] for s in jobs.studies)}, "
           f"{total / 1e9:.2f} GB; {'complete' if not lost else 'MISSING: ' + ', '.join(s.label for s in lost)}")
    return {"store": str(store), "sources": [s.label for s in sources], "bytes": total,
            "missing": [s.label for s in lost]}
