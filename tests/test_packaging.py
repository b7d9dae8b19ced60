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
    assert "torch==2.13.0" in _pyproject()["project"]["dependencies"]


def test_every_declared_dependency_is_pinned_and_satisfied_by_its_pin():
    project = _pyproject()["project"]
    declared = list(project["dependencies"])
    for extra in ("test", "peer"):
        declared += project["optional-dependencies"][extra]
    constraints = _constraints()
    for spec in declared:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
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
    for spec in project["dependencies"] + project["optional-dependencies"]["test"]:
        assert canonicalize_name(Requirement(spec).name) in env_pins, f"{spec} missing from environment.yml"
    # deepspeed must be built with --no-build-isolation, which a conda pip section cannot say: a documented step.
    peer = Requirement(project["optional-dependencies"]["peer"][0])
    text = (ROOT / "environment.yml").read_text()
    assert re.search(rf"DS_BUILD_OPS=0 pip install --no-build-isolation .*{peer.name}=={constraints['deepspeed']}", text)


def test_python_requirement():
    assert _pyproject()["project"]["requires-python"] == ">=3.11"
