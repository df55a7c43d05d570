"""Decontamination by meaning: a row with a passage that says an MMLU question and its answer in
other words is rejected naming the item, beside the n-gram checks (which miss reworded questions).

The MMLU items (question + correct answer) are embedded once per model and cached; each kept
row's passages (`pipeline.curation.embeddings`) are compared with all of them by cosine
similarity, in blocks. Closeness alone flags clean text on the same subject (a page about Pluto is
close to every Pluto question), so a passage matches an item only when it also contains the
item's correct answer: a row that teaches the answer to an exam question is what contaminates.
An answer without a word (a number, a letter, a set of digits) is in too much text to be
evidence by itself, so for such items the passage must also be closer (BARE_ANSWER_SIMILARITY).
HumanEval is left to the code n-gram check (renamed identifiers), since a different exercise on
the same task is close in meaning and not a copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import polars as pl

from pipeline.curation.embeddings import Embedder, cached_vectors, passages
from pipeline.exam.data import read_mmlu
from pipeline.rows import KEPT, reject


def _words(text: str) -> str:
    return " " + " ".join(re.findall(r"[a-z0-9]+", text.lower())) + " "


# An answer without a word of three letters (`16`, `{1,2,3,4}`, `c`, `O(D)`) turns up in unrelated
# text by chance, so a passage containing it must be closer to the item to match. On the planted
# set (bench/decontamination.py) clean pages with such an answer reach 0.63, leaks 0.76 to 0.94.
BARE_ANSWER_SIMILARITY = 0.70


def bare(answer_words: str) -> bool:
    return re.search(r"[a-z]{3}", answer_words) is None


def exam_items() -> tuple[list[str], list[str], list[str]]:
    """(item ids, texts, answers): every MMLU question + its correct answer."""
    items = read_mmlu()
    ids = [item.id for item in items]
    texts = [f"{item.question.strip()} {item.choices[item.answer]}" for item in items]
    return ids, texts, [_words(item.choices[item.answer]) for item in items]


@dataclass
class SemanticExamIndex:
    ids: list[str]
    vectors: np.ndarray  # (items, dimensions), L2-normalized
    answers: list[str]  # each item's correct answer as " word word "

    @classmethod
    def build(cls, embedder: Embedder) -> SemanticExamIndex:
        ids, texts, answers = exam_items()
        return cls(ids, cached_vectors(embedder, texts, "mmlu-items", "exam items"), answers)

    def __post_init__(self) -> None:
        self.bare = [bare(answer) for answer in self.answers]

    def nearest(self, passage_vectors: pl.DataFrame, texts: dict[str, str], passage_words: int,
                candidates: int = 8, block: int = 2048) -> pl.DataFrame:  # fmt: skip
        """Per row id: the closest exam item whose answer one of its passages contains (among
        each passage's `candidates` closest items), and that cosine similarity; rows with none
        get their closest item and a similarity of 0. `texts`: each row's text by id."""
        schema = {"id": pl.String, "exam_item": pl.String, "similarity": pl.Float32}
        if passage_vectors.height == 0:
            return pl.DataFrame(schema=schema)
        matrix = passage_vectors["vector"].to_numpy()
        cut = {row_id: passages(text, passage_words) for row_id, text in texts.items()}
        said_in = [_words(cut[i][k]) for i, k in zip(passage_vectors["id"], passage_vectors["passage"], strict=True)]
        found_item, found_score = [], []
        for first in range(0, len(matrix), block):
            sims = matrix[first : first + block] @ self.vectors.T
            top = np.argpartition(-sims, min(candidates, len(self.ids)) - 1, axis=1)[:, :candidates]
            for row, options in enumerate(top):
                options = options[np.argsort(-sims[row, options])]
                said = [j for j in options if self.answers[j] in said_in[first + row]
                        and (sims[row, j] >= BARE_ANSWER_SIMILARITY or not self.bare[j])]
                best = said[0] if said else options[0]
                found_item.append(self.ids[best])
                found_score.append(float(sims[row, best]) if said else 0.0)
        per_passage = pl.DataFrame({"id": passage_vectors["id"], "exam_item": found_item,
                                    "similarity": found_score}, schema=schema)  # fmt: skip
        return per_passage.sort("similarity", descending=True).group_by("id", maintain_order=True).first()


def semantic_decontaminate(frame: pl.DataFrame, nearest: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """Kept rows whose closest exam item is at least `threshold` similar are rejected with reason
    `decontamination:semantic`, `contamination` naming the item and the similarity."""
    hits = nearest.filter(pl.col("similarity") >= threshold).rename({"exam_item": "_item", "similarity": "_sim"})
    frame = frame.join(hits, on="id", how="left", maintain_order="left")
    hit = KEPT & pl.col("_item").is_not_null()
    frame = frame.with_columns(
        contamination=pl.when(hit)
        .then(pl.format('{{"exam_item": "{}", "similarity": {}}}', pl.col("_item"), pl.col("_sim").round(3)))
        .otherwise(pl.col("contamination"))
    )
    return reject(frame, pl.when(hit).then(pl.lit("decontamination:semantic"))).drop("_item", "_sim")
