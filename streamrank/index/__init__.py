"""The FAISS item index: build, search, serialise (docs/index.md).

    index = build_index(embeddings, ids)            # kind="auto": flat below 50k items, HNSW above
    scores, ids = index.search(queries, k=100, exclude=[seen_ids])
    files = index_files(index)                      # for the model registry; index_from_files is the inverse
"""

from streamrank.index.faiss_index import ItemIndex, build_index
from streamrank.index.meta import IndexBuildError, IndexLoadError, IndexMeta, ItemIndexError
from streamrank.index.storage import index_files, index_from_files, load_index, save_index

__all__ = [
    "IndexBuildError",
    "IndexLoadError",
    "IndexMeta",
    "ItemIndex",
    "ItemIndexError",
    "build_index",
    "index_files",
    "index_from_files",
    "load_index",
    "save_index",
]
