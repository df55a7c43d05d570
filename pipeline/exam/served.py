"""Log-likelihoods from a model served by vLLM: each request's tokens go to the completions
endpoint as a prompt with `prompt_logprobs`, and the continuation's tokens are summed from what
comes back. The tokens are the exam's own (the model folder's tokenizer, the same truncation as
the local engine), so both paths score the same sequences.

lm-evaluation-harness reports vLLM as slower than HF for log-likelihoods; `bench/exam.py
--served` measures it here, so this is an option (`exam.served_url`), not the default."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from pipeline.progress import Progress

log = logging.getLogger("schoolhouse.exam")


@dataclass(frozen=True)
class ServedModel:
    """A model behind an OpenAI-compatible vLLM server, as a scorer for the exam."""

    url: str
    name: str
    max_model_len: int
    concurrency: int = 32
    timeout_s: float = 600.0
    dtype: str = "served"


def _token_logprob(entry: dict, token: int) -> float:
    """The logprob of `token` in one position of vLLM's prompt_logprobs (keys are token ids, as
    strings once they have been through JSON)."""
    found = entry.get(str(token), entry.get(token))
    if found is None:
        raise ValueError(f"the server's prompt_logprobs lack the prompt token {token}")
    return float(found["logprob"] if isinstance(found, dict) else found.logprob)


async def _score_all(served: ServedModel, sequences: list[tuple[list[int], int]]) -> list[float]:
    import openai

    client = openai.AsyncOpenAI(base_url=served.url, api_key=_api_key() or "EMPTY", timeout=served.timeout_s,
                                max_retries=4)  # fmt: skip
    semaphore = asyncio.Semaphore(served.concurrency)
    progress = Progress("log-likelihood requests (served)", len(sequences), log)

    async def one(ids: list[int], scored: int) -> float:
        async with semaphore:
            response = await client.completions.create(model=served.name, prompt=ids, max_tokens=1, temperature=0,
                                                       extra_body={"prompt_logprobs": 0})  # fmt: skip
        positions = response.choices[0].model_extra["prompt_logprobs"]
        progress.advance(1)
        return sum(_token_logprob(positions[i], ids[i]) for i in range(len(ids) - scored, len(ids)))

    try:
        return await asyncio.gather(*(one(ids, scored) for ids, scored in sequences))
    finally:
        await client.close()


def served_loglikelihoods(served: ServedModel, tokenizer, requests) -> list[float]:
    """Sum of log p(continuation | context) for each request, from the server."""
    sequences = []
    for i, r in enumerate(requests):
        context = tokenizer(r.context, add_special_tokens=False).input_ids
        continuation = tokenizer(r.continuation, add_special_tokens=False).input_ids
        if not context or not continuation:
            raise ValueError(f"request {i}: context and continuation must both be non-empty")
        ids = (context + continuation)[-(served.max_model_len - 1) :]  # and the one generated token
        sequences.append((ids, min(len(continuation), len(ids) - 1)))
    return asyncio.run(_score_all(served, sequences))


def _api_key() -> str | None:
    """The server's API key, as the teacher's default: $OPENAI_API_KEY (unset: none)."""
    return os.environ.get("OPENAI_API_KEY") or None


def served_model(url: str, concurrency: int = 32) -> ServedModel:
    """The model a vLLM server at `url` serves (its first), with the context length it allows."""
    import httpx

    try:
        headers = {"Authorization": f"Bearer {_api_key()}"} if _api_key() else {}
        listing = httpx.get(url.rstrip("/") + "/models", headers=headers, timeout=30).raise_for_status().json()["data"]
    except (httpx.HTTPError, KeyError, ValueError) as error:
        raise ValueError(f"no vLLM model list at {url} ({error})") from None
    if not listing:
        raise ValueError(f"{url} serves no model")
    first = listing[0]
    return ServedModel(url, first["id"], int(first.get("max_model_len") or 2048), concurrency)
