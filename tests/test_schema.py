"""The study schema (workflow/schemas/config.schema.yaml) against the code it stands for. JSON schema cannot import
Python, so each fact it repeats -- the GLUE task names, the KD variants, the bit widths, the recipe defaults a study
passes to `xtc` -- is pinned here to its one definition in the package."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import get_args

import pytest
import yaml

from xtc.config import DataConfig, Padding, TrainConfig
from xtc.study import grid
from xtc.tasks import TASKS

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text())
DEFS = SCHEMA["definitions"]


def _default(config_class, field: str):
    return next(f.default for f in dataclasses.fields(config_class) if f.name == field)


def test_task_names_are_the_task_table_s_in_all_three_places():
    assert DEFS["task"]["enum"] == list(TASKS)
    for definition in ("per_task_int", "per_task_list"):
        per_task = next(a for a in DEFS[definition]["anyOf"] if a.get("type") == "object")
        assert list(per_task["properties"]) == ["default", *TASKS], definition


def test_kd_variants_and_bit_widths_are_the_grid_s():
    assert DEFS["kd"]["enum"] == list(grid.KD_GRID)
    grid_axes = SCHEMA["properties"]["grid"]["properties"]
    assert [v for v in grid_axes["wbits"]["items"]["enum"]] == list(grid.WBITS)
    assert [v for v in grid_axes["abits"]["items"]["enum"]] == list(grid.ABITS)


@pytest.mark.parametrize(("section", "key", "config_class", "field"), [
    ("data", "max_seq_length", DataConfig, "max_seq_length"),
    ("data", "max_train_examples", DataConfig, "max_train_examples"),
    ("data", "max_eval_examples", DataConfig, "max_eval_examples"),
    ("data", "padding", DataConfig, "padding"),
    ("data", "batch_size", TrainConfig, "batch_size"),
    ("data", "group_by_length", TrainConfig, "group_by_length"),
    ("train", "eval_every", TrainConfig, "eval_every_steps"),
    ("train", "warmup_ratio", TrainConfig, "warmup_ratio"),
])
def test_recipe_defaults_the_schema_repeats_equal_the_recipe_s(section, key, config_class, field):
    assert SCHEMA["properties"][section]["properties"][key]["default"] == _default(config_class, field)


def test_padding_choices_are_the_recipe_s():
    assert SCHEMA["properties"]["data"]["properties"]["padding"]["enum"] == list(get_args(Padding))
