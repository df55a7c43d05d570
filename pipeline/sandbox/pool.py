"""The host side of the sandbox: workers that each hold one sandboxed forkserver, programs sent to
them concurrently, and the verdict on each.

A program passes only if it reaches its end and prints a per-run nonce it is given only for that
purpose, so a generated test that calls `os._exit(0)` or `sys.exit(0)` half-way does not pass.
(The nonce is a rule for honest programs that stop early, not a secret from a hostile one: such a
program could at most fake its own pass; the isolation is what holds it.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

from trainers.process_group import die_with_parent, reset_signals

from .isolation import SYSTEM_PYTHON, bwrap_command, check_isolation

log = logging.getLogger("schoolhouse.sandbox")

FORKSERVER = (Path(__file__).parent / "forkserver.py").read_text(encoding="utf-8")


class SandboxMode(str, Enum):
    isolated = "isolated"  # bubblewrap: namespaces, read-only system, private tmpfs (the default)
    unconfined = "unconfined"  # resource limits only, on purpose, with a warning in every run


UNCONFINED_WARNING = (
    "curation.sandbox.mode = unconfined: generated code runs WITHOUT isolation (only resource limits); "
    "it can read and write your files and reach the network"
)


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_bytes: int = 1 << 30
    processes: int = 32
    file_bytes: int = 16 << 20
    open_files: int = 64
    folder_bytes: int = 64 << 20  # the program's own folder (tmpfs)
    tmp_bytes: int = 64 << 20  # its private /tmp (tmpfs)


@dataclass(frozen=True)
class Outcome:
    status: str  # passed | failed | timeout | crashed
    reason: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def verdict(answer: dict, nonce: str, limits: Limits) -> Outcome:
    """(status, reason) from how the program ended."""
    returncode, out, err, seconds = answer["returncode"], answer["out"], answer["err"].strip(), answer["seconds"]
    if answer["timed_out"]:
        return Outcome("timeout", f"wall time over {limits.wall_s:g}s", seconds)
    if returncode < 0:
        name = signal.Signals(-returncode).name
        if name == "SIGXCPU":
            return Outcome("timeout", f"CPU time over {limits.cpu_s}s", seconds)
        if name == "SIGXFSZ":
            return Outcome("crashed", "output or file size limit", seconds)
        return Outcome("crashed", f"killed by {name}", seconds)
    last_line = out.rstrip("\n").rsplit("\n", 1)[-1] if out.strip() else ""
    if returncode == 0 and last_line == nonce:
        return Outcome("passed", "", seconds)
    if returncode == 0:
        return Outcome("failed", "exited before the tests finished", seconds)
    if "MemoryError" in err:
        return Outcome("crashed", "memory limit", seconds)
    tail = err.splitlines()[-1] if err else f"exit code {returncode}"
    return Outcome("failed", tail[:300], seconds)


def _child_setup() -> None:
    """Between fork and exec of a worker: its own session, default signal dispositions (an
    ignored SIGTERM in our environment must not reach it), and SIGKILL when we die."""
    os.setsid()
    reset_signals()
    die_with_parent()


class Worker:
    """One sandbox holding one forkserver; runs one program at a time."""

    def __init__(self, mode: SandboxMode, limits: Limits):
        self.mode, self.limits = SandboxMode(mode), limits
        self._scratch: tempfile.TemporaryDirectory | None = None
        self.process = self._start()

    def _start(self) -> subprocess.Popen:
        if self.mode is SandboxMode.isolated:
            prefix = bwrap_command(check_isolation(), self.limits.folder_bytes, self.limits.tmp_bytes)
            command, cwd = [*prefix, SYSTEM_PYTHON, "-I", "-S", "-c", FORKSERVER, "isolated"], None
            env = {"PATH": "/usr/bin:/bin"}  # bwrap's own process is visible inside: it holds no secret either
        else:
            self._scratch = tempfile.TemporaryDirectory(prefix="schoolhouse-sandbox-")
            interpreter = SYSTEM_PYTHON if os.path.exists(SYSTEM_PYTHON) else sys.executable
            command, cwd = [interpreter, "-I", "-S", "-c", FORKSERVER, "unconfined"], self._scratch.name
            env = {"PATH": "/usr/bin:/bin", "HOME": cwd, "TMPDIR": cwd, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                cwd=cwd, env=env, preexec_fn=_child_setup, text=True)  # fmt: skip

    def run(self, source: str) -> Outcome:
        nonce = secrets.token_hex(16)
        job = {"source": source, "nonce": nonce, "limits": asdict(self.limits)}
        answer = self._exchange(job)
        if answer is None:  # the program killed its own forkserver, or the worker hung: start afresh
            self.close()
            self.process = self._start()
            return Outcome("crashed", "the program brought down its sandbox", 0.0)
        return verdict(answer, nonce, self.limits)

    def _exchange(self, job: dict) -> dict | None:
        result: list[dict | None] = [None]

        def talk() -> None:
            try:
                self.process.stdin.write(json.dumps(job) + "\n")
                self.process.stdin.flush()
                line = self.process.stdout.readline()
                result[0] = json.loads(line) if line else None
            except (OSError, ValueError):
                result[0] = None

        talker = threading.Thread(target=talk, daemon=True)
        talker.start()
        talker.join(self.limits.wall_s + 30)  # the forkserver enforces wall time; this is its backstop
        return result[0] if not talker.is_alive() else None

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError, ValueError):
                stream.close()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def sandbox_pool(workers: int, mode: SandboxMode, limits: Limits) -> Iterator[queue.Queue]:
    """`workers` started sandboxes, all stopped on the way out."""
    if SandboxMode(mode) is SandboxMode.unconfined:
        log.warning(UNCONFINED_WARNING)
    started: list[Worker] = []
    idle: queue.Queue = queue.Queue()
    try:
        for _ in range(workers):
            started.append(Worker(mode, limits))
            idle.put(started[-1])
        yield idle
    finally:
        for worker in started:
            worker.close()


def run_many(sources: list[str], limits: Limits = Limits(), workers: int = 0,
             mode: SandboxMode = SandboxMode.isolated,
             on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:  # fmt: skip
    """Run programs concurrently, one sandbox per worker (0 = one per core); outcomes in input order."""
    if not sources:
        return []
    count = min(len(sources), workers or default_workers())
    with sandbox_pool(count, mode, limits) as idle:

        def one(source: str) -> Outcome:
            worker = idle.get()
            try:
                outcome = worker.run(source)
            finally:
                idle.put(worker)
            if on_done:
                on_done(outcome)
            return outcome

        with ThreadPoolExecutor(max_workers=count) as threads:
            return list(threads.map(one, sources))


def run_python(source: str, limits: Limits = Limits(), mode: SandboxMode = SandboxMode.isolated) -> Outcome:
    """Run one program in a sandbox of its own."""
    return run_many([source], limits, workers=1, mode=mode)[0]


