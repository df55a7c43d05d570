"""Prose curation benchmark: this project's rules vs datatrove's filters on the same documents.

A generated corpus shaped like the teacher's text rows (default 20,000 documents of 200-2,000
words in sentences, lines and paragraphs), with planted faults: repeated paragraphs and lines,
a phrase repeated, list-like short lines, symbol-heavy text, documents that are too short. The
same documents go through `pipeline.curation.curate.apply_prose_rules` (Gopher quality and
repetition rules, FineWeb's line rules) on one core and on `--cores`, and through datatrove's
GopherRepetitionFilter + GopherQualityFilter + FineWebQualityFilter on one core in its own
environment (`bench/datatrove_curation.py`). Prints docs/s for each, the ratios, and the share of
documents on which the two disagree, broken down by what each side said.

    python bench/curation.py [--docs 20000] [--cores 2] [--datatrove-python PATH]

`--datatrove-python`: the interpreter of an environment with `datatrove` (not a dependency of the
project), e.g. `python -m venv /tmp/datatrove && /tmp/datatrove/bin/pip install datatrove`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FAULTS = ("clean", "repeated_paragraphs", "repeated_lines", "repeated_phrase", "short_lines", "symbols", "too_short")
SHARES = (0.60, 0.08, 0.06, 0.06, 0.08, 0.06, 0.06)


def corpus(n_docs: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(documents, the fault planted in each)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    # words of 2-9 letters, Zipf-weighted, with the stop words prose has
    vocabulary = ["the", "of", "and", "to", "a", "in", "is", "that", "with", "be", "for", "as", "have"]
    vocabulary += ["".join(chr(97 + c) for c in rng.integers(0, 26, rng.integers(2, 10))) for _ in range(20_000)]
    cdf = np.cumsum(1 / np.arange(1, len(vocabulary) + 1) ** 1.1)
    cdf /= cdf[-1]
    words = np.array(vocabulary)

    def draw(n: int) -> list[str]:
        return words[np.searchsorted(cdf, rng.random(n))].tolist()

    def sentence() -> str:
        return " ".join(draw(int(rng.integers(6, 25)))).capitalize() + rng.choice([".", ".", ".", "?", "!", ","])

    def paragraph() -> str:
        return " ".join(sentence() for _ in range(rng.integers(2, 7)))

    def prose(target_words: int) -> list[str]:
        paragraphs, count = [], 0
        while count < target_words:
            paragraphs.append(paragraph())
            count += len(paragraphs[-1].split())
        return paragraphs

    texts, faults = [], []
    for fault in rng.choice(FAULTS, n_docs, p=SHARES):
        size = int(rng.integers(200, 2001))
        paragraphs = prose(size if fault != "too_short" else int(rng.integers(10, 45)))
        if fault == "repeated_paragraphs":
            repeated = paragraphs[: max(1, len(paragraphs) // 3)]
            paragraphs = paragraphs + repeated * 2
        elif fault == "repeated_lines":
            line = sentence()
            paragraphs = [p + "\n" + line for p in paragraphs]
        elif fault == "repeated_phrase":
            phrase = " ".join(draw(7))
            paragraphs = [f"{p} {phrase} {phrase}." for p in paragraphs]
        elif fault == "short_lines":
            paragraphs = ["\n".join("- " + " ".join(p.split()[i : i + 3]) for i in range(0, len(p.split()), 3))
                          for p in paragraphs]  # fmt: skip
        elif fault == "symbols":
            paragraphs = [" ".join(w + (" #" if i % 5 == 0 else "") for i, w in enumerate(p.split())) + " ..."
                          for p in paragraphs]  # fmt: skip
        texts.append("\n\n".join(paragraphs))
        faults.append(str(fault))
    return texts, faults


def ours(texts: list[str], cores: int) -> tuple[float, list[str | None]]:
    """Our prose rules in a process of their own, on `cores` cores."""
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "texts.json"
        data.write_text(json.dumps(texts))
        env = {**os.environ, "POLARS_MAX_THREADS": str(cores)}
        out = subprocess.run([sys.executable, __file__, "--ours-worker", str(data), "--cores", str(cores)],
                             capture_output=True, text=True, env=env, check=True)  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["seconds"], result["reasons"]


def ours_worker(path: str, cores: int) -> None:
    import polars as pl

    from pipeline.curation.curate import apply_prose_rules
    from pipeline.settings import CurationSettings

    texts = json.loads(Path(path).read_text())
    frame = pl.DataFrame({"id": [str(i) for i in range(len(texts))], "domain": "text", "text": texts,
                          "status": "kept", "reason": pl.Series([None] * len(texts), dtype=pl.String)})  # fmt: skip
    settings = CurationSettings(workers=cores)
    started = time.perf_counter()
    curated = apply_prose_rules(frame, settings)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "reasons": curated["reason"].to_list()}))


def theirs(texts: list[str], python: str) -> tuple[float, list[str | None]]:
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "corpus.jsonl"
        with data.open("w") as out:
            for text in texts:
                out.write(json.dumps({"text": text}) + "\n")
        result = subprocess.run([python, str(ROOT / "bench" / "datatrove_curation.py"), str(data)],
                                capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
        if result.returncode:
            sys.exit(f"datatrove failed:\n{result.stderr[-3000:]}")  # fmt: skip
    found = json.loads(result.stdout.strip().splitlines()[-1])
    return found["seconds"], found["reasons"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--datatrove-python", default="/tmp/datatrove/bin/python")
    parser.add_argument("--ours-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ours_worker:
        return ours_worker(args.ours_worker, args.cores)

    texts, faults = corpus(args.docs)
    words = sum(len(t.split()) for t in texts)
    print(f"{len(texts):,} documents, {words:,} words; planted: "
          + ", ".join(f"{k} {v}" for k, v in sorted(Counter(faults).items())), flush=True)  # fmt: skip
    dt_s, dt_reasons = theirs(texts, args.datatrove_python)
    one_s, one_reasons = ours(texts, 1)
    many_s, many_reasons = ours(texts, args.cores)
    assert one_reasons == many_reasons, "our decisions changed with the number of cores"
    print(f"\n{'side':36}{'docs/s':>10}{'vs datatrove':>14}{'kept':>8}")
    for side, seconds, reasons in (("datatrove, 1 core", dt_s, dt_reasons), ("schoolhouse, 1 core", one_s, one_reasons),
                                   (f"schoolhouse, {args.cores} cores", many_s, many_reasons)):  # fmt: skip
        print(f"{side:36}{len(texts) / seconds:>10,.0f}{dt_s / seconds:>13.2f}x{sum(r is None for r in reasons):>8,}")
    differ = [(f, o, d) for f, o, d in zip(faults, one_reasons, dt_reasons, strict=True) if (o is None) != (d is None)]
    print(f"\ndisagree on {len(differ):,} of {len(texts):,} documents ({100 * len(differ) / len(texts):.2f}%)")
    kinds = Counter((f, "kept" if o is None else o, "kept" if d is None else d) for f, o, d in differ)
    for (fault, mine, other), n in kinds.most_common(12):
        print(f"  {n:>6,}  planted {fault:20} schoolhouse {mine:32} datatrove {other}")


if __name__ == "__main__":
    main()
