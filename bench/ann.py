"""ANN index candidates for dedup by meaning across batches, on the same vectors in one run:
usearch (bfloat16, 8-bit and float32 scalars), faiss (HNSW, and IVF, which can remove), hnswlib,
and `pipeline.curation.ann.VectorIndex` (usearch bf16 as the pipeline uses it: sharded, saved,
searched memory-mapped). A library that is not installed is reported as skipped.

Data (seeded, 384-d unit vectors, the all-MiniLM-L6-v2 size):
- clustered: base rows around 1000 centres (cosine 0.5-0.8 to their centre: rows of a cluster
  are 0.25-0.65 alike, a realistic graph); queries: 60% planted near-duplicates, three per
  chosen base row at cosine 0.85-0.99 to it, 40% unrelated rows of the same clusters;
- random: the same with a base of random unit vectors (nearly orthogonal: the easy case);
- minilm: real embeddings of the standard library's docstrings (first paragraphs) as the base,
  queries the same texts reworded (a word dropped, two swapped, a clause added) and unrelated ones.
Recall at a threshold t: of the (query, base row) pairs whose exact cosine is >= t, the share the
index returns with a similarity >= t (so a similarity misreported below t is a miss); `wrong`
counts returned pairs reported >= 0.90 whose exact cosine is below it. Exact pairs are found by
brute force for a sample of the queries.

Each candidate builds (and saves) in a fresh interpreter, then opens the saved file in another
and answers every query, so each phase's peak memory is its own: MB above the interpreter's
high-water mark once the vectors are loaded. `open` says how a saved index is opened (mmap: a
memory-mapped view), `grow`/`remove` whether the opened index takes new keys / removes keys.

    python bench/ann.py --quick                          # clustered, 8k rows, under a minute
    python bench/ann.py                                  # 100k rows, then 1M rows
    python bench/ann.py --sizes 100000 --data clustered --libraries usearch-bf16,faiss-hnsw
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DIMENSIONS = 384
K = 16  # neighbours asked per query, as pipeline.curation.semantic_dedup asks
CONNECTIVITY = EXPANSION_ADD = EXPANSION_SEARCH = 0  # the pipeline's (pipeline.curation.ann) unless told
THRESHOLDS = (0.85, 0.90, 0.95)
LIBRARIES = ("usearch-bf16", "usearch-i8", "usearch-f32", "faiss-hnsw", "faiss-ivf", "hnswlib", "VectorIndex")
MODULE = {"usearch": "usearch", "faiss": "faiss", "hnswlib": "hnswlib", "VectorIndex": "usearch"}


def unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def around(rng: np.random.Generator, centres: np.ndarray, cosine: np.ndarray) -> np.ndarray:
    """A unit vector at exactly `cosine` from each centre, in a random direction."""
    other = rng.standard_normal(centres.shape).astype(np.float32)
    other = unit(other - (other * centres).sum(1, keepdims=True) * centres)
    return unit(centres * cosine[:, None] + other * np.sqrt(1 - cosine**2)[:, None])


def synthetic(kind: str, rows: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((1000, DIMENSIONS)))
    if kind == "random":
        base = unit(rng.standard_normal((rows, DIMENSIONS)))
    else:
        base = around(rng, centres[rng.integers(0, 1000, rows)], rng.uniform(0.5, 0.8, rows))
    planted = int(queries * 0.6) // 3 * 3
    sources = np.repeat(rng.choice(rows, planted // 3, replace=False), 3)
    copies = around(rng, base[sources], rng.uniform(0.85, 0.99, planted))
    unrelated = around(rng, centres[rng.integers(0, 1000, queries - planted)], rng.uniform(0.5, 0.8, queries - planted))
    return base, np.vstack([copies, unrelated])[rng.permutation(queries)]


def docstrings() -> list[str]:
    """First paragraphs (8+ words) of the standard library's docstrings, each once."""
    texts = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "test" in path.parts or "idlelib" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc.split("\n\n")[0].split()) >= 8:
                    texts.append(" ".join(doc.split("\n\n")[0].split()))
    return list(dict.fromkeys(texts))


def reworded(text: str, rng: random.Random) -> str:
    words = text.split()
    how = rng.randrange(3)
    if how == 0:
        del words[rng.randrange(len(words))]
    elif how == 1:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    else:
        words += rng.choice(["in this case.", "as described above.", "by default.", "if needed."]).split()
    return " ".join(words)


def minilm(rows: int) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        from pipeline.curation.embeddings import Embedder

        embed = Embedder("all-MiniLM-L6-v2")
    except Exception as error:  # the model package is missing
        print(f"minilm: skipped ({error})")
        return None
    rng = random.Random(0)
    texts = docstrings()
    rng.shuffle(texts)
    base_texts, other = texts[:rows], texts[rows : rows + rows // 4]
    queries = [reworded(t, rng) for t in rng.sample(base_texts, rows // 2)] + other
    return embed(base_texts), embed(queries)


def exact_pairs(base: np.ndarray, queries: np.ndarray, floor: float, block: int = 1024) -> np.ndarray:
    """(query, base row, cosine) of every pair at least `floor` alike, by brute force."""
    found = []
    for first in range(0, len(queries), block):
        sims = queries[first : first + block] @ base.T
        q, b = np.nonzero(sims >= floor)
        found.append(np.column_stack([q + first, b, sims[q, b]]))
    return np.vstack(found) if found else np.zeros((0, 3))


# -- one candidate in a fresh interpreter ---------------------------------------------------------


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def build(name: str, base: np.ndarray, path: Path, threads: int) -> None:
    keys = np.arange(len(base), dtype=np.int64)
    if name.startswith("usearch"):
        from usearch.index import Index

        index = Index(ndim=DIMENSIONS, metric="cos", dtype=name.split("-")[1], connectivity=CONNECTIVITY,
                      expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)  # fmt: skip
        index.add(keys.astype(np.uint64), base, threads=threads)
        index.save(str(path))
    elif name == "VectorIndex":
        from pipeline.curation.ann import VectorIndex

        index = VectorIndex.open(path, DIMENSIONS)
        index.add(keys, base)  # one thread, as the pipeline adds
        index.save()
    elif name.startswith("faiss"):
        import faiss

        faiss.omp_set_num_threads(threads)
        if name == "faiss-hnsw":
            index = faiss.IndexHNSWFlat(DIMENSIONS, CONNECTIVITY, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = EXPANSION_ADD
            index.add(base)
        else:
            lists = int(4 * np.sqrt(len(base)))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIMENSIONS), DIMENSIONS, lists, faiss.METRIC_INNER_PRODUCT)
            index.train(base[np.random.default_rng(0).permutation(len(base))[: 64 * lists]])
            index.add_with_ids(base, keys)
        faiss.write_index(index, str(path))
    else:
        import hnswlib

        index = hnswlib.Index(space="ip", dim=DIMENSIONS)
        index.init_index(max_elements=len(base), ef_construction=EXPANSION_ADD, M=CONNECTIVITY,
                         allow_replace_deleted=True)  # fmt: skip
        index.set_num_threads(threads)
        index.add_items(base, keys)
        index.save_index(str(path))


def opened(name: str, path: Path, rows: int, threads: int):
    """(search(queries) -> (keys, sims), how the saved index was opened, probe() -> (whether the
    opened index takes new keys, whether it removes keys)); probe after searching: it changes it."""
    vector, key = np.eye(1, DIMENSIONS, dtype=np.float32), np.array([10**12])
    if name.startswith("usearch"):
        from usearch.index import Index

        index = Index.restore(str(path), view=True)
        index.expansion_search = EXPANSION_SEARCH

        def search(q):
            found = index.search(q, K, threads=threads)
            return np.asarray(found.keys).astype(np.int64), 1 - np.asarray(found.distances)

        def probe():
            try:
                index.add(key.astype(np.uint64), vector)
                grows = "yes"
            except RuntimeError:
                grows = "full load"  # a view is read-only; removing from one crashes usearch 2.26: not tried
            full = Index.restore(str(path))
            return grows, "full load" if full.remove(np.array([0], dtype=np.uint64)) == 1 else "no"

        return search, "mmap", probe
    if name == "VectorIndex":
        from pipeline.curation import ann

        ann.SEARCH_THREADS = threads
        index = ann.VectorIndex.open(path, DIMENSIONS)

        def probe():
            index.add(key, vector)
            return "yes", "yes" if index.remove(np.array([0, 10**12])) == 2 else "no"

        return (lambda q: index.search(q, K)), "mmap (sealed)", probe
    if name.startswith("faiss"):
        import faiss

        faiss.omp_set_num_threads(threads)
        how = "IO_FLAG_MMAP"
        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError:
            index, how = faiss.read_index(str(path)), "full load"
        if name == "faiss-hnsw":
            index.hnsw.efSearch = EXPANSION_SEARCH
        else:
            index.nprobe = 16

        def search(q):
            sims, keys = index.search(q, K)
            return keys.astype(np.int64), sims

        def attempt(change, fallback: str) -> str:
            try:
                change(index)
                return "yes"
            except RuntimeError:
                try:
                    change(faiss.read_index(str(path)))
                    return fallback
                except RuntimeError:
                    return "no"

        add = (lambda i: i.add(vector)) if name == "faiss-hnsw" else (lambda i: i.add_with_ids(vector, key))
        return search, how, lambda: (attempt(add, "full load"),
                                     attempt(lambda i: i.remove_ids(np.array([0])), "full load"))  # fmt: skip
    import hnswlib

    index = hnswlib.Index(space="ip", dim=DIMENSIONS)
    index.load_index(str(path), max_elements=rows + 1, allow_replace_deleted=True)
    index.set_ef(EXPANSION_SEARCH)
    index.set_num_threads(threads)

    def search(q):
        keys, distances = index.knn_query(q, K)
        return keys.astype(np.int64), 1 - distances

    def probe():
        index.add_items(vector, key)
        index.mark_deleted(0)
        return "yes", "marks deleted"

    return search, "full load", probe


def configure(args: argparse.Namespace) -> None:
    """The HNSW parameters of every candidate (and of the pipeline's module, for VectorIndex)."""
    global CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH
    from pipeline.curation import ann

    for name in ("CONNECTIVITY", "EXPANSION_ADD", "EXPANSION_SEARCH"):
        value = getattr(args, name.lower()) or getattr(ann, name)
        globals()[name] = value
        setattr(ann, name, value)


def worker(args: argparse.Namespace) -> None:
    data = Path(args.data)
    path = data / f"{args.worker}.index"
    __import__("pipeline.curation.ann" if args.worker == "VectorIndex" else MODULE[args.worker.split("-")[0]])
    if args.phase == "build":
        base = np.load(data / "base.npy")
        baseline = peak_mb()
        start = time.perf_counter()
        build(args.worker, base, path, args.threads)
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size
        report = {"build_s": seconds, "build_mb": peak_mb() - baseline, "disk_mb": size / 2**20}
    else:
        queries, sample = np.load(data / "queries.npy"), int(np.load(data / "sample.npy"))
        rows = int(np.load(data / "rows.npy"))
        baseline = peak_mb()
        search, how, probe = opened(args.worker, path, rows, args.threads)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            keys, sims = search(queries)
            times.append(time.perf_counter() - start)
        np.savez(data / f"{args.worker}.found.npz", keys=keys[:sample], sims=np.asarray(sims[:sample], np.float32))
        query_mb = peak_mb() - baseline
        grows, removes = probe()
        report = {"query_s": float(np.median(times)), "query_mb": query_mb,
                  "open": how, "grow": grows, "remove": removes}  # fmt: skip
    print(json.dumps(report))


# -- the comparison -------------------------------------------------------------------------------


def run_phase(name: str, phase: str, data: Path, args: argparse.Namespace) -> dict | str:
    command = [sys.executable, __file__, "--worker", name, "--phase", phase, "--data", str(data),
               "--threads", str(args.threads), "--repeats", str(args.repeats), "--connectivity", str(CONNECTIVITY),
               "--expansion-add", str(EXPANSION_ADD), "--expansion-search", str(EXPANSION_SEARCH)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        return f"failed ({(done.stderr.strip().splitlines() or ['exit ' + str(done.returncode)])[-1][:80]})"
    return json.loads(done.stdout.strip().splitlines()[-1])


def recall(found_keys, found_sims, queries, base, truth, threshold: float) -> tuple[float, int]:
    """(share of exact pairs >= threshold returned at >= threshold, returned pairs wrongly >= it)."""
    rows = len(base)
    shown = (found_keys >= 0) & (found_sims >= threshold)
    q, m = np.nonzero(shown)
    returned = q.astype(np.int64) * rows + found_keys[q, m]
    wanted = truth[truth[:, 2] >= threshold]
    codes = wanted[:, 0].astype(np.int64) * rows + wanted[:, 1].astype(np.int64)
    share = float(np.isin(codes, returned).mean()) if len(codes) else 1.0
    exact = np.einsum("nd,nd->n", queries[q], base[found_keys[q, m]])
    return share, int((exact < threshold).sum())


def compare(label: str, base: np.ndarray, queries: np.ndarray, sample: int, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="ann-bench-") as tmp:
        data = Path(tmp)
        np.save(data / "base.npy", base)
        np.save(data / "queries.npy", queries)
        np.save(data / "sample.npy", np.array(sample))
        np.save(data / "rows.npy", np.array(len(base)))
        start = time.perf_counter()
        truth = exact_pairs(base, queries[:sample], min(THRESHOLDS))
        exact_s = time.perf_counter() - start
        counts = "  ".join(f">={t}: {(truth[:, 2] >= t).sum()}" for t in THRESHOLDS)
        print(f"\n{label}: {len(base):,} base rows, {len(queries):,} queries, k={K}; exact pairs among the first "
              f"{sample:,} queries ({exact_s:.0f} s by brute force): {counts}")  # fmt: skip
        print(f"{'library':14s} {'build s':>8s} {'query s':>8s} " + " ".join(f"{'r@' + str(t):>7s}" for t in THRESHOLDS)
              + f" {'wrong':>6s} {'build MB':>9s} {'query MB':>9s} {'disk MB':>8s}  open / grow / remove")  # fmt: skip
        for name in args.libraries:
            module = MODULE[name.split("-")[0]]
            try:
                __import__(module)
            except ImportError:
                print(f"{name:14s} skipped ({module} is not installed)")
                continue
            built = run_phase(name, "build", data, args)
            answered = run_phase(name, "query", data, args) if isinstance(built, dict) else built
            if not isinstance(answered, dict):
                print(f"{name:14s} {answered}")
                continue
            found = np.load(data / f"{name}.found.npz")
            scores = [recall(found["keys"], found["sims"], queries, base, truth, t) for t in THRESHOLDS]
            wrong = recall(found["keys"], found["sims"], queries, base, truth, 0.90)[1]
            print(f"{name:14s} {built['build_s']:8.1f} {answered['query_s']:8.1f} "
                  + " ".join(f"{share:7.4f}" for share, _ in scores)
                  + f" {wrong:6d} {built['build_mb']:9.0f} {answered['query_mb']:9.0f} {built['disk_mb']:8.1f}"
                  f"  {answered['open']} / {answered['grow']} / {answered['remove']}", flush=True)  # fmt: skip
            for leftover in data.glob(f"{name}.*"):
                if leftover.is_dir():
                    import shutil

                    shutil.rmtree(leftover)
                else:
                    leftover.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="clustered 8k rows, 4k queries: under a minute")
    parser.add_argument("--sizes", default="", help="base rows, comma-separated (default 100000,1000000)")
    parser.add_argument("--queries", type=int, default=100_000, help="queries per size (quick: 4k)")
    parser.add_argument("--data", default="", help="clustered,random,minilm (default all; quick: clustered)")
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--threads", type=int, default=1, help="threads for building and searching (default 1)")
    parser.add_argument("--repeats", type=int, default=0, help="query repeats, the median (default: 3 up to 20k rows)")
    parser.add_argument("--connectivity", type=int, default=0, help="HNSW links per row (default: the pipeline's)")
    parser.add_argument("--expansion-add", type=int, default=0, help="candidates kept while adding")
    parser.add_argument("--expansion-search", type=int, default=0, help="... while searching")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.libraries = [n for n in args.libraries.split(",") if n]
    configure(args)
    if args.worker:
        worker(args)
        return
    sizes = [int(s) for s in args.sizes.split(",") if s] or ([8_000] if args.quick else [100_000, 1_000_000])
    kinds = [k for k in args.data.split(",") if k] or ["clustered"] + ([] if args.quick else ["random", "minilm"])
    queries = 4_000 if args.quick and args.queries == 100_000 else args.queries
    print(f"connectivity {CONNECTIVITY}, expansion {EXPANSION_ADD} (add) / {EXPANSION_SEARCH} (search), "
          f"{args.threads} thread(s); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          "at the start")  # fmt: skip
    asked_repeats = args.repeats
    for kind in kinds:
        if kind == "minilm":
            vectors = minilm(300 if args.quick else 4000)
            if vectors is not None:
                args.repeats = asked_repeats or 3
                compare("minilm (stdlib docstrings, reworded)", vectors[0], vectors[1], len(vectors[1]), args)
            continue
        for rows in sizes if kind == "clustered" else sizes[:1]:
            base, asked = synthetic(kind, rows, queries)
            args.repeats = asked_repeats or (3 if rows <= 20_000 else 1)
            compare(kind, base, asked, min(queries, 20_000 if rows <= 100_000 else 5_000), args)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
