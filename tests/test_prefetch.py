"""xtc.study.prefetch and the paper studies' shared sections: what a study's jobs open, at which revision, and the
one GloVe switch. The fetch itself, offline, is tests/test_offline.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from xtc.study import grid, plan, prefetch
from xtc.tasks import TASKS

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for var in ("GLUE_DIR", "XTC_STORE"):
        monkeypatch.delenv(var, raising=False)


def test_the_sources_of_xtc_main_at_their_pinned_revisions(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    sources = prefetch.study_sources(plan.load("config/studies/xtc-main.yaml").jobs)
    models = {s.name: s.revision for s in sources if s.kind == "model"}
    assert models == {**{f"yoshitomo-matsubara/bert-base-uncased-{t}": "main"
                         for t in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")},
                      "bert-base-uncased": "86b5e0934494bd15c9632b12f734a8a67f723594"}
    glue = {s.name: s.revision for s in sources if s.kind == "glue"}
    assert set(glue) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"}
    assert set(glue.values()) == {"bcdcba79d07bc864c1c254ccfcedcce55bcc9a8c"}
    assert not [s for s in sources if s.kind == "glove"]  # GloVe is off in the paper studies
    for task in TASKS.values():
        (tmp_path / task.tsv.directory).mkdir()
    monkeypatch.setenv("GLUE_DIR", str(tmp_path))  # a local glue_data/ folder: nothing to fetch for GLUE
    assert not [s for s in prefetch.study_sources(plan.load("config/studies/layer-reduction.yaml").jobs)
                if s.kind == "glue"]


def test_one_switch_turns_glove_on_for_every_paper_study(tmp_path, monkeypatch):
    shutil.copytree(REPO / "config", tmp_path / "config")
    shared = tmp_path / "config" / "studies" / "shared" / "paper.yaml"
    shared.write_text(shared.read_text().replace("  glove: null\n", "  glove: glove.840B.300d.txt\n"))
    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load(Path("config/studies/all.yaml").read_text())
    studies = grid.load_studies(raw, "config/studies/all.yaml", validate=validate)
    assert len(studies) == 5 and {s["augment"]["glove"] for s in studies} == {"glove.840B.300d.txt"}
    sources = prefetch.study_sources(plan.load("config/studies/all.yaml").jobs)
    assert [s.name for s in sources if s.kind == "glove"] == ["glove.840B.300d.txt"]
    assert prefetch.GLOVE["glove.840B.300d.txt"][1] == 2_176_768_927  # the size the docs state (2.18 GB)


def test_a_study_s_own_section_wins_key_by_key_and_a_missing_shared_file_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    raw = yaml.safe_load(Path("config/studies/xtc-main.yaml").read_text())
    raw["resources"] = {"threads": 2}
    (study,) = grid.load_studies(raw, "s.yaml", validate=validate)
    assert study["resources"]["threads"] == 2 and study["resources"]["gpu"] == 1  # the rest from the shared file
    with pytest.raises(grid.StudyError, match=r"^s\.yaml: shared = nowhere\.yaml does not exist; fix the path"):
        grid.load_studies({**raw, "shared": "nowhere.yaml"}, "s.yaml", validate=validate)
