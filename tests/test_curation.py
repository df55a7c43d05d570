"""Curation rules, exact dedup and decontamination on rows that follow the contract."""

import json
from datetime import UTC, datetime

import polars as pl
import pytest

from pipeline.curation import curate, exact_dedup
from pipeline.decontamination import ExamIndex, decontaminate
from pipeline.exam_data import read_humaneval, read_mmlu
from pipeline.rows import SCHEMA, conform
from pipeline.settings import CurationSettings

PROSE = (
    "Photosynthesis is the process by which green plants use sunlight to turn water and carbon "
    "dioxide into sugar and oxygen. The leaves hold chlorophyll, a pigment that absorbs red and "
    "blue light and reflects green light, which is why leaves look green to us. Inside the "
    "chloroplasts, light energy splits water molecules, releasing oxygen into the air. The plant "
    "then uses the captured energy to build glucose, which feeds its growth and is stored as starch."
)
EXERCISE = (
    '### Function\n```python\ndef double(x: int) -> int:\n    """Twice x."""\n    return 2 * x\n```\n\n'
    "### Tests\n```python\nassert double(2) == 4\nassert double(-1) == -2\n```\n"
)


def rows(*specs: tuple[str, str]) -> pl.DataFrame:
    now = datetime.now(UTC)
    records = [
        {"id": f"row{i}", "domain": domain, "batch": "b", "topic": "t", "audience": "a", "style": "s",
         "template": "x", "prompt": "p", "text": text, "teacher_model": "m", "sampling": "{}",
         "prompt_tokens": 1, "completion_tokens": len(text.split()), "finish_reason": "stop",
         "created_at": now, "status": "kept", "reason": None, "checks": "{}",
         "minhash_cluster": None, "contamination": None}
        for i, (domain, text) in enumerate(specs)
    ]  # fmt: skip
    return conform(pl.DataFrame(records, schema=SCHEMA))


def reasons(frame: pl.DataFrame) -> list:
    return frame.sort("id")["reason"].to_list()


def test_prose_rules_judge_text_rows_only():
    frame = rows(
        ("text", PROSE),
        ("text", "Too short."),
        ("text", "#sunlight " * 20 + PROSE),
        ("text", "1234 5678 " * 40),
        ("code", EXERCISE),  # far fewer than min_words, but code is not judged by prose rules
    )
    out = curate(frame, CurationSettings())
    assert reasons(out) == [
        None, "curation:too_few_words", "curation:symbol_ratio", "curation:alpha_words", None,
    ]  # fmt: skip
    assert out.schema == SCHEMA


@pytest.mark.parametrize(
    "body, reason",
    [
        ("    return 3 * x", "curation:tests_failed"),
        ("    while True:\n        pass", "curation:tests_timeout"),
        ("    return (", "curation:syntax_error"),
    ],
)
def test_code_rows_run_their_own_tests(body, reason):
    broken = EXERCISE.replace("    return 2 * x", body)
    out = curate(rows(("code", EXERCISE), ("code", broken), ("code", "just prose, no code")),
                 CurationSettings(sandbox_timeout_s=2))  # fmt: skip
    assert reasons(out) == [None, reason, "curation:code_format"]
    checks = json.loads(out.sort("id")["checks"][0])
    assert checks["code"] == "passed"


def test_exact_dedup_keeps_one_row_per_normalized_text():
    frame = rows(("text", PROSE), ("text", PROSE.upper() + "  !!"), ("text", PROSE + " Extra sentence."))
    out = exact_dedup(frame)
    assert reasons(out) == [None, "dedup:exact", None]
    assert json.loads(out.sort("id")["checks"][1]) == {"duplicate_of": "row0"}


def test_rejected_rows_keep_their_first_reason():
    frame = rows(("text", "short"), ("text", "short"))
    out = exact_dedup(curate(frame, CurationSettings()))
    assert reasons(out) == ["curation:too_few_words", "curation:too_few_words"]


@pytest.fixture(scope="module")
def exam_index():
    return ExamIndex(13)


def test_planted_exam_leaks_are_caught_and_named(exam_index):
    item = next(i for i in read_mmlu() if len(i.question.split()) > 25)
    problem = read_humaneval()[3]
    edited = item.question.replace(" the ", " THE ", 1).replace(",", " ,")
    frame = rows(
        ("text", PROSE),
        ("text", "Here is a practice question. " + item.question + " Think about it."),
        ("text", "A lightly edited copy: " + edited),
        ("code", problem.prompt + problem.canonical_solution),
    )
    out = decontaminate(frame, exam_index).sort("id")
    assert out["reason"].to_list() == [None] + ["decontamination:ngram"] * 3
    named = [json.loads(c)["exam_item"] if c else None for c in out["contamination"]]
    assert named == [None, item.id, item.id, problem.task_id]
