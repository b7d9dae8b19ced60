"""The tiny study's working directory, built offline for the workflow tests (tests/test_workflow.py,
test_slurm.py, test_dvc.py) and by hand:

    python .test/make_inputs.py DIR     # copies the workflow into DIR and writes DIR/.test/{glue,pretrained,mlm}

Inputs: synthetic RTE TSVs in the glue_data/ layout, a 4-layer random "pretrained" BERT with its tokenizer, and a
tiny masked LM for augmentation. .test/config.yaml names them relative to the working directory, so the
workflow runs in a copy (`cd DIR && snakemake --cores 2 --configfile .test/config.yaml`) and never touches the
repository's results/.
"""

import os
import shutil
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOW_FILES = ("Snakefile", "workflow", "config", "slurm", ".test", "dvc.yaml")
def copy_workflow(dest: Path, extra: tuple[str, ...] = ()) -> Path:
    """Copy what Snakemake needs into ``dest`` (plus ``extra`` paths)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", ".snakemake", "results", "glue", "pretrained", "mlm", "tok")
    for name in (*WORKFLOW_FILES, *extra):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore, dirs_exist_ok=True)
        elif source.exists():
            shutil.copy2(source, dest / name)
    return dest


def tiny_config(dest: Path, name: str = "config.yaml", **grid) -> Path:
    """Write ``.test/config.yaml`` with some grid axes replaced into ``dest/.test/name``."""
    config = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    config["grid"].update(grid)
    path = Path(dest) / ".test" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def make_inputs(workdir: Path, tasks: tuple[str, ...] = ("rte",), train_rows: int = 32, dev_rows: int = 16) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from textdata import tiny_tokenizer, write_glue_tsv
    from transformers import BertForMaskedLM
    from transformers.utils import logging as hf_logging

    from xtc.models import random_model, tiny_bert_config

    hf_logging.disable_progress_bar()
    base = Path(workdir) / ".test"
    for task in tasks:
        write_glue_tsv(base / "glue", task, "train", train_rows, seed=3)
        write_glue_tsv(base / "glue", task, "validation", dev_rows, seed=3)
    tokenizer = tiny_tokenizer(base / "tok")
    config = tiny_bert_config(vocab_size=len(tokenizer))
    random_model(config, seed=0).save_pretrained(base / "pretrained")
    tokenizer.save_pretrained(base / "pretrained")
    # `xtc augment` reads sentences up to 512 tokens, so the MLM needs BERT's 512 positions
    BertForMaskedLM(tiny_bert_config(vocab_size=len(tokenizer), max_position_embeddings=512)).save_pretrained(
        base / "mlm"
    )
    tokenizer.save_pretrained(base / "mlm")
    return base


def workflow_env(*extra_path: Path) -> dict[str, str]:
    """Offline, one thread per job, the venv's `xtc` and `snakemake` first on PATH, no stray $GLUE_DIR."""
    env = {k: v for k, v in os.environ.items() if k != "GLUE_DIR" and not k.startswith("SLURM_")}
    path = [str(p) for p in extra_path] + [str(Path(sys.executable).parent), env.get("PATH", "")]
    env.update(PATH=os.pathsep.join(path), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    return env


if __name__ == "__main__":
    target = Path(sys.argv[1])
    copy_workflow(target)
    make_inputs(target)
