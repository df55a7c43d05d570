"""Curation rules for prose: each rule is one small named thing that says keep (None) or why not.

Table rules are polars expressions over the whole batch (Gopher's quality rules), true where a
row breaks the rule. Document rules look at one document's lines, paragraphs and n-gram counts
(Gopher's repetition rules, FineWeb's line rules), as datatrove's filters do, and return the
name of the rule that fired. The stage (`curate`) applies them in order; the first reason wins.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import polars as pl

from pipeline.settings import CurationSettings, FineWebSettings, GopherSettings

_WORDS = pl.col("text").str.extract_all(r"\S+")


def table_rules(s: GopherSettings) -> list[tuple[str, pl.Expr]]:
    """(name, expression that is true when the row breaks the rule): Gopher's quality rules."""
    words = _WORDS.list.len()
    mean_len = _WORDS.list.eval(pl.element().str.len_chars()).list.mean()
    symbols = pl.col("text").str.count_matches(r"#|\.\.\.|…")
    alpha = _WORDS.list.eval(pl.element().str.contains(r"[^\W\d_]")).list.mean()
    return [
        ("too_few_words", words < s.min_words),
        ("too_many_words", words > s.max_words),
        ("mean_word_length", (mean_len < s.min_mean_word_length) | (mean_len > s.max_mean_word_length)),
        ("symbol_ratio", symbols / words > s.max_symbol_word_ratio),
        ("alpha_words", alpha < s.min_alpha_word_ratio),
    ]  # fmt: skip


def first_reason(rules: list[tuple[str, pl.Expr]], stage: str) -> pl.Expr:
    """`<stage>:<name>` of the first rule a row breaks, else null."""
    return pl.coalesce(
        [pl.when(broken).then(pl.lit(f"{stage}:{name}")) for name, broken in rules] + [pl.lit(None, pl.String)]
    )


class Document:
    """One text split the ways the document rules count it."""

    def __init__(self, text: str):
        self.text = text
        self.chars = max(len(text), 1)
        self.lines = [line.strip() for line in text.split("\n") if line.strip()]
        self.paragraphs = [p.strip() for p in re.split(r"\n{2,}", text) if p.strip()]
        self.words = re.findall(r"\w+", text.lower())
        self.word_chars = max(sum(map(len, self.words)), 1)


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(elements repeated after their first occurrence, their characters), as Gopher counts."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def repeated_lines_and_paragraphs(doc: Document, s: GopherSettings) -> str | None:
    """Gopher: too many lines or paragraphs (or their characters) repeat an earlier one."""
    for unit, items, max_frac, max_char_frac in (
        ("line", doc.lines, s.max_dup_line_frac, s.max_dup_line_char_frac),
        ("para", doc.paragraphs, s.max_dup_para_frac, s.max_dup_para_char_frac),
    ):
        if items:
            repeated, repeated_chars = _duplicates(items)
            if repeated / len(items) > max_frac:
                return f"dup_{unit}_frac"
            if repeated_chars / doc.chars > max_char_frac:
                return f"dup_{unit}_char_frac"
    return None


def top_ngram_share(doc: Document, s: GopherSettings) -> str | None:
    """Gopher: the most frequent 2-, 3- or 4-gram covers too many of the word characters."""
    for n, limit in zip((2, 3, 4), s.top_ngram_fracs, strict=False):
        grams = Counter(tuple(doc.words[i : i + n]) for i in range(len(doc.words) - n + 1))
        if grams:
            gram, count = grams.most_common(1)[0]
            if count > 1 and sum(map(len, gram)) * count / doc.word_chars > limit:
                return f"top_{n}gram_frac"
    return None


def duplicated_ngram_share(doc: Document, s: GopherSettings) -> str | None:
    """Gopher: words inside repeated 5- to 10-grams cover too many of the word characters."""
    words = doc.words
    for n, limit in zip(range(5, 11), s.dup_ngram_fracs, strict=False):
        covered = [False] * len(words)
        seen: set[tuple[str, ...]] = set()
        for i in range(len(words) - n + 1):
            gram = tuple(words[i : i + n])
            if gram in seen:
                covered[i : i + n] = [True] * n
            seen.add(gram)
        if sum(len(w) for w, c in zip(words, covered, strict=True) if c) / doc.word_chars > limit:
            return f"dup_{n}gram_frac"
    return None


_TERMINAL = (".", "!", "?", '"', "'", ":", ";", ")", "…")  # FineWeb's line-end punctuation, loosely


def fineweb_lines(doc: Document, s: FineWebSettings) -> str | None:
    """FineWeb: too few lines end in punctuation, too many are short, or repeated lines."""
    lines = doc.lines
    if not lines:
        return None
    if sum(line.endswith(_TERMINAL) for line in lines) / len(lines) < s.min_line_punct_ratio:
        return "line_punct_ratio"
    if sum(len(line) <= 30 for line in lines) / len(lines) > s.max_short_line_ratio:
        return "short_line_ratio"
    if _duplicates(lines)[1] / doc.chars > s.max_char_dup_ratio:
        return "char_dup_ratio"
    return None


def list_like(doc: Document, s: FineWebSettings) -> str | None:
    """FineWeb: more newlines per word than prose has (a list, not a text)."""
    return "list_ratio" if doc.text.count("\n") / max(len(doc.words), 1) > s.max_new_line_ratio else None


# Each rule with the component whose thresholds it reads (`curation.gopher`, `curation.fineweb`).
DOCUMENT_RULES: list[tuple[str, Callable]] = [
    ("gopher", repeated_lines_and_paragraphs),
    ("gopher", top_ngram_share),
    ("gopher", duplicated_ngram_share),
    ("fineweb", fineweb_lines),
    ("fineweb", list_like),
]


def document_reason(text: str, s: CurationSettings) -> str | None:
    """The first document rule `text` breaks (None = keep)."""
    doc = Document(text)
    for component, rule in DOCUMENT_RULES:
        reason = rule(doc, getattr(s, component))
        if reason:
            return reason
    return None
