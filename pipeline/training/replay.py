"""The replay source for continued pre-training: documents like the ones the starting checkpoint
learned from, mixed into every step so that it does not forget them.

A Parquet file or folder is read with polars; `python-docs` is the Python documentation that
ships with every CPython (an offline corpus for CPU runs); the built-in seed sources `wiki-vital`
and `python-stdlib` give what generation may use of them (never their held-out evaluation sets,
pipeline/generation/sources.py); anything else goes to
`datasets.load_dataset` (a hub name, a local dataset folder, json/csv files), streamed so only
what is used is read.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.generation.sources import PYTHON_STDLIB, WIKI_VITAL, open_seeds

PYTHON_DOCS = "python-docs"


def python_docs(document_chars: int = 2000) -> list[str]:
    """The language reference's topics from `pydoc_data` (79 topics, ~465k characters of English
    prose and examples), in paragraphs gathered into documents of about `document_chars`."""
    from pydoc_data.topics import topics

    documents = []
    for name in sorted(topics):
        current = ""
        for paragraph in topics[name].split("\n\n"):
            if current and len(current) + len(paragraph) > document_chars:
                documents.append(current.strip())
                current = ""
            current += paragraph + "\n\n"
        if current.strip():
            documents.append(current.strip())
    return documents


def heldout_split(documents: list[str], fraction: float) -> tuple[list[str], list[str]]:
    """(train, held out): every k-th document held out (k = 1 / fraction), spread over the source."""
    if fraction <= 0:
        return documents, []
    every = max(2, round(1 / fraction))
    return ([d for i, d in enumerate(documents) if i % every != every // 2],
            [d for i, d in enumerate(documents) if i % every == every // 2])  # fmt: skip


def replay_documents(path: str, split: str, text_field: str, limit: int) -> list[str]:
    if path == PYTHON_DOCS:
        return python_docs()[:limit]
    if path in (WIKI_VITAL, PYTHON_STDLIB):
        return open_seeds(path)["text"].head(limit).to_list()
    local = Path(path)
    if local.suffix == ".parquet" and not local.exists():
        raise ValueError(f"training.replay_path = {path!r}: no such file")
    if local.suffix == ".parquet" or (local.is_dir() and any(local.glob("**/*.parquet"))):
        pattern = str(local / "**" / "*.parquet") if local.is_dir() else str(local)
        frame = pl.scan_parquet(pattern)
        if text_field not in frame.collect_schema().names():
            raise ValueError(f"training.replay_text_field = {text_field!r}: no such column in {path}")
        texts = frame.select(text_field).head(limit).collect()[text_field]
        return [t for t in texts.to_list() if t]
    import datasets

    try:
        rows = datasets.load_dataset(path, split=split, streaming=True)
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds; the user needs the path
        raise ValueError(f"training.replay_path = {path!r}: cannot be loaded ({e})") from e
    documents = []
    for row in rows:
        if text_field not in row:
            raise ValueError(f"training.replay_text_field = {text_field!r}: not a field of {path}")
        if row[text_field]:
            documents.append(row[text_field])
        if len(documents) == limit:
            break
    return documents
