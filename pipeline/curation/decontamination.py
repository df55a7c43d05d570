"""Decontamination: reject rows that share an n-gram with an exam item (MMLU, HumanEval).

Text check: lower-cased word n-grams (n = 13, as GPT-3 and datatrove) of every MMLU question
with its answer and every HumanEval prompt; items shorter than n count as one whole sequence.
Code check: Python token n-grams after renaming every user identifier to its order of first
appearance (v0, v1, ...) and every string to STR, so a HumanEval solution with renamed
variables and rewritten docstrings still matches. A rejected row names the exam item it matched.
"""

from __future__ import annotations

import builtins
import io
import keyword
import re
import textwrap
import tokenize
from collections import Counter
from functools import cache

import numpy as np
import polars as pl

from pipeline.curation import minhash
from pipeline.exam.data import read_humaneval, read_mmlu
from pipeline.markdown import fenced_python_blocks
from pipeline.rows import KEPT, reject

_MIN_ITEM_WORDS = 8  # shorter items ("What is 2+2?") would match ordinary prose


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


_KEEP_NAMES = set(keyword.kwlist) | set(dir(builtins))
_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
         tokenize.ENCODING, tokenize.ENDMARKER}  # fmt: skip


def code_tokens(source: str) -> list[str]:
    """Python tokens, strings blanked to STR; user identifiers are prefixed with "$" so that
    `renamed` can number them. Text that is not Python yields the tokens before the first error."""
    out: list[str] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in _SKIP:
                continue
            if tok.type == tokenize.NAME and tok.string not in _KEEP_NAMES:
                out.append("$" + tok.string)
            elif tok.type == tokenize.STRING:
                out.append("STR")
            else:
                out.append(tok.string)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return out


def renamed(window: list[str]) -> tuple[str, ...]:
    """Identifiers numbered by first appearance inside this window, so that the same code
    gets the same n-grams wherever it sits in a file and whatever its names."""
    names: dict[str, str] = {}
    return tuple(names.setdefault(t, f"v{len(names)}") if t[0] == "$" else t for t in window)


def code_blocks(text: str) -> list[str]:
    """The fenced Python blocks of a row, or the whole text when it has none."""
    return fenced_python_blocks(text) or [text]


def _add(index: dict, gram: tuple, item_id: str) -> None:
    items = index.setdefault(gram, [])
    if item_id not in items:
        items.append(item_id)


def _best(hits: Counter) -> str | None:
    """The item sharing the most n-grams (items that share boilerplate all get those hits;
    the item's own n-grams decide)."""
    return hits.most_common(1)[0][0] if hits else None


class CodeIndex:
    """Renamed-token n-grams of every HumanEval prompt + canonical solution.

    A row matches a problem when it holds at least `coverage` of the problem's distinct n-grams
    (or `long_run` of them, a long copied stretch of a large problem): a renamed copy holds all
    of them, while a generic helper that a problem happens to contain (`is_prime` inside
    HumanEval/94: 9 of 81) holds a few. The 8 problems shorter than n = 20 tokens (`strlen`,
    `add`, ...) are not indexed: renamed, they are generic code (`def f(x): return len(x)`);
    their docstrings are still caught by the word n-gram check."""

    def __init__(self, n: int = 20, coverage: float = 0.5, long_run: int = 40):
        self.n, self.coverage, self.long_run = n, coverage, long_run
        self.index: dict[tuple[str, ...], list[str]] = {}
        for problem in read_humaneval():
            for source in (problem.prompt + problem.canonical_solution, problem.canonical_solution):
                tokens = code_tokens(textwrap.dedent(source))
                for i in range(len(tokens) - n + 1):
                    _add(self.index, renamed(tokens[i : i + n]), problem.task_id)
        self.size = Counter(item for items in self.index.values() for item in items)

    def match(self, text: str) -> str | None:
        grams = set()
        for block in code_blocks(text):
            tokens = code_tokens(textwrap.dedent(block))
            grams.update(renamed(tokens[i : i + self.n]) for i in range(len(tokens) - self.n + 1))
        hits = Counter(item for gram in grams for item in self.index.get(gram, ()))
        enough = {item: k for item, k in hits.items()
                  if k >= min(self.coverage * self.size[item], self.long_run)}  # fmt: skip
        return _best(Counter(enough))


# A byte's value in a decontamination word (`[a-z0-9]+` of the lower-cased text), 0 for a separator.
_WORD_BYTES = np.zeros(256, dtype=np.uint64)
for _lo, _hi in ((48, 58), (97, 123)):
    _WORD_BYTES[_lo:_hi] = np.arange(_lo, _hi)
_WORD_BYTES[65:91] = np.arange(97, 123)


def ngram_hashes(texts: list[str] | pl.Series, n: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every word n-gram of every text (compiled, over the Arrow bytes; a text
    under n words gives one hash of all its words), flat, and each text's start in them."""
    data, offsets = minhash.utf8_buffer(texts)
    return minhash._shingle_hashes(data, offsets, n, _WORD_BYTES)


class ExamIndex:
    """Word n-gram -> exam item ids, for every MMLU question (with its answer) and HumanEval
    prompt and solution; beside it, the n-grams' 64-bit hashes, so that a whole batch is screened
    at once and only the rows that share a hash are matched word by word."""

    def __init__(self, n: int = 13):
        self.n = n
        self.index: dict[tuple[str, ...], list[str]] = {}
        # Items shorter than n, keyed by their first _MIN_ITEM_WORDS words.
        self.short: dict[tuple[str, ...], list[tuple[tuple[str, ...], str]]] = {}
        for item in read_mmlu():
            self._add(item.id, item.question + " " + item.choices[item.answer])
        for problem in read_humaneval():
            self._add(problem.task_id, problem.prompt)
            # A short solution's words ("while b a b b a b return a") are generic code, not an item.
            self._add(problem.task_id, problem.canonical_solution, whole_if_short=False)

        grams = [" ".join(g) for g in self.index]
        heads = [" ".join(h) for h in self.short]
        self.gram_hashes = pl.Series(ngram_hashes(grams, self.n)[0] if grams else [], dtype=pl.UInt64).unique()
        self.head_hashes = pl.Series(ngram_hashes(heads, _MIN_ITEM_WORDS)[0] if heads else [], dtype=pl.UInt64).unique()

    def suspects(self, texts: pl.Series) -> np.ndarray:
        """Which texts share an n-gram (or a short item's first words) with an exam item, by hash:
        a superset of the texts `match` finds something in (a hash collision only costs a look)."""
        out = np.zeros(len(texts), dtype=bool)
        for hashes, n in ((self.gram_hashes, self.n), (self.head_hashes, _MIN_ITEM_WORDS)):
            values, starts = ngram_hashes(texts, n)
            if values.size:  # a hash set look-up (polars), not a sort of every n-gram
                hit = pl.Series(values, dtype=pl.UInt64).is_in(hashes.implode()).to_numpy()
                before = np.concatenate([[0], np.cumsum(hit)])  # hits before each position
                out |= before[np.append(starts[1:], values.size)] - before[starts] > 0
        return out

    def _add(self, item_id: str, text: str, whole_if_short: bool = True) -> None:
        tokens = words(text)
        if len(tokens) >= self.n:
            for gram in ngrams(tokens, self.n):
                _add(self.index, gram, item_id)
        elif whole_if_short and len(tokens) >= _MIN_ITEM_WORDS:
            head = tuple(tokens[:_MIN_ITEM_WORDS])
            self.short.setdefault(head, []).append((tuple(tokens), item_id))

    def match(self, text: str) -> str | None:
        """The exam item sharing the most n-grams with `text`, or None."""
        tokens = words(text)
        hits: Counter = Counter()
        for i in range(len(tokens) - self.n + 1):
            hits.update(self.index.get(tuple(tokens[i : i + self.n]), ()))
        if hits:
            return _best(hits)
        for i in range(len(tokens) - _MIN_ITEM_WORDS + 1):
            for whole, item_id in self.short.get(tuple(tokens[i : i + _MIN_ITEM_WORDS]), ()):
                if tuple(tokens[i : i + len(whole)]) == whole:
                    return item_id
        return None


def contamination_hits(frame: pl.DataFrame, index: ExamIndex, code_index: CodeIndex) -> pl.DataFrame:
    """(id, item) of the kept rows that match an exam item. Text: every row's n-grams are hashed
    at once and only rows sharing a hash with the exam are matched word by word. Code rows also
    go through the renamed-token check, one by one (Python's tokenizer: ~200 rows/s a core, below
    the sandbox's ~89 programs/s that every code row pays anyway)."""
    kept = frame.filter(KEPT).select("id", "domain", "text")
    kept = kept.with_columns(suspect=pl.Series(index.suspects(kept["text"]) if kept.height else [], dtype=pl.Boolean))
    found = []
    for row_id, domain, text, suspect in kept.filter(pl.col("suspect") | (pl.col("domain") == "code")).iter_rows():
        item = index.match(text) if suspect else None
        if item is None and domain == "code":
            item = code_index.match(text)
        if item is not None:
            found.append((row_id, item))
    return pl.DataFrame(found, schema={"id": pl.String, "item": pl.String}, orient="row")


def find_contamination(frame: pl.DataFrame, index: ExamIndex, code_index: CodeIndex) -> dict[str, str | None]:
    """The exam item each kept row matches (None when clean); code rows get both checks."""
    hits = dict(contamination_hits(frame, index, code_index).iter_rows())
    return {row_id: hits.get(row_id) for row_id in frame.filter(KEPT)["id"]}


def decontaminate(frame: pl.DataFrame, index: ExamIndex, code_index: CodeIndex) -> pl.DataFrame:
    matched = contamination_hits(frame, index, code_index).rename({"item": "_item"})
    frame = frame.join(matched, on="id", how="left", maintain_order="left")
    frame = frame.with_columns(
        contamination=pl.when(pl.col("_item").is_not_null())
        .then(pl.format('{{"exam_item": "{}"}}', pl.col("_item")))
        .otherwise(pl.col("contamination"))
    )
    return reject(frame, pl.when(pl.col("_item").is_not_null()).then(pl.lit("decontamination:ngram"))).drop("_item")


@cache
def exam_indexes(ngram: int, code_ngram: int) -> tuple[ExamIndex, CodeIndex]:
    """Both indexes, built once per process: the asset and its blocking check share them."""
    return ExamIndex(ngram), CodeIndex(code_ngram)
