"""The blocking checks on `decontaminated`, each passing on a good batch and failing on a bad one.

The good batch is made as the chain makes it: the real planner's prompts, the teacher's answers
written to the batch's journal with the journal's own functions, rows built from that journal by
`generate` (no teacher needed), then the real n-gram decontamination, which rejects a planted
MMLU leak."""

import dagster as dg
import polars as pl
import pytest

from assets.curation import (
    distinct_prompts,
    enough_kept_rows,
    kept_rows_in_journal,
    no_contamination,
    no_exact_duplicates,
    row_contract,
)
from assets.generation import journal_path
from assets.resources import Schoolhouse
from pipeline.curation.decontamination import ExamIndex, decontaminate, exam_indexes, find_contamination
from pipeline.exam.data import read_mmlu
from pipeline.generation import journal, prompts, spaces, topic_tree
from pipeline.generation.generate import generate, journal_record
from pipeline.rows import KEPT
from pipeline.teacher.client import Completion

BATCH = "2026-11-20|text"
MODEL = "teacher"
PROSE = (
    "Photosynthesis is the process by which green plants use sunlight to turn water and carbon dioxide "
    "into sugar and oxygen. The leaves hold chlorophyll, a pigment that absorbs red and blue light."
)
LEAK = next(i for i in read_mmlu() if len(i.question.split()) > 25)


def run(check, frame: pl.DataFrame, batch: str = BATCH, **overrides) -> dg.AssetCheckResult:
    """The check invoked directly, as its step runs it. `build_asset_check_context` takes no
    partition key, so a partitioned asset context stands in for it."""
    resources = {"schoolhouse": Schoolhouse(**overrides)}
    with dg.build_asset_context(partition_key=batch, resources=resources) as context:
        return check(context, decontaminated=frame)


def value(result: dg.AssetCheckResult, key: str):
    return result.metadata[key].value


@pytest.fixture
def generated(artifact_home) -> pl.DataFrame:
    """Five planned prompts answered in the journal: three clean lessons, one carrying an MMLU
    question and its answer, and one cut off (rejected by generation)."""
    space = spaces.text_topics(topic_tree.text_leaves(topic_tree.shipped_tree()))
    sampling = {"temperature": 0.8, "top_p": 0.95, "max_tokens": 64}
    plan = prompts.plan_batch(space, 5, 7, sampling, MODEL, None, BATCH).rows
    answers = [f"{PROSE} Lesson {k}." for k in range(3)]
    answers.append(f"A practice question. {LEAK.question} {LEAK.choices[LEAK.answer]}")
    path = journal_path(Schoolhouse(), BATCH)
    with journal.appending(path) as out:
        for row, text, finish in zip(plan, [*answers, "Cut"], ["stop"] * 4 + ["length"], strict=True):
            journal.append(out, journal_record(Completion(row["id"], text, finish, 9, len(text.split()))))
    rows, _ = generate(plan, None, path, BATCH, 64, MODEL)
    return rows


@pytest.fixture
def batch(generated) -> pl.DataFrame:
    """`decontaminated` of the batch: the leak rejected, three rows kept."""
    frame = decontaminate(generated, *exam_indexes(13, 20))
    assert frame.filter(KEPT).height == 3 and frame.height == 5
    return frame


def test_row_contract_fails_a_column_of_another_type_or_a_missing_one(batch):
    assert run(row_contract, batch).passed
    retyped = run(row_contract, batch.with_columns(pl.col("quality_score").cast(pl.Float32)))
    assert not retyped.passed and value(retyped, "mismatched_columns") == {"quality_score": "Float32"}
    assert not run(row_contract, batch.drop("seed_id")).passed


def test_no_exact_duplicates_fails_two_kept_rows_of_the_same_normalized_text(batch):
    assert run(no_exact_duplicates, batch).passed
    (text, _), (_, second) = batch.filter(KEPT).select("text", "id").head(2).iter_rows()
    copied = batch.with_columns(text=pl.when(pl.col("id") == second).then(pl.lit(text.upper() + "  !!"))
                                .otherwise(pl.col("text")))  # the same text but for case and punctuation
    result = run(no_exact_duplicates, copied)
    assert not result.passed and value(result, "duplicate_kept_rows") == 1


def test_no_contamination_catches_a_leak_the_fast_path_missed(generated, batch, monkeypatch):
    """A batch screening that misses every text (a bug in the compiled path) keeps the leak: the
    same fast path run again finds nothing, the one-row reference finds it."""
    assert run(no_contamination, batch).passed
    monkeypatch.setattr(ExamIndex, "matches", lambda self, texts: {})
    indexes = exam_indexes(13, 20)
    leaked = decontaminate(generated, *indexes)
    assert leaked.filter(KEPT).height == 4  # the asset, so broken, keeps the leak
    assert not any(find_contamination(leaked, *indexes).values())  # and a re-run of it cannot tell
    result = run(no_contamination, leaked)
    (leak_id,) = leaked.filter(pl.col("text").str.contains("practice question"))["id"]
    assert not result.passed and value(result, "contaminated_kept_rows") == 1
    assert value(result, "examples") == {leak_id: LEAK.id}


@pytest.mark.parametrize(
    "min_rows, min_share, passed",
    [(1, 0.0, True), (3, 0.6, True), (4, 0.0, False), (1, 0.61, False), (0, 1.0, False)],
)
def test_enough_kept_rows_sets_a_floor_on_kept_rows_and_on_the_kept_share(batch, min_rows, min_share, passed):
    result = run(enough_kept_rows, batch, curation={"min_kept_rows": min_rows, "min_kept_share": min_share})
    assert result.passed is passed
    assert (value(result, "kept"), value(result, "rows"), value(result, "share")) == (3, 5, 0.6)
    assert (value(result, "minimum"), value(result, "minimum_share")) == (min_rows, min_share)


def test_distinct_prompts_fails_two_kept_rows_of_one_prompt_unless_repeats_are_allowed(batch):
    assert run(distinct_prompts, batch).passed
    first, second = batch.filter(KEPT)["prompt"][:2]
    rejected = batch.filter(~KEPT)["id"].to_list()
    # a rejected row asking the first prompt again does not count; a kept one does
    same = batch.with_columns(prompt=pl.when(pl.col("id").is_in(rejected)).then(pl.lit(first))
                              .otherwise(pl.col("prompt")))  # fmt: skip
    assert run(distinct_prompts, same).passed
    repeated = same.with_columns(prompt=pl.col("prompt").replace(second, first))
    result = run(distinct_prompts, repeated)
    assert not result.passed and value(result, "repeated_kept_rows") == 1
    assert value(result, "distinct_prompts") == 2 and value(result, "allow_repeats") is False
    allowed = run(distinct_prompts, repeated, generation={"allow_repeats": True})
    assert allowed.passed and value(allowed, "allow_repeats") is True


def test_kept_rows_in_journal_fails_a_kept_row_the_teacher_never_answered(batch):
    assert run(kept_rows_in_journal, batch).passed
    strays = batch.head(2).with_columns(id=pl.Series(["not-from-the-teacher", "rejected-stray"]),
                                        status=pl.Series(["kept", "rejected"]))  # fmt: skip
    result = run(kept_rows_in_journal, pl.concat([batch, strays]))
    assert not result.passed and value(result, "missing_from_journal") == 1
    assert value(result, "examples") == ["not-from-the-teacher"]
    elsewhere = run(kept_rows_in_journal, batch, batch="2026-11-21|text")  # another batch's journal
    assert not elsewhere.passed and value(elsewhere, "missing_from_journal") == 3
