"""Decontamination benchmark: planted leaks and clean rows through the n-gram checks alone, with
the semantic check beside them (as it was: close in meaning + the answer) and with the rule after
it (the passage must also hold the question's rare words: `question_share` in
pipeline/curation/semantic.py), and with --teacher-url the teacher as judge
(pipeline/curation/contamination_judge.py) both ways: confirming the rule's pairs, and deciding
the candidates the rule passes over that are at least --judge-similarity close.

Kinds (all built here or in tests/data/planted_contamination.yaml):
- verbatim: an MMLU question with its answer inside a paragraph of other text;
- light: the same, lower-cased, punctuation dropped, a few small words changed;
- heavy: MMLU items reworded by hand (every content word changed where English allows);
- renamed: HumanEval prompt + solution with the function, its arguments and locals renamed;
- clean prose: the Python language reference (`python-docs`, 288 documents) and hand-written
  near misses on the same subjects as exam items;
- clean code: HumanEval-style functions that are not HumanEval problems;
- clean lessons, clean practice: rows like the chain's on MMLU's subjects, from the Wikipedia
  vital-article summaries it seeds its prompts with (`wiki_lessons`).
Every row is in one of two halves by its exam item or source (`split_of`): the rule's share is
chosen on the tuning half (the sweep; `RULE_SHARE` in semantic.py) and the held-out half reports
it. Prints caught leaks and flagged clean rows per kind and stage, each clean row the rule still
flags in the held-out half, and the semantic check's rows/s (embedding the passages + the
candidates; the exam items' own embedding is cached and not timed; --vectors keeps the passages'
between runs, and then the rate is not the embedding's). The judge is asked once about every
candidate pair of the rows the n-gram checks miss (pairs/s: those asked now; --journal keeps the
answers between runs), and then prints how often it says "yes" to a leak's pair and to a clean
row's pair, and each combination's flags from those same answers.

With --throughput, instead: rows/s of the n-gram checks one row at a time
(`find_contamination_reference`, every n-gram a Python tuple) against the batch path the chain
runs (`find_contamination`: n-grams hashed and looked up in compiled code), on the same rows, one
core, medians of 3, and whether both name the same item for every row. Prose: --docs rows of
50-400 words drawn from MMLU questions' words, 1 in 100 with an MMLU item planted, plus the
planted kinds above (--items 60); code: --code-docs fenced 10-50 line stretches of the standard
library plus the renamed HumanEval copies and clean functions above.

    python bench/decontamination.py [--model all-MiniLM-L6-v2] [--items 150] [--vectors DIR]
        [--teacher-url http://127.0.0.1:8000/v1 [--journal FILE]]
    python bench/decontamination.py --throughput [--docs 50000] [--code-docs 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import statistics
import sys
import sysconfig
import tempfile
import textwrap
import time
import zlib
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


# MMLU's subjects (high school and college merged) and word beginnings that mark a vital article's
# summary as being on one: a summary counts for the subject it has most of, at least two.
SUBJECT_WORDS = {
    "logical fallacies": "fallac argument reasoning logic rhetoric persuasi premise",
    "formal logic": "logic proposition predicate syllogism deducti inference theorem",
    "philosophy": "philosoph metaphysic epistemolog ethic ontolog existential empiric rationalis",
    "moral disputes": "moral ethic abortion euthanasia rights justice virtue",
    "world religions": "religio church god deity buddhis hindu islam muslim christian judaism jewish temple "
                       "scripture sacred prophet",
    "marketing": "marketing brand advertis consumer retail sales commerc product",
    "management": "management organization corporat business employee leadership firm",
    "business ethics": "business corporat ethic responsib stakeholder",
    "professional accounting": "accounting financ tax asset bank audit",
    "public relations": "public relations media propaganda communication newspaper broadcast",
    "macroeconomics": "econom inflation monetary fiscal gdp unemployment currency trade",
    "microeconomics": "econom market price supply demand competition monopoly",
    "econometrics": "statistic regression economet estimat",
    "statistics": "statistic probability distribution variance sample",
    "mathematics": "mathemati algebra geometry number equation theorem calculus function",
    "abstract algebra": "group ring field algebra theorem",
    "physics": "physic energy force mass motion quantum particle electric magnet wave",
    "astronomy": "planet star galaxy astronom orbit solar moon comet universe",
    "chemistry": "chemi element compound molecule atom reaction acid metal",
    "biology": "biolog cell organism species gene protein evolution plant animal",
    "anatomy": "anatom bone muscle organ nerve tissue artery blood",
    "medicine": "medic disease symptom treatment patient clinical diagnos infection",
    "virology": "virus viral infect vaccine pandemic epidemic",
    "medical genetics": "gene genetic dna chromosome mutation inherit",
    "nutrition": "nutri food vitamin diet protein mineral",
    "human aging": "aging age elderly dementia",
    "human sexuality": "sexual gender marriage reproduct",
    "psychology": "psycholog mental behavio cogniti emotion disorder",
    "sociology": "sociolog society social class culture",
    "computer science": "computer algorithm software program data internet",
    "computer security": "security cryptograph encrypt malware password network",
    "machine learning": "learning neural artificial intelligence algorithm",
    "electrical engineering": "electric circuit voltage current transistor engineering",
    "government and politics": "government politic election parliament constitution democra president",
    "us history": "united states american colon civil war president",
    "european history": "europe empire revolution war kingdom reform",
    "world history": "empire dynasty war civilization revolution",
    "prehistory": "prehistor stone age neolithic paleolithic archaeolog hominin fossil",
    "geography": "country river mountain continent population region capital",
    "international law": "international treaty law united nations sovereignty",
    "jurisprudence": "law legal court justice jurisprudence",
    "security studies": "war military security nuclear conflict terroris",
    "us foreign policy": "foreign policy united states diplomac war treaty",
}
SPLITS = ("tuning", "held-out")
RULE_SWEEP = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
JUDGE_SWEEP = (0.6, 0.7, 0.8)


def split_of(key: str) -> str:
    """Half of the keys (an exam item, an article, a document) for choosing, half for reporting."""
    return SPLITS[zlib.crc32(key.encode()) % 2]


def practice_question(title: str, text: str, person: bool) -> str | None:
    """A practice question in the chain's Question/Answer form from a summary's opening definition
    ("X is a Y that Z." -> "What is a Y that Z? Answer: X." and the next sentence): the answer is a
    term of the passage, the question Wikipedia's words, not an MMLU item's. None if the opening
    is not such a definition."""
    first, *rest = re.split(r"(?<=[a-z0-9)\]][.!?])\s+(?=[A-Z])", text)
    match = re.match(r"(.+?)\s+(is|was|are|were)\s+(.+?)\.?$", first)
    if not match or len(match.group(1).split()) > 10 or len(match.group(3).split()) < 6:
        return None
    term = re.sub(r"\s*\([^)]*\)", "", match.group(1)).split(",")[0]
    why = f" {rest[0]}" if rest else ""
    return f"Question: {'Who' if person else 'What'} {match.group(2)} {match.group(3)}?\nAnswer: {term}.{why}"


def wiki_lessons(per_subject: int = 80, seed: int = 0) -> list[tuple[str, str, str, str | None, str]]:
    """Clean rows like the chain's, on MMLU's subjects: (kind, domain, text, None, split). From the
    Wikipedia vital-article summaries the chain seeds its prompts with (`wiki-vital`), at most
    `per_subject` a subject: lessons (two summaries of a subject under headings) and practice
    questions (three of a subject's `practice_question`s). Each summary is in one split, by title."""
    from pipeline.generation.sources import wiki_vital_summaries

    rng = random.Random(seed)
    patterns = {s: [re.compile(rf"\b{w}") for w in words.split()] for s, words in SUBJECT_WORDS.items()}
    chosen = {(s, split): [] for s in SUBJECT_WORDS for split in SPLITS}
    for _, title, text, category in wiki_vital_summaries().iter_rows():
        hits = {s: sum(bool(p.search(text.lower())) for p in ps) for s, ps in patterns.items()}
        subject = max(hits, key=hits.__getitem__)
        if hits[subject] >= 2:
            chosen[subject, split_of(title)].append((title, text, category == "People"))
    rows = []
    for (subject, split), summaries in chosen.items():
        summaries = rng.sample(summaries, min(len(summaries), per_subject // 2))
        for k in range(0, len(summaries) - 1, 2):
            parts = "\n\n".join(f"## {title}\n\n{text}" for title, text, _ in summaries[k : k + 2])
            rows.append(("clean lessons", "text", f"# {subject.capitalize()}\n\n{parts}", None, split))
        questions = [q for t, x, p in summaries if (q := practice_question(t, x, p))]
        for k in range(0, len(questions) - 2, 3):
            rows.append(("clean practice", "text", "\n\n".join(questions[k : k + 3]), None, split))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--items", type=int, help="MMLU items planted (default 150; 60 with --throughput)")
    parser.add_argument("--passage-words", type=int, default=64)
    parser.add_argument("--threshold", type=float, default=0.6, help="the semantic check's cosine similarity")
    parser.add_argument("--vectors", type=Path, help="keep the passage vectors here between runs")
    parser.add_argument("--throughput", action="store_true", help="only the per-row vs batch n-gram throughput")
    parser.add_argument("--docs", type=int, default=50_000, help="prose rows for --throughput")
    parser.add_argument("--code-docs", type=int, default=2_000, help="code rows for --throughput")
    parser.add_argument("--teacher-url", default="", help="an OpenAI-compatible server: the teacher as judge too")
    parser.add_argument("--teacher-model", default="SmolLM2-135M-Instruct", help="the model it serves")
    parser.add_argument("--journal", type=Path, help="keep the judge's answers in this file between runs")
    parser.add_argument("--unguided", action="store_true", help="the judge's answer free, not held to yes|no")
    args = parser.parse_args()
    if args.throughput:
        throughput(args.docs, args.code_docs, args.items or 60)
        return

    import polars as pl

    from pipeline.curation.decontamination import exam_indexes
    from pipeline.curation.embeddings import Embedder, EmbeddingStore
    from pipeline.curation.semantic import RULE_SHARE, SemanticExamIndex, semantic_decontaminate

    cases = [(*case, split_of(case[3] or case[2])) for case in planted(args.items or 150)] + wiki_lessons()
    kinds = list(dict.fromkeys(kind for kind, *_ in cases))
    ids = [hashlib.sha256(text.encode()).hexdigest()[:16] for _, _, text, _, _ in cases]
    index, code_index = exam_indexes(13, 20)
    started = time.perf_counter()
    ngram = [index.match(text) or (code_index.match(text) if domain == "code" else None)
             for _, domain, text, _, _ in cases]  # fmt: skip
    ngram_s = time.perf_counter() - started

    embedder = Embedder(args.model)
    semantic = SemanticExamIndex.build(embedder)
    texts = dict(zip(ids, (text for _, _, text, _, _ in cases), strict=True))
    rows = pl.DataFrame({"id": list(texts), "batch": "bench|text", "text": list(texts.values())})
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        vectors, embedded = EmbeddingStore(args.vectors or Path(folder), embedder, args.passage_words).update(rows)
        nearest = semantic.nearest(vectors, texts, args.passage_words)
        semantic_s = time.perf_counter() - started
    frame = rows.select("id", status=pl.lit("kept"), reason=pl.lit(None, pl.String),
                        contamination=pl.lit(None, pl.String))  # fmt: skip

    def decided(rule: float) -> dict[str, dict]:
        """Each flagged row's `contamination` by the semantic check (the rule at `rule`; 0 = off)."""
        out = semantic_decontaminate(frame, nearest, args.threshold, rule).filter(pl.col("contamination").is_not_null())
        return {row_id: json.loads(said) for row_id, said in out.select("id", "contamination").iter_rows()}

    def flagged(i: int, semantic: dict[str, dict] | None) -> bool:
        """Caught (a leak) or flagged (a clean row); a leak the n-grams miss counts as caught only
        when the semantic check names the planted item."""
        if ngram[i] is not None or semantic is None:
            return ngram[i] is not None
        said = semantic.get(ids[i])
        return said is not None and (cases[i][3] is None or said["exam_item"] == cases[i][3])

    print(f"{len(cases)} rows: " + ", ".join(f"{k} {sum(c[0] == k for c in cases)}" for k in kinds))
    print(f"n-gram checks: {len(cases) / ngram_s:,.0f} rows/s; semantic ({args.model}, passages of "
          f"{args.passage_words} words, {embedded} rows embedded now): {len(cases) / semantic_s:,.1f} rows/s on "
          f"{_threads()} threads")  # fmt: skip

    def count(split: str, found: dict[str, dict] | None, kind: str | None = None) -> tuple[int, int]:
        """(flagged, rows) of one kind (None: every clean row) in a split."""
        members = [i for i, c in enumerate(cases) if c[4] == split and (c[0] == kind if kind else c[3] is None)]
        return sum(flagged(i, found) for i in members), len(members)

    def table(split: str, columns: dict[str, dict[str, dict] | None]) -> None:
        print(f"\n{split} split: caught (leaks) or flagged (clean rows)")
        print(f"{'kind':16}" + "".join(f" {name:>15}" for name in columns))
        for kind in [*kinds, None]:
            cells = [count(split, found, kind) for found in columns.values()]
            print(f"{kind or 'all clean':16}" + "".join(f" {f'{k}/{n}':>8} {100 * k / n:>5.1f}%" for k, n in cells))

    today, ruled = f"+sem {args.threshold:.2f}", f"+rule {RULE_SHARE:.2f}"
    stages = {"n-gram": None, today: decided(0.0), ruled: decided(RULE_SHARE)}
    sweep = {f"rule {r:.2f}": decided(r) for r in RULE_SWEEP}
    table("tuning", stages | sweep)
    # The share: the lowest of the sweep that flags at most 1% of the tuning half's clean rows and
    # loses none of its verbatim and light leaks.
    whole = [count("tuning", stages[today], kind) for kind in ("verbatim", "light")]
    fits = [r for r, found in zip(RULE_SWEEP, sweep.values(), strict=True)
            if count("tuning", found)[0] <= 0.01 * count("tuning", None)[1]
            and [count("tuning", found, kind) for kind in ("verbatim", "light")] == whole]  # fmt: skip
    print(f"chosen on the tuning half: {min(fits) if fits else None} (RULE_SHARE = {RULE_SHARE})")
    table("held-out", stages)
    for i, case in enumerate(cases):
        if case[3] is None and case[4] == "held-out" and (said := stages[ruled].get(ids[i])):
            print(f"held-out clean row the rule flags: {case[0]} {case[2][:50]!r} -> {said}")
    if not args.teacher_url:
        return

    # The judge: every candidate pair of the rows the n-gram checks miss (as in the chain, where
    # those rows are rejected before), asked once; each combination reads the same answers.
    from pipeline.curation.contamination_judge import ContaminationJudge, client_of
    from pipeline.teacher.client import TeacherClient

    missed = {ids[i] for i in range(len(cases)) if ngram[i] is None}
    pairs = nearest.filter(pl.col("passage").is_not_null() & (pl.col("similarity") >= args.threshold)
                           & pl.col("id").is_in(list(missed)))  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        client = TeacherClient([args.teacher_url], args.teacher_model, concurrency=64)
        judge = ContaminationJudge(args.journal or Path(folder) / "judge.jsonl", args.teacher_model,
                                   client_of(client), guided=not args.unguided)  # fmt: skip
        # by (row, item, passage): a row may be close to one item in two passages, judged apart
        verdicts = dict(zip(pairs.select("id", "exam_item", "passage").iter_rows(), judge(pairs), strict=True))
    stats = judge.stats
    rate = f"{stats.requested / stats.seconds:.2f} pairs/s" if stats.seconds else "all from the journal"
    print(f"\njudge ({args.teacher_model}, {'free' if args.unguided else 'guided yes|no'}): {stats.pairs} pairs of "
          f"{pairs['id'].n_unique()} rows, {stats.requested} asked now ({rate}), {stats.resumed} from the journal, "
          f"{stats.leaks} yes, {stats.unclear} unclear")  # fmt: skip
    planted_item = {ids[i]: case[3] for i, case in enumerate(cases)}
    for split in SPLITS:
        members = {ids[i] for i, c in enumerate(cases) if c[4] == split}
        for label, rows in (("leak pairs (the planted item)", lambda i, e: planted_item[i] == e),
                            ("clean rows' pairs", lambda i, e: planted_item[i] is None)):  # fmt: skip
            said = [leak for (i, e, _), leak in verdicts.items() if i in members and rows(i, e)]
            print(f"{split}: yes to {sum(said)}/{len(said)} {label}")

    kind_of = {ids[i]: case[0] for i, case in enumerate(cases)}
    for row in pairs.sort("similarity", descending=True).iter_rows(named=True):
        if kind_of[row["id"]] == "heavy" and planted_item[row["id"]] == row["exam_item"]:
            said = "yes" if verdicts[row["id"], row["exam_item"], row["passage"]] else "no"
            print(f"heavy rewording's pair: {row['exam_item']} similarity {row['similarity']:.3f}, rule score "
                  f"{row['score']:.2f}, judge {said}")  # fmt: skip
    asked = {}

    def judged(name: str, rule: float, similarity: float | None) -> dict[str, dict]:
        def answered(pairs: pl.DataFrame) -> pl.Series:
            keys = list(pairs.select("id", "exam_item", "passage").iter_rows())
            asked[name] = sum(i in missed for i, _, _ in keys)  # the rows the n-grams catch are not asked in the chain
            return pl.Series([verdicts.get(key, False) for key in keys], dtype=pl.Boolean)

        out = semantic_decontaminate(frame, nearest, args.threshold, rule, answered, similarity)
        out = out.filter(pl.col("contamination").is_not_null())
        return {row_id: json.loads(said) for row_id, said in out.select("id", "contamination").iter_rows()}

    # judge alone: it decides every candidate; rule+judge: it confirms the rule's pairs; judge>=s:
    # the rule's pairs stand, and it decides the candidates the rule passes over at least s close.
    combos = {"judge alone": judged("judge alone", 0.0, None), "rule+judge": judged("rule+judge", RULE_SHARE, None)}
    combos |= {f"judge>={s:.2f}": judged(f"judge>={s:.2f}", RULE_SHARE, s) for s in JUDGE_SWEEP}
    print("pairs the judge decides (rows the n-grams miss, both halves): "
          + ", ".join(f"{name} {n}" for name, n in asked.items()))  # fmt: skip
    for split in SPLITS:
        table(split, {ruled: stages[ruled], **combos})


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
