"""Decontamination by meaning: a row with a passage that says an MMLU question and its answer in
other words is rejected naming the item, beside the n-gram checks (which miss reworded questions).

The MMLU items (question + correct answer) are embedded once per model and cached; each kept
row's passages (`pipeline.curation.embeddings`) are compared with all of them by cosine
similarity, in blocks. Closeness alone flags clean text on the same subject (a page about Pluto is
close to every Pluto question), so a passage is a candidate for an item only when it also contains
the item's correct answer. An answer without a word (a number, a letter, a set of digits) is in
too much text to be evidence by itself, so for such items the passage must also be closer
(BARE_ANSWER_SIMILARITY). A candidate still fits a lesson on the item's subject that names the
answer (a marketing lesson names "advertising"); what a leak carries and a lesson does not is the
question, so the rule counts a candidate as a leak only when the passage also holds `RULE_SHARE`
of the question's words, each weighted by its rarity among MMLU questions (IDF): "which of the
following" weighs almost nothing, "wrongdoing" or a name almost everything. A judge, when
given (the teacher: `pipeline.curation.contamination_judge`), either confirms the rule's pairs or
decides the close candidates the rule passes over (`semantic_decontaminate`). HumanEval is left to
the code n-gram check (renamed identifiers), since a different exercise on the same task is close
in meaning and not a copy.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import polars as pl

from pipeline.curation.embeddings import Embedder, EmbeddingStore, cached_vectors, passages
from pipeline.exam.data import read_mmlu
from pipeline.rows import KEPT, reject


def _words(text: str) -> str:
    return " " + " ".join(re.findall(r"[a-z0-9]+", text.lower())) + " "


# An answer without a word of three letters (`16`, `{1,2,3,4}`, `c`, `O(D)`) turns up in unrelated
# text by chance, so a passage containing it must be closer to the item to match. On the planted
# set (bench/decontamination.py) clean pages with such an answer reach 0.63, leaks 0.76 to 0.94.
BARE_ANSWER_SIMILARITY = 0.70

# A candidate is a leak when its passage holds at least this share of the question's IDF mass. The
# lowest share of a sweep that flags at most 1% of the clean rows of bench/decontamination.py's
# tuning half and loses none of its verbatim or light leaks; the held-out half confirms it.
RULE_SHARE = 0.75

# Decides (passage, item) pairs: given their frame (id, passage, exam_item, similarity, score),
# which of them are leaks. The seam for a judge model beside the cheap rule.
Judge = Callable[[pl.DataFrame], pl.Series]

NEAREST_SCHEMA = {"id": pl.String, "exam_item": pl.String, "similarity": pl.Float32, "score": pl.Float32,
                  "passage": pl.String}  # fmt: skip


@cache
def mmlu_idf() -> tuple[dict[str, float], float]:
    """Each word's IDF over all MMLU questions (log of questions / questions holding it), and the
    weight of a word no question holds (the rarest)."""
    questions = [set(_words(item.question).split()) for item in read_mmlu()]
    counts = Counter(w for question in questions for w in question)
    return {w: math.log(len(questions) / k) for w, k in counts.items()}, math.log(len(questions))


def question_share(question: str, answer: str, passage: set[str], tail: int) -> float:
    """The rule's score: the share of the question's IDF mass whose words `passage` (a set of
    words) holds. Only the question's last `tail` words count (a long question is cut across
    passages; the stretch just before the answer is what the answer's passage holds), and not the
    answer's words (the passage holds those already); a question with nothing else scores 1."""
    idf, unseen = mmlu_idf()
    weights = {w: idf.get(w, unseen) for w in set(_words(question).split()[-tail:]) - set(_words(answer).split())}
    total = sum(weights.values())
    return sum(v for w, v in weights.items() if w in passage) / total if total else 1.0


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
    questions: list[str]  # each item's question, for the rule

    @classmethod
    def build(cls, embedder: Embedder) -> SemanticExamIndex:
        ids, texts, answers = exam_items()
        questions = [item.question for item in read_mmlu()]
        return cls(ids, cached_vectors(embedder, texts, "mmlu-items", "exam items"), answers, questions)

    def __post_init__(self) -> None:
        self.bare = [bare(answer) for answer in self.answers]

    def nearest(self, passage_vectors: pl.DataFrame, texts: dict[str, str], passage_words: int,
                candidates: int = 8, block: int = 2048) -> pl.DataFrame:  # fmt: skip
        """The candidate pairs, most similar first: each (row id, passage, exam item) where the
        passage contains the item's answer and has the item among its `candidates` closest, with
        the cosine similarity and the rule's score (`question_share` of the question's last
        `passage_words // 2` words: of the half-overlapping passages around an answer, one holds at
        least that many words before it). A row with none gets one line: its closest item,
        similarity and score 0, no passage. `texts`: each row's text by id."""
        if passage_vectors.height == 0:
            return pl.DataFrame(schema=NEAREST_SCHEMA)
        matrix = passage_vectors["vector"].to_numpy()
        cut = {row_id: passages(text, passage_words) for row_id, text in texts.items()}
        said = [cut[i][k] for i, k in zip(passage_vectors["id"], passage_vectors["passage"], strict=True)]
        found = []  # (passage, item, similarity, score) of every candidate; (passage, closest item) if none
        for first in range(0, len(matrix), block):
            sims = matrix[first : first + block] @ self.vectors.T
            top = np.argpartition(-sims, min(candidates, len(self.ids)) - 1, axis=1)[:, :candidates]
            for row, options in enumerate(top):
                spoken = _words(said[first + row])
                pairs = [j for j in options if self.answers[j] in spoken
                         and (sims[row, j] >= BARE_ANSWER_SIMILARITY or not self.bare[j])]  # fmt: skip
                found += [(first + row, j, float(sims[row, j]), question_share(
                    self.questions[j], self.answers[j], set(spoken.split()), passage_words // 2)) for j in pairs]
                if not pairs:
                    found.append((first + row, options[np.argmax(sims[row, options])], None, 0.0))
        ids = passage_vectors["id"]
        table = pl.DataFrame(
            {"id": [ids[p] for p, *_ in found], "exam_item": [self.ids[j] for _, j, _, _ in found],
             "similarity": [s or 0.0 for _, _, s, _ in found], "score": [score for *_, score in found],
             "passage": [None if s is None else said[p] for p, _, s, _ in found]},
            schema=NEAREST_SCHEMA,
        )  # fmt: skip
        pairs = table.filter(pl.col("passage").is_not_null())
        none = table.filter(~pl.col("id").is_in(pairs["id"].implode())).group_by("id", maintain_order=True).first()
        return pl.concat([pairs, none.select(list(NEAREST_SCHEMA))]).sort("similarity", "id", descending=[True, False])


def semantic_decontaminate(frame: pl.DataFrame, nearest: pl.DataFrame, threshold: float,
                           rule: float = RULE_SHARE, judge: Judge | None = None,
                           judge_similarity: float | None = None) -> pl.DataFrame:  # fmt: skip
    """Kept rows with a leak among their candidate pairs (at least `threshold` similar) are rejected
    with reason `decontamination:semantic`, `contamination` naming the item, the similarity, the
    rule's score and the stage that decided. A pair is a leak when its rule score is at least `rule`
    (stage `semantic+rule`; `semantic` with the rule off) and, with a `judge`:
    - `judge_similarity` None: the judge confirms the rule's pairs (`semantic+rule+judge`);
    - a number: the rule's pairs stay leaks, and the judge decides the candidates the rule passes
      over that are at least `judge_similarity` similar, of rows the rule does not flag
      (`semantic+judge`)."""
    candidates = nearest.filter(pl.col("passage").is_not_null() & (pl.col("similarity") >= threshold))
    ruled = candidates.filter(pl.col("score") >= rule)
    stage = "semantic+rule" if rule > 0 else "semantic"
    if judge is not None and judge_similarity is None:
        ruled, stage = ruled.filter(judge(ruled)) if ruled.height else ruled, stage + "+judge"
    pairs = ruled.with_columns(_stage=pl.lit(stage), _order=pl.lit(0))
    if judge is not None and judge_similarity is not None:
        asked = candidates.filter((pl.col("score") < rule) & (pl.col("similarity") >= judge_similarity)
                                  & ~pl.col("id").is_in(ruled["id"].implode()))  # fmt: skip
        judged = asked.filter(judge(asked)) if asked.height else asked
        pairs = pl.concat([pairs, judged.with_columns(_stage=pl.lit("semantic+judge"), _order=pl.lit(1))])
    hits = (pairs.sort("_order", "similarity", descending=[False, True]).group_by("id", maintain_order=True).first()
            .select("id", "_stage", _item="exam_item", _sim="similarity", _score="score"))  # fmt: skip
    frame = frame.join(hits, on="id", how="left", maintain_order="left")
    hit = KEPT & pl.col("_item").is_not_null()
    said = pl.format('{{"exam_item": "{}", "similarity": {}, "rule_score": {}, "stage": "{}"}}',
                     pl.col("_item"), pl.col("_sim").round(3), pl.col("_score").round(3), pl.col("_stage"))  # fmt: skip
    frame = frame.with_columns(contamination=pl.when(hit).then(said).otherwise(pl.col("contamination")))
    return reject(frame, pl.when(hit).then(pl.lit("decontamination:semantic"))).drop("_item", "_sim", "_score",
                                                                                      "_stage")


def nearest_exam_items(store: EmbeddingStore, frame: pl.DataFrame) -> pl.DataFrame:
    """Each kept row's closest exam item by meaning, from the store's passage vectors."""
    kept = frame.filter(KEPT)
    index = SemanticExamIndex.build(store.embedder)
    texts = dict(zip(kept["id"], kept["text"], strict=True))
    return index.nearest(store.vectors_of(kept), texts, store.passage_words)
