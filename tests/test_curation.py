"""Curation rules, exact dedup and decontamination on rows that follow the contract."""

import json
from datetime import UTC, datetime

import polars as pl
import pytest

from pipeline.curation.curate import curate, yield_table
from pipeline.curation.decontamination import CodeIndex, ExamIndex, code_tokens, decontaminate, renamed
from pipeline.curation.dedup import DedupIndex, dedup_batch, exact_dedup
from pipeline.curation.minhash import MinHashParams, band_keys, clusters, signatures
from pipeline.exam.data import read_humaneval, read_mmlu
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


def rows(*specs: tuple[str, str], batch: str = "2026-11-20|text", prefix: str = "row") -> pl.DataFrame:
    now = datetime.now(UTC)
    records = [
        {"id": f"{prefix}{i:03d}", "domain": domain, "batch": batch, "topic": "t", "audience": "a", "style": "s",
         "template": "x", "prompt": "p", "text": text, "teacher_model": "m", "sampling": "{}",
         "prompt_tokens": 1, "completion_tokens": len(text.split()), "finish_reason": "stop",
         "created_at": now, "status": "kept", "reason": None, "checks": "{}",
         "minhash_cluster": None, "contamination": None, "quality_score": None}
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
                 CurationSettings(sandbox={"timeout_s": 2}))  # fmt: skip
    assert reasons(out) == [None, reason, "curation:code_format"]
    checks = json.loads(out.sort("id")["checks"][0])
    assert checks["code"] == "passed"


def test_exact_dedup_keeps_one_row_per_normalized_text():
    frame = rows(("text", PROSE), ("text", PROSE.upper() + "  !!"), ("text", PROSE + " Extra sentence."))
    out = exact_dedup(frame)
    assert reasons(out) == [None, "dedup:exact", None]
    assert json.loads(out.sort("id")["checks"][1]) == {"duplicate_of": "row000"}


def test_rejected_rows_keep_their_first_reason():
    frame = rows(("text", "short"), ("text", "short"))
    out = exact_dedup(curate(frame, CurationSettings()))
    assert reasons(out) == ["curation:too_few_words", "curation:too_few_words"]


@pytest.fixture(scope="module")
def exam_index():
    return ExamIndex(13)


@pytest.fixture(scope="module")
def code_index():
    return CodeIndex(20)


def test_planted_exam_leaks_are_caught_and_named(exam_index, code_index):
    item = next(i for i in read_mmlu() if len(i.question.split()) > 25)
    problem = read_humaneval()[3]
    edited = item.question.replace(" the ", " THE ", 1).replace(",", " ,")
    frame = rows(
        ("text", PROSE),
        ("text", "Here is a practice question. " + item.question + " Think about it."),
        ("text", "A lightly edited copy: " + edited),
        ("code", problem.prompt + problem.canonical_solution),
    )
    out = decontaminate(frame, exam_index, code_index).sort("id")
    assert out["reason"].to_list() == [None] + ["decontamination:ngram"] * 3
    named = [json.loads(c)["exam_item"] if c else None for c in out["contamination"]]
    assert named == [None, item.id, item.id, problem.task_id]


def renamed_copy(source: str) -> str:
    """The same code with every user identifier renamed, as a copier would disguise it."""
    import builtins
    import keyword
    import re

    names: dict[str, str] = {}

    def rename(match):
        word = match.group(0)
        if word in keyword.kwlist or word in dir(builtins):
            return word
        return names.setdefault(word, f"thing_{len(names)}")

    return re.sub(r"\b[A-Za-z_]\w*\b", rename, source)


def test_humaneval_solutions_with_renamed_identifiers_are_caught(exam_index, code_index):
    problems = read_humaneval()[30:40]  # none of the 8 one-liners shorter than 20 tokens
    texts = [("code", "### Function\n```python\nimport math\n\n" + renamed_copy(p.prompt + p.canonical_solution)
              + "\n```\n") for p in problems]  # fmt: skip
    out = decontaminate(rows(*texts, ("code", EXERCISE)), exam_index, code_index).sort("id")
    assert out["reason"].to_list() == ["decontamination:ngram"] * 10 + [None]
    by_id = {p.task_id: p for p in read_humaneval()}
    for planted, named in zip(problems, out["contamination"][:10], strict=True):
        match = by_id[json.loads(named)["exam_item"]]
        # the item itself, or a twin whose solution is the same code (HumanEval/7 and /29 are)
        assert match.task_id == planted.task_id or (
            renamed(code_tokens(match.canonical_solution)) == renamed(code_tokens(planted.canonical_solution))
        )


def mutate(words: list[str], fraction: float, rng) -> list[str]:
    out = list(words)
    for i in rng.choice(len(out), int(fraction * len(out)), replace=False):
        out[i] = f"novel{rng.integers(1_000_000)}"
    return out


def test_planted_near_duplicates_are_clustered_and_distinct_rows_are_not():
    import numpy as np

    rng = np.random.default_rng(0)
    vocabulary = [f"word{i}" for i in range(3000)]
    originals = [list(rng.choice(vocabulary, 300)) for _ in range(30)]
    near = [mutate(doc, 0.01, rng) for doc in originals[:10]]  # ~95% of shingles shared
    texts = [" ".join(d) for d in originals + near]
    labels = clusters(band_keys(signatures(texts)))
    for i in range(10):
        assert labels[30 + i] == labels[i]  # each copy joins its original
    assert len(set(labels[:30])) == 30  # the distinct documents stay apart


def texts_in(*frames: pl.DataFrame):
    """A `TextsOf` over frames held in memory (the chain reads the `curated` tables)."""
    every = pl.concat(frames)
    return lambda batch, ids: every.filter(pl.col("id").is_in(ids)).select("id", "text")


def test_near_dedup_is_incremental_and_earlier_batches_win(tmp_path):
    import numpy as np

    rng = np.random.default_rng(1)
    vocabulary = [f"w{i}" for i in range(2000)]
    docs = [list(rng.choice(vocabulary, 200)) for _ in range(6)]
    first = rows(*[("text", " ".join(d)) for d in docs[:3]], batch="2026-11-20|text", prefix="a")
    index = DedupIndex(tmp_path, MinHashParams())
    out, stats = dedup_batch(first, index, texts_in(first))
    assert stats.earlier_batches == 0 and stats.near == 0
    assert out["minhash_cluster"].to_list() == out["id"].to_list()

    second = rows(("text", " ".join(mutate(docs[1], 0.01, rng))), *[("text", " ".join(d)) for d in docs[3:]],
                  batch="2026-11-21|text", prefix="b")  # fmt: skip
    out, stats = dedup_batch(second, index, texts_in(first, second))
    assert stats.earlier_batches == 1 and stats.signatures_computed == 4 and stats.earlier_rows_read >= 1
    near = out.filter(pl.col("reason") == "dedup:near")
    assert near["id"].to_list() == ["b000"]
    assert json.loads(near["checks"][0]) == {"near_duplicate_of": "a001"}
    assert near["minhash_cluster"][0] == "a001"


def test_yield_is_kept_tokens_over_teacher_tokens():
    frame = curate(rows(("text", PROSE), ("text", "Too short.")), CurationSettings())
    table = yield_table(frame).filter(pl.col("dimension") == "template")
    kept_tokens = len(PROSE.split())
    assert table["yield"][0] == round(kept_tokens / (kept_tokens + 2), 3)


@pytest.mark.parametrize(
    "text, reason",
    [
        (PROSE, None),
        ("\n".join([PROSE[:120] + "."] * 4 + [PROSE]), "curation:dup_line_frac"),
        (" ".join(["the water cycle moves water"] * 40), "curation:top_2gram_frac"),
        (
            PROSE
            + "\n"
            + "\n".join(
                f"{a} {b}."
                for a in ("oak", "elm", "ash", "fir", "yew", "box", "bay", "fig")
                for b in ("grows", "bends", "blooms", "rests", "sways")
            ),
            "curation:short_line_ratio",
        ),
        ("\n".join(PROSE.split(". ")).replace(".", ""), "curation:line_punct_ratio"),
    ],
)
def test_gopher_repetition_and_fineweb_line_rules(text, reason):
    out = curate(rows(("text", text)), CurationSettings())
    assert out["reason"][0] == reason


def test_generic_one_line_code_is_not_taken_for_humaneval(exam_index, code_index):
    """`def f(word: str) -> int: return len(word)` has the shape of HumanEval/23, and of much
    innocent code: it is not contamination."""
    code = 'def count_letters(word: str) -> int:\n    """How long."""\n    return len(word)\n'
    text = f"### Function\n```python\n{code}```\n"
    out = decontaminate(rows(("code", text)), exam_index, code_index)
    assert out["reason"][0] is None


def test_a_helper_some_problem_contains_is_not_that_problem(exam_index, code_index):
    """HumanEval/94 defines an `isPrime` helper inside its solution; a textbook prime test shares
    9 of its 81 n-grams, a renamed copy of the whole problem all of them."""
    prime = ('def is_prime(n: int) -> bool:\n    """Whether n is prime."""\n    if n < 2:\n        return False\n'
             '    for k in range(2, int(n ** 0.5) + 1):\n        if n % k == 0:\n            return False\n'
             '    return True\n')  # fmt: skip
    problem = next(p for p in read_humaneval() if p.task_id == "HumanEval/94")
    copy = renamed_copy(problem.prompt + problem.canonical_solution)
    out = decontaminate(rows(*[("code", f"### Function\n```python\n{c}```\n") for c in (prime, copy)]),
                        exam_index, code_index).sort("id")  # fmt: skip
    assert out["reason"].to_list() == [None, "decontamination:ngram"]
    assert json.loads(out["contamination"][1])["exam_item"] == "HumanEval/94"


def test_verify_jaccard_keeps_pairs_that_only_lsh_took_for_duplicates(tmp_path):
    """14 x 8 LSH also pairs documents near J = 0.7; with `verify_jaccard` such pairs stay apart
    while true near-copies (J ~ 0.98) are still rejected."""
    import numpy as np

    rng = np.random.default_rng(2)
    vocabulary = [f"v{i}" for i in range(5000)]
    originals = [list(rng.choice(vocabulary, 300)) for _ in range(40)]
    loose = [mutate(doc, 0.04, rng) for doc in originals[:30]]  # ~0.69 of 5-gram shingles shared
    close = [mutate(doc, 0.002, rng) for doc in originals[30:]]  # ~0.98
    first = rows(*[("text", " ".join(d)) for d in originals], batch="2026-11-20|text", prefix="a")
    second = rows(*[("text", " ".join(d)) for d in loose + close], batch="2026-11-21|text", prefix="b")
    frame = pl.concat([first, second])

    def near_ids(verify: float) -> set[str]:
        out, _ = dedup_batch(frame, DedupIndex(tmp_path / str(verify), MinHashParams()), texts_in(frame), verify)
        return set(out.filter(pl.col("reason").str.starts_with("dedup:"))["id"])  # 0.2% of 300 words: exact

    loose_ids, close_ids = {f"b{i:03d}" for i in range(30)}, {f"b{i:03d}" for i in range(30, 40)}
    unverified, verified = near_ids(0.0), near_ids(0.9)
    assert close_ids <= unverified and close_ids <= verified
    assert len(unverified & loose_ids) >= 5  # LSH alone takes several J ~ 0.69 pairs
    assert not verified & loose_ids


def test_document_rules_decide_the_same_on_any_number_of_processes():
    """The prose document rules spread over processes in chunks: every one of a few thousand
    documents (clean, repeated lines, repeated phrases, list-like) gets the verdict it gets
    alone, in its own place."""
    from pipeline.curation.curate import MIN_DOCUMENTS_PER_WORKER, document_reasons
    from pipeline.curation.rules import document_reason

    sentences = [s.strip() + "." for s in PROSE.split(".") if s.strip()]
    kinds = [
        lambda i: " ".join(sentences[i % len(sentences) :] + sentences[: i % len(sentences)]),
        lambda i: "\n".join([sentences[i % len(sentences)]] * 4 + sentences),
        lambda i: PROSE + " " + f"the leaves look green number {i} " * 12,
        lambda i: "\n".join(f"- item {i} {w}" for w in PROSE.split()[: 20 + i % 9]),
    ]
    texts = [kinds[i % len(kinds)](i) for i in range(3 * MIN_DOCUMENTS_PER_WORKER)]
    alone = [document_reason(text, CurationSettings()) for text in texts]
    assert len(set(alone)) >= 3  # the kinds are judged differently
    assert document_reasons(texts, CurationSettings(workers=2)) == alone
    assert document_reasons(texts, CurationSettings(workers=3)) == alone


def test_shingles_are_the_word_five_grams_a_reader_would_count():
    """Shingle hashes stand for word 5-grams: a word is a run of letters and digits (`_` and
    punctuation separate, case does not count); the shared hashes of two texts are their shared
    5-grams, and a text under five words is one shingle."""
    import re

    import numpy as np

    from pipeline.curation.minhash import shingles

    def grams(text: str) -> set[tuple[str, ...]]:
        words = re.findall(r"[^\W_]+", text.lower())
        return {tuple(words[i : i + 5]) for i in range(len(words) - 4)} or ({tuple(words)} if words else set())

    texts = [
        "def total_price(items):\n    return sum(item.price for item in items)  # the total",
        "DEF Total_Price(items): return SUM(item.price for item in items) -- the total!",
        "Café au lait, s'il vous plaît: the café serves it hot and the café serves it cold.",
        "too short here",
        "",
        None,
        PROSE,
        PROSE.replace("chlorophyll", "carotene").replace("oxygen", "O2"),
    ]
    values, starts = shingles(texts, 5)
    ends = np.append(starts[1:], values.size)
    hashed = [set(values[a:b].tolist()) for a, b in zip(starts, ends, strict=True)]
    expected = [grams(t or "") for t in texts]
    assert [len(h) for h in hashed] == [len(g) for g in expected]
    assert [ends[i] - starts[i] for i in (3, 4, 5)] == [1, 0, 0]
    for i in range(len(texts)):
        for j in range(len(texts)):
            assert len(hashed[i] & hashed[j]) == len(expected[i] & expected[j]), (i, j)


def test_screening_by_hash_finds_what_matching_every_row_finds():
    """Rows screened by n-gram hashes first, then matched word by word, get the same item as
    matching every row: on rows with exam items planted in other case and punctuation, short
    items (under 13 words), empty and short texts, and code."""
    import numpy as np

    from pipeline.curation.decontamination import contamination_hits, exam_indexes

    index, code_index = exam_indexes(13, 20)
    rng = np.random.default_rng(7)
    items = read_mmlu()
    short = [i for i in items if 8 <= len((i.question + " " + i.choices[i.answer]).split()) < 13]
    specs = [("text", ""), ("text", "Too short."), ("code", EXERCISE)]
    for k in range(300):
        filler = " ".join(f"word{w}" for w in rng.integers(0, 5000, int(rng.integers(20, 400))))
        if k % 4 == 0:
            item = (short if k % 8 == 0 else items)[int(rng.integers(len(short) if k % 8 == 0 else len(items)))]
            planted = item.question + " " + item.choices[item.answer]
            planted = planted.upper() if k % 3 == 0 else planted.replace(" ", ",  ")
            filler = filler[: len(filler) // 2] + " " + planted + ". " + filler[len(filler) // 2 :]
        specs.append(("text", filler))
    frame = rows(*specs)
    expected = {r: index.match(t) for r, t in zip(frame["id"], frame["text"], strict=True)}
    expected = {r: item for r, item in expected.items() if item is not None}
    assert len(expected) > 50
    assert dict(contamination_hits(frame, index, code_index).iter_rows()) == expected
