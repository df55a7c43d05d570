"""The batch decontamination (n-grams hashed and looked up in compiled code, only hits matched
word by word) names the same exam item for every row as the one-row matching it replaced."""

import textwrap
from collections import Counter

import numpy as np
import polars as pl
import pytest

from pipeline.curation import decontamination
from pipeline.curation.decontamination import (
    code_blocks,
    code_tokens,
    contamination_hits,
    decontaminate,
    exam_indexes,
    find_contamination,
    find_contamination_reference,
    renamed,
    words,
)
from pipeline.exam.data import read_humaneval, read_mmlu
from tests.test_curation import EXERCISE, renamed_copy


def old_text_match(index, text):
    """ExamIndex.match as it was, verbatim: every position's n-gram as a tuple."""
    tokens = words(text)
    hits = Counter()
    for i in range(len(tokens) - index.n + 1):
        hits.update(index.index.get(tuple(tokens[i : i + index.n]), ()))
    if hits:
        return hits.most_common(1)[0][0]
    for i in range(len(tokens) - 8 + 1):
        for whole, item_id in index.short.get(tuple(tokens[i : i + 8]), ()):
            if tuple(tokens[i : i + len(whole)]) == whole:
                return item_id
    return None


def old_code_match(code_index, text):
    """CodeIndex.match as it was, verbatim: every window renamed in Python."""
    grams = set()
    for block in code_blocks(text):
        tokens = code_tokens(textwrap.dedent(block))
        grams.update(renamed(tokens[i : i + code_index.n]) for i in range(len(tokens) - code_index.n + 1))
    hits = Counter(item for gram in grams for item in code_index.index.get(gram, ()))
    enough = {item: k for item, k in hits.items()
              if k >= min(code_index.coverage * code_index.size[item], code_index.long_run)}  # fmt: skip
    return Counter(enough).most_common(1)[0][0] if enough else None


def old_find(frame, index, code_index):
    out = {}
    for row_id, domain, text, status in frame.select("id", "domain", "text", "status").iter_rows():
        if status != "kept":
            continue
        item = old_text_match(index, text)
        if item is None and domain == "code":
            item = old_code_match(code_index, text)
        out[row_id] = item
    return out


PROSE = ("Photosynthesis is the process by which green plants use sunlight to turn water and carbon dioxide "
         "into sugar and oxygen. The leaves hold chlorophyll, a pigment that absorbs red and blue light.")  # fmt: skip
PRIME = ('def is_prime(n: int) -> bool:\n    """Whether n is prime."""\n    if n < 2:\n        return False\n'
         '    for k in range(2, int(n ** 0.5) + 1):\n        if n % k == 0:\n            return False\n'
         '    return True\n')  # fmt: skip
SEPARATORS = [" ", "  ", ", ", " - ", "\n", " \u00e9 ", "\u2014", " (", "; "]


def planted_rows(count: int, seed: int) -> pl.DataFrame:
    """Prose of exam vocabulary with MMLU items (whole, cut to 12-14 words, in other case and
    punctuation, with non-ASCII between words, with a Kelvin sign for a k), short items and their
    heads, HumanEval prompts in prose; code rows with renamed HumanEval copies inside other code,
    helpers, broken code; the planted items of tests/test_curation.py; empty and rejected rows."""
    rng = np.random.default_rng(seed)
    mmlu, humaneval = read_mmlu(), read_humaneval()
    exam_words = [w for item in mmlu[:4000] for w in item.question.split()]
    short = [i for i in mmlu if 8 <= len(words(i.question + " " + i.choices[i.answer])) < 13]

    def pick(seq):
        return seq[int(rng.integers(len(seq)))]

    def prose(lo=5, hi=300):
        return " ".join(pick(exam_words) for _ in range(int(rng.integers(lo, hi))))

    def mmlu_text(item):
        return item.question + " " + item.choices[item.answer]

    def disguise(text):
        way = int(rng.integers(5))
        if way == 0:
            return text.upper()
        if way == 1:
            return pick(SEPARATORS).join(text.split())
        if way == 2:
            return text.replace("k", "\u212a")  # Kelvin sign: lower() makes it a k again
        if way == 3:
            return text.replace("I", "\u0130", 1)  # dotted capital I: lower() makes it i + a dot
        return text

    item_30 = next(i for i in mmlu if len(i.question.split()) > 25)
    specs = [("text", PROSE), ("text", "Here is a practice question. " + item_30.question + " Think about it."),
             ("text", "A lightly edited copy: " + item_30.question.replace(" the ", " THE ", 1).replace(",", " ,")),
             ("code", humaneval[3].prompt + humaneval[3].canonical_solution), ("code", EXERCISE),
             ("code", f"### Function\n```python\n{PRIME}```\n"), ("text", ""), ("code", ""), ("text", "   "),
             ("code", 'def count_letters(word: str) -> int:\n    """How long."""\n    return len(word)\n')]  # fmt: skip
    specs += [("code", "### Function\n```python\nimport math\n\n" + renamed_copy(p.prompt + p.canonical_solution)
               + "\n```\n") for p in humaneval[30:40] + [humaneval[94], humaneval[56], humaneval[61]]]  # fmt: skip
    while len(specs) < count:
        kind = int(rng.integers(12))
        if kind <= 3:  # prose, half of it with an item inside
            text = prose()
            if kind <= 1:
                text = " ".join([prose(0, 80), disguise(mmlu_text(pick(mmlu))), prose(0, 80)])
            specs.append(("text", text))
        elif kind == 4:  # an item's words cut around n
            item_words = words(mmlu_text(pick(mmlu)))
            cut = int(rng.integers(11, 15))
            specs.append(("text", " ".join([prose(0, 20), *item_words[:cut], prose(0, 20)])))
        elif kind == 5:  # a short item whole, or its head and a little more, or less than its head
            item_words = words(mmlu_text(pick(short)))
            cut = [len(item_words), 8, 7, len(item_words) - 1][int(rng.integers(4))]
            specs.append(("text", " ".join([prose(0, 30), disguise(" ".join(item_words[:cut])), prose(0, 30)])))
        elif kind == 6:  # HumanEval prompt or solution in prose
            problem = pick(humaneval)
            specs.append(("text", prose(0, 50) + "\n" + pick([problem.prompt, problem.canonical_solution])))
        elif kind <= 9:  # code: a renamed problem (or a part of one) inside other code
            problem = pick(humaneval)
            source = renamed_copy(problem.prompt + problem.canonical_solution)
            lines = source.splitlines()
            if kind == 8:
                start = int(rng.integers(len(lines)))
                source = "\n".join(lines[start : start + int(rng.integers(3, 15))])
            blocks = [f"```python\n{source}\n```", f"```python\n{PRIME}```"]
            if kind == 9:
                blocks.append("```python\nx = 'unterminated\n```")
            rng.shuffle(blocks)
            specs.append(("code", "### Function\n" + "\n\n".join(blocks) + "\n" + prose(0, 20)))
        elif kind == 10:  # code with no fence, or broken
            problem = pick(humaneval)
            source = problem.prompt + problem.canonical_solution
            specs.append(("code", pick([source, source[: len(source) // 2], "def broken(:\n" + source, EXERCISE])))
        else:
            specs.append(("code", prose(0, 60)))
    status = ["rejected" if rng.random() < 0.05 else "kept" for _ in specs]
    return pl.DataFrame({
        "id": [f"row{i:05d}" for i in range(len(specs))], "domain": [d for d, _ in specs],
        "text": [t for _, t in specs], "status": status, "reason": [None] * len(specs),
        "contamination": [None] * len(specs),
    }, schema_overrides={"reason": pl.String, "contamination": pl.String})  # fmt: skip


@pytest.fixture(scope="module")
def indexes():
    return exam_indexes(13, 20)


@pytest.mark.parametrize("seed", [0, 1])
def test_batch_path_names_the_same_items_as_matching_row_by_row(indexes, seed):
    index, code_index = indexes
    frame = planted_rows(2500, seed)
    expected = old_find(frame, index, code_index)
    assert find_contamination(frame, index, code_index) == expected
    assert find_contamination_reference(frame, index, code_index) == expected
    hits = {r: item for r, item in expected.items() if item is not None}
    assert dict(contamination_hits(frame, index, code_index).iter_rows()) == hits
    # the set is not trivial: many hits of every sort
    assert len(hits) > 500
    assert sum(item.startswith("HumanEval") for item in hits.values()) > 100
    text = dict(zip(frame["id"], frame["text"], strict=True))
    assert sum("\u212a" in text[r] for r in hits) > 5  # matched through Python's lower case only
    short = {item_id for heads in index.short.values() for _, item_id in heads}
    assert sum(item in short for item in hits.values()) > 20

    out = decontaminate(frame, index, code_index)
    rejected = dict(zip(out["id"], out["reason"], strict=True))
    assert {r for r, why in rejected.items() if why == "decontamination:ngram"} == set(hits)


def test_chunks_and_screen_miss_nothing(indexes, monkeypatch):
    """Batches cut in small chunks give the same answers; every row the one-row match finds
    something in is a suspect of the hash screen."""
    index, code_index = indexes
    frame = planted_rows(400, 2)
    expected = old_find(frame, index, code_index)
    monkeypatch.setattr(decontamination, "_CHUNK_ROWS", 7)
    assert find_contamination(frame, index, code_index) == expected
    suspects = index.suspects(frame["text"])
    for row, (row_id, text) in enumerate(zip(frame["id"], frame["text"], strict=True)):
        if expected.get(row_id) is not None and old_text_match(index, text) is not None:
            assert suspects[row], row_id


def test_empty_batches(indexes):
    index, code_index = indexes
    frame = planted_rows(0, 0).clear()
    assert find_contamination(frame, index, code_index) == {}
    assert contamination_hits(frame, index, code_index).height == 0
    assert index.matches([]) == {} and code_index.matches([]) == []
