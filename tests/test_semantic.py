"""Embeddings by meaning and decontamination by meaning, with the real sentence encoder."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from pipeline.curation.decontamination import exam_indexes
from pipeline.curation.embeddings import MINILM, Embedder, EmbeddingStore, passages, row_vectors
from pipeline.curation.semantic import BARE_ANSWER_SIMILARITY, RULE_SHARE, SemanticExamIndex, semantic_decontaminate
from pipeline.settings import CurationSettings
from tests.test_curation import PROSE, rows

PLANTED = yaml.safe_load((Path(__file__).parent / "data" / "planted_contamination.yaml").read_text())


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(MINILM)


@pytest.fixture(scope="module")
def semantic_index(embedder) -> SemanticExamIndex:
    """Every MMLU item embedded (cached for the machine: the first test run pays for it)."""
    return SemanticExamIndex.build(embedder)


def test_passages_overlap_by_half_and_cover_every_word():
    text = " ".join(f"w{i}" for i in range(150))
    parts = passages(text, 64)
    assert [p.split()[0] for p in parts] == ["w0", "w32", "w64", "w96"]
    assert {w for p in parts for w in p.split()} == set(text.split())
    assert passages("short text", 64) == ["short text"] and passages("", 64) == [""]


def test_each_row_is_embedded_once(embedder, tmp_path):
    store = EmbeddingStore(tmp_path, embedder, CurationSettings().semantic.passage_words)
    first = rows(("text", PROSE), ("text", "A short note on rivers and the sea."), batch="2026-11-20|text")
    vectors, embedded = store.update(first.select("id", "batch", "text"))
    assert embedded == 2 and set(vectors["id"]) == {"row000", "row001"}
    norms = np.linalg.norm(vectors["vector"].to_numpy(), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)
    later = rows(("text", "Volcanoes form where plates meet."), batch="2026-11-20|text", prefix="new")
    more = pl.concat([first, later])
    again, embedded = store.update(more.select("id", "batch", "text"))
    assert embedded == 1 and again.height == vectors.height + 1  # only the new row
    ids, matrix = row_vectors(again)
    assert len(ids) == 3 and matrix.shape == (3, embedder.dimensions)
    # the same meaning is closer than another meaning
    close = embedder(["Plants turn sunlight, water and carbon dioxide into sugar.", PROSE, "Volcanoes erupt lava."])
    assert close[0] @ close[1] > close[0] @ close[2] + 0.2


def test_reworded_exam_questions_are_caught_by_meaning_and_missed_by_ngrams(embedder, semantic_index, tmp_path):
    """Hand-reworded MMLU items: the n-gram checks catch none; the semantic check alone at the
    default threshold catches those that keep the answer's words, naming the right item (8 of 20
    when tuned). They change every content word of the question, so the rule after it (the default)
    lets them through: what it costs, in benchmarks.md. Clean text on the same subjects passes
    (the semantic check alone flags 1 of 12)."""
    heavy, clean = PLANTED["heavy"], PLANTED["near_miss"]
    frame = rows(*[("text", case["text"]) for case in heavy + clean])
    index, code_index = exam_indexes(13, 20)
    assert all(index.match(case["text"]) is None for case in heavy)

    store = EmbeddingStore(tmp_path, embedder, CurationSettings().semantic.passage_words)
    vectors, _ = store.update(frame.select("id", "batch", "text"))
    nearest = semantic_index.nearest(vectors, dict(zip(frame["id"], frame["text"], strict=True)),
                                     CurationSettings().semantic.passage_words)
    threshold = CurationSettings().decontamination.semantic_threshold
    out = semantic_decontaminate(frame, nearest, threshold, rule=0).sort("id")
    caught = out.head(len(heavy))
    named = [c["contamination"] for c in caught.iter_rows(named=True)]
    right = sum(case["item"] in (found or "") for case, found in zip(heavy, named, strict=True))
    assert right >= 7, named
    assert (caught["reason"] == "decontamination:semantic").sum() >= right
    assert out.tail(len(clean))["reason"].null_count() >= len(clean) - 1
    ruled = semantic_decontaminate(frame, nearest, threshold).sort("id")
    assert ruled.head(len(heavy))["reason"].null_count() >= len(heavy) - 2
    assert ruled.tail(len(clean))["reason"].null_count() == len(clean)


def test_lessons_naming_an_answer_are_kept_and_a_paraphrased_item_is_caught(embedder, semantic_index, tmp_path):
    """With the real encoder: two lessons on exam subjects name the answer of an item they are
    close to (0.69, 0.70), which the semantic check alone rejects; the rule keeps them, since they
    do not hold the question's words. A reworded question with its answer is caught, explained."""
    from tests.test_semantic_rule import LESSON, PARAPHRASE, TU_QUOQUE

    inflation = ("# Macroeconomics\n\nInflation is a general rise in the prices of goods and services, so that money "
                 "buys less over time. Central banks try to keep it near two percent a year, raising interest rates "
                 "when prices climb faster and lowering them when the economy slows.")  # fmt: skip
    frame = rows(("text", LESSON), ("text", inflation), ("text", PARAPHRASE))
    words = CurationSettings().semantic.passage_words
    vectors, _ = EmbeddingStore(tmp_path, embedder, words).update(frame.select("id", "batch", "text"))
    nearest = semantic_index.nearest(vectors, dict(zip(frame["id"], frame["text"], strict=True)), words)
    threshold = CurationSettings().decontamination.semantic_threshold
    alone = semantic_decontaminate(frame, nearest, threshold, rule=0).sort("id")
    assert alone["reason"].to_list() == ["decontamination:semantic"] * 3
    out = semantic_decontaminate(frame, nearest, threshold).sort("id")
    assert out["reason"].to_list() == [None, None, "decontamination:semantic"]
    said = json.loads(out["contamination"][2])
    assert said["exam_item"] == TU_QUOQUE and said["similarity"] > 0.85 and said["stage"] == "semantic+rule"
    assert said["rule_score"] >= RULE_SHARE


def test_rows_that_say_the_same_thing_are_deduplicated_by_meaning(embedder, tmp_path):
    """A reworded copy of an earlier batch's row is rejected naming it (no n-gram of 5 words in
    common, so MinHash cannot see it); rows on the same subject that say other things stay. The
    earlier batch is curated first and the later one against the index it left."""
    from pipeline.curation.semantic_dedup import SemanticIndex, semantic_dedup_batch

    earlier = rows(("text", PROSE), batch="2026-11-20|text", prefix="old")
    reworded = ("Green plants make sugar and oxygen from water and carbon dioxide using the energy of sunlight, "
                "a process called photosynthesis. Chlorophyll in their leaves soaks up red and blue light and "
                "reflects the green, so leaves look green. In the chloroplasts light splits water and oxygen "
                "escapes to the air, while the captured energy builds glucose that is stored as starch.")  # fmt: skip
    other = ("Plants also lose water through small pores in their leaves called stomata; this transpiration pulls "
             "water up from the roots through the xylem and cools the plant on hot days.")  # fmt: skip
    later = rows(("text", reworded), ("text", other), batch="2026-11-21|text", prefix="new")
    frame = pl.concat([later, earlier])  # order in the table does not decide: the earlier batch wins
    vectors, _ = EmbeddingStore(tmp_path, embedder, CurationSettings().semantic.passage_words).update(
        frame.select("id", "batch", "text"))  # fmt: skip
    ids, matrix = row_vectors(vectors)
    index = SemanticIndex(tmp_path / "index", "text", embedder.dimensions, {"model": embedder.identity})
    threshold = CurationSettings().semantic.dedup_threshold
    first, _ = semantic_dedup_batch(earlier, ids, matrix, index, threshold)
    second, _ = semantic_dedup_batch(later, ids, matrix, index, threshold)
    out = pl.concat([first, second])
    by_id = {r["id"]: r for r in out.iter_rows(named=True)}
    assert by_id["new000"]["reason"] == "dedup:semantic" and "old000" in by_id["new000"]["checks"]
    assert by_id["old000"]["reason"] is None and by_id["new001"]["reason"] is None


def test_a_bare_number_for_an_answer_needs_a_closer_passage():
    """A passage containing an item's answer matches it; when the answer is only a number (in much
    unrelated text by chance) the passage must also be at least BARE_ANSWER_SIMILARITY close."""
    axes = np.eye(4, dtype=np.float32)
    index = SemanticExamIndex(ids=["visa", "cpi"], vectors=axes[:2], answers=[" 16 ", " inflation "],
                              questions=["How many digits has a card number?", "What is a general rise in prices?"])

    def toward(item: int, similarity: float) -> np.ndarray:  # a unit vector at that cosine to the item
        return similarity * axes[item] + np.sqrt(1 - similarity**2) * axes[3]

    texts = {"number-far": "The table has 16 rows.", "number-close": "A card number has 16 digits.",
             "word-far": "Prices rise with inflation."}  # fmt: skip
    vectors = pl.DataFrame({"id": list(texts), "passage": [0, 0, 0],
                            "vector": [toward(0, 0.65), toward(0, BARE_ANSWER_SIMILARITY + 0.05), toward(1, 0.65)]},
                           schema_overrides={"vector": pl.Array(pl.Float32, 4)})  # fmt: skip
    nearest = index.nearest(vectors, texts, 64)
    found = {r["id"]: (r["exam_item"], round(r["similarity"], 2)) for r in nearest.iter_rows(named=True)}
    assert found["number-far"][1] == 0.0  # 0.65 close, containing "16": not enough for a bare number
    assert found["number-close"] == ("visa", round(BARE_ANSWER_SIMILARITY + 0.05, 2))
    assert found["word-far"] == ("cpi", 0.65)  # a word answer at the same 0.65 matches
