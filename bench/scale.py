"""What adding one batch costs as the corpus grows: curation batch by batch (this design) beside
re-curating the whole corpus on every run (the design before it), on the same rows.

Rows follow the row contract and are made without a teacher: prose and code-like text, with
planted exact copies, near variants (0.5-2% of words changed: Jaccard 0.8-0.95 to their source)
and paraphrases (other words, a close vector) of earlier rows. Random unit vectors (384-d, the
MiniLM size) stand in for embeddings; a near variant's or a paraphrase's vector is its source's
plus noise. The embedding cost per row is measured apart, on real text with the real model.

Each step of each batch runs in a fresh interpreter, so its peak memory is its own: seconds and
peak memory above the interpreter's baseline (after imports), for
- dedup: exact + MinHash (checked at Jaccard 0.8) against the dedup index (`pipeline.curation.dedup`);
- semantic: dedup by meaning against the ANN index (`pipeline.curation.semantic_dedup`);
- decontamination: n-gram decontamination of the batch;
- quality: the quality head on the batch's vectors;
- tokens: the batch's token shards and the training mix's meta.json (`pipeline.training.mix`).
The design before: the same steps over every row so far (dedup from an empty index, SemDeDup's
k-means over all vectors as it was, decontamination of every row, the whole mix packed again).

    python bench/scale.py            # batches of 100k up to 1M rows (the before-design at 4 sizes)
    python bench/scale.py --quick    # batches of 10k up to 100k rows (~11 min on 2 cores)

Prints a table per step and design, writes `scale.png` and `scale.json` into --out, and ends
with `growth: time T memory M`: the cost of adding a batch to the largest corpus over the cost at
the smallest, for the worst step of this design (and the same for the design before).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DIMENSIONS = 384
STEPS = ("dedup", "semantic", "decontamination", "quality", "tokens")
DAY0 = 740_000  # a proleptic ordinal; batch k is that day + k


def batch_name(k: int) -> str:
    import datetime as dt

    return f"{dt.date.fromordinal(DAY0 + k).isoformat()}|text"


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------
# The corpus


def make_batch(work: Path, k: int, size: int, seed: int) -> None:
    """Batch k's rows (`rows/<k>.parquet`) and vectors (`vectors/<k>.npy`)."""
    import polars as pl

    from pipeline.rows import SCHEMA

    rng = np.random.default_rng([seed, k])
    vocabulary = np.array([f"{a}{b}" for a in ("ka", "lo", "mi", "ne", "su", "ta", "ro", "vi", "de", "pa")
                           for b in range(2000)])  # fmt: skip
    earlier = sorted((work / "rows").glob("[0-9][0-9][0-9].parquet"))[-3:]  # copies come from recent batches
    sources = pl.concat([pl.read_parquet(p, columns=["text"]) for p in earlier])["text"] if earlier else None
    source_vectors = np.concatenate([np.load(work / "vectors" / f"{p.stem}.npy") for p in earlier]) if earlier else None
    texts, vectors = [], rng.standard_normal((size, DIMENSIONS)).astype(np.float32)
    kinds = rng.random(size)
    for i in range(size):
        if sources is not None and kinds[i] < 0.05:  # exact copy
            j = int(rng.integers(len(sources)))
            texts.append(sources[j])
            vectors[i] = source_vectors[j]
        elif sources is not None and kinds[i] < 0.15:  # near variant
            j = int(rng.integers(len(sources)))
            words = sources[j].split(" ")
            for w in rng.choice(len(words), max(1, int(rng.uniform(0.005, 0.02) * len(words))), replace=False):
                words[w] = str(vocabulary[rng.integers(len(vocabulary))])
            texts.append(" ".join(words))
            vectors[i] = source_vectors[j] + 0.15 * vectors[i] / np.sqrt(DIMENSIONS)
        elif kinds[i] < 0.30:  # code-like
            lines = [f"def {vocabulary[a]}_{vocabulary[b]}({vocabulary[c]}, {vocabulary[d]}):\n"
                     f"    return {vocabulary[c]} + {vocabulary[d]} * {int(e)}"
                     for a, b, c, d, e in rng.integers(0, len(vocabulary), (12, 5))]  # fmt: skip
            texts.append("\n".join(lines))
        else:
            texts.append(" ".join(vocabulary[rng.integers(0, len(vocabulary), int(rng.integers(120, 220)))]))
            if sources is not None and kinds[i] > 0.97:  # a paraphrase: other words, the same meaning
                vectors[i] = source_vectors[int(rng.integers(len(sources)))] + 0.2 * vectors[i] / np.sqrt(DIMENSIONS)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    batch = batch_name(k)
    frame = pl.DataFrame({
        "id": [f"{k:03d}-{i:07d}" for i in range(size)], "domain": "text", "batch": batch, "topic": "t",
        "audience": "a", "style": "s", "template": "x", "prompt": "p", "text": texts, "teacher_model": "m",
        "sampling": "{}", "prompt_tokens": 1, "completion_tokens": [len(t.split()) for t in texts],
        "finish_reason": "stop", "created_at": None, "seed_id": None, "seed_source": None, "status": "kept",
        "reason": None, "checks": "{}", "minhash_cluster": None, "contamination": None, "quality_score": None,
    }).cast(SCHEMA)  # fmt: skip
    (work / "rows").mkdir(parents=True, exist_ok=True)
    (work / "vectors").mkdir(parents=True, exist_ok=True)
    frame.write_parquet(work / "rows" / f"{k:03d}.parquet")
    np.save(work / "vectors" / f"{k:03d}.npy", vectors)


# ---------------------------------------------------------------------------------------------
# One step in a fresh interpreter


def step_this_design(step: str, work: Path, k: int) -> dict:
    import polars as pl

    rows = pl.read_parquet(work / "rows" / f"{k:03d}.parquet")
    vectors = np.load(work / "vectors" / f"{k:03d}.npy")
    if step == "dedup":
        from pipeline.curation.dedup import DedupIndex, dedup_batch
        from pipeline.curation.minhash import MinHashParams

        def texts_of(batch: str, ids: list[str]) -> pl.DataFrame:
            number = batch_number(batch)
            return pl.scan_parquet(work / "rows" / f"{number:03d}.parquet").filter(
                pl.col("id").is_in(ids)).select("id", "text").collect()  # fmt: skip

        out, stats = dedup_batch(rows, DedupIndex(work / "index" / "minhash", MinHashParams()), texts_of, 0.8)
        out.write_parquet(work / "rows" / f"{k:03d}.deduped.parquet")
        return {"rejected": int((out["status"] == "rejected").sum()), "earlier_rows_read": stats.earlier_rows_read}
    if step == "semantic":
        from pipeline.curation.semantic_dedup import SemanticIndex, semantic_dedup_batch

        deduped = pl.read_parquet(work / "rows" / f"{k:03d}.deduped.parquet")
        index = SemanticIndex(work / "index" / "semantic", "text", DIMENSIONS, {"model": "random"})
        out, stats = semantic_dedup_batch(deduped, rows["id"].to_list(), vectors, index, 0.9)
        return {"rejected": stats.rejected, "index_rows": stats.index_size}
    if step in ("decontamination", "quality"):
        return row_step(step, rows, vectors)
    if step == "tokens":
        from pipeline.settings import TrainingSettings
        from pipeline.teacher.weights import embedded_teacher
        from pipeline.training.mix import assemble_mix, pack_batch

        settings = TrainingSettings(mixture={"text": 1.0})
        pack_batch(rows, settings, str(embedded_teacher()), work / "tokens" / f"{k:03d}")
        folders = sorted(p for p in (work / "tokens").iterdir() if p.is_dir())
        shards = assemble_mix(folders, settings, str(embedded_teacher()), work / "mix")
        return {"train_tokens": shards["train-text"]["tokens"]}
    raise ValueError(step)


def step_design_before(step: str, work: Path, k: int) -> dict:
    import polars as pl

    rows = pl.concat([pl.read_parquet(work / "rows" / f"{j:03d}.parquet") for j in range(1, k + 1)])
    if step == "dedup":
        from pipeline.curation.dedup import DedupIndex, dedup_batch
        from pipeline.curation.minhash import MinHashParams

        with tempfile.TemporaryDirectory() as fresh:
            every = rows.select("id", "text")
            out, _ = dedup_batch(rows, DedupIndex(Path(fresh), MinHashParams()),
                                 lambda batch, ids: every.filter(pl.col("id").is_in(ids)), 0.8)  # fmt: skip
        return {"rejected": int((out["status"] == "rejected").sum())}
    vectors = np.concatenate([np.load(work / "vectors" / f"{j:03d}.npy") for j in range(1, k + 1)])
    if step == "semantic":
        representative = kmeans_semantic_duplicates(vectors, 0.9)
        return {"rejected": int((representative != np.arange(len(vectors))).sum())}
    if step in ("decontamination", "quality"):
        return row_step(step, rows, vectors)
    if step == "tokens":
        from pipeline.settings import TrainingSettings
        from pipeline.teacher.weights import embedded_teacher
        from pipeline.training.mix import build_training_mix

        shards = build_training_mix(rows, TrainingSettings(mixture={"text": 1.0}), str(embedded_teacher()),
                                    work / "mix-before")  # fmt: skip
        return {"train_tokens": shards["train-text"]["tokens"]}
    raise ValueError(step)


def row_step(step: str, rows, vectors: np.ndarray) -> dict:
    """The steps that look at each row alone, the same in both designs: only the rows differ."""
    if step == "decontamination":
        from pipeline.curation.decontamination import contamination_hits, exam_indexes

        return {"contaminated": contamination_hits(rows, *exam_indexes(13, 20)).height}
    return {"scored": int(quality_head().predict(vectors).size)}


def batch_number(batch: str) -> int:
    import datetime as dt

    return dt.date.fromisoformat(batch.split("|")[0]).toordinal() - DAY0


def quality_head():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, DIMENSIONS)).astype(np.float32)
    return Ridge(alpha=1.0).fit(x, rng.uniform(0, 5, 512))


def kmeans_semantic_duplicates(vectors: np.ndarray, threshold: float, cluster_size: int = 2000,
                               iterations: int = 10) -> np.ndarray:  # fmt: skip
    """SemDeDup as the design before ran it on every run: k-means over all vectors (n x n/2000
    similarities), then a Python loop within each cluster."""
    n = len(vectors)
    representative = np.arange(n)
    k = max(1, n // cluster_size)
    rng = np.random.default_rng(0)
    centers = vectors[rng.choice(n, k, replace=False)]
    for _ in range(iterations if k > 1 else 0):
        labels = (vectors @ centers.T).argmax(1)
        for c in range(k):
            members = vectors[labels == c]
            if len(members):
                mean = members.sum(0)
                centers[c] = mean / max(np.linalg.norm(mean), 1e-12)
    labels = (vectors @ centers.T).argmax(1) if k > 1 else np.zeros(n, dtype=np.int64)
    for c in range(k):
        members = np.flatnonzero(labels == c)
        sims = vectors[members] @ vectors[members].T
        kept: list[int] = []
        for j in range(len(members)):
            close = [i for i in kept if sims[i, j] >= threshold]
            if close:
                representative[members[j]] = members[close[0]]
            else:
                kept.append(j)
    return representative


def child(design: str, step: str, work: Path, k: int) -> None:
    import numba  # noqa: F401  (imports count in the baseline, not in the step)
    import polars  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import transformers  # noqa: F401

    import pipeline.curation.dedup  # noqa: F401
    import pipeline.curation.semantic_dedup  # noqa: F401

    baseline = rss_mb()
    started = time.perf_counter()
    run = step_this_design if design == "batch" else step_design_before
    figures = run(step, work, k)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb() - baseline, **figures}))


def measure(design: str, step: str, work: Path, k: int, threads: int) -> dict:
    env = {**os.environ, "POLARS_MAX_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "NUMBA_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    done = subprocess.run([sys.executable, __file__, "--child", design, step, str(work), str(k)],
                          capture_output=True, text=True, env=env)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"{design}/{step} at batch {k} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# The embedding cost per row, on real text


def embedding_cost(rows: int = 256) -> dict:
    import inspect

    from pipeline.curation.embeddings import MINILM, Embedder, passages

    texts = [inspect.getdoc(obj) or "" for obj in vars(np).values() if callable(obj)]
    texts = [t for t in texts if len(t.split()) > 60][:rows]
    pieces = [p for t in texts for p in passages(t, 64)]
    embedder = Embedder(MINILM)
    embedder(pieces[:64])  # warm
    started = time.perf_counter()
    embedder(pieces)
    seconds = time.perf_counter() - started
    return {"rows": len(texts), "passages": len(pieces), "rows_per_second": len(texts) / seconds,
            "passages_per_second": len(pieces) / seconds}  # fmt: skip


# ---------------------------------------------------------------------------------------------


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for design, style in (("batch", "-"), ("before", "--")):
        for step in STEPS:
            points = [r for r in results if r["design"] == design and r["step"] == step]
            if not points:
                continue
            sizes = [r["corpus_rows"] for r in points]
            axes[0].plot(sizes, [r["seconds"] for r in points], style, marker="o", label=f"{step} ({design})")
            axes[1].plot(sizes, [r["peak_mb"] for r in points], style, marker="o", label=f"{step} ({design})")
    axes[0].set(xlabel="corpus rows after the batch", ylabel="seconds to add the batch", yscale="log")
    axes[1].set(xlabel="corpus rows after the batch", ylabel="peak MB above baseline", yscale="log")
    axes[0].legend(fontsize=7)
    fig.suptitle("adding one batch: batch by batch (solid) vs the whole corpus every run (dashed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def growth(results: list[dict], design: str) -> tuple[float, float, str]:
    """(time ratio, memory ratio, step) of the worst step: largest corpus over smallest."""
    worst = (0.0, 0.0, "")
    for step in STEPS:
        points = sorted((r for r in results if r["design"] == design and r["step"] == step),
                        key=lambda r: r["corpus_rows"])  # fmt: skip
        if len(points) < 2:
            continue
        t = points[-1]["seconds"] / max(points[0]["seconds"], 1e-9)
        m = max(points[-1]["peak_mb"], 1.0) / max(points[0]["peak_mb"], 1.0)
        if max(t, m) > max(worst[0], worst[1]):
            worst = (t, m, step)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="batches of 10k rows up to 100k")
    parser.add_argument("--batch", type=int, default=100_000, help="rows per batch")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--before-at", default="1,2,5,10", help="batch numbers at which the design before is timed")
    parser.add_argument("--threads", type=int, default=1, help="threads per step (1: one core, as the goals)")
    parser.add_argument("--out", default="", help="folder for scale.json and scale.png (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        design, step, work, k = args.child
        child(design, step, Path(work), int(k))
        return
    if args.quick:
        args.batch, args.batches, args.before_at = 10_000, 10, "1,2,5,10"
    before_at = {int(k) for k in args.before_at.split(",")}
    out = Path(args.out or tempfile.mkdtemp(prefix="scale-"))
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    print(f"# bench/scale.py: batches of {args.batch:,} rows up to {args.batch * args.batches:,}; {args.threads} "
          f"thread(s) per step; load average {load:.1f} on {os.cpu_count()} cores at the start")  # fmt: skip
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="scale-work-") as tmp:
        work = Path(tmp)
        for k in range(1, args.batches + 1):
            make_batch(work, k, args.batch, args.seed)
            for step in STEPS:
                results.append({"design": "batch", "step": step, "batch": k, "corpus_rows": k * args.batch,
                                **measure("batch", step, work, k, args.threads)})  # fmt: skip
            if k in before_at:
                for step in STEPS:
                    results.append({"design": "before", "step": step, "batch": k, "corpus_rows": k * args.batch,
                                    **measure("before", step, work, k, args.threads)})  # fmt: skip
            done = [r for r in results if r["batch"] == k]
            print(f"corpus {k * args.batch:>9,}: " + "  ".join(
                f"{r['step']}{'*' if r['design'] == 'before' else ''} {r['seconds']:.1f}s/{r['peak_mb']:.0f}MB"
                for r in done), flush=True)  # fmt: skip
    print("\n| step | design | " + " | ".join(f"{k * args.batch // 1000}k" for k in range(1, args.batches + 1))
          + " |")  # fmt: skip
    print("|---|---|" + "---|" * args.batches)
    for step in STEPS:
        for design in ("batch", "before"):
            cells = {r["batch"]: f"{r['seconds']:.1f} s, {r['peak_mb']:.0f} MB"
                     for r in results if r["step"] == step and r["design"] == design}  # fmt: skip
            print(f"| {step} | {design} | " + " | ".join(cells.get(k, "") for k in range(1, args.batches + 1)) + " |")
    cost = embedding_cost()
    print(f"\nembedding (real text, {cost['rows']} rows, MiniLM on CPU, {args.threads} thread(s) not enforced): "
          f"{cost['rows_per_second']:.1f} rows/s, {cost['passages_per_second']:.1f} passages/s")  # fmt: skip
    (out / "scale.json").write_text(json.dumps({"results": results, "embedding": cost, "load": load}, indent=1))
    plot(results, out / "scale.png")
    print(f"table and plot: {out / 'scale.json'}, {out / 'scale.png'}")
    t, m, step = growth(results, "before")
    print(f"growth of the design before (worst step, {step}): time {t:.2f} memory {m:.2f}")
    t, m, step = growth(results, "batch")
    print(f"growth: time {t:.2f} memory {m:.2f} (worst step: {step})")


if __name__ == "__main__":
    main()
