"""The rule after decontamination by meaning: a passage close to an MMLU item and holding its answer
is a leak only when it also holds the question's rare words. Real MMLU items and IDF, vectors made
to a chosen similarity (no encoder), so these run in about a second."""

import json

import numpy as np
import polars as pl

from pipeline.curation.semantic import RULE_SHARE, SemanticExamIndex, _words, question_share, semantic_decontaminate
from pipeline.exam.data import read_mmlu
from tests.test_curation import rows

# "This form of marketing communications tool is referred to as 'a paid, mediated form of communication
# from an identifiable source, designed to persuade the receiver to take some action, now or in the
# future'." -> "Advertising."; "Responding to charges of wrongdoing by saying the accuser or
# others do the same thing describes which of the following fallacies?" -> "tu quoque"
ADVERTISING, TU_QUOQUE = "mmlu/marketing/2659", "mmlu/logical fallacies/8607"
LESSON = ("# Marketing\n\nAdvertising is the practice of drawing attention to a product or service so that people "
          "buy it. A campaign chooses its audience, a message and the media that reach them: television, posters, "
          "search results or social networks.")  # fmt: skip
PARAPHRASE = ("Question: Which of the following fallacies describes answering charges of wrongdoing by saying that "
              "the accuser, or others, do the same thing?\nAnswer: Tu quoque.")  # fmt: skip


def exam(*item_ids: str) -> SemanticExamIndex:
    by_id = {item.id: item for item in read_mmlu()}
    items = [by_id[i] for i in item_ids]
    axes = np.eye(len(items) + 1, dtype=np.float32)
    return SemanticExamIndex(list(item_ids), axes[:-1], [_words(i.choices[i.answer]) for i in items],
                             [i.question for i in items])  # fmt: skip


def words(text: str) -> set[str]:
    return set(_words(text).split())


def close_to(index: SemanticExamIndex, texts: dict[str, tuple[str, str, float]]) -> pl.DataFrame:
    """The candidates of one-passage rows: id -> (text, the item it is close to, the similarity)."""
    dims = index.vectors.shape[1]
    vectors = [s * index.vectors[index.ids.index(item)] + np.sqrt(1 - s**2) * np.eye(dims)[-1]
               for _, item, s in texts.values()]  # fmt: skip
    frame = pl.DataFrame({"id": list(texts), "passage": [0] * len(texts), "vector": vectors},
                         schema_overrides={"vector": pl.Array(pl.Float32, dims)})  # fmt: skip
    return index.nearest(frame, {row_id: text for row_id, (text, _, _) in texts.items()}, 64)


def test_rare_question_words_weigh_most_and_the_answer_counts_for_nothing():
    question = "Which of the following fallacies describes responding to charges of wrongdoing?"
    assert question_share(question, "tu quoque", words("which of the following"), 32) < 0.1
    assert question_share(question, "tu quoque", words("fallacies charges wrongdoing responding"), 32) > 0.75
    # the answer's words are in the passage already: no credit for them
    somatic = "The somatic nervous system is part of the"
    assert question_share(somatic, "peripheral nervous system.", words("the nervous system"), 32) < 0.05
    # a long question counts by its last words: those a passage holds before the answer
    long = " ".join(f"fact{k}" for k in range(100)) + " which fallacy is this"
    tail = words("fact97 fact98 fact99 which fallacy")
    assert question_share(long, "x", tail, 8) > 0.7 and question_share(long, "x", tail, 200) < 0.1


def test_a_lesson_naming_the_answer_but_not_the_question_is_kept():
    """A marketing lesson that names "Advertising" at 0.71 to an item answered by it (the encoder
    puts it at 0.69, tests/test_semantic.py): the semantic
    check alone rejects it; with the rule it stays, since the question's words are not in it."""
    index = exam(ADVERTISING, TU_QUOQUE)
    nearest = close_to(index, {"row000": (LESSON, ADVERTISING, 0.71)})
    pair = nearest.row(0, named=True)
    assert pair["exam_item"] == ADVERTISING and pair["score"] < 0.3 and pair["passage"] == " ".join(LESSON.split())
    frame = rows(("text", LESSON))
    assert semantic_decontaminate(frame, nearest, 0.6)["reason"].to_list() == [None]
    assert semantic_decontaminate(frame, nearest, 0.6, rule=0)["reason"].to_list() == ["decontamination:semantic"]


def test_a_paraphrased_question_and_answer_is_caught_and_explained():
    """A reworded question (new verb, new order) with its answer keeps the question's rare words:
    rejected, `contamination` naming the item, the similarity, the rule's score and the stage."""
    nearest = close_to(exam(ADVERTISING, TU_QUOQUE), {"row000": (PARAPHRASE, TU_QUOQUE, 0.92)})
    out = semantic_decontaminate(rows(("text", PARAPHRASE)), nearest, 0.6)
    assert out["reason"].to_list() == ["decontamination:semantic"]
    said = json.loads(out["contamination"][0])
    assert said["exam_item"] == TU_QUOQUE and said["similarity"] == 0.92 and said["stage"] == "semantic+rule"
    assert RULE_SHARE <= said["rule_score"] <= 1
    off = semantic_decontaminate(rows(("text", PARAPHRASE)), nearest, 0.6, rule=0)
    assert json.loads(off["contamination"][0])["stage"] == "semantic"


def test_a_judge_decides_the_pairs_the_rule_keeps():
    """The seam for a judge model: it gets the pairs past the similarity and the rule (row id,
    passage, item, similarity, score) and says which are leaks; the stage names it."""
    index = exam(ADVERTISING, TU_QUOQUE)
    nearest = close_to(index, {"row000": (PARAPHRASE, TU_QUOQUE, 0.92), "row001": (LESSON, ADVERTISING, 0.71)})
    frame = rows(("text", PARAPHRASE), ("text", LESSON))
    seen = []

    def judge(pairs: pl.DataFrame) -> pl.Series:
        seen.append(pairs)
        return pl.Series([True] * pairs.height)

    out = semantic_decontaminate(frame, nearest, 0.6, judge=judge).sort("id")
    assert seen[0]["id"].to_list() == ["row000"]  # the lesson did not pass the rule
    assert {"passage", "exam_item", "similarity", "score"} <= set(seen[0].columns)
    assert out["reason"].to_list() == ["decontamination:semantic", None]
    assert json.loads(out["contamination"][0])["stage"] == "semantic+rule+judge"
    kept = semantic_decontaminate(frame, nearest, 0.6, judge=lambda pairs: pl.Series([False] * pairs.height))
    assert kept["reason"].to_list() == [None, None]


def test_a_judge_decides_the_close_candidates_the_rule_passes_over():
    """With `judge_similarity`, the rule's pairs stay leaks without asking, and the judge decides
    only the candidates the rule passes over at least that close: a yes rejects the row, naming
    the stage `semantic+judge`; a candidate below the similarity is never asked."""
    index = exam(ADVERTISING, TU_QUOQUE)
    nearest = close_to(index, {"row000": (PARAPHRASE, TU_QUOQUE, 0.92), "row001": (LESSON, ADVERTISING, 0.75),
                               "row002": (LESSON + " Posters.", ADVERTISING, 0.65)})  # fmt: skip
    frame = rows(("text", PARAPHRASE), ("text", LESSON), ("text", LESSON + " Posters."))
    seen = []

    def judge(pairs: pl.DataFrame) -> pl.Series:
        seen.append(pairs["id"].to_list())
        return pl.Series([True] * pairs.height)

    out = semantic_decontaminate(frame, nearest, 0.6, judge=judge, judge_similarity=0.7).sort("id")
    assert seen == [["row001"]]
    assert out["reason"].to_list() == ["decontamination:semantic", "decontamination:semantic", None]
    stages = [json.loads(said)["stage"] for said in out["contamination"][:2]]
    assert stages == ["semantic+rule", "semantic+judge"]
    said = json.loads(out["contamination"][1])
    assert said["exam_item"] == ADVERTISING and said["similarity"] == 0.75 and said["rule_score"] < RULE_SHARE
    no = semantic_decontaminate(frame, nearest, 0.6, judge=lambda p: pl.Series([False] * p.height),
                                judge_similarity=0.7)
    assert no.sort("id")["reason"].to_list() == ["decontamination:semantic", None, None]
