"""Decontamination benchmark: planted leaks and clean near misses through the n-gram checks alone
and with the semantic check beside them.

Kinds (all built here or in tests/data/planted_contamination.yaml):
- verbatim: an MMLU question with its answer inside a paragraph of other text;
- light: the same, lower-cased, punctuation dropped, a few small words changed;
- heavy: MMLU items reworded by hand (every content word changed where English allows);
- renamed: HumanEval prompt + solution with the function, its arguments and locals renamed;
- clean prose: the Python language reference (`python-docs`, 288 documents) and hand-written
  near misses on the same subjects as exam items;
- clean code: HumanEval-style functions that are not HumanEval problems.
Prints recall per kind and the false-positive rate on clean rows for the n-gram checks alone and
for n-gram + semantic at a sweep of thresholds, and the semantic check's rows/s (embedding the
passages + the nearest exam item; the exam items' own embedding is cached and not timed).

With --throughput, instead: rows/s of the n-gram checks one row at a time
(`find_contamination_reference`, every n-gram a Python tuple) against the batch path the chain
runs (`find_contamination`: n-grams hashed and looked up in compiled code), on the same rows, one
core, medians of 3, and whether both name the same item for every row. Prose: --docs rows of
50-400 words drawn from MMLU questions' words, 1 in 100 with an MMLU item planted, plus the
planted kinds above; code: --code-docs fenced 10-50 line stretches of the standard library plus
the renamed HumanEval copies and clean functions above.

    python bench/decontamination.py [--model all-MiniLM-L6-v2] [--items 60]
    python bench/decontamination.py --throughput [--docs 50000] [--code-docs 2000]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import sysconfig
import tempfile
import textwrap
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

INTROS = ["Here is a review question from today's lesson.", "Students often meet this in exams.",
          "Consider the following point before the quiz."]  # fmt: skip
OUTROS = ["Remember this for next week.", "We will return to it in the next chapter.", "Keep it in mind."]
SMALL_WORDS = {"the": "a", "a": "the", "is": "was", "of": "for", "to": "towards", "in": "within", "and": "&"}

GENERIC_CODE = [
    ("count_vowels", "s: str", "int", "Count the vowels in s.", "return sum(c in 'aeiou' for c in s.lower())"),
    ("is_even", "n: int", "bool", "Whether n is even.", "return n % 2 == 0"),
    ("reverse_words", "text: str", "str", "The words of text in reverse order.", "return ' '.join(text.split()[::-1])"),
    ("total", "numbers: list", "float", "The sum of numbers.", "return sum(numbers)"),
    ("maximum", "values: list", "int", "The largest value.", "return max(values)"),
    ("square_all", "xs: list", "list", "Each number squared.", "return [x * x for x in xs]"),
    ("first_char", "word: str", "str", "The first character of word.", "return word[0]"),
    ("word_count", "text: str", "int", "How many words text has.", "return len(text.split())"),
    ("average", "numbers: list", "float", "The mean of numbers.", "return sum(numbers) / len(numbers)"),
    ("only_positive", "xs: list", "list", "The positive numbers of xs.", "return [x for x in xs if x > 0]"),
    ("to_upper", "s: str", "str", "s in capitals.", "return s.upper()"),
    ("contains", "xs: list, x: int", "bool", "Whether x is in xs.", "return x in xs"),
    ("factorial", "n: int", "int", "n factorial.",
     "result = 1\n    for k in range(2, n + 1):\n        result *= k\n    return result"),
    ("fibonacci", "n: int", "int", "The n-th Fibonacci number.",
     "a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a"),
    ("is_palindrome", "text: str", "bool", "Whether text reads the same backwards.", "return text == text[::-1]"),
    ("unique", "xs: list", "list", "The distinct elements of xs, sorted.", "return sorted(set(xs))"),
    ("string_length", "s: str", "int", "The length of s.", "return len(s)"),
    ("add_numbers", "x: int, y: int", "int", "x plus y.", "return x + y"),
    ("count_char", "s: str, c: str", "int", "How often c occurs in s.", "return s.count(c)"),
    ("flatten", "rows: list", "list", "The rows joined into one list.", "return [x for row in rows for x in row]"),
    ("smallest", "xs: list", "int", "The smallest element.", "return min(xs)"),
    ("sort_desc", "xs: list", "list", "xs sorted from largest to smallest.", "return sorted(xs, reverse=True)"),
    ("is_prime", "n: int", "bool", "Whether n is prime.",
     "if n < 2:\n        return False\n    for k in range(2, int(n ** 0.5) + 1):\n        if n % k == 0:\n"
     "            return False\n    return True"),
    ("gcd", "a: int, b: int", "int", "The greatest common divisor.",
     "while b:\n        a, b = b, a % b\n    return a"),
    ("digits_sum", "n: int", "int", "The sum of the digits of n.", "return sum(int(d) for d in str(abs(n)))"),
]


def planted(items: int, seed: int = 0) -> list[tuple[str, str, str, str | None]]:
    """(kind, domain, text, the exam item it copies or None)."""
    from pipeline.exam.data import read_humaneval, read_mmlu
    from pipeline.training.replay import python_docs

    rng = random.Random(seed)
    cases = []
    mmlu = [i for i in read_mmlu() if 10 <= len(i.question.split()) <= 60 and "_" not in i.question]
    for item in rng.sample(mmlu, items):
        body = f"{item.question.strip()} {item.choices[item.answer]}"
        cases.append(("verbatim", "text", f"{rng.choice(INTROS)} {body}. {rng.choice(OUTROS)}", item.id))
        light = [SMALL_WORDS.get(w, w) if rng.random() < 0.5 else w for w in re.findall(r"\w+", body.lower())]
        cases.append(("light", "text", f"{rng.choice(INTROS)} {' '.join(light)} {rng.choice(OUTROS)}", item.id))
    data = yaml.safe_load((ROOT / "tests" / "data" / "planted_contamination.yaml").read_text())
    cases += [("heavy", "text", case["text"], case["item"]) for case in data["heavy"]]
    cases += [("clean prose", "text", case["text"], None) for case in data["near_miss"]]
    cases += [("clean prose", "text", doc, None) for doc in python_docs()]
    for problem in rng.sample(read_humaneval(), min(items, 164)):
        source = problem.prompt + problem.canonical_solution
        names = {problem.entry_point: "solve_task"}
        header = re.search(rf"def {re.escape(problem.entry_point)}\((.*?)\)", source, re.S)
        for k, arg in enumerate(re.findall(r"(\w+)\s*(?::[^,)]*)?(?:,|$)", header.group(1) if header else "")):
            names.setdefault(arg, f"value_{k}")
        renamed = re.sub(r"\b\w+\b", lambda m, names=names: names.get(m.group(0), m.group(0)), source)
        cases.append(("renamed", "code", f"### Function\n```python\n{renamed}```\n", problem.task_id))
    for name, args, returns, doc, body in GENERIC_CODE:
        code = f'def {name}({args}) -> {returns}:\n    """{doc}"""\n    {body}\n'
        # gcd(a: int, b: int) -> int by Euclid's loop is HumanEval/13's prompt and solution token
        # for token once names are renamed: a copy, however common, so a hit there is right.
        kind, item = ("renamed", "HumanEval/13") if name == "gcd" else ("clean code", None)
        cases.append((kind, "code", f"### Function\n```python\n{code}```\n", item))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--passage-words", type=int, default=64)
    parser.add_argument("--throughput", action="store_true", help="only the per-row vs batch n-gram throughput")
    parser.add_argument("--docs", type=int, default=50_000, help="prose rows for --throughput")
    parser.add_argument("--code-docs", type=int, default=2_000, help="code rows for --throughput")
    args = parser.parse_args()
    if args.throughput:
        throughput(args.docs, args.code_docs, args.items)
        return

    import polars as pl

    from pipeline.curation.decontamination import exam_indexes
    from pipeline.curation.embeddings import Embedder, EmbeddingStore
    from pipeline.curation.semantic import SemanticExamIndex

    cases = planted(args.items)
    kinds = list(dict.fromkeys(kind for kind, *_ in cases))
    index, code_index = exam_indexes(13, 20)
    started = time.perf_counter()
    ngram = [index.match(text) or (code_index.match(text) if domain == "code" else None)
             for _, domain, text, _ in cases]  # fmt: skip
    ngram_s = time.perf_counter() - started

    embedder = Embedder(args.model)
    semantic = SemanticExamIndex.build(embedder)
    rows = pl.DataFrame({"id": [str(i) for i in range(len(cases))], "batch": "bench|text",
                         "text": [text for _, _, text, _ in cases]})  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        vectors, _ = EmbeddingStore(Path(folder), embedder, args.passage_words).update(rows)
        nearest = semantic.nearest(vectors, dict(zip(rows["id"], rows["text"], strict=True)), args.passage_words)
        semantic_s = time.perf_counter() - started
    by_id = {r["id"]: (r["exam_item"], r["similarity"]) for r in nearest.iter_rows(named=True)}
    scores = [by_id[str(i)] for i in range(len(cases))]

    print(f"{len(cases)} rows: " + ", ".join(f"{k} {sum(c[0] == k for c in cases)}" for k in kinds))
    print(f"n-gram checks: {len(cases) / ngram_s:,.0f} rows/s; semantic ({args.model}, passages of "
          f"{args.passage_words} words): {len(cases) / semantic_s:,.1f} rows/s on {_threads()} threads\n")
    thresholds = [0.40, 0.50, 0.55, 0.58, 0.60, 0.62, 0.65]
    header = f"{'kind':14}{'n-gram':>9}" + "".join(f"{'+sem ' + format(t, '.2f'):>11}" for t in thresholds)
    print(header)
    for kind in kinds:
        members = [i for i, c in enumerate(cases) if c[0] == kind]
        clean = cases[members[0]][3] is None

        def flagged(i: int, threshold: float | None, clean: bool = clean) -> bool:
            item, similarity = scores[i]
            hit = ngram[i] is not None or (threshold is not None and similarity >= threshold)
            # a leak counts as caught only when the named item is the planted one (for the n-grams, any)
            if not clean and threshold is not None and ngram[i] is None and hit:
                return item == cases[i][3]
            return hit

        cells = [sum(flagged(i, None) for i in members)] + [sum(flagged(i, t) for i in members) for t in thresholds]
        label = "flagged (FP)" if clean else "caught"
        print(f"{kind:14}" + "".join(f"{c:>5}/{len(members):<3}" + ("  " if j else " ") for j, c in enumerate(cells))
              + f"  {label}")  # fmt: skip
    clean_rows = [i for i, c in enumerate(cases) if c[3] is None]
    for t in thresholds:
        fp = sum(ngram[i] is not None or scores[i][1] >= t for i in clean_rows)
        share = 100 * fp / len(clean_rows)
        print(f"threshold {t:.2f}: false positives {fp}/{len(clean_rows)} = {share:.1f}% of clean rows")


def throughput_rows(docs: int, code_docs: int, items: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Prose and code rows for `throughput` (see the module's docstring)."""
    from pipeline.exam.data import read_mmlu

    rng = random.Random(seed)
    cases = planted(items, seed)
    mmlu = read_mmlu()
    vocab = [w for item in mmlu for w in item.question.split()]
    prose = [text for _, domain, text, _ in cases if domain == "text"]
    for k in range(max(docs - len(prose), 0)):
        body = [rng.choice(vocab) for _ in range(rng.randint(50, 400))]
        if k % 100 == 0:
            item = rng.choice(mmlu)
            body.insert(rng.randrange(len(body)), f"{item.question} {item.choices[item.answer]}")
        prose.append(" ".join(body))
    code = [text for _, domain, text, _ in cases if domain == "code"]
    stdlib = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    while len(code) < code_docs:
        lines = rng.choice(stdlib).read_text(errors="replace").splitlines()
        start = rng.randrange(max(len(lines) - 10, 1))
        chunk = textwrap.dedent("\n".join(lines[start : start + rng.randint(10, 50)]))
        code.append(f"### Function\n```python\n{chunk}\n```\n\n### Tests\n```python\nassert True\n```\n")
    return prose, code


def throughput(docs: int, code_docs: int, items: int, repeats: int = 3) -> None:
    """Per-row vs batch n-gram decontamination on the same rows, pinned to one core."""
    import polars as pl

    from pipeline.curation.decontamination import exam_indexes, find_contamination, find_contamination_reference

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    index, code_index = exam_indexes(13, 20)
    prose, code = throughput_rows(docs, code_docs, items)

    print(f"one core, medians of {repeats}")
    for label, domain, texts in (("prose", "text", prose), ("code", "code", code)):
        frame = pl.DataFrame({"id": [str(i) for i in range(len(texts))], "domain": domain, "text": texts,
                              "status": "kept"})  # fmt: skip
        find_contamination(frame.head(100), index, code_index)  # compiled code is loaded, not timed
        runs, results = {"per row": [], "batch": []}, {}
        for _ in range(repeats):  # alternated, so that a busy spell on the machine falls on both
            for name, check in (("per row", find_contamination_reference), ("batch", find_contamination)):
                started = time.perf_counter()
                results[name] = check(frame, index, code_index)
                runs[name].append(time.perf_counter() - started)
        times = {name: statistics.median(seconds) for name, seconds in runs.items()}
        hits = sum(item is not None for item in results["batch"].values())
        same = results["per row"] == results["batch"]
        old, new = len(texts) / times["per row"], len(texts) / times["batch"]
        print(f"{label:6} {len(texts):>7,} rows ({hits:,} hits): per row {old:>9,.0f} rows/s, batch {new:>9,.0f} "
              f"rows/s ({new / old:.1f}x); same item for every row: {same}")  # fmt: skip


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
