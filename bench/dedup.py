"""Near-dedup benchmark: this project's MinHash + LSH vs rensa, datasketch and datatrove.

A generated corpus (default 100,000 documents of 150-600 words, 80% prose and 20% Python-like
code) with planted near-duplicates at known word-5-gram Jaccard levels (a word: a run of
letters and digits, as schoolhouse counts them). Every side uses the same parameters (5-word
shingles, 14 bands x 8 rows = 112 permutations) and runs on one core, each in its own process so
that peak memory (max RSS) is its own, from text to clusters. Prints docs/s (per CPU second of
the one process: on a shared machine wall time also counts other processes' turns), peak memory,
and recall / precision of the pairs found against the planted truth at Jaccard >= 0.8 (every
pair inside a cluster counts for precision). `ours+J>=0.8` is the chain's rule (`minhash.assign`:
a row joins through any partner it passed the check with), `star` the rule that joins only a
kept row.

    taskset -c 0 python bench/dedup.py [--docs 100000] [--repeats 3] [--datatrove-python PATH]
    taskset -c 0 python bench/dedup.py --clusters [--docs 100000] [--layouts 14x8,16x7,18x6,20x5] [--repeats 3]

`--clusters`: a corpus whose duplicates come as clusters (2-5 variants of one document, each
0.8-0.9 Jaccard from it and less from each other, plus planted pairs at 0.45-0.98 whose members
under 0.8 are near misses), in a random priority order, deduplicated the way the chain does it
(exact Jaccard check at 0.8, `minhash.clusters` = `minhash.assign`), for several band x row
layouts and without the check. The layout is chosen on seed 0's corpus and every row is measured
again on seed 1's. Recall: of the rows that have an earlier row of their own cluster at Jaccard
>= 0.8 (what a perfect dedup rejects when a row's fate depends only on the rows before it), the
share rejected into their own cluster. Precision: the share of rejected rows that name a kept
row of their own cluster. Timed: signatures, band keys, bucket pairs, the check, the assignment;
one thread (numba and polars), the best of `--repeats` runs. The last columns replay the checked
pairs under the star rule, a one-row-in-between limit, and no limit (the library's rule).

Needs `pip install datasketch rensa` for those peers (skipped when absent; not dependencies of
the project). With `--datatrove-python` (the interpreter of an environment with
`datatrove[processing]`), datatrove's MinHash stages run on the same corpus too (see
bench/datatrove_minhash.py).
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


def clock() -> float:
    """CPU seconds of this process (its one thread): on a shared machine wall time would also count
    other processes' turns on the core."""
    return time.process_time()


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


def run_ours(texts: list[str], queue, verify: float = 0.0, repeats: int = 1, via_duplicates: bool = True) -> None:
    """`via_duplicates=False`: the star rule (a row joins only a kept row it passed with)."""
    from pipeline.curation.minhash import MinHashParams, band_keys, clusters, jaccard_at_least, signatures

    params = MinHashParams(bands=BANDS, rows=ROWS, shingle_words=SHINGLE)
    rule = {} if via_duplicates else {"via_duplicates": False}
    clusters(band_keys(signatures(texts[:50], params), params), jaccard_at_least(texts[:50], 0.8))  # compiled
    seconds = float("inf")  # once per install (numba's cache): not timed; the best of `repeats` runs
    for _ in range(repeats):
        started = clock()
        keep_pair = jaccard_at_least(texts, verify, SHINGLE) if verify else None
        labels = clusters(band_keys(signatures(texts, params), params), keep_pair, **rule)
        seconds = min(seconds, clock() - started)
    name = (f"ours+J>={verify}" if verify else "ours") + ("" if via_duplicates else " star")
    queue.put((name, seconds, labels, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def run_rensa(texts: list[str], queue, flat: bool = False) -> None:
    """rensa's bulk signatures (its Rust permutations), read back as rows; the same banding and
    clusters as ours. `flat`: from our shingle hashes (`digest_matrix_from_flat_token_hashes`);
    otherwise from each text's 5-gram strings, tokenized in Python as `jaccard` does."""
    import rensa

    from pipeline.curation.minhash import MinHashParams, band_keys, clusters, shingles

    params = MinHashParams(bands=BANDS, rows=ROWS, shingle_words=SHINGLE)
    shingles(texts[:10], SHINGLE)
    started = clock()
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
    seconds = clock() - started
    name = "ours+rensa" if flat else "rensa"
    queue.put((name, seconds, labels, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def run_datasketch(texts: list[str], queue) -> None:
    from datasketch import MinHash, MinHashLSH

    started = clock()
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
    seconds = clock() - started
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
    """`corpus()` of 3/4 `n_docs` (its planted copies: pairs at Jaccard 0.45-0.98), and 2-5
    variants of 10% of its documents (1.1-2.3% of words replaced: 0.8-0.9 Jaccard to the original,
    less to each other), ~`n_docs` documents in all, in a random order (the priority order: a
    variant may come before its original). Returns the texts and each one's cluster, the position of
    one member: a variant is of its original's cluster, a planted copy of its source's when their
    Jaccard is >= 0.8 (a copy under 0.8 is a near miss, a cluster of its own)."""
    texts, planted = corpus(int(n_docs * 0.75), seed)
    rng = np.random.default_rng(seed + 1000)
    source = list(range(len(texts)))
    for original, copy in planted:  # a copy's source may be an earlier copy
        if jaccard(texts[original], texts[copy]) >= 0.8:
            source[copy] = source[original]
    first_copy = len(texts) - len(planted)
    for original in rng.choice(first_copy, first_copy // 10, replace=False):
        words = texts[original].split(" ")
        for _ in range(int(rng.integers(2, 6))):
            copy = list(words)
            rate = rng.uniform(0.011, 0.023)
            for position in rng.choice(len(copy), max(1, int(rate * len(copy))), replace=False):
                copy[position] = "".join(chr(97 + c) for c in rng.integers(0, 26, 8))
            texts.append(" ".join(copy))
            source.append(source[original])
    order = rng.permutation(len(texts))
    position = np.empty(len(texts), dtype=np.int64)
    position[order] = np.arange(len(texts))
    return [texts[i] for i in order], position[np.array(source)[order]]


def due(texts: list[str], cluster: np.ndarray) -> np.ndarray:
    """The rows a perfect near-dedup rejects under the prefix rule: those with an earlier row of
    their own cluster at Jaccard >= 0.8 (shingles counted here, in Python, not by schoolhouse)."""
    out = np.zeros(len(texts), dtype=bool)
    order = np.argsort(cluster, kind="stable")
    for group in np.split(order, np.flatnonzero(np.diff(cluster[order])) + 1):
        if group.size < 2:
            continue
        sets = [shingle_set(texts[i]) for i in group]  # `group` is in row order
        for a in range(1, group.size):
            out[group[a]] = any(len(sets[a] & sets[b]) >= 0.8 * len(sets[a] | sets[b]) for b in range(a))
    return out


def run_clusters(texts: list[str], bands: int, rows: int, verify: float, repeats: int, queue) -> None:
    """Text to labels the way the chain deduplicates (`clusters`, i.e. `assign`), on one thread:
    signatures, band keys, bucket pairs, the exact check; the best of `repeats` timings."""
    import numba

    from pipeline.curation.minhash import MinHashParams, band_keys, clusters, jaccard_at_least, signatures

    numba.set_num_threads(1)
    params = MinHashParams(bands=bands, rows=rows, shingle_words=SHINGLE)
    clusters(band_keys(signatures(texts[:50], params), params), jaccard_at_least(texts[:50], 0.8))  # compile
    best = float("inf")
    for _ in range(repeats):
        started = clock()
        keep_pair = jaccard_at_least(texts, verify, SHINGLE) if verify else None
        labels = clusters(band_keys(signatures(texts, params), params), keep_pair)
        best = min(best, clock() - started)
    queue.put((best, labels))


def rule_labels(n: int, later: np.ndarray, earlier: np.ndarray, hops: int | None) -> np.ndarray:
    """The greedy rule with a limit on how far a row may be from its kept row, in checked pairs
    (`hops`: 1 is the star rule, a row joins only a kept row it passed with; None: no limit, as
    `minhash.assign`). Pairs are checked pairs (later, earlier); rows in priority order."""
    labels, depth = np.arange(n), np.zeros(n, dtype=np.int64)
    order = np.lexsort((earlier, later))
    partners: dict[int, list[int]] = {}
    for row, partner in zip(later[order].tolist(), earlier[order].tolist(), strict=True):
        partners.setdefault(row, []).append(partner)
    for row, found in partners.items():
        eligible = [p for p in found if hops is None or depth[p] < hops]
        if eligible:
            label = min(labels[p] for p in eligible)
            labels[row] = label
            depth[row] = 1 + min(depth[p] for p in eligible if labels[p] == label)
    return labels


def cluster_scores(labels: np.ndarray, cluster: np.ndarray, expected: np.ndarray,
                   at_least_08=None) -> tuple[float, float, float]:  # fmt: skip
    """Recall: the share of the rows due for rejection (`expected`, see `due`) rejected as
    duplicates of a kept row of their own cluster. Precision: the share of rejected rows that name
    a kept row of their own cluster (a near miss or an unrelated row rejected is a false merge).
    Drift (with `at_least_08`, a pair check): the share of rejected rows under Jaccard 0.8 to the
    kept row they name, i.e. that joined through another member."""
    index = np.arange(labels.size)
    rejected = labels != index
    right = rejected & (cluster[labels] == cluster)
    recall = right[expected].mean() if expected.any() else 1.0
    precision = right[rejected].mean() if rejected.any() else 1.0
    far = float("nan")
    if at_least_08 is not None and rejected.any():
        rows = np.flatnonzero(rejected)
        far = 1 - at_least_08(rows, labels[rows]).mean()
    return recall, precision, far


def clusters_benchmark(n_docs: int, layouts: list[tuple[int, int]], repeats: int) -> None:
    """Each layout (the check at 0.8, and 16 x 7 without it) on the tuning seed's corpus; a layout
    within 0.002 of the best recall at precision >= 0.99 is chosen there (the default one if it
    is: a change of layout re-signs every stored row; else the fastest), and every row is measured
    again on the held-out seed's corpus."""
    from pipeline.curation import minhash

    configs = [(bands, rows, 0.8) for bands, rows in layouts] + [(16, 7, 0.0)]
    rules = hasattr(minhash, "bucket_pairs")  # the rule ablation needs this version's pair list
    print(f"{'seed':<10} {'bands x rows':<13} {'check':>6} {'docs/s':>9} {'recall':>7} {'precision':>9} "
          f"{'J<0.8 to kept':>13}" + ("   recall/precision: star | one hop | chain" if rules else ""))  # fmt: skip
    chosen = None
    for seed, role in ((0, "tuning"), (1, "held out")):
        texts, cluster = clustered_corpus(n_docs, seed)
        expected = due(texts, cluster)
        sizes = np.bincount(cluster)
        print(
            f"{role} (seed {seed}): {len(texts):,} documents, {(sizes > 1).sum():,} clusters of "
            f"{sizes[sizes > 1].sum():,} documents, {expected.sum():,} due for rejection (recall counts these)"
        )
        results = []
        for bands, rows, verify in configs:
            queue = mp.get_context("fork").Queue()
            process = mp.get_context("fork").Process(target=run_clusters,
                                                     args=(texts, bands, rows, verify, repeats, queue))  # fmt: skip
            process.start()
            seconds, labels = queue.get()
            process.join()
            check = minhash.jaccard_at_least(texts, 0.8, SHINGLE)
            recall, precision, far = cluster_scores(labels, cluster, expected, check)
            line = (f"{role:<10} {bands:>4} x {rows:<6} {verify or '-':>6} {len(texts) / seconds:>9,.0f} "
                    f"{recall:>7.3f} {precision:>9.3f} {far:>13.3f}")  # fmt: skip
            if rules and verify:
                params = minhash.MinHashParams(bands=bands, rows=rows, shingle_words=SHINGLE)
                later, earlier = minhash.bucket_pairs(minhash.band_keys(minhash.signatures(texts, params), params))
                passed = minhash.jaccard_at_least(texts, verify, SHINGLE)(later, earlier)
                line += "  "
                for hops in (1, 2, None):
                    r, p, _ = cluster_scores(rule_labels(len(texts), later[passed], earlier[passed], hops), cluster,
                                             expected)  # fmt: skip
                    line += f" {r:.3f}/{p:.3f}"
            print(line, flush=True)
            results.append((bands, rows, verify, len(texts) / seconds, recall, precision))
        if chosen is None:
            eligible = [r for r in results if r[2] and r[5] >= 0.99]
            top = max(r[4] for r in eligible)
            eligible = [r for r in eligible if r[4] >= top - 0.002]
            default = minhash.MinHashParams()
            chosen = next((r for r in eligible if (r[0], r[1]) == (default.bands, default.rows)), None)
            chosen = chosen or max(eligible, key=lambda r: r[3])
            print(f"chosen on the tuning seed: {chosen[0]} x {chosen[1]} (within 0.002 of the best recall at "
                  "precision >= 0.99: the default if it is, else the fastest)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--datatrove-python", help="python of an environment with datatrove[processing]")
    parser.add_argument("--clusters", action="store_true", help="the corpus of clusters, the chain's rule")
    parser.add_argument("--layouts", default="14x8,16x7,20x5", help="--clusters: bands x rows to compare")
    parser.add_argument("--repeats", type=int, default=1, help="timings per run, the best counts (a busy machine)")
    args = parser.parse_args()
    if args.clusters:
        layouts = [tuple(int(x) for x in layout.split("x")) for layout in args.layouts.split(",")]
        clusters_benchmark(args.docs, layouts, args.repeats)
        return

    texts, planted = corpus(args.docs)
    levels = [jaccard(texts[a], texts[b]) for a, b in planted]
    truth = {tuple(sorted(p)) for p, level in zip(planted, levels, strict=True) if level >= 0.8}
    print(f"{len(texts):,} documents, {len(planted):,} planted copies, Jaccard of copies: "
          + ", ".join(f"{q:.2f}" for q in np.quantile(levels, [0, 0.25, 0.5, 0.75, 1])) + " (quartiles); "
          f"{len(truth):,} pairs at >= 0.8")  # fmt: skip

    print(f"\n{'method':<17} {'seconds':>8} {'docs/s':>9} {'peak MiB':>9} {'recall':>7} {'precision':>9}")
    results = {}

    def report(name: str, seconds: float, labels: np.ndarray, rss_kib: int) -> None:
        results[name] = seconds
        recall, precision = score(labels, texts, truth)
        print(f"{name:<17} {seconds:>8.1f} {len(texts) / seconds:>9,.0f} {rss_kib / 1024:>9,.0f} "
              f"{recall:>7.3f} {precision:>9.3f}", flush=True)  # fmt: skip

    import importlib.util
    import inspect

    from pipeline.curation import minhash

    star = "via_duplicates" in inspect.signature(minhash.clusters).parameters  # this version has the choice
    for runner, extra in ((run_ours, (0.0, args.repeats)), (run_ours, (0.8, args.repeats)),
                          (run_ours, (0.8, args.repeats, False)), (run_rensa, ()), (run_rensa, (True,)),
                          (run_datasketch, ())):  # fmt: skip
        peer = {run_rensa: "rensa", run_datasketch: "datasketch"}.get(runner)
        if peer and importlib.util.find_spec(peer) is None:
            print(f"{peer}: not installed, skipped")
            continue
        if extra[2:] == (False,) and not star:
            continue
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
