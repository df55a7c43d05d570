"""Decontamination: reject rows that share an n-gram with an exam item (MMLU, HumanEval).

Text check: lower-cased word n-grams (n = 13, as GPT-3 and datatrove) of every MMLU question
with its answer and every HumanEval prompt; items shorter than n count as one whole sequence.
Code check: Python token n-grams after renaming every user identifier to its order of first
appearance (v0, v1, ...) and every string to STR, so a HumanEval solution with renamed
variables and rewritten docstrings still matches. A rejected row names the exam item it matched.

A batch is checked without a Python object per word or per n-gram: one compiled pass over the
batch's UTF-8 bytes (as Arrow lays them out) hashes every word n-gram and looks it up in an open
addressing table of the exam n-grams' hashes; only the (row, position) pairs that hit are then
matched word by word against the exact index, so a hash collision costs a look and never a
verdict. Code rows are still tokenized one by one (Python's tokenizer), but their renamed
windows are hashed and looked up in compiled code, and only hit windows are renamed in Python.
`ExamIndex.match` and `CodeIndex.match` are the one-row reference the batch path must equal.
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

import numba
import numpy as np
import polars as pl

from pipeline.curation import minhash
from pipeline.exam.data import read_humaneval, read_mmlu
from pipeline.markdown import fenced_python_blocks
from pipeline.rows import KEPT, reject

_MIN_ITEM_WORDS = 8  # shorter items ("What is 2+2?") would match ordinary prose
_CHUNK_ROWS = 8192  # rows screened per compiled call (bounds the byte buffer)


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
    the item's own n-grams decide); among equals, the first counted."""
    return hits.most_common(1)[0][0] if hits else None


# --- compiled helpers: hashing and a uint64 hash set -------------------------------------------

_BASE = np.uint64(0x100000001B3)  # the rolling polynomial's odd multiplier
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing of a key to its slot
_MIN_TABLE_BITS = 4


@numba.njit(cache=True, nogil=True, inline="always")
def _slot(key, shift):
    return (key * _GOLDEN) >> shift


@numba.njit(cache=True, nogil=True, inline="always")
def _bit(key, shift):  # the key's bit in the filter: 4 bits a slot, from another multiplier
    return (key * _BASE) >> (shift - np.uint64(2))


@numba.njit(cache=True, nogil=True, inline="always")
def _has(bits, table, shift, key):
    key = key if key != 0 else np.uint64(1)  # 0 marks an empty slot
    b = _bit(key, shift)
    if not (bits[b >> np.uint64(6)] >> (b & np.uint64(63))) & np.uint64(1):
        return False  # most look-ups end in the filter, a 16th of the table's bytes (in cache)
    mask = np.uint64(table.size - 1)
    i = _slot(key, shift)
    while True:
        k = table[i]
        if k == key:
            return True
        if k == 0:
            return False
        i = (i + np.uint64(1)) & mask


@numba.njit(cache=True)
def _fill(keys, size):
    table = np.zeros(1 << size, dtype=np.uint64)
    bits = np.zeros(max(1, (1 << (size + 2)) // 64), dtype=np.uint64)
    shift = np.uint64(64 - size)
    mask = np.uint64(table.size - 1)
    for key in keys:
        key = key if key != 0 else np.uint64(1)
        b = _bit(key, shift)
        bits[b >> np.uint64(6)] |= np.uint64(1) << (b & np.uint64(63))
        i = _slot(key, shift)
        while table[i] != 0 and table[i] != key:
            i = (i + np.uint64(1)) & mask
        table[i] = key
    return bits, table


class _HashSet:
    """A set of uint64 hashes for compiled code: an open addressing table (load <= 1/4) behind a
    one-hash bit filter of 4 bits a slot (a key not in the set passes it 1 time in 16)."""

    def __init__(self, keys: np.ndarray):
        keys = np.unique(np.asarray(keys, dtype=np.uint64))
        size = max(_MIN_TABLE_BITS, int(4 * keys.size).bit_length())
        (self.bits, self.table), self.shift, self.size = _fill(keys, size), np.uint64(64 - size), keys.size


@numba.njit(cache=True, nogil=True, inline="always")
def _push(hits, values, k, doc, pos, kind, value):
    """Append (doc, pos, kind) and value at k, doubling the arrays when full."""
    if k == hits.shape[0]:
        grown = np.empty((2 * k, 3), dtype=np.int64)
        grown[:k] = hits
        hits = grown
        more = np.empty(2 * k, dtype=np.uint64)
        more[:k] = values
        values = more
    hits[k, 0], hits[k, 1], hits[k, 2] = doc, pos, kind
    values[k] = value
    return hits, values


@numba.njit(cache=True, nogil=True)
def _word_windows(data, offsets, word_bytes, n, m, bits_n, table_n, shift_n, bits_m, table_m, shift_m, collect):
    """Every window of n words and of m words of every text, by a rolling polynomial over word
    hashes (FNV-1a, then murmur3's finalizer): with `collect` every window is returned, else only
    those whose hash is in the table. Returns hits (doc, first word, kind 0 for n / 1 for m), the
    hashes and each text's word count. A text's windows
    are looked up together, in a loop of independent probes the processor overlaps."""
    docs = offsets.size - 1
    hits = np.empty((64, 3), dtype=np.int64)
    values = np.empty(64, dtype=np.uint64)
    counts = np.zeros(docs, dtype=np.int64)
    longest = 0
    for d in range(docs):
        longest = max(longest, offsets[d + 1] - offsets[d])
    size = longest // 2 + 2  # at most one word per two bytes, and a slot to spare
    word = np.empty(size, dtype=np.uint64)  # the text's word hashes
    found_n, found_m = np.empty(size, dtype=np.bool_), np.empty(size, dtype=np.bool_)
    value_n, value_m = np.empty(size, dtype=np.uint64), np.empty(size, dtype=np.uint64)
    top_n = np.uint64(1)  # base^n: a word's weight once n words have followed it
    for _ in range(n):
        top_n *= _BASE
    top_m = np.uint64(1)
    for _ in range(m):
        top_m *= _BASE
    k = 0
    for d in range(docs):
        count = minhash.word_hashes(data, offsets[d], offsets[d + 1], word_bytes, word)
        counts[d] = count
        window_n = np.uint64(0)
        window_m = np.uint64(0)
        any_found = False
        for j in range(count):  # independent probes, no branch on their outcome: they overlap
            window_n = window_n * _BASE + word[j]
            if j >= n:
                window_n -= word[j - n] * top_n
            window_m = window_m * _BASE + word[j]
            if j >= m:
                window_m -= word[j - m] * top_m
            found_n[j] = j >= n - 1 and (collect or _has(bits_n, table_n, shift_n, window_n))
            found_m[j] = j >= m - 1 and (collect or _has(bits_m, table_m, shift_m, window_m))
            any_found |= found_n[j] | found_m[j]
            value_n[j] = window_n
            value_m[j] = window_m
        if any_found:
            for j in range(count):
                if found_n[j]:
                    hits, values = _push(hits, values, k, d, j - n + 1, 0, value_n[j])
                    k += 1
                if found_m[j]:
                    hits, values = _push(hits, values, k, d, j - m + 1, 1, value_m[j])
                    k += 1
    return hits[:k], values[:k], counts


# A byte's value in a decontamination word (`[a-z0-9]+` of the lower-cased text), 0 for a separator:
# ASCII only, unlike minhash's words (non-ASCII bytes separate words here, as in `words`).
_WORD_BYTES = np.zeros(256, dtype=np.uint8)
for _lo, _hi in ((48, 58), (97, 123)):
    _WORD_BYTES[_lo:_hi] = np.arange(_lo, _hi)
_WORD_BYTES[65:91] = np.arange(97, 123)


def _scan(texts: list[str] | pl.Series, n: int, m: int, grams: _HashSet | None = None, heads: _HashSet | None = None):
    """`_word_windows` of the texts: the windows in `grams` (n words) or `heads` (m words), or
    every window when neither is given."""
    data, offsets = minhash.utf8_buffer(texts)
    collect = grams is None and heads is None
    empty = _HashSet(np.zeros(0, dtype=np.uint64))
    grams, heads = grams or empty, heads or empty
    hits, values, counts = _word_windows(data, offsets, _WORD_BYTES, n, m, grams.bits, grams.table, grams.shift,
                                         heads.bits, heads.table, heads.shift, collect)  # fmt: skip
    return hits, values, counts, _special(data, offsets)


def _special(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Which texts hold a character whose lower case is an ASCII letter (U+0130 and U+212A, as
    UTF-8 bytes C4 B0 and E2 84 AA), where Python's words and these bytes' would differ."""
    ends = np.flatnonzero(((data[1:] == 0xB0) & (data[:-1] == 0xC4)) |
                          np.concatenate([[False], (data[2:] == 0xAA) & (data[1:-1] == 0x84) & (data[:-2] == 0xE2)])
                          if data.size > 1 else np.zeros(0, dtype=bool))  # fmt: skip
    special = np.zeros(offsets.size - 1, dtype=bool)
    special[np.searchsorted(offsets, ends + 1, side="right") - 1] = True
    return special


class CodeIndex:
    """Renamed-token n-grams of every HumanEval prompt + canonical solution.

    A row matches a problem when it holds at least `coverage` of the problem's distinct n-grams
    (or `long_run` of them, a long copied stretch of a large problem): a renamed copy holds all
    of them, while a generic helper that a problem happens to contain (`is_prime` inside
    HumanEval/94: 9 of 81) holds a few. The 8 problems shorter than n = 20 tokens (`strlen`,
    `add`, ...) are not indexed: renamed, they are generic code (`def f(x): return len(x)`);
    their docstrings are still caught by the word n-gram check. Among problems with as many
    n-grams, the first in HumanEval's order wins."""

    def __init__(self, n: int = 20, coverage: float = 0.5, long_run: int = 40):
        self.n, self.coverage, self.long_run = n, coverage, long_run
        self.index: dict[tuple[str, ...], list[str]] = {}
        self.rank: dict[str, int] = {}
        streams = []
        for problem in read_humaneval():
            self.rank[problem.task_id] = len(self.rank)
            for source in (problem.prompt + problem.canonical_solution, problem.canonical_solution):
                tokens = code_tokens(textwrap.dedent(source))
                streams.append(tokens)
                for i in range(len(tokens) - n + 1):
                    _add(self.index, renamed(tokens[i : i + n]), problem.task_id)
        self.size = Counter(item for items in self.index.values() for item in items)
        # Literal tokens' ids for the compiled windows (0: a token no exam window holds).
        self.vocab = {t: k + 1 for k, t in enumerate(sorted({t for s in streams for t in s if t[:1] != "$"}))}
        empty = _HashSet(np.zeros(0, dtype=np.uint64))
        _, _, values = _code_windows_of(streams, self.vocab, n, empty, collect=True)
        self.hashes = _HashSet(values)

    def _decide(self, grams: set[tuple[str, ...]]) -> str | None:
        """The problem with the most of the row's distinct n-grams among those past the rule."""
        hits = Counter(item for gram in grams for item in self.index.get(gram, ()))
        enough = [(k, item) for item, k in hits.items() if k >= min(self.coverage * self.size[item], self.long_run)]
        return min(enough, key=lambda e: (-e[0], self.rank[e[1]]))[1] if enough else None

    def match(self, text: str) -> str | None:
        """One row, every window renamed in Python: the reference for `matches`."""
        grams = set()
        for block in code_blocks(text):
            tokens = code_tokens(textwrap.dedent(block))
            grams.update(renamed(tokens[i : i + self.n]) for i in range(len(tokens) - self.n + 1))
        return self._decide(grams)

    def matches(self, texts: list[str] | pl.Series) -> list[str | None]:
        """`match` of each text: tokenized in Python, every renamed window hashed and looked up in
        compiled code; only the windows whose hash an exam window has are renamed and compared."""
        out: list[str | None] = []
        texts = list(texts)
        for first in range(0, len(texts), _CHUNK_ROWS):
            part = texts[first : first + _CHUNK_ROWS]
            streams, owner = [], []
            for row, text in enumerate(part):
                for block in code_blocks(text):
                    streams.append(code_tokens(textwrap.dedent(block)))
                    owner.append(row)
            blocks, positions, _ = _code_windows_of(streams, self.vocab, self.n, self.hashes, collect=False)
            grams: dict[int, set] = {}
            for block, pos in zip(blocks.tolist(), positions.tolist(), strict=True):
                gram = renamed(streams[block][pos : pos + self.n])
                if gram in self.index:
                    grams.setdefault(owner[block], set()).add(gram)
            out += [self._decide(grams[row]) if row in grams else None for row in range(len(part))]
        return out


@numba.njit(cache=True, nogil=True)
def _code_windows(tokens, starts, identifiers, n, bits, table, shift, collect):
    """Hashes of the renamed n-token windows of each block (tokens[starts[b]:starts[b + 1]]):
    a literal token is its id (>= 0), an identifier (-1 - its id) is the distance back to its
    previous occurrence inside the window, 0 when it is the window's first: the same information
    as `renamed` (v0, v1, ... by first appearance). Returns (block, first token) of the windows
    in the table, or of every window with `collect`, and their hashes."""
    last = np.full(identifiers, -1, dtype=np.int64)
    prev = np.full(tokens.size, -1, dtype=np.int64)
    for j in range(tokens.size):
        if tokens[j] < 0:
            name = -1 - tokens[j]
            prev[j] = last[name]
            last[name] = j
    hits = np.empty((64, 3), dtype=np.int64)
    values = np.empty(64, dtype=np.uint64)
    k = 0
    for b in range(starts.size - 1):
        for i in range(starts[b], starts[b + 1] - n + 1):
            h = np.uint64(0)
            for j in range(i, i + n):
                if tokens[j] >= 0:
                    e = tokens[j] + n
                else:
                    e = j - prev[j] if prev[j] >= i else 0  # a block's earlier names are before i
                h = h * _BASE + minhash._finalize(np.uint64(e) + _FNV_OFFSET)
            if collect or _has(bits, table, shift, h):
                hits, values = _push(hits, values, k, b, i - starts[b], 0, h)
                k += 1
    return hits[:k], values[:k]


def _code_windows_of(streams: list[list[str]], vocab: dict[str, int], n: int, hashes: _HashSet, collect: bool):
    """(block, first token, hash) of the renamed windows of token streams that `hashes` holds."""
    names: dict[str, int] = {}
    flat = [-1 - names.setdefault(t, len(names)) if t[:1] == "$" else vocab.get(t, 0) for s in streams for t in s]
    starts = np.cumsum([0] + [len(s) for s in streams], dtype=np.int64)
    hits, values = _code_windows(np.array(flat, dtype=np.int64), starts, max(len(names), 1), n,
                                 hashes.bits, hashes.table, hashes.shift, collect)  # fmt: skip
    return hits[:, 0], hits[:, 1], values


class ExamIndex:
    """Word n-gram -> exam item ids, for every MMLU question (with its answer) and HumanEval
    prompt and solution; beside it, the n-grams' 64-bit hashes, so that a whole batch is screened
    in compiled code and only the positions whose hash is an exam n-gram's are compared word by
    word."""

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

        # The exact n-grams' words are `[a-z0-9]+` alone, so the bytes of their joined text give
        # the same words and the same hashes as any text that holds them.
        hits, values, _, _ = _scan([" ".join(g) for g in self.index], self.n, _MIN_ITEM_WORDS)
        self.gram_hashes = _HashSet(values[hits[:, 2] == 0])
        hits, values, _, _ = _scan([" ".join(h) for h in self.short], self.n, _MIN_ITEM_WORDS)
        self.head_hashes = _HashSet(values[hits[:, 2] == 1])

    def _add(self, item_id: str, text: str, whole_if_short: bool = True) -> None:
        tokens = words(text)
        if len(tokens) >= self.n:
            for gram in ngrams(tokens, self.n):
                _add(self.index, gram, item_id)
        elif whole_if_short and len(tokens) >= _MIN_ITEM_WORDS:
            head = tuple(tokens[:_MIN_ITEM_WORDS])
            self.short.setdefault(head, []).append((tuple(tokens), item_id))

    def match(self, text: str) -> str | None:
        """The exam item sharing the most n-grams with `text`, or None (one row, every n-gram
        as a tuple: the reference for `matches`)."""
        tokens = words(text)
        return self._resolve(tokens, range(len(tokens) - self.n + 1), range(len(tokens) - _MIN_ITEM_WORDS + 1))

    def _resolve(self, tokens: list[str], grams, heads) -> str | None:
        """`match` looking only at n-grams starting at `grams` and short items at `heads`
        (ascending), the only positions that can hit."""
        n, get, items = self.n, self.index.get, []
        for i in grams:
            items += get(tuple(tokens[i : i + n]), ())
        hits = Counter(items)  # counted in order of first appearance, as one update at a time would
        if hits:
            return _best(hits)
        for i in heads:
            for whole, item_id in self.short.get(tuple(tokens[i : i + _MIN_ITEM_WORDS]), ()):
                if tuple(tokens[i : i + len(whole)]) == whole:
                    return item_id
        return None

    def _screen(self, texts: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hash hits (row, first word, 0: n-gram / 1: short item's head) of `texts`, each text's
        word count, and the texts whose bytes' words may differ from `words` (match in full)."""
        hits, _, counts, special = _scan(texts, self.n, _MIN_ITEM_WORDS, self.gram_hashes, self.head_hashes)
        return hits, counts, special

    def suspects(self, texts: pl.Series) -> np.ndarray:
        """Which texts share an n-gram hash (or a short item's first words' hash) with an exam item:
        a superset of the texts `match` finds something in."""
        texts = pl.Series("text", texts, dtype=pl.String)
        out = np.zeros(len(texts), dtype=bool)
        for first in range(0, len(texts), _CHUNK_ROWS):
            hits, _, special = self._screen(texts.slice(first, _CHUNK_ROWS))
            part = out[first : first + _CHUNK_ROWS]
            part[hits[:, 0]] = True
            part |= special
        return out

    def matches(self, texts: list[str] | pl.Series) -> dict[int, str]:
        """{row: item} for the texts that `match` finds an item in, screened in compiled code."""
        texts = pl.Series("text", texts, dtype=pl.String)
        found: dict[int, str] = {}
        for first in range(0, len(texts), _CHUNK_ROWS):
            part = texts.slice(first, _CHUNK_ROWS)
            hits, counts, special = self._screen(part)
            rows = np.union1d(hits[:, 0], np.flatnonzero(special))
            if not rows.size:
                continue
            bounds = np.searchsorted(hits[:, 0], np.stack([rows, rows + 1]))
            for row, text, lo, hi in zip(rows.tolist(), part.gather(rows).to_list(), *bounds.tolist(), strict=True):
                tokens = words(text)
                if special[row] or len(tokens) != counts[row]:  # bytes' words are not Python's: every position
                    item = self.match(text)
                else:
                    row_hits = hits[lo:hi]
                    item = self._resolve(tokens, row_hits[row_hits[:, 2] == 0, 1].tolist(),
                                         row_hits[row_hits[:, 2] == 1, 1].tolist())  # fmt: skip
                if item is not None:
                    found[first + row] = item
        return found


def contamination_hits(frame: pl.DataFrame, index: ExamIndex, code_index: CodeIndex) -> pl.DataFrame:
    """(id, item) of the kept rows that match an exam item, in row order. Text: the whole batch's
    n-grams are hashed and looked up in compiled code, and only the positions that hit are matched
    word by word. Code rows the text check did not catch then go through the renamed-token check
    (Python's tokenizer per row, windows hashed in compiled code)."""
    kept = frame.filter(KEPT).select("id", "domain", "text")
    found = index.matches(kept["text"]) if kept.height else {}
    code = np.flatnonzero((kept["domain"] == "code").fill_null(False).to_numpy())
    code = np.array([r for r in code.tolist() if r not in found], dtype=np.int64)
    if code.size:
        items = code_index.matches(kept["text"].gather(code))
        found.update((r, item) for r, item in zip(code.tolist(), items, strict=True) if item is not None)
    rows = sorted(found)
    return pl.DataFrame({"id": kept["id"].gather(rows) if rows else [], "item": [found[r] for r in rows]},
                        schema={"id": pl.String, "item": pl.String})  # fmt: skip


def find_contamination(frame: pl.DataFrame, index: ExamIndex, code_index: CodeIndex) -> dict[str, str | None]:
    """The exam item each kept row matches (None when clean); code rows get both checks."""
    hits = dict(contamination_hits(frame, index, code_index).iter_rows())
    return {row_id: hits.get(row_id) for row_id in frame.filter(KEPT)["id"]}


def find_contamination_reference(frame: pl.DataFrame, index: ExamIndex, code_index: CodeIndex) -> dict[str, str | None]:
    """`find_contamination` one row at a time, every n-gram a Python tuple: what the batch path
    must equal (tests, bench/decontamination.py)."""
    out = {}
    for row_id, domain, text in frame.filter(KEPT).select("id", "domain", "text").iter_rows():
        item = index.match(text)
        if item is None and domain == "code":
            item = code_index.match(text)
        out[row_id] = item
    return out


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
