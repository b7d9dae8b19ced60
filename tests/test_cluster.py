"""The workflow's cluster guards (xtc/study/cluster.py) that need no SLURM: reading the profile's default resources."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from snakemake.exceptions import WorkflowError

from xtc.study import cluster

PROFILE_ACCOUNT = "__import__('os').environ.get('SBATCH_ACCOUNT', '')"  # as slurm/config.v8+.yaml writes it


def resource_value(key: str, expr: str) -> str:
    """What the pre-flight check reads for ``key`` from a workflow whose default resources set it to ``expr``."""
    defaults = SimpleNamespace(args=[f"{key}={expr}"])
    return cluster._default_resource(SimpleNamespace(resource_settings=SimpleNamespace(default_resources=defaults)),
                                     key)


@pytest.mark.parametrize("expr, env, value", [
    (PROFILE_ACCOUNT, {}, ""),
    (PROFILE_ACCOUNT, {"SBATCH_ACCOUNT": "lab"}, "lab"),
    ("__import__('os').environ.get('SBATCH_PARTITION', 'gpu')", {}, "gpu"),
    ("os.environ.get('SBATCH_ACCOUNT')", {"SBATCH_ACCOUNT": "lab"}, "lab"),
    ("os.environ['SBATCH_ACCOUNT']", {"SBATCH_ACCOUNT": "lab"}, "lab"),
    ("'myaccount'", {}, "myaccount"),
    ("myaccount", {}, "myaccount"),
    ("None", {}, ""),
    ("4000", {}, "4000"),
    ("$MY_ACCOUNT", {"MY_ACCOUNT": "lab"}, "lab"),
    ("'CHANGE_ME_account'", {}, "CHANGE_ME_account"),
    ("my-account", {}, "my-account"),
    ("gpu,cpu", {}, "gpu,cpu"),
])
def test_profile_values_are_read_without_evaluating_them(monkeypatch, expr, env, value):
    for name in ("SBATCH_ACCOUNT", "SBATCH_PARTITION", "MY_ACCOUNT"):
        monkeypatch.delenv(name, raising=False)
    for name, text in env.items():
        monkeypatch.setenv(name, text)
    assert resource_value("slurm_account", expr) == value


@pytest.mark.parametrize("expr, env", [
    ("__import__('os').system('touch X')", {}),
    ("open('X', 'w').write('x')", {}),
    ("$EVIL", {"EVIL": "__import__('pathlib').Path('X').touch()"}),  # code arriving through an environment variable
    ("os.environ.get(open('X', 'w').name)", {}),
])
def test_profile_code_is_refused_never_run(tmp_path, monkeypatch, expr, env):
    monkeypatch.chdir(tmp_path)
    for name, text in env.items():
        monkeypatch.setenv(name, text)
    with pytest.raises(WorkflowError) as error:
        resource_value("slurm_account", expr)
    assert "is an expression xtc does not evaluate; write a quoted value" in str(error.value)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "X").exists()
