"""A batch's per-row curation on this machine against the same batch on a local Ray cluster of 1
and 2 worker nodes (1 CPU each), in one run: rows/s of each stage and what Ray adds per row.

    python bench/ray_curation.py [--text-rows 2000] [--code-rows 400] [--repeats 3]

The batch: vital-article summaries as text rows (the prose rules, MinHash signatures, passage
embeddings) and generated exercises as code rows, half of them failing their tests (each program
in the bubblewrap sandbox). "local" is the single-machine path with `curation.workers` and
`curation.sandbox.workers` set to the cores it may use; "ray" spreads blocks of rows over the
cluster's worker nodes (`orchestration.engine: ray`), each block a task on one core. A cluster
on one 2-core machine cannot show a speed-up beyond two cores; the figure that carries to a real
cluster is the overhead per row (ray on one worker against local on one core), which a cluster of
many nodes pays once per block. Every configuration must give the same verdicts, signatures and
vectors (checked). Medians of interleaved repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

BLOCK_ROWS = {"prose rules": 250, "code tests": 25, "minhash": 500, "embeddings": 100}


def exercise(k: int) -> str:
    result = 2 * k + (k % 2)  # odd k: a wrong expected value, the tests fail
    return (f'### Function\n```python\ndef scale_{k}(x: int) -> int:\n    """{k} times x."""\n'
            f"    return {k} * x\n```\n\n### Tests\n```python\nassert scale_{k}(2) == {result}\n"
            f"assert scale_{k}(0) == 0\n```\n")  # fmt: skip


def batch(domain: str, texts: list[str]) -> pl.DataFrame:
    from pipeline.rows import SCHEMA, conform

    made = datetime(2026, 11, 20, tzinfo=UTC)
    return conform(pl.DataFrame([
        {"id": f"{domain}{i:06d}", "domain": domain, "batch": f"2026-11-20|{domain}", "topic": "t", "audience": "a",
         "style": "s", "template": "x", "prompt": "p", "text": text, "teacher_model": "m", "sampling": "{}",
         "prompt_tokens": 1, "completion_tokens": len(text.split()), "finish_reason": "stop", "created_at": made,
         "status": "kept", "reason": None, "checks": "{}", "minhash_cluster": None, "contamination": None,
         "quality_score": None} for i, text in enumerate(texts)], schema=SCHEMA))  # fmt: skip


def stages(engine_of, cores: int, text: pl.DataFrame, code: pl.DataFrame, embedder, folder: Path) -> dict:
    """{stage: (seconds, result)} for one configuration; `engine_of(stage)` gives its engine."""
    import torch

    from pipeline.curation.curate import curate
    from pipeline.curation.dedup import signatures_on
    from pipeline.curation.embeddings import EmbeddingStore
    from pipeline.curation.minhash import MinHashParams
    from pipeline.settings import CurationSettings

    torch.set_num_threads(cores)  # the local embedder on as many cores as the configuration has
    settings = CurationSettings(workers=cores, sandbox={"workers": cores})
    out = {}
    started = time.perf_counter()
    rules = curate(text, settings, engine_of("prose rules"))
    out["prose rules"] = (time.perf_counter() - started, rules["reason"].to_list())
    started = time.perf_counter()
    tests = curate(code, settings, engine_of("code tests"))
    out["code tests"] = (time.perf_counter() - started, tests["reason"].to_list())
    started = time.perf_counter()
    sigs = signatures_on(engine_of("minhash"), text["text"], MinHashParams())
    out["minhash"] = (time.perf_counter() - started, sigs)
    store = EmbeddingStore(folder, embedder, 64, engine_of("embeddings"))
    passages = text["text"].head(400).to_list()
    started = time.perf_counter()
    vectors = store.embed(passages, "the bench's passages")
    out["embeddings"] = (time.perf_counter() - started, vectors)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text-rows", type=int, default=2000)
    parser.add_argument("--code-rows", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import ray

    from pipeline.cluster.engine import LocalEngine, RayEngine
    from pipeline.cluster.local import LocalCluster
    from pipeline.curation.embeddings import MINILM, Embedder, embed_block
    from pipeline.curation.minhash import MinHashParams, signatures
    from pipeline.generation.sources import wiki_vital_summaries
    from pipeline.settings import RaySettings

    summaries = wiki_vital_summaries()["text"].head(args.text_rows).to_list()
    text, code = batch("text", summaries), batch("code", [exercise(k) for k in range(args.code_rows)])
    rows = {"prose rules": text.height, "code tests": code.height, "minhash": text.height, "embeddings": 400}
    embedder = Embedder(MINILM)
    signatures(summaries[:8], MinHashParams())  # compiled before the local configurations are timed
    folder = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    times: dict[str, dict[str, list[float]]] = {}
    reference = None
    clusters = {workers: LocalCluster(workers=workers, cpus_per_worker=1, env={"OMP_NUM_THREADS": "1"})
                for workers in (1, 2)}  # fmt: skip
    try:
        for cluster in clusters.values():
            cluster.start()
        for repeat in range(args.repeats):
            configs = [("local, 1 core", 1, None), ("local, 2 cores", 2, None),
                       ("ray, 1 worker node", 1, clusters[1]), ("ray, 2 worker nodes", 2, clusters[2])]  # fmt: skip
            for name, cores, cluster in configs:
                if cluster is None:
                    engine_of = lambda _stage: LocalEngine()  # noqa: E731
                else:
                    ray.shutdown()
                    engines = {stage: RayEngine(RaySettings(address=cluster.address, block_rows=size))
                               for stage, size in BLOCK_ROWS.items()}  # fmt: skip
                    engine_of = engines.__getitem__
                    warm = RayEngine(RaySettings(address=cluster.address, block_rows=1))  # every worker's model loaded
                    started = time.perf_counter()
                    warm.map(partial(embed_block, name=MINILM, max_tokens=embedder.max_tokens,
                                     batch_size=embedder.batch_size), ["warm up"] * 8, "warm-up")  # fmt: skip
                    warm.map(partial(signatures, params=MinHashParams()), summaries[:8], "warm-up")  # compiled
                    times.setdefault(name, {}).setdefault("start-up", []).append(time.perf_counter() - started)
                found = stages(engine_of, cores, text, code, embedder, folder / name.replace(" ", "_").replace(",", ""))
                for stage, (seconds, _) in found.items():
                    times.setdefault(name, {}).setdefault(stage, []).append(seconds)
                reference = reference or found
                for stage, (_, result) in found.items():  # the same answer wherever it ran
                    expected = reference[stage][1]
                    if stage == "embeddings":
                        same = np.allclose(result, expected, atol=1e-5)
                    else:
                        same = np.array_equal(result, expected) if stage == "minhash" else result == expected
                    assert same, f"{name}: {stage} differs from the first configuration"
            print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
        for cluster in clusters.values():
            cluster.stop()

    print(f"rows: {rows}; block rows on ray: {BLOCK_ROWS}; medians of {args.repeats} repeats (rows/s)")
    print(f"| configuration | {' | '.join(rows)} |")
    print(f"|---|{'---|' * len(rows)}")
    median = {name: {stage: statistics.median(seconds) for stage, seconds in by_stage.items()}
              for name, by_stage in times.items()}  # fmt: skip
    for name, by_stage in median.items():
        print(f"| {name} | {' | '.join(f'{rows[s] / by_stage[s]:,.1f}' for s in rows)} |")
    local, on_ray = median["local, 1 core"], median["ray, 1 worker node"]
    print("Ray's overhead per row (ray on 1 worker node - local on 1 core), ms: "
          + ", ".join(f"{s} {1000 * (on_ray[s] - local[s]) / rows[s]:+.2f}" for s in rows))  # fmt: skip
    print("a Ray job's start-up (torch, the embedding model and the MinHash kernel loaded on each worker), s: "
          + ", ".join(f"{name} {median[name]['start-up']:.1f}" for name in median if "start-up" in median[name]))
    print("2 worker nodes / 1 worker node, speed: "
          + ", ".join(f"{s} {median['ray, 1 worker node'][s] / median['ray, 2 worker nodes'][s]:.2f}x" for s in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
