"""Sit the exam with any local Hugging Face model folder: `python -m pipeline.exam MODEL_DIR`.

Every option defaults to the exam settings of `--profile` (default `phi-1.5`: all 14,042 MMLU
questions and all 164 HumanEval problems); `--profile demo` sits the demo's subsets.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from pipeline.settings import ConfigError, resolve
from trainers import atomic


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict]:
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--profile", default="phi-1.5")
    profile = early.parse_known_args(argv)[0].profile
    try:
        defaults = resolve(profile, complete=False).exam
    except ConfigError as error:
        raise SystemExit(str(error)) from None
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--profile", default="phi-1.5", help="whose exam settings are the defaults")
    parser.add_argument("--mmlu-limit", type=int, default=defaults.mmlu_limit, help="questions (0 = all 14,042)")
    parser.add_argument("--shots", type=int, default=defaults.mmlu_shots)
    parser.add_argument("--humaneval-limit", type=int, default=defaults.humaneval_limit,
                        help="problems (0 = all 164)")  # fmt: skip
    parser.add_argument("--samples", type=int, default=defaults.humaneval_samples,
                        help="sampled completions per HumanEval problem for pass@k (0 = greedy only)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--dtype", default=defaults.dtype, choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--recheck-margin", type=float, default=defaults.recheck_margin,
                        help="auto: re-score in fp32 the items bf16 puts within this many nats")  # fmt: skip
    parser.add_argument("--served-url", default="",
                        help="a vLLM server (OpenAI API base URL) serving MODEL_DIR: score the choices there, with "
                        "prompt_logprobs")  # fmt: skip
    parser.add_argument("--out", default="", help="Parquet file for the per-item results")
    parser.add_argument("--sandbox", default="isolated", choices=["isolated", "unconfined"],
                        help="how HumanEval programs run (see curation.sandbox.mode)")  # fmt: skip
    args = parser.parse_args(argv)
    overrides = {"mmlu_limit": args.mmlu_limit, "mmlu_shots": args.shots, "humaneval_limit": args.humaneval_limit,
                 "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "dtype": args.dtype,
                 "humaneval_samples": args.samples, "recheck_margin": args.recheck_margin}  # fmt: skip
    return args, overrides


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    try:
        cfg = resolve(args.profile, {"exam": overrides}, complete=False).exam
    except ConfigError as error:
        raise SystemExit(str(error)) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    from pipeline.exam.models import load_model
    from pipeline.exam.scores import summarize
    from pipeline.exam.sitting import sit_exam

    exam = load_model(args.model_dir, cfg.dtype, cfg.recheck_margin, args.served_url)
    started = time.perf_counter()
    results = sit_exam(exam, cfg, args.sandbox)
    seconds = time.perf_counter() - started
    if args.out:
        atomic.write_parquet(results, args.out, "the exam's per-item results")
    timings = {"exam_seconds": round(seconds, 1), "dtype": exam.dtype, "torch_threads": torch.get_num_threads()}
    print(json.dumps({**summarize(results), **timings}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
