"""Snakemake adapter of the index_trained rule (through `script:`, never torch): results/{runs,teachers,data}/
index.tsv, the index of everything trained, one path per line under a `path` header (DVC's `train` stage)."""

from pathlib import Path


def write_index(paths: list[str], path: Path) -> None:
    path.write_text("".join(f"{item}\n" for item in ["path", *paths]))


def main(snakemake) -> None:
    for name in ("runs", "teachers", "data"):
        write_index(snakemake.params[name], Path(snakemake.output[name]))


if __name__ == "__main__" and "snakemake" in globals():
    main(snakemake)  # noqa: F821 (injected by Snakemake's script directive)
