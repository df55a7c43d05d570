"""Curation: each rule says keep (null) or why not (a reason).

Prose rules judge `text` rows only: Gopher quality rules as polars expressions over the whole
table, Gopher repetition and FineWeb line rules per document; `code` rows are judged by running the
exercise's own tests in the sandbox. A row is rejected by the first rule that fires and stays in
the table with `status = rejected` and its reason, as datatrove's exclusion writers keep them.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from collections import Counter

import polars as pl

from pipeline.progress import Progress
from pipeline.rows import KEPT, reject
from pipeline.sandbox import Limits, exercise_parts, run_python
from pipeline.settings import CurationSettings

log = logging.getLogger("schoolhouse.curation")

_WORDS = pl.col("text").str.extract_all(r"\S+")


def prose_rules(s: CurationSettings) -> list[tuple[str, pl.Expr]]:
    """(name, expression that is true when the row breaks the rule), Gopher's quality rules."""
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


_TERMINAL = (".", "!", "?", '"', "'", ":", ";", ")", "…")  # FineWeb's line-end punctuation, loosely


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


def repetition_reason(text: str, s: CurationSettings) -> str | None:
    """Gopher repetition rules and FineWeb line rules for one document (None = keep).

    These look at lines, paragraphs and n-gram counts of one document, so they are plain Python
    per document, as in datatrove."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    paragraphs = [p.strip() for p in re.split(r"\n{2,}", text) if p.strip()]
    total = max(len(text), 1)
    for unit, items, max_frac, max_char_frac in (
        ("line", lines, s.max_dup_line_frac, s.max_dup_line_char_frac),
        ("para", paragraphs, s.max_dup_para_frac, s.max_dup_para_char_frac),
    ):
        if items:
            repeated, repeated_chars = _duplicates(items)
            if repeated / len(items) > max_frac:
                return f"dup_{unit}_frac"
            if repeated_chars / total > max_char_frac:
                return f"dup_{unit}_char_frac"
    words = re.findall(r"\w+", text.lower())
    word_chars = max(sum(map(len, words)), 1)
    for n, limit in zip((2, 3, 4), s.top_ngram_fracs, strict=False):
        grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        if grams:
            gram, count = grams.most_common(1)[0]
            if count > 1 and sum(map(len, gram)) * count / word_chars > limit:
                return f"top_{n}gram_frac"
    for n, limit in zip(range(5, 11), s.dup_ngram_fracs, strict=False):
        covered = [False] * len(words)
        seen: set[tuple[str, ...]] = set()
        for i in range(len(words) - n + 1):
            gram = tuple(words[i : i + n])
            if gram in seen:
                covered[i : i + n] = [True] * n
            seen.add(gram)
        if sum(len(w) for w, c in zip(words, covered, strict=True) if c) / word_chars > limit:
            return f"dup_{n}gram_frac"
    if lines:
        if sum(line.endswith(_TERMINAL) for line in lines) / len(lines) < s.min_line_punct_ratio:
            return "line_punct_ratio"
        if sum(len(line) <= 30 for line in lines) / len(lines) > s.max_short_line_ratio:
            return "short_line_ratio"
        if _duplicates(lines)[1] / total > s.max_char_dup_ratio:
            return "char_dup_ratio"
    if text.count("\n") / max(len(words), 1) > s.max_new_line_ratio:
        return "list_ratio"
    return None


def first_reason(rules: list[tuple[str, pl.Expr]], stage: str) -> pl.Expr:
    return pl.coalesce(
        [pl.when(broken).then(pl.lit(f"{stage}:{name}")) for name, broken in rules] + [pl.lit(None, pl.String)]
    )


def check_exercise(text: str, limits: Limits) -> tuple[str | None, dict]:
    """Run a code exercise's tests against its solution; (reason or None, what was measured)."""
    parts = exercise_parts(text)
    if parts is None:
        return "curation:code_format", {"code": "no function block followed by a block of asserts"}
    solution, tests = parts
    for name, source in (("solution", solution), ("tests", tests)):
        try:
            ast.parse(source)
        except SyntaxError as error:
            return "curation:syntax_error", {"code": f"{name}: {error.msg} (line {error.lineno})"}
    outcome = run_python(solution + "\n\n" + tests, limits)
    checks = {"code": outcome.status, "why": outcome.reason, "seconds": round(outcome.seconds, 3)}
    return (None if outcome.passed else f"curation:tests_{outcome.status}"), checks


def curate(frame: pl.DataFrame, settings: CurationSettings) -> pl.DataFrame:
    is_text = pl.col("domain") == "text"
    prose = first_reason(prose_rules(settings), "curation")
    frame = reject(frame, pl.when(is_text).then(prose))
    repetition = pl.col("text").map_elements(lambda t: repetition_reason(t, settings), return_dtype=pl.String)
    frame = reject(frame, pl.when(KEPT & is_text).then(pl.lit("curation:") + repetition))

    code_rows = frame.filter(KEPT & (pl.col("domain") == "code"))
    limits = Limits(wall_s=settings.sandbox_timeout_s, cpu_s=max(1, int(settings.sandbox_timeout_s)))
    progress = Progress("code tests", code_rows.height, log)
    verdicts: dict[str, tuple[str | None, str]] = {}
    for row_id, text in code_rows.select("id", "text").iter_rows():
        reason, checks = check_exercise(text, limits)
        verdicts[row_id] = (reason, json.dumps(checks))
        progress.advance()
    if verdicts:
        table = pl.DataFrame(
            {"id": list(verdicts), "code_reason": [v[0] for v in verdicts.values()],
             "code_checks": [v[1] for v in verdicts.values()]},
            schema={"id": pl.String, "code_reason": pl.String, "code_checks": pl.String},
        )  # fmt: skip
        frame = frame.join(table, on="id", how="left", maintain_order="left")
        frame = (
            reject(frame, pl.col("code_reason"))
            .with_columns(checks=pl.coalesce("code_checks", "checks"))
            .drop("code_reason", "code_checks")
        )
    return frame


def yield_table(frame: pl.DataFrame) -> pl.DataFrame:
    """Kept tokens / teacher tokens by template, audience, style and topic: where the teacher's
    tokens turn into training data, and where they are wasted."""
    parts = []
    for dimension in ("template", "audience", "style", "topic"):
        parts.append(
            frame.group_by(dimension)
            .agg(
                rows=pl.len(),
                kept_rows=KEPT.sum(),
                teacher_tokens=pl.col("completion_tokens").sum(),
                kept_tokens=pl.when(KEPT).then(pl.col("completion_tokens")).otherwise(0).sum(),
            )
            .select(pl.lit(dimension).alias("dimension"), pl.col(dimension).alias("value"), pl.exclude(dimension))
        )
    out = pl.concat(parts)
    return out.with_columns(
        **{"yield": (pl.col("kept_tokens") / pl.col("teacher_tokens")).fill_nan(0.0).fill_null(0.0).round(3)}
    )
