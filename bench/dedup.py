"""Near-dedup benchmark: this project's MinHash + LSH vs rensa, datasketch and datatrove.

A generated corpus (default 100,000 documents of 150-600 words, 80% prose and 20% Python-like
code) with planted near-duplicates at known word-5-gram Jaccard levels (a word: a run of
letters and digits, as schoolhouse counts them). Every side uses the same parameters (5-word
shingles, 14 bands x 8 rows = 112 permutations) and runs on one core, each in its own process so
that peak memory (max RSS) is its own, from text to clusters. Prints docs/s, peak memory, and
recall / precision of the pairs found against the planted truth at Jaccard >= 0.8.

    python bench/dedup.py [--docs 100000] [--datatrove-python PATH]
    python bench/dedup.py --clusters [--docs 100000]

`--clusters`: a corpus whose duplicates come as clusters (2-5 variants of one document, each
0.8-0.9 Jaccard from it and less from each other), deduplicated the way the chain does (exact
Jaccard check at 0.8, `minhash.assign`), for several band x row layouts: the layout is chosen on
one seed's corpus and reported on another's. Recall: the share of variants rejected; precision:
the share of rejected rows that are variants belonging to their own cluster.

Needs `pip install datasketch rensa` (not dependencies of the project). With `--datatrove-python`
(the interpreter of an environment with `datatrove[processing]`), datatrove's MinHash stages run
on the same corpus too (see bench/datatrove_minhash.py).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import resource
import time

os.environ.setdefault("POLARS_MAX_THREADS", "1")  # one core, as the peer

import numpy as np  # noqa: E402

BANDS, ROWS, SHINGLE = 14, 8, 5
MUTATION_RATES = [0.003, 0.006, 0.01, 0.015, 0.02, 0.04, 0.08, 0.15]


WORD = re.compile(r"[^\W_]+")  # letters and digits: what schoolhouse's shingles count as a word


def corpus(n_docs: int, seed: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    """Documents of 150-600 words shaped like the teacher's rows: 80% prose (sentences of
    Zipf-distributed words, paragraphs), 20% Python-like code (snake_case names, calls, operators,
    indentation). 10% of them are copies of an earlier one with a share of words replaced."""
    rng = np.random.default_rng(seed)
    # Letters only: datatrove's text normalization maps every digit to 0.
    lengths = rng.integers(2, 11, 30_000)
    vocabulary = np.array(["".join(chr(97 + c) for c in rng.integers(0, 26, n)) for n in lengths])
    cdf = np.cumsum(1 / np.arange(1, vocabulary.size + 1) ** 0.9)
    cdf /= cdf[-1]

    def words(n: int) -> list[str]:
        return vocabulary[np.searchsorted(cdf, rng.random(n))].tolist()

    def prose(n: int) -> list[str]:
        tokens, sentence = words(n), int(rng.integers(8, 25))
        for i in range(sentence, n, sentence):
            tokens[i - 1] += "."
            tokens[i] = tokens[i].capitalize() if i % 5 else "\n\n" + tokens[i].capitalize()
        return tokens

    def code(n: int) -> list[str]:
        tokens = []
        while len(tokens) < n:
            a, b, c, d = ("_".join(words(2)) for _ in range(4))
            tokens += [f"def {a}({b}, {c}):", f"\n    {d} = {b} + {a.split('_')[0]}({c})",
                       f"\n    if {d} > {c}:", f"\n        return {d}", f"\n    return {b} * 2\n\n"]  # fmt: skip
        return tokens[:n]

    n_copies = n_docs // 10
    docs: list[list[str]] = []
    for _ in range(n_docs - n_copies):
        size = int(rng.integers(150, 601))
        docs.append(code(size * 5 // 26) if rng.random() < 0.2 else prose(size))  # 5 code lines: 26 words
    planted = []
    for i in range(n_copies):
        source = int(rng.integers(0, len(docs)))
        copy = list(docs[source])
        rate = MUTATION_RATES[i % len(MUTATION_RATES)]
        for position in rng.choice(len(copy), max(1, int(rate * len(copy))), replace=False):
            copy[position] = "".join(chr(97 + c) for c in rng.integers(0, 26, 8))
        planted.append((source, len(docs)))
        docs.append(copy)
    return [" ".join(d) for d in docs], planted


def shingle_set(text: str) -> set[tuple[str, ...]]:
    words = WORD.findall(text.lower())
    return {tuple(words[i : i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


def jaccard(a: str, b: str) -> float:
    x, y = shingle_set(a), shingle_set(b)
    return len(x & y) / len(x | y) if x | y else 1.0


def run_ours(texts: list[str], queue, verify: float = 0.0) -> None:
    from pipeline.curation.minhash import MinHashParams, band_keys, clusters, jaccard_at_least, signatures

    params = MinHashParams(bands=BANDS, rows=ROWS, shingle_words=SHINGLE)
    signatures(texts[:10], params)  # compiled once per install (numba's cache): not timed
    started = time.perf_counter()
    keep_pair = jaccard_at_least(texts, verify, SHINGLE) if verify else None
    labels = clusters(band_keys(signatures(texts, params), params), keep_pair)
    seconds = time.perf_counter() - started
    name = f"ours+J>={verify}" if verify else "ours"
    queue.put((name, seconds, labels, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def run_rensa(texts: list[str], queue, flat: bool = False) -> None:
    """rensa's bulk signatures (its Rust permutations), read back as rows; the same banding and
    clusters as ours. `flat`: from our shingle hashes (`digest_matrix_from_flat_token_hashes`);
    otherwise from each text's 5-gram strings, tokenized in Python as `jaccard` does."""
    import rensa

    from pipeline.curation.minhash import MinHashParams, band_keys, clusters, shingles

    params = MinHashParams(bands=BANDS, rows=ROWS, shingle_words=SHINGLE)
    shingles(texts[:10], SHINGLE)
    started = time.perf_counter()
    if flat:
        values, starts = shingles(texts, SHINGLE)
        matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(
            values, np.append(starts, values.size).astype(np.uint64), BANDS * ROWS, 1)  # fmt: skip
    else:
        grams = []
        for text in texts:
            words = WORD.findall(text.lower())
            grams.append([" ".join(words[i : i + SHINGLE]) for i in range(max(len(words) - SHINGLE + 1, 1))])
        matrix = rensa.RMinHash.digest_matrix_from_token_sets(grams, BANDS * ROWS, 1)
    sigs = np.array(matrix.to_rows(), dtype=np.uint32)
    labels = clusters(band_keys(sigs, params))
    seconds = time.perf_counter() - started
    name = "ours+rensa" if flat else "rensa"
    queue.put((name, seconds, labels, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def run_datasketch(texts: list[str], queue) -> None:
    from datasketch import MinHash, MinHashLSH

    started = time.perf_counter()
    lsh = MinHashLSH(num_perm=BANDS * ROWS, params=(BANDS, ROWS))
    pairs = set()
    for i, text in enumerate(texts):
        words = WORD.findall(text.lower())
        grams = [" ".join(words[j : j + SHINGLE]).encode() for j in range(max(len(words) - SHINGLE + 1, 1))]
        signature = MinHash(num_perm=BANDS * ROWS, seed=1)
        signature.update_batch(grams)
        for match in lsh.query(signature):  # earlier documents only: a pair is reported once
            pairs.add((match, i))
        lsh.insert(i, signature)
    seconds = time.perf_counter() - started
    from pipeline.curation.minhash import connected_components

    left, right = (np.array(side, dtype=np.int64) for side in zip(*pairs, strict=True)) if pairs else ([], [])
    labels = connected_components(len(texts), np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64))
    queue.put(("datasketch", seconds, labels, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def run_datatrove(texts: list[str], python: str) -> tuple[str, float, np.ndarray, int]:
    import subprocess
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder) / "corpus.jsonl"
        with corpus.open("w") as out:
            for i, text in enumerate(texts):
                out.write(json.dumps({"id": str(i), "text": text}) + "\n")
        script = Path(__file__).with_name("datatrove_minhash.py")
        command = [python, str(script), str(corpus), str(Path(folder) / "work")]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
    return "datatrove", result["seconds"], np.array(result["labels"]), result["max_rss_kib"]


def score(labels: np.ndarray, texts: list[str], truth: set[tuple[int, int]]) -> tuple[float, float]:
    """Both methods' output as clusters: recall = true pairs that share a cluster; precision =
    pairs inside clusters whose exact Jaccard is >= 0.8."""
    recall = sum(labels[a] == labels[b] for a, b in truth) / len(truth) if truth else 1.0
    order = np.argsort(labels, kind="stable")
    rng = np.random.default_rng(0)
    correct = total = 0.0
    for group in np.split(order, np.flatnonzero(np.diff(labels[order])) + 1):
        n = len(group)
        if n < 2:
            continue
        pairs = (
            [(int(group[i]), int(group[j])) for i in range(n) for j in range(i + 1, n)]
            if n <= 60
            else [tuple(int(x) for x in rng.choice(group, 2, replace=False)) for _ in range(2000)]
        )  # a huge cluster is judged on a sample of its pairs, weighted by its pair count
        good = sum(1 for a, b in pairs if tuple(sorted((a, b))) in truth or jaccard(texts[a], texts[b]) >= 0.8)
        weight = n * (n - 1) / 2
        correct += weight * good / len(pairs)
        total += weight
    return recall, correct / total if total else 1.0


def clustered_corpus(n_docs: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Documents of 150-600 words; 10% of the originals get 2-5 variants each (1.1-2.3% of words
    replaced: 0.8-0.9 Jaccard to the original). Returns the texts and each one's cluster (an
    original's own index; -1 for a document of no cluster), variants after their original."""
    texts, _ = corpus(n_docs, seed)
    rng = np.random.default_rng(seed + 1000)
    originals = texts[: int(n_docs * 0.75)]
    cluster = list(range(len(originals)))
    out = list(originals)
    for source in rng.choice(len(originals), len(originals) // 10, replace=False):
        words = originals[source].split(" ")
        for _ in range(int(rng.integers(2, 6))):
            copy = list(words)
            rate = rng.uniform(0.011, 0.023)
            for position in rng.choice(len(copy), max(1, int(rate * len(copy))), replace=False):
                copy[position] = "".join(chr(97 + c) for c in rng.integers(0, 26, 8))
            out.append(" ".join(copy))
            cluster.append(int(source))
    order = np.argsort(rng.random(len(out) - len(originals))) + len(originals)  # variants shuffled, after
    return [out[i] for i in range(len(originals))] + [out[i] for i in order], np.array(
        cluster[: len(originals)] + [cluster[i] for i in order])  # fmt: skip


def run_clusters(texts: list[str], bands: int, rows: int, queue) -> None:
    import numba

    from pipeline.curation.minhash import MinHashParams, assign, band_keys, jaccard_at_least, signatures

    numba.set_num_threads(1)
    params = MinHashParams(bands=bands, rows=rows, shingle_words=SHINGLE)
    assign(band_keys(signatures(texts[:50], params), params), jaccard_at_least(texts[:50], 0.8))  # compile
    started = time.perf_counter()
    labels = assign(band_keys(signatures(texts, params), params), jaccard_at_least(texts, 0.8, SHINGLE))
    queue.put((time.perf_counter() - started, labels))


def clusters_benchmark(n_docs: int) -> None:
    layouts = [(14, 8), (16, 7), (20, 5), (28, 4)]
    print(f"{'seed':<10} {'bands x rows':<13} {'docs/s':>9} {'recall':>7} {'precision':>9}")
    for seed, role in ((0, "tuning"), (1, "held out")):
        texts, cluster = clustered_corpus(n_docs, seed)
        index = np.arange(len(texts))
        close = np.array([c == i or jaccard(texts[i], texts[c]) >= 0.8 for i, c in enumerate(cluster)])
        print(f"{role}: {len(texts):,} documents, {(cluster != index).sum():,} variants, "
              f"{(close & (cluster != index)).sum():,} at Jaccard >= 0.8 to their original (counted by recall)")
        for bands, rows in layouts:
            queue = mp.get_context("fork").Queue()
            process = mp.get_context("fork").Process(target=run_clusters, args=(texts, bands, rows, queue))
            process.start()
            seconds, labels = queue.get()
            process.join()
            index = np.arange(len(texts))
            variant = (cluster != index) & close
            rejected = labels != index
            own = cluster[labels] == cluster  # the kept row it names is of its own cluster
            recall = (rejected & variant).sum() / max(variant.sum(), 1)
            precision = (rejected & variant & own).sum() / max(rejected.sum(), 1)
            print(f"{role:<10} {bands:>4} x {rows:<6} {len(texts) / seconds:>9,.0f} {recall:>7.3f} {precision:>9.3f}",
                  flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--datatrove-python", help="python of an environment with datatrove[processing]")
    parser.add_argument("--clusters", action="store_true", help="the corpus of clusters, the chain's rule")
    args = parser.parse_args()
    if args.clusters:
        clusters_benchmark(args.docs)
        return

    texts, planted = corpus(args.docs)
    levels = [jaccard(texts[a], texts[b]) for a, b in planted]
    truth = {tuple(sorted(p)) for p, level in zip(planted, levels, strict=True) if level >= 0.8}
    print(f"{len(texts):,} documents, {len(planted):,} planted copies, Jaccard of copies: "
          + ", ".join(f"{q:.2f}" for q in np.quantile(levels, [0, 0.25, 0.5, 0.75, 1])) + " (quartiles); "
          f"{len(truth):,} pairs at >= 0.8")  # fmt: skip

    print(f"\n{'method':<14} {'seconds':>8} {'docs/s':>9} {'peak MiB':>9} {'recall':>7} {'precision':>9}")
    results = {}

    def report(name: str, seconds: float, labels: np.ndarray, rss_kib: int) -> None:
        results[name] = seconds
        recall, precision = score(labels, texts, truth)
        print(f"{name:<14} {seconds:>8.1f} {len(texts) / seconds:>9,.0f} {rss_kib / 1024:>9,.0f} "
              f"{recall:>7.3f} {precision:>9.3f}", flush=True)  # fmt: skip

    for runner, extra in ((run_ours, ()), (run_ours, (0.8,)), (run_rensa, ()), (run_rensa, (True,)),
                          (run_datasketch, ())):  # fmt: skip
        queue = mp.get_context("fork").Queue()
        process = mp.get_context("fork").Process(target=runner, args=(texts, queue, *extra))
        process.start()
        outcome = queue.get()
        process.join()
        report(*outcome)
    if args.datatrove_python:
        report(*run_datatrove(texts, args.datatrove_python))
    for peer in ("rensa", "ours+rensa", "datasketch", "datatrove"):
        if peer in results:
            print(f"throughput ratio ours / {peer}: {results[peer] / results['ours']:.1f}x")


if __name__ == "__main__":
    main()
