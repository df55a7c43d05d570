"""lm-evaluation-harness's side of bench/exam.py, run by an interpreter that has `lm-eval`.

Evaluates the two MMLU tasks that bench/exam.py wrote (the same questions, the harness' stock
templates) with the harness' HF backend and prints, as one JSON line, the evaluation time (model
loading excluded) and each item's predicted answer per task and metric (acc, acc_norm).

    python bench/lm_eval_mmlu.py --model DIR --tasks-dir DIR --batch-size 16 --dtype float32
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--tasks-dir", required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=args.model, dtype=args.dtype, device="cpu", batch_size=args.batch_size)
    tasks = TaskManager(include_path=args.tasks_dir)
    started = time.perf_counter()
    names = ["schoolhouse_stock_mmlu", "schoolhouse_stock_mmlu_continuation"]
    out = simple_evaluate(model=lm, tasks=names, task_manager=tasks, num_fewshot=0, log_samples=True,
                          bootstrap_iters=0)  # fmt: skip
    seconds = time.perf_counter() - started

    predictions = {}
    for task, samples in out["samples"].items():
        picked = {"acc": {}, "acc_norm": {}}
        for sample in samples:
            lls = np.array([resp[0] for resp in sample["filtered_resps"]])
            picked["acc"][sample["doc_id"]] = int(np.argmax(lls))
            choices = sample["doc"]["choices"] if task.endswith("continuation") else ["A", "B", "C", "D"]
            lengths = np.array([len(c) for c in choices])  # the harness' acc_norm: per character of the choice
            picked["acc_norm"][sample["doc_id"]] = int(np.argmax(lls / lengths))
        predictions[task] = {metric: [by_doc[i] for i in range(len(by_doc))] for metric, by_doc in picked.items()}
    print(json.dumps({"seconds": seconds, "predictions": predictions}))


if __name__ == "__main__":
    main()
