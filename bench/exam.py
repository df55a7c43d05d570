"""Exam benchmark: this project's MMLU log-likelihood engine vs lm-evaluation-harness.

The same model (default: the embedded teacher, SmolLM2-135M-Instruct) and the same MMLU
questions (a seeded sample spread over the 57 subjects) go through `pipeline.exam.mmlu` and
through the harness' HF backend, which reads them from the same local file through two custom
tasks whose prompts are this exam's two formulations (cloze with acc_norm, letters with acc).
Both run in the same dtype (fp32 unless `--dtype bfloat16`) on the same CPU threads with the
same batch size, one after the other; model loading is excluded from both. Prints items/s for
each side, their ratio, the accuracies in both formulations, and how many items the two sides
answered differently.

    python bench/exam.py [--items 500] [--lm-eval-python PATH]

`--lm-eval-python` is the interpreter of an environment with `lm-eval` (not a dependency of the
project), e.g. `python -m venv /tmp/lmeval && /tmp/lmeval/bin/pip install torch==2.13.0
transformers==5.19.0 lm-eval==0.4.13`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TASK = """task: schoolhouse_mmlu_{name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: {text}
doc_to_choice: {choices}
doc_to_target: answer
target_delimiter: " "
metric_list:
  - metric: {metric}
"""


def write_tasks(items, folder: Path) -> None:
    """The sampled items as a JSON-lines file, and one harness task per formulation."""
    data = folder / "mmlu.jsonl"
    with data.open("w") as f:
        for item in items:
            f.write(
                json.dumps({"question": item.question, "choices": list(item.choices), "answer": item.answer}) + "\n"
            )
    cloze_text = json.dumps("Question: {{question}}\nAnswer:")
    mc_text = json.dumps(
        "{{question}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"
    )
    (folder / "cloze.yaml").write_text(TASK.format(name="cloze", data=data, text=cloze_text,
                                                   choices="'{{choices}}'", metric="acc_norm"))  # fmt: skip
    (folder / "mc.yaml").write_text(TASK.format(name="mc", data=data, text=mc_text,
                                                choices='["A", "B", "C", "D"]', metric="acc"))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--model", default="", help="HF model folder (default: the embedded teacher)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="for both sides")
    parser.add_argument("--lm-eval-python", default="/tmp/lmeval/bin/python")
    args = parser.parse_args()

    import torch

    from pipeline.exam.data import read_mmlu
    from pipeline.exam.mmlu import mmlu, pick_items
    from pipeline.exam.models import load_model
    from pipeline.teacher.weights import embedded_teacher

    model_dir = args.model or str(embedded_teacher())
    all_items = read_mmlu()
    items = pick_items(all_items, args.items, seed=0)
    print(f"model {model_dir}, {len(items)} MMLU items, batch {args.batch_size}, "
          f"{torch.get_num_threads()} CPU threads, {args.dtype} on both sides", flush=True)  # fmt: skip

    with tempfile.TemporaryDirectory() as folder:
        write_tasks(items, Path(folder))
        harness = subprocess.run(
            [args.lm_eval_python, str(ROOT / "bench" / "lm_eval_mmlu.py"), "--model", model_dir,
             "--tasks-dir", folder, "--batch-size", str(args.batch_size), "--dtype", args.dtype],
            capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                                                 "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        if harness.returncode:
            sys.exit(f"lm-eval failed:\n{harness.stderr[-4000:]}")
        theirs = json.loads(harness.stdout.strip().splitlines()[-1])

    model, tokenizer = load_model(model_dir, args.dtype)
    started = time.perf_counter()
    results = mmlu(model, tokenizer, items, all_items, shots=0, batch_size=args.batch_size, seed=0,
                   formulations=["mmlu_cloze", "mmlu_mc"])
    ours_s = time.perf_counter() - started

    print(f"\n{'':24}{'items/s':>10}{'cloze acc':>11}{'mc acc':>9}")
    truth = [item.answer for item in items]
    accuracy = {}
    for name in ("cloze", "mc"):
        ours = [ord(p) - ord("A") for p in results.filter(results["benchmark"] == f"mmlu_{name}")["predicted"]]
        accuracy[("ours", name)] = sum(p == t for p, t in zip(ours, truth, strict=True)) / len(items)
        accuracy[("lm-eval", name)] = sum(
            p == t for p, t in zip(theirs["predictions"][name], truth, strict=True)
        ) / len(items)
        accuracy[("differ", name)] = sum(a != b for a, b in zip(ours, theirs["predictions"][name], strict=True))
    for side, seconds in (("schoolhouse", ours_s), ("lm-evaluation-harness", theirs["seconds"])):
        key = "ours" if side == "schoolhouse" else "lm-eval"
        print(f"{side:24}{len(items) / seconds:>10.2f}{accuracy[key, 'cloze']:>11.4f}{accuracy[key, 'mc']:>9.4f}")
    print(f"\nspeed ratio {theirs['seconds'] / ours_s:.2f}x ({ours_s:.1f} s vs {theirs['seconds']:.1f} s); "
          f"accuracy gap cloze {100 * abs(accuracy['ours', 'cloze'] - accuracy['lm-eval', 'cloze']):.2f} pt, "
          f"mc {100 * abs(accuracy['ours', 'mc'] - accuracy['lm-eval', 'mc']):.2f} pt; items answered differently: "
          f"cloze {accuracy['differ', 'cloze']}, mc {accuracy['differ', 'mc']}")  # fmt: skip


if __name__ == "__main__":
    main()
