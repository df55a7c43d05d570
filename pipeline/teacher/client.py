"""The teacher's client: chat requests with bounded concurrency over one or more
OpenAI-compatible servers; the openai client retries connection errors, 429 and 5xx with
exponential backoff and jitter.

What a refusal (an HTTP 4xx after those retries) means is `decide`'s: a bad request becomes a
rejected row, anything else stops the step with `TeacherRefused`, which names the fix.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import openai

from pipeline.teacher.server import TeacherUnreachable, wait_until_healthy

if TYPE_CHECKING:
    from pipeline.teacher.server import VllmServer


class TeacherRefused(RuntimeError):
    """The teacher refuses requests for a reason no retry or other prompt fixes (the API key, the
    model name, a rate limit the retries outlasted): the step stops and names the setting to fix."""


# This one request is bad (e.g. a prompt over the context length): other requests may pass.
REQUEST_ERRORS = frozenset({400, 413, 422})


def decide(status: int) -> Literal["reject", "fail"]:
    """What an HTTP error status (after the openai client's retries) means for the run.

    "reject": 400, 413, 422 are about this one request; it becomes a rejected row.
    "fail": 401/403 (the API key), 404 (the model or the URL), 429 (a rate limit the retries
    outlasted) and any other status would refuse every request alike: the step stops.
    """
    return "reject" if status in REQUEST_ERRORS else "fail"


def refusal(url: str, model: str, status: int, detail: str, api_key_env: str,
            served: list[str] | None = None) -> TeacherRefused:  # fmt: skip
    """The error that stops the step: URL, model, status, the server's words and the fix.
    `served`: the models the server lists (404 only; None when listing them failed too)."""
    if status in (401, 403):
        fix = (f"check the API key in ${api_key_env}" if api_key_env
               else "the server wants an API key: set teacher.api_key_env to the variable that holds it")  # fmt: skip
    elif status == 404 and served is not None:
        fix = f"the server serves {', '.join(served) or 'no models'}; set teacher.model"
    elif status == 404:
        fix = f"GET {url}/models failed as well; check that teacher.urls names the server's /v1 base URL"
    elif status == 429:
        fix = "lower teacher.concurrency or raise teacher.max_retries"
    else:
        fix = "check that teacher.urls names an OpenAI-compatible server and teacher.model a model it serves"
    return TeacherRefused(f"teacher at {url} refused model {model!r} with HTTP {status} ({detail}): {fix}")


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
    timeouts, 408/409/429 and 5xx, `max_retries` times per request. `api_key` (None: the server
    needs none) is sent to the servers only, never logged or put into a message; `api_key_env`,
    the variable it came from, is what a refused key's message names.
    """

    def __init__(
        self,
        urls: Sequence[str],
        model: str,
        concurrency: int = 64,
        request_timeout_s: float = 600.0,
        connect_timeout_s: float = 60.0,
        max_retries: int = 4,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
    ):
        if not urls:
            raise ValueError("teacher.urls is empty: give at least one server URL")
        self.urls, self.model = list(urls), model
        self.concurrency = concurrency
        self.connect_timeout_s = connect_timeout_s
        self.api_key_env = api_key_env
        self._api_key = api_key or None
        self._timeout = request_timeout_s
        self._max_retries = max_retries
        self.in_flight = 0
        self.peak_in_flight = 0
        self.server: VllmServer | None = None  # set when this run manages the server

    def check_reachable(self) -> None:
        """Fail fast (within the connect timeout) and name the URL that does not answer; then
        `TeacherRefused` when a server refuses the key or does not serve the model (the doctor's
        check), before any request is asked or journaled."""
        from pipeline.doctor import teacher_serves

        for url in self.urls:
            wait_until_healthy(url, self.connect_timeout_s)
            check = teacher_serves(url, self.model, self._api_key, self.api_key_env)
            if not check.passed:
                raise TeacherRefused(f"teacher at {url} cannot answer for model {self.model!r}: {check.found}; "
                                     f"fix: {check.fix}")  # fmt: skip

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
        # The answer streams in, so the timeout is the longest wait for its next piece, not for all of
        # it: a long answer from a busy server (a CPU serving a hundred requests writes each of them
        # a token or two a second) is not cut off and asked again, while a server that stalls still is.
        parts, finish_reason, usage = [], "empty", None
        try:
            stream = await client.chat.completions.create(
                model=self.model,
                messages=messages,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                seed=request.seed,
                extra_body=extra or None,
                stream=True,
                stream_options={"include_usage": True},
            )
            async for chunk in stream:
                for choice in chunk.choices[:1]:
                    parts.append(choice.delta.content or "")
                    finish_reason = choice.finish_reason or finish_reason
                usage = chunk.usage or usage
        except (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError) as error:
            # Retries (with backoff) are spent, or the answer broke off: fail the step; the journal
            # keeps what finished, and a re-run asks only for the rest.
            raise TeacherUnreachable(f"teacher at {client.base_url} failed: {error}") from error
        except openai.APIStatusError as error:
            if decide(error.status_code) == "reject":
                # This request is bad (e.g. a prompt over the context length): a rejected row.
                return Completion(request.key, "", "error", 0, 0, error=self._redact(str(error))[:500])
            raise await self._refusal(error, client) from None  # `from None`: the cause may echo the key
        except openai.APIError as error:  # an error event inside this answer's stream: a rejected row
            return Completion(request.key, "", "error", 0, 0, error=self._redact(str(error))[:500])
        return Completion(
            key=request.key,
            text=request.answer_prefix + "".join(parts),
            finish_reason=finish_reason if parts else "empty",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    async def _refusal(self, error: openai.APIStatusError, client: openai.AsyncOpenAI) -> TeacherRefused:
        url = str(client.base_url).rstrip("/")
        body = error.body if isinstance(error.body, dict) else {}
        detail = self._redact(str(body.get("message") or error.message))[:300]
        served = None
        if error.status_code == 404:
            try:  # GET <url>/models, briefly: which names would the server take?
                page = await client.with_options(timeout=10.0, max_retries=0).models.list()
                served = [model.id for model in page.data]
            except openai.OpenAIError:
                pass
        return refusal(url, self.model, error.status_code, detail, self.api_key_env, served)

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "<api key>") if self._api_key else text

    async def stream(self, requests: Sequence[ChatRequest]) -> AsyncIterator[Completion]:
        """Yield completions as they finish (not in request order). A `TeacherRefused` or
        `TeacherUnreachable` ends the stream at once: the requests still running are cancelled and
        nothing more is yielded, so a caller journals only answers."""
        clients = [
            openai.AsyncOpenAI(
                base_url=url,
                api_key=self._api_key or "EMPTY",  # the openai client needs one; a vLLM without --api-key ignores it
                timeout=self._timeout,
                max_retries=self._max_retries,
            )
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


