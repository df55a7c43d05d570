"""The configured teacher for one run: running servers at URLs, or a vLLM server this run
starts (`managed` mode) and stops, also on errors and cancellation."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.teacher.client import TeacherClient
from pipeline.teacher.server import VllmServer, free_port
from pipeline.teacher.weights import embedded_teacher


@contextlib.contextmanager
def serving(settings, log_path: Path | None = None,
            on_line: Callable[[str], None] | None = None) -> Iterator[TeacherClient]:  # fmt: skip
    """A client for the configured teacher. In `managed` mode the vLLM server is started here
    and stopped (its whole process group) on the way out, also on errors and cancellation.
    The API key is read from $`teacher.api_key_env` (unset or empty: no key); a managed server
    is started with it, so it refuses requests without it."""
    server = None
    urls = list(settings.urls)
    api_key = (os.environ.get(settings.api_key_env) or None) if settings.api_key_env else None
    if settings.mode == "managed":
        model_path = settings.model_path or str(embedded_teacher())
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
            api_key=api_key,
        )
        server.start(on_line=on_line)
        urls = [server.url]
    try:
        client = TeacherClient(
            urls, settings.model, concurrency=settings.concurrency,
            request_timeout_s=settings.request_timeout_s,
            connect_timeout_s=settings.connect_timeout_s, max_retries=settings.max_retries,
            api_key=api_key,
            api_key_env=settings.api_key_env,
        )  # fmt: skip
        client.server = server
        yield client
    finally:
        if server:
            server.stop()
