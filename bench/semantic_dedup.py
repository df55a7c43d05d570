"""Dedup-by-meaning threshold: planted duplicates against distinct pages on the same subject.

Originals: pages of the Python language reference (`python-docs`) of 150+ words that share no
text (the reference's pages are overlapping chunks of its sections; those overlapping another
chosen page are left out): every page is on the same subject, the hard case for a threshold.
Planted duplicates of a seeded subset:
- reordered: the page's sentences shuffled (the same text, said in another order);
- trimmed: a contiguous 60% of its sentences (a shorter version of the page);
- paraphrased (with --teacher-url): the teacher rewrites the page's first 200 words in its own
  words, the duplicate a synthetic pipeline meets most.
Embedded as the pipeline does (64-word half-overlapping passages, a row's vector the mean of its
passages'). Printed for each threshold: recall per kind (a duplicate at least that similar to its
original) and, over the originals alone, the rows SemDeDup would drop though every page is
distinct (false drops) and the share of distinct pairs at least that similar.

    python bench/semantic_dedup.py [--teacher-url http://127.0.0.1:8000/v1] [--pages 120]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

THRESHOLDS = (0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96)


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def shingles(text: str) -> set[tuple[str, ...]]:
    words = text.split()
    return {tuple(words[i : i + 5]) for i in range(len(words) - 4)}


def distinct_pages(pages: list[str], wanted: int) -> list[str]:
    """Pages sharing no more than 5% of their 5-word shingles with any page taken before: the
    reference's pages are overlapping chunks of its sections, and those are duplicates in part."""
    taken: list[tuple[str, set]] = []
    for page in pages:
        grams = shingles(page)
        if all(len(grams & other) <= 0.05 * min(len(grams), len(other)) for _, other in taken):
            taken.append((page, grams))
    return [page for page, _ in taken[:wanted]]


def paraphrases(pages: list[str], url: str) -> list[str]:
    from pipeline.settings import resolve
    from pipeline.teacher.client import ChatRequest, TeacherClient

    model = resolve("demo").teacher.model
    client = TeacherClient([url], model, concurrency=16)
    requests = [ChatRequest(key=str(k), prompt="Rewrite the following passage in your own words, keeping its meaning:"
                            f"\n\n{' '.join(page.split()[:200])}", max_tokens=320, temperature=0.0, top_p=1.0, seed=0)
                for k, page in enumerate(pages)]  # fmt: skip

    async def collect() -> dict[str, str]:
        return {c.key: c.text async for c in client.stream(requests)}

    answers = asyncio.run(collect())
    return [answers[str(k)] for k in range(len(pages))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=120)
    parser.add_argument("--planted", type=int, default=40, help="originals that get duplicates of each kind")
    parser.add_argument("--teacher-url", default="")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    args = parser.parse_args()

    from pipeline.curation.embeddings import Embedder, EmbeddingStore, row_vectors
    from pipeline.curation.semantic_dedup import semantic_duplicates
    from pipeline.training.replay import python_docs

    rng = random.Random(0)
    long_pages = [p for p in python_docs() if len(p.split()) >= 150]
    pages = distinct_pages(rng.sample(long_pages, len(long_pages)), args.pages)
    chosen = list(range(args.planted))
    planted: list[tuple[str, int, str]] = []
    for k in chosen:
        parts = sentences(pages[k])
        shuffled = rng.sample(parts, len(parts))
        planted.append(("reordered", k, " ".join(shuffled)))
        size = max(1, int(0.6 * len(parts)))
        start = rng.randrange(0, len(parts) - size + 1)
        planted.append(("trimmed", k, " ".join(parts[start : start + size])))
    if args.teacher_url:
        for k, text in zip(chosen, paraphrases([pages[k] for k in chosen], args.teacher_url), strict=True):
            planted.append(("paraphrased", k, text))

    texts = pages + [t for _, _, t in planted]
    rows = pl.DataFrame({"id": [f"{i:05d}" for i in range(len(texts))], "batch": ["bench"] * len(texts), "text": texts})
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddingStore(Path(tmp), Embedder(args.model), 64)
        vectors, _ = store.update(rows)
    ids, matrix = row_vectors(vectors)
    matrix = matrix[np.argsort(ids)]
    originals, copies = matrix[: len(pages)], matrix[len(pages) :]
    similarity = np.array([copies[j] @ originals[k] for j, (_, k, _) in enumerate(planted)])
    distinct = originals @ originals.T
    pairs = distinct[np.triu_indices(len(pages), 1)]

    kinds = sorted({kind for kind, _, _ in planted})
    print(f"{len(pages)} distinct pages (no shared text), {len(planted)} planted duplicates ({args.model}); "
          "similarity to the original, median [min, max]:")  # fmt: skip
    for kind in kinds:
        s = similarity[[i for i, (k, _, _) in enumerate(planted) if k == kind]]
        print(f"  {kind:12s} {np.median(s):.3f} [{s.min():.3f}, {s.max():.3f}]")
    print(f"  distinct pairs {np.median(pairs):.3f} [{pairs.min():.3f}, {pairs.max():.3f}]\n")
    header = "".join(f"{kind:>14s}" for kind in kinds)
    print(f"threshold{header}   false drops   distinct pairs >= t")
    for t in THRESHOLDS:
        recall = "".join(f"{(similarity[[i for i, p in enumerate(planted) if p[0] == kind]] >= t).sum():>9d}/"
                         f"{sum(p[0] == kind for p in planted):<4d}" for kind in kinds)  # fmt: skip
        dropped = int((semantic_duplicates(originals, t) != np.arange(len(pages))).sum())
        print(f"{t:9.2f}{recall}   {dropped:>5d}/{len(pages):<5d}   {(pairs >= t).mean():.4%}")


if __name__ == "__main__":
    main()
