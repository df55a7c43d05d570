"""The teacher's client: chat requests with bounded concurrency over one or more
OpenAI-compatible servers; the openai client retries connection errors and 5xx with
exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import openai

from pipeline.teacher.server import TeacherUnreachable, wait_until_healthy

if TYPE_CHECKING:
    from pipeline.teacher.server import VllmServer


@dataclass
class Completion:
    key: str
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None


@dataclass
class ChatRequest:
    key: str
    prompt: str
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    answer_prefix: str = ""  # the start of the answer, which the teacher continues
    answer_regex: str = ""  # the answer must match this (vLLM structured outputs)
    answer_schema: dict | None = None  # the answer is JSON of this schema (vLLM structured outputs)


class TeacherClient:
    """Bounded-concurrency chat completions over one or more OpenAI-compatible servers.

    Retries are the openai client's: exponential backoff with jitter on connection errors,
    timeouts, 408/409/429 and 5xx, `max_retries` times per request.
    """

    def __init__(
        self,
        urls: Sequence[str],
        model: str,
        concurrency: int = 64,
        request_timeout_s: float = 600.0,
        connect_timeout_s: float = 60.0,
        max_retries: int = 4,
    ):
        if not urls:
            raise ValueError("teacher.urls is empty: give at least one server URL")
        self.urls, self.model = list(urls), model
        self.concurrency = concurrency
        self.connect_timeout_s = connect_timeout_s
        self._timeout = request_timeout_s
        self._max_retries = max_retries
        self.in_flight = 0
        self.peak_in_flight = 0
        self.server: VllmServer | None = None  # set when this run manages the server

    def check_reachable(self) -> None:
        """Fail fast (within the connect timeout) and name the URL that does not answer."""
        for url in self.urls:
            wait_until_healthy(url, self.connect_timeout_s)

    async def _ask(self, request: ChatRequest, client: openai.AsyncOpenAI) -> Completion:
        messages = [{"role": "user", "content": request.prompt}]
        extra = {}
        if request.answer_prefix:
            messages.append({"role": "assistant", "content": request.answer_prefix})
            extra = {"continue_final_message": True, "add_generation_prompt": False}
        if request.answer_regex:
            extra["structured_outputs"] = {"regex": request.answer_regex}
        if request.answer_schema:
            extra["structured_outputs"] = {"json": request.answer_schema}
        try:
            response = await client.chat.completions.create(
                model=self.model,
                messages=messages,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                seed=request.seed,
                extra_body=extra or None,
            )
        except (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError) as error:
            # Retries (with backoff) are spent: fail the step; the journal keeps what finished.
            raise TeacherUnreachable(f"teacher at {client.base_url} failed: {error}") from error
        except openai.APIStatusError as error:
            # The server refused this request (4xx, e.g. a prompt over the context length):
            # retrying cannot help, so it becomes a rejected row instead of a crash.
            return Completion(request.key, "", "error", 0, 0, error=str(error)[:500])
        choice = response.choices[0] if response.choices else None
        usage = response.usage
        return Completion(
            key=request.key,
            text=request.answer_prefix + ((choice.message.content or "") if choice else ""),
            finish_reason=(choice.finish_reason or "unknown") if choice else "empty",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    async def stream(self, requests: Sequence[ChatRequest]) -> AsyncIterator[Completion]:
        """Yield completions as they finish (not in request order)."""
        clients = [
            openai.AsyncOpenAI(base_url=url, api_key="EMPTY", timeout=self._timeout, max_retries=self._max_retries)
            for url in self.urls
        ]
        semaphore = asyncio.Semaphore(self.concurrency)
        round_robin = itertools.cycle(clients)

        async def one(request: ChatRequest, client: openai.AsyncOpenAI) -> Completion:
            async with semaphore:
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                try:
                    return await self._ask(request, client)
                finally:
                    self.in_flight -= 1

        tasks = [asyncio.create_task(one(r, next(round_robin))) for r in requests]
        try:
            for finished in asyncio.as_completed(tasks):
                yield await finished
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for client in clients:
                await client.close()


