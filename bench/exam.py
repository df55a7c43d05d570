"""Exam benchmark: this project's MMLU log-likelihood engine vs lm-evaluation-harness, both with
the harness' stock MMLU templates.

The same model (default: the embedded teacher, SmolLM2-135M-Instruct) and the same MMLU
questions (a seeded sample spread over the 57 subjects) go through `pipeline.exam.mmlu` (tasks
`mmlu` and `mmlu_continuation`, this project's declarations of the harness' templates) and
through the harness' HF backend, which reads them from the same local file through two custom
tasks that copy the stock `mmlu_<subject>` and `mmlu_<subject>_continuation` configurations
(description line, doc_to_text, doc_to_choice, target delimiter) since the hub's cais/mmlu cannot
be reached here. Ours runs `--dtype auto` by default (fp32, with choices scored in bf16 and re-checked in fp32
where two are close, on hardware with native bf16; plain fp32 elsewhere) against the harness in
fp32; `--dtype float32|bfloat16` runs both sides in that dtype. The same CPU threads and batch
size, one after the other; model loading is excluded from both.
With `--served` the same items are also scored through a vLLM-CPU server of the model
(`prompt_logprobs`, the exam's `--served-url` path). Prints items/s for each side, the ratio to
the harness, the accuracies (mmlu acc; continuation acc and acc_norm), and how many items each
side answered differently from the harness.

    python bench/exam.py [--items 500] [--repeats 3] [--served] [--lm-eval-python PATH]

`--lm-eval-python` is the interpreter of an environment with `lm-eval` (not a dependency of the
project), e.g. `python -m venv /tmp/lmeval && /tmp/lmeval/bin/pip install torch==2.13.0
transformers==5.19.0 lm-eval==0.4.13`.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TASK = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
description: {description}
doc_to_text: {text}
doc_to_choice: {choices}
doc_to_target: answer
target_delimiter: " "
metric_list:
  - metric: acc
  - metric: acc_norm
"""
# lm-evaluation-harness 0.4.13: mmlu/default/_default_template_yaml and
# mmlu/continuation/_continuation_template_yaml, with each subject file's description line.
STOCK = {
    "mmlu": ("The following are multiple choice questions (with answers) about {{subject}}.\n\n",
             "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\n"
             "D. {{choices[3]}}\nAnswer:", '["A", "B", "C", "D"]'),
    "mmlu_continuation": ("The following are questions (with answers) about {{subject}}.\n\n",
                          "Question: {{question.strip()}}\nAnswer:", "'{{choices}}'"),
}  # fmt: skip
# what each side reports: (benchmark of ours, the harness task, its metric)
COMPARED = [("mmlu", "schoolhouse_stock_mmlu", "acc"),
            ("mmlu_continuation", "schoolhouse_stock_mmlu_continuation", "acc"),
            ("mmlu_continuation_norm", "schoolhouse_stock_mmlu_continuation", "acc_norm")]  # fmt: skip


def write_tasks(items, folder: Path) -> None:
    """The sampled items as a JSON-lines file, and the harness' two stock tasks over it."""
    data = folder / "mmlu.jsonl"
    with data.open("w") as f:
        for item in items:
            row = {"question": item.question, "choices": list(item.choices), "answer": item.answer,
                   "subject": item.subject.replace("_", " ")}  # fmt: skip
            f.write(json.dumps(row) + "\n")
    for name, (description, text, choices) in STOCK.items():
        (folder / f"{name}.yaml").write_text(TASK.format(task=f"schoolhouse_stock_{name}", data=data,
                                                         description=json.dumps(description), text=json.dumps(text),
                                                         choices=choices))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--model", default="", help="HF model folder (default: the embedded teacher)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="ours (auto: bf16 scoring re-checked in fp32 where bf16 is native); the harness runs "
                        "fp32 for auto")  # fmt: skip
    parser.add_argument("--recheck-margin", type=float, default=0.1,
                        help="auto: items whose two best choices bf16 puts within this many nats are re-scored in fp32")
    parser.add_argument("--lm-eval-python", default="/tmp/lmeval/bin/python")
    parser.add_argument("--repeats", type=int, default=1, help="runs of our side (median); the harness runs once")
    parser.add_argument("--served", action="store_true",
                        help="also score through a vLLM-CPU server of the model (prompt_logprobs)")  # fmt: skip
    args = parser.parse_args()

    import torch

    from pipeline.exam.data import read_mmlu
    from pipeline.exam.mmlu import mmlu, pick_items
    from pipeline.exam.models import load_model
    from pipeline.exam.served import served_model
    from pipeline.teacher.server import VllmServer, free_port
    from pipeline.teacher.weights import embedded_teacher

    model_dir = args.model or str(embedded_teacher())
    theirs_dtype = "float32" if args.dtype == "auto" else args.dtype
    all_items = read_mmlu()
    items = pick_items(all_items, args.items, seed=0)
    print(f"model {model_dir}, {len(items)} MMLU items, batch {args.batch_size}, "
          f"{torch.get_num_threads()} CPU threads, {args.dtype} (harness: {theirs_dtype})", flush=True)  # fmt: skip

    with tempfile.TemporaryDirectory() as folder:
        write_tasks(items, Path(folder))
        harness = subprocess.run(
            [args.lm_eval_python, str(ROOT / "bench" / "lm_eval_mmlu.py"), "--model", model_dir,
             "--tasks-dir", folder, "--batch-size", str(args.batch_size), "--dtype", theirs_dtype],
            capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                                                 "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        if harness.returncode:
            sys.exit(f"lm-eval failed:\n{harness.stderr[-4000:]}")
        theirs = json.loads(harness.stdout.strip().splitlines()[-1])

    exam = load_model(model_dir, args.dtype, args.recheck_margin)
    logging.basicConfig(level=logging.INFO, format="  %(message)s")
    logging.getLogger("schoolhouse.exam").setLevel(logging.INFO)

    def sit(scoring) -> tuple[float, dict[str, list[int]]]:
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            results = mmlu(scoring, items, all_items, shots=0, batch_size=args.batch_size, seed=0,
                           formulations=list(STOCK))  # fmt: skip
            times.append(time.perf_counter() - started)
        picks = {b: [ord(p) - ord("A") for p in results.filter(results["benchmark"] == b)["predicted"]]
                 for b, _, _ in COMPARED}  # fmt: skip
        return statistics.median(times), picks

    sides = {f"schoolhouse ({exam.dtype})": sit(exam)}
    if args.served:
        with VllmServer(Path(model_dir), served_name="exam", port=free_port(), dtype="float32", max_model_len=2048,
                        startup_timeout_s=900) as server:  # fmt: skip
            sides["schoolhouse via vLLM (fp32)"] = sit(replace(exam, scorer=served_model(server.url)))
    sides["lm-evaluation-harness"] = (theirs["seconds"],
                                      {b: theirs["predictions"][task][metric] for b, task, metric in COMPARED})

    truth = [item.answer for item in items]
    print(f"\n{'':38}{'items/s':>9}{'vs harness':>12}" + "".join(f"{b:>24}" for b, _, _ in COMPARED))
    reference = sides["lm-evaluation-harness"]
    for side, (seconds, picks) in sides.items():
        accuracies = [sum(p == t for p, t in zip(picks[b], truth, strict=True)) / len(items) for b, _, _ in COMPARED]
        print(f"{side:38}{len(items) / seconds:>9.2f}{reference[0] / seconds:>11.2f}x"
              + "".join(f"{a:>24.4f}" for a in accuracies))  # fmt: skip
    for side, (seconds, picks) in sides.items():
        if side == "lm-evaluation-harness":
            continue
        gaps = []
        for benchmark, _, _ in COMPARED:
            ours, harness = picks[benchmark], reference[1][benchmark]
            right = [sum(p == t for p, t in zip(one, truth, strict=True)) for one in (ours, harness)]
            differ = sum(a != b for a, b in zip(ours, harness, strict=True))
            gaps.append(f"{benchmark} {100 * abs(right[0] - right[1]) / len(items):.2f} pt, {differ} items differ")
        print(f"{side} vs the harness: {reference[0] / seconds:.2f}x ({seconds:.1f} s vs {reference[0]:.1f} s); "
              + "; ".join(gaps))  # fmt: skip


if __name__ == "__main__":
    main()
