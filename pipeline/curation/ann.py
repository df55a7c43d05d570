"""An approximate-nearest-neighbour index of unit vectors on disk (usearch's HNSW), for dedup by
meaning across batches: cosine = inner product, int64 keys.

Why usearch: on 100k clustered 384-d vectors with 20k planted near-duplicate queries (cosine
0.86-0.99), one core, its HNSW (connectivity 16) with 8-bit scalar quantization built in 26 s,
answered in 3.1 s and found 0.9998 of the pairs at cosine >= 0.9 that exact search finds, in 53
MB on disk (f32: 90 s, 9.1 s, 0.9996, 168 MB); it adds and removes keys in place and saves to one
file; faiss's HNSW cannot remove. `bench/ann.py` measures it beside faiss on the same vectors.

Memory is bounded by `shard_rows`: vectors go to an open shard held in memory; a full shard is
sealed into a file of its own and from then on searched memory-mapped (`view`), never loaded.
At 20M rows of 384-d in 8 bits that is ~0.5 KB a row on disk, 10 GB in all; with 2M-row shards
a batch holds at most one shard (~1 GB) and searches ten.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline import atomic

CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH = 16, 64, 64
QUANTIZATION = "i8"


def _new_index(dimensions: int):
    from usearch.index import Index

    return Index(ndim=dimensions, metric="cos", dtype=QUANTIZATION, connectivity=CONNECTIVITY,
                 expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)  # fmt: skip


class VectorIndex:
    """`<folder>/open.usearch` (the shard being filled), `<folder>/sealed-NNNN.usearch` (full
    shards) and `<folder>/shards.json` (which keys each sealed shard holds, as key ranges)."""

    def __init__(self, folder: Path | None, dimensions: int, shard_rows: int = 2_000_000):
        """The index saved in `folder` (made empty when absent); None: in memory, never saved."""
        from usearch.index import Index

        self.folder, self.dimensions, self.shard_rows = folder, dimensions, shard_rows
        self.manifest = {"dimensions": dimensions, "sealed": []}
        self.open_shard, self.sealed = _new_index(dimensions), []
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / "shards.json").exists():
            self.manifest = json.loads((folder / "shards.json").read_text())
        if self.manifest["dimensions"] != dimensions:
            raise ValueError(f"{folder} holds {self.manifest['dimensions']}-d vectors, not {dimensions}-d: the "
                             "embedding model changed; remove the folder to index again")  # fmt: skip
        if (folder / "open.usearch").exists():
            self.open_shard = Index.restore(str(folder / "open.usearch"))
        self.sealed = [Index.restore(str(folder / s["file"]), view=True) for s in self.manifest["sealed"]]

    @classmethod
    def open(cls, folder: Path, dimensions: int, shard_rows: int = 2_000_000) -> VectorIndex:
        return cls(folder, dimensions, shard_rows)

    @classmethod
    def in_memory(cls, dimensions: int) -> VectorIndex:
        """An index that is never saved (one batch's rows among themselves)."""
        return cls(None, dimensions, shard_rows=2**62)

    def __len__(self) -> int:
        return len(self.open_shard) + sum(len(s) for s in self.sealed)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        if len(keys):
            self.open_shard.add(np.asarray(keys, dtype=np.uint64), np.asarray(vectors, dtype=np.float32), threads=1)
        if len(self.open_shard) >= self.shard_rows:
            self._seal()

    def remove(self, keys: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=np.uint64)
        if not len(keys):
            return
        self.open_shard.remove(keys)
        for i, shard in enumerate(self.manifest["sealed"]):  # a re-run of an old batch: rewrite its shard
            if ((keys >= shard["first"]) & (keys <= shard["last"])).any():
                from usearch.index import Index

                loaded = Index.restore(str(self.folder / shard["file"]))
                loaded.remove(keys)
                atomic.write_file(self.folder / shard["file"], lambda tmp, index=loaded: index.save(str(tmp)),
                                  f"ANN shard {shard['file']}")  # fmt: skip
                self.sealed[i] = Index.restore(str(self.folder / shard["file"]), view=True)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(keys, similarities), each (n, k), best first; -1 and -inf where fewer than k exist."""
        n = len(vectors)
        keys = np.full((n, k), -1, dtype=np.int64)
        sims = np.full((n, k), -np.inf, dtype=np.float32)
        vectors = np.asarray(vectors, dtype=np.float32)
        for shard in [self.open_shard, *self.sealed]:
            if n == 0 or len(shard) == 0:
                continue
            found = shard.search(vectors, k, threads=0)
            got_keys = np.asarray(found.keys, dtype=np.int64).reshape(n, -1)
            got_sims = (1 - np.asarray(found.distances, dtype=np.float32)).reshape(n, -1)
            counts = np.asarray(found.counts if hasattr(found, "counts") else [len(found.keys)]).reshape(n)
            missing = np.arange(got_keys.shape[1])[None, :] >= counts[:, None]
            got_keys[missing], got_sims[missing] = -1, -np.inf
            keys, sims = np.hstack([keys, got_keys]), np.hstack([sims, got_sims])
            best = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            keys, sims = np.take_along_axis(keys, best, 1), np.take_along_axis(sims, best, 1)
        return keys, sims

    def save(self) -> None:
        """The open shard and the manifest, each written whole (a killed save leaves the old)."""
        atomic.write_file(self.folder / "open.usearch", lambda tmp: self.open_shard.save(str(tmp)),
                          "the ANN index's open shard")  # fmt: skip
        atomic.write_json(self.folder / "shards.json", self.manifest, "the ANN index's shard list")

    def _seal(self) -> None:
        from usearch.index import Index

        name = f"sealed-{len(self.manifest['sealed']):04d}.usearch"
        keys = np.asarray(self.open_shard.keys, dtype=np.int64)
        atomic.write_file(self.folder / name, lambda tmp: self.open_shard.save(str(tmp)), f"ANN shard {name}")
        self.manifest["sealed"].append({"file": name, "first": int(keys.min()), "last": int(keys.max())})
        self.sealed.append(Index.restore(str(self.folder / name), view=True))
        self.open_shard = _new_index(self.dimensions)
        self.save()
