"""The pins stay consistent: pyproject's dependencies, constraints.txt and environment.yml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _constraints() -> dict[str, str]:
    return _pins((ROOT / "constraints.txt").read_text().splitlines())


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_torch_is_pinned_without_local_tag():
    assert _constraints()["torch"] == "2.13.0"
    pin_lines = [ln for ln in (ROOT / "constraints.txt").read_text().splitlines() if not ln.startswith("#")]
    assert not any("+" in ln for ln in pin_lines), "no local version tags (+cpu): they do not exist on PyPI"
    assert "torch>=2.13" in _pyproject()["project"]["dependencies"]  # a range for users; the pin for our installs


def test_the_core_is_the_serving_set_and_the_rest_are_extras():
    project = _pyproject()["project"]
    core = {canonicalize_name(Requirement(spec).name) for spec in project["dependencies"]}
    assert core == {"torch", "transformers", "safetensors", "numpy"}
    extras = project["optional-dependencies"]
    assert {"train", "report", "workflow", "serve"} <= set(extras)
    assert "xtc[train,report]" in extras["workflow"]  # a workflow's jobs train and report
    makefile = (ROOT / "Makefile").read_text()
    assert "-e '.[workflow,test,peer,serve]'" in makefile  # make test installs everything but serve-torchao


def test_every_declared_dependency_is_pinned_and_satisfied_by_its_pin():
    project = _pyproject()["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += extra
    constraints = _constraints()
    for spec in declared:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        if name == "xtc":  # an extra naming other extras
            continue
        assert name in constraints, f"{name} is declared in pyproject.toml but not pinned in constraints.txt"
        assert req.specifier.contains(constraints[name], prereleases=True), f"{name}=={constraints[name]} vs {spec}"


def test_environment_yml_lists_the_same_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_pins = _pins(pip_section)
    constraints = _constraints()
    for name, version in env_pins.items():
        assert constraints.get(name) == version, f"environment.yml pins {name}=={version}, constraints.txt {constraints.get(name)}"
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    for spec in project["dependencies"] + extras["train"] + extras["report"] + extras["workflow"] + extras["test"]:
        if canonicalize_name(Requirement(spec).name) == "xtc":
            continue
        assert canonicalize_name(Requirement(spec).name) in env_pins, f"{spec} missing from environment.yml"
    # deepspeed must be built with --no-build-isolation, which a conda pip section cannot say: a documented step.
    peer = Requirement(project["optional-dependencies"]["peer"][0])
    text = (ROOT / "environment.yml").read_text()
    assert re.search(rf"DS_BUILD_OPS=0 pip install --no-build-isolation .*{peer.name}=={constraints['deepspeed']}", text)


def test_python_requirement():
    assert _pyproject()["project"]["requires-python"] == ">=3.11"
