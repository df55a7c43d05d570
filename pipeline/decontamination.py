"""Decontamination: reject rows that share a word n-gram with an exam item (MMLU, HumanEval).

Exam items are split into lower-cased word n-grams (n = 13 by default, as GPT-3 and datatrove);
items shorter than n contribute their whole word sequence, so a short question copied verbatim
is still caught. A rejected row names the exam item it matched.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import polars as pl

from pipeline.exam_data import read_humaneval, read_mmlu
from pipeline.rows import KEPT, reject

_MIN_ITEM_WORDS = 8  # shorter items ("What is 2+2?") would match ordinary prose


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


class ExamIndex:
    """n-gram -> exam item id, for every MMLU question and HumanEval prompt + tests."""

    def __init__(self, n: int = 13):
        self.n = n
        self.index: dict[tuple[str, ...], str] = {}  # a shared n-gram names its first item
        # Items shorter than n, keyed by their first _MIN_ITEM_WORDS words.
        self.short: dict[tuple[str, ...], list[tuple[tuple[str, ...], str]]] = {}
        for item in read_mmlu():
            self._add(item.id, item.question + " " + item.choices[item.answer])
        for problem in read_humaneval():
            self._add(problem.task_id, problem.prompt)
            self._add(problem.task_id, problem.canonical_solution)

    def _add(self, item_id: str, text: str) -> None:
        tokens = words(text)
        if len(tokens) >= self.n:
            for gram in ngrams(tokens, self.n):
                self.index.setdefault(gram, item_id)
        elif len(tokens) >= _MIN_ITEM_WORDS:
            head = tuple(tokens[:_MIN_ITEM_WORDS])
            self.short.setdefault(head, []).append((tuple(tokens), item_id))

    def match(self, text: str) -> str | None:
        """The exam item sharing the most n-grams with `text`, or None."""
        tokens = words(text)
        hits = Counter(self.index.get(tuple(tokens[i : i + self.n])) for i in range(len(tokens) - self.n + 1))
        hits.pop(None, None)
        if hits:
            return hits.most_common(1)[0][0]
        for i in range(len(tokens) - _MIN_ITEM_WORDS + 1):
            for whole, item_id in self.short.get(tuple(tokens[i : i + _MIN_ITEM_WORDS]), ()):
                if tuple(tokens[i : i + len(whole)]) == whole:
                    return item_id
        return None


def decontaminate(frame: pl.DataFrame, index: ExamIndex) -> pl.DataFrame:
    hits = {row_id: index.match(text) for row_id, text in frame.filter(KEPT).select("id", "text").iter_rows()}
    matched = pl.DataFrame(
        {"id": list(hits), "_item": list(hits.values())},
        schema={"id": pl.String, "_item": pl.String},
    )
    frame = frame.join(matched, on="id", how="left", maintain_order="left")
    frame = frame.with_columns(
        contamination=pl.when(pl.col("_item").is_not_null())
        .then(pl.col("_item").map_elements(lambda i: json.dumps({"exam_item": i}), pl.String))
        .otherwise(pl.col("contamination"))
    )
    return reject(frame, pl.when(pl.col("_item").is_not_null()).then(pl.lit("decontamination:ngram"))).drop("_item")
