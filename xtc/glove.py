"""GloVe word vectors for TinyBERT augmentation of multi-wordpiece words (nearest neighbours by cosine)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class GloVe:
    """Unit-normalised word vectors: cosine similarity is a dot product, as in TinyBERT's ``emb_norm``."""

    words: tuple[str, ...]
    vectors: np.ndarray  # (V, D) float32, rows of norm 1 (or 0 for an all-zero vector)
    index: Mapping[str, int]
    _cache: dict[tuple[str, int], tuple[str, ...]] = field(default_factory=dict, repr=False)

    def neighbours(self, word: str, k: int) -> list[str]:
        """The ``k`` most cosine-similar words, best first, never ``word`` itself; [] for an unknown word."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k={k!r} must be an integer >= 1 (the number of neighbours; TinyBERT uses 15)")
        row = self.index.get(word)
        if row is None:
            return []
        if (word, k) not in self._cache:
            sims = self.vectors @ self.vectors[row]  # (V,)
            sims[row] = -np.inf
            k_eff = min(k, len(self.words) - 1)
            if k_eff < 1:
                return []
            top = np.argpartition(-sims, k_eff - 1)[:k_eff]
            top = top[np.lexsort((top, -sims[top]))]  # best first; ties by file order, so results are stable
            self._cache[(word, k)] = tuple(self.words[i] for i in top)
        return list(self._cache[(word, k)])


def load_glove(path: str | os.PathLike[str], max_words: int = 200_000) -> GloVe:
    """Read the first ``max_words`` rows of a GloVe text file (``word v1 v2 ...``; a word2vec header is skipped).

    GloVe files list words by frequency, so the first rows hold the useful vocabulary; 200k x 300 float32 is
    about 240 MB (TinyBERT reads 100k). Words containing spaces (840B files) are kept whole; repeated words keep
    their first vector.
    """
    path = Path(path)
    if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1:
        raise ValueError(f"max_words={max_words!r} must be an integer >= 1 (rows of the GloVe file to read)")
    if not path.is_file():
        raise ValueError(
            f"GloVe file {str(path)!r} not found; download e.g. glove.6B.300d.txt from "
            f"https://nlp.stanford.edu/projects/glove/ and pass its path, or pass no GloVe file to keep "
            f"multi-wordpiece words unchanged"
        )
    words: list[str] = []
    rows: list[np.ndarray] = []
    index: dict[str, int] = {}
    dim: int | None = None
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line_num, line in enumerate(handle, start=1):
            parts = line.rstrip("\n").rstrip("\r").split(" ")
            if line_num == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec-style "count dim" header
            if not line.strip():
                continue
            dim = len(parts) - 1 if dim is None else dim
            if dim < 1 or len(parts) < dim + 1:
                raise ValueError(f"{path}, line {line_num}: expected a word and {dim or 'some'} numbers, found "
                                 f"{len(parts)} fields; is this a GloVe text file (word v1 v2 ...)?")
            word = " ".join(parts[:-dim])
            try:
                vector = np.asarray(parts[-dim:], dtype=np.float32)
            except ValueError:
                raise ValueError(f"{path}, line {line_num}: the vector of {word!r} is not {dim} numbers") from None
            if word not in index:
                index[word] = len(words)
                words.append(word)
                rows.append(vector)
            if len(words) >= max_words:
                break
    if not words:
        raise ValueError(f"GloVe file {path} holds no vectors; expected lines 'word v1 v2 ...'")
    vectors = np.stack(rows)  # (V, D)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # (V, 1)
    vectors /= np.where(norms > 0, norms, 1.0)
    log.info("loaded %d GloVe vectors of dimension %d from %s", len(words), dim, path)
    return GloVe(tuple(words), vectors, MappingProxyType(index))
