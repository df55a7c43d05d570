"""An approximate-nearest-neighbour index of unit vectors on disk (usearch's HNSW), for dedup by
meaning across batches: cosine = inner product, int64 keys.

Why usearch: of the three measured (`bench/ann.py`), it alone adds batches in place, removes keys
and searches a saved file memory-mapped; faiss's HNSW cannot remove keys, hnswlib only marks them
deleted and loads a whole file into memory. On 100k clustered 384-d vectors with 20k planted
near-duplicate queries (cosine 0.86-0.99), one core: 8-bit built in 26 s, searched in 3.1 s and
found 0.9998 of the pairs at cosine >= 0.9 that exact search finds; f32 90 s, 9.1 s, 0.9996.

Vectors are stored as bfloat16: a similarity it reports is within 1e-4 of the exact cosine, so a
threshold decides as exact search would; 8-bit scalars (half the size, 3x faster) are off by up to
0.004, and about 1 pair in 50 near the threshold would land on the wrong side. Connectivity 16,
expansion 128 on adding and on searching: usearch's defaults, which kept recall at the
threshold above 0.999 in those measurements.

Memory is bounded by `shard_rows`: rows go to an open shard held in memory; a full shard is
sealed into a file of its own and from then on searched memory-mapped (`view`), never loaded
(removing keys from one loads it, rewrites it, and maps it again). At 20M rows of 384-d: ~1 KB a
row (768 B of bf16 and the graph), ~20 GB on disk in 20 shards, ~1 GB in memory for the open one;
a batch searches every shard, so its search time grows with the number of sealed shards.

`index.json` is the commit point: it names the open shard's and each sealed shard's file, and
those files never change once written (a new version gets a new name). `save()` writes the new
files, then `index.json` in one rename, then removes files it no longer names, so a killed
process leaves the last saved index whole. Writers must hold a lock (the caller's
`atomic.exclusive`).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import numpy as np

from trainers import atomic

CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH = 16, 128, 128
SCALARS = "bf16"
SHARD_ROWS = 1_000_000
SEARCH_THREADS = 0  # all cores
MANIFEST = "index.json"
_FILE = re.compile(r"(open|sealed)-[0-9a-f]{12}\.usearch")  # the shard files this index writes


def _new_index(dimensions: int):
    from usearch.index import Index

    return Index(ndim=dimensions, metric="cos", dtype=SCALARS, connectivity=CONNECTIVITY,
                 expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)  # fmt: skip


def _restore(path: Path, view: bool):
    from usearch.index import Index

    index = Index.restore(str(path), view=view)
    index.expansion_search = EXPANSION_SEARCH
    return index


def _stale(path: Path) -> bool:
    """A temporary file of a shard whose writer is gone (killed mid-write)."""
    name, _, writer = path.name.partition(atomic.TMP_MARK)
    if not writer or not name.startswith(".") or not _FILE.fullmatch(name[1:]):
        return False
    pid = int(writer.split("-")[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _keys(keys) -> np.ndarray:
    keys = np.asarray(keys).reshape(-1)
    if keys.dtype.kind == "i" and keys.size and keys.min() < 0:
        raise ValueError("keys must be non-negative (-1 means 'no neighbour' in search results)")
    return keys.astype(np.uint64)


class VectorIndex:
    """`<folder>/index.json` names `open-<id>.usearch` (the shard being filled, loaded) and
    `sealed-<id>.usearch` files (full shards, memory-mapped) with each one's key range."""

    def __init__(self, folder: Path | None, dimensions: int, shard_rows: int = SHARD_ROWS):
        """The index saved in `folder` (empty when there is none); None: in memory, never saved."""
        self.folder, self.dimensions, self.shard_rows = folder, dimensions, shard_rows
        self.open_shard, self.open_file, self.changed = _new_index(dimensions), None, False
        self.sealed: list[dict] = []  # {"file", "first", "last", "rows"}
        self.views: list = []  # the sealed shards, memory-mapped, in the same order
        if folder is None:
            return
        if not (folder / MANIFEST).exists():
            return
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest["dimensions"] != dimensions:
            raise ValueError(f"{folder} holds {manifest['dimensions']}-d vectors, not {dimensions}-d: the "
                             "embedding model changed; remove the folder to index again")  # fmt: skip
        if manifest["open"]:
            self.open_file = manifest["open"]
            self.open_shard = _restore(folder / self.open_file, view=False)
        self.sealed = manifest["sealed"]
        self.views = [_restore(folder / s["file"], view=True) for s in self.sealed]

    @classmethod
    def open(cls, folder: Path, dimensions: int, shard_rows: int = SHARD_ROWS) -> VectorIndex:
        return cls(Path(folder), dimensions, shard_rows)

    @classmethod
    def in_memory(cls, dimensions: int) -> VectorIndex:
        """An index that is never saved (one batch's rows among themselves)."""
        return cls(None, dimensions, shard_rows=2**62)

    def __len__(self) -> int:
        return len(self.open_shard) + sum(len(v) for v in self.views)

    def add(self, keys, vectors: np.ndarray) -> None:
        """Add rows (L2-normalized float32); a key already present is replaced."""
        keys = _keys(keys)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(keys), self.dimensions)
        self.remove(keys)
        first = 0
        while first < len(keys):
            room = self.shard_rows - len(self.open_shard) if self.folder is not None else len(keys)
            part = slice(first, first + max(room, 1))
            self.open_shard.add(keys[part], vectors[part], threads=1)  # one thread: a reproducible graph
            self.changed, first = True, part.stop
            if len(self.open_shard) >= self.shard_rows:
                self._seal()

    def remove(self, keys) -> int:
        """Remove rows by key (absent keys are ignored); how many were removed."""
        keys = _keys(keys)
        if not len(keys):
            return 0
        removed = 0
        if len(self.open_shard):
            present = keys[self.open_shard.contains(keys)]
            if len(present):
                removed += int(self.open_shard.remove(present))
                self.changed = True
        for i, shard in enumerate(self.sealed):
            near = keys[(keys >= shard["first"]) & (keys <= shard["last"])]
            present = near[self.views[i].contains(near)] if len(near) else near
            if not len(present):
                continue
            loaded = _restore(self.folder / shard["file"], view=False)  # a view cannot change
            removed += int(loaded.remove(present))
            self.sealed[i] = self._write_shard(loaded, "sealed") if len(loaded) else None
            self.views[i] = _restore(self.folder / self.sealed[i]["file"], view=True) if len(loaded) else None
        self.views = [v for v in self.views if v is not None]
        self.sealed = [s for s in self.sealed if s is not None]
        return removed

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(keys int64, similarities float32), each (n, k), most similar first; -1 and -inf where
        fewer than k rows exist."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dimensions)
        n = len(vectors)
        keys = np.full((n, k), -1, dtype=np.int64)
        sims = np.full((n, k), -np.inf, dtype=np.float32)
        for shard in [self.open_shard, *self.views]:
            if n == 0 or len(shard) == 0:
                continue
            found = shard.search(vectors, k, threads=SEARCH_THREADS)
            got_keys = np.asarray(found.keys).astype(np.int64).reshape(n, -1)
            got_sims = (1 - np.asarray(found.distances, dtype=np.float32)).reshape(n, -1)
            counts = np.asarray(found.counts if hasattr(found, "counts") else [len(found.keys)]).reshape(n, 1)
            missing = np.arange(got_keys.shape[1])[None, :] >= counts
            got_keys[missing], got_sims[missing] = -1, -np.inf
            keys, sims = np.hstack([keys, got_keys]), np.hstack([sims, got_sims])
            best = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            keys, sims = np.take_along_axis(keys, best, 1), np.take_along_axis(sims, best, 1)
        return keys, sims

    def save(self) -> None:
        """Write what changed since the last save, whole: a killed save leaves the last one."""
        if self.folder is None:
            raise ValueError("an in-memory index is never saved")
        if self.changed or self.open_file is None:
            self.open_file = self._write_shard(self.open_shard, "open")["file"] if len(self.open_shard) else None
            self.changed = False
        manifest = {"dimensions": self.dimensions, "open": self.open_file, "sealed": self.sealed}
        atomic.write_json(self.folder / MANIFEST, manifest, "the ANN index's list of shards")
        named = {self.open_file, *(s["file"] for s in self.sealed)}
        for path in self.folder.iterdir():  # versions no longer named, and what killed saves left
            if (_FILE.fullmatch(path.name) and path.name not in named) or _stale(path):
                path.unlink(missing_ok=True)

    def _write_shard(self, index, kind: str) -> dict:
        """A new file of its own for `index` (named in index.json only by the next save)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{kind}-{uuid.uuid4().hex[:12]}.usearch"
        atomic.write_file(self.folder / name, lambda tmp: index.save(str(tmp)), f"ANN shard {name}")
        keys = np.asarray(index.keys, dtype=np.int64)
        return {"file": name, "first": int(keys.min()), "last": int(keys.max()), "rows": len(index)}

    def _seal(self) -> None:
        if self.folder is None:
            return
        self.sealed.append(self._write_shard(self.open_shard, "sealed"))
        self.views.append(_restore(self.folder / self.sealed[-1]["file"], view=True))
        self.open_shard, self.changed = _new_index(self.dimensions), True


def exact_search(keys, vectors: np.ndarray, queries: np.ndarray, k: int,
                 block: int = 4096) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """What `VectorIndex.search` approximates, by brute force in blocks of queries (the
    reference of tests and benchmarks; memory block x rows)."""
    keys, vectors = np.asarray(keys, dtype=np.int64), np.asarray(vectors, dtype=np.float32)
    queries = np.asarray(queries, dtype=np.float32).reshape(-1, vectors.shape[1])
    found_keys = np.full((len(queries), k), -1, dtype=np.int64)
    found_sims = np.full((len(queries), k), -np.inf, dtype=np.float32)
    take = min(k, len(keys))
    for first in range(0, len(queries), block):
        sims = queries[first : first + block] @ vectors.T
        best = np.argsort(-sims, axis=1, kind="stable")[:, :take]
        found_keys[first : first + block, :take] = keys[best]
        found_sims[first : first + block, :take] = np.take_along_axis(sims, best, 1)
    return found_keys, found_sims
