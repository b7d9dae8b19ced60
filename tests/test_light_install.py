"""A serving user installs only the core (pyproject's ``dependencies``): ``xtc predict`` runs there.

The environment is a fresh venv without system site packages whose site-packages links exactly the distributions
that the core requirements resolve to -- walked through this environment's installed metadata, extras left out --
so nothing of the train, workflow or report extras (datasets, scipy, pandas, matplotlib, seaborn, snakemake, dvc)
can be imported there. Linking instead of installing keeps it to seconds and offline; the requirement walk is the
one pip does for ``pip install xtc`` with the pinned versions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.test_packaging import _pyproject

REPO = Path(__file__).resolve().parents[1]
EXTRA_MODULES = ("datasets", "scipy", "pandas", "matplotlib", "seaborn", "snakemake", "dvc", "jsonschema", "sklearn",
                 "onnxruntime", "deepspeed")


def core_distributions() -> set[str]:
    """The installed distributions that pyproject's core requirements pull in, transitively, without extras."""
    todo = [Requirement(spec) for spec in _pyproject()["project"]["dependencies"]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        todo += [Requirement(r) for r in metadata.distribution(name).requires or ()]
    return seen


def _link(name: str, site: Path) -> None:
    """Symlink every top-level entry (packages, modules, dist-info) that distribution ``name`` installed."""
    dist = metadata.distribution(name)
    root = Path(dist.locate_file(""))
    for top in {Path(f).parts[0] for f in dist.files or () if not str(f).startswith("..")}:
        target = site / top
        if not target.exists() and (root / top).exists():
            target.symlink_to(root / top)


@pytest.fixture(scope="module")
def serving_env(tmp_path_factory) -> tuple[Path, dict]:
    home = tmp_path_factory.mktemp("serving-venv")
    venv.create(home, with_pip=False, system_site_packages=False, symlinks=True)
    python = home / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    for name in core_distributions():
        _link(name, site)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", XTC_ENGINE_COMPILE="0")  # xtc from this checkout
    return python, env


def test_the_serving_env_holds_the_core_and_none_of_the_extras(serving_env):
    python, env = serving_env
    probe = ("import importlib.util as u, sys; import torch, transformers, safetensors, numpy, xtc; "
             f"print([m for m in {EXTRA_MODULES!r} if u.find_spec(m)]); print(sys.prefix)")
    out = subprocess.run([python, "-c", probe], env=env, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    found, prefix = out.stdout.splitlines()[-2:]
    assert found == "[]" and prefix == str(python.parent.parent)


def test_xtc_predict_runs_with_only_the_serving_set(serving_env, tmp_path):
    from tests.textdata import tiny_tokenizer, write_glue_tsv
    from xtc.config import QuantConfig
    from xtc.packed.export import export_packed
    from xtc.models import random_model, tiny_bert_config
    from xtc.quant import quantize_

    tokenizer = tiny_tokenizer(tmp_path / "tok")
    model = random_model(tiny_bert_config(vocab_size=len(tokenizer)), seed=0).eval()
    quantize_(model, QuantConfig(weight_bits=1))
    export_packed(model, tmp_path / "packed" / "model.xtc.safetensors")
    tokenizer.save_pretrained(tmp_path / "packed")
    python, env = serving_env
    packed = str(tmp_path / "packed" / "model.xtc.safetensors")
    out = subprocess.run([python, "-m", "xtc", "predict", "--model", packed, "--scores"], input="the cat sat\na dog\n",
                         env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [[float(p) for p in line.split("\t")] for line in out.stdout.splitlines()]
    assert len(rows) == 2 and all(len(r) == 2 and abs(sum(r) - 1) < 1e-5 for r in rows)
    # a command of an extra says which extra, in one line
    write_glue_tsv(tmp_path / "glue", "sst2", "validation", 4, seed=2)
    out = subprocess.run([python, "-m", "xtc", "evaluate", "--model", packed, "--task", "sst2", "--data-dir",
                          str(tmp_path / "glue"), "--max-seq-length", "32"], env=env, capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 2 and last == ("xtc evaluate: error: scipy is not installed; this command needs the "
                                            "'train' extra: pip install 'xtc[train]'")
