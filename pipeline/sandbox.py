"""Run untrusted Python (teacher-written exercises, student-written HumanEval answers).

Each program runs in a fresh process group under a fresh temporary directory, with a scrubbed
environment, resource limits (CPU seconds, address space, processes, file size, open files),
no network (a new network namespace where the kernel allows it, and an audit hook that refuses
sockets in any case) and an unprivileged user when we are root. A program passes only if the
runner reaches its end and prints a per-run nonce that the program never sees, so `os._exit(0)`
or `sys.exit(0)` in the middle of the tests cannot fake a pass.
"""

from __future__ import annotations

import ctypes
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

# The runner reads the nonce and the program from stdin, so neither is in argv or the environment.
_RUNNER = r"""
import sys
def _main():
    nonce = sys.stdin.readline().strip()
    source = sys.stdin.read()
    sys.stdin = open("/dev/null")
    import os
    home = os.getcwd() + os.sep
    def inside(path):
        try:
            return os.path.realpath(os.fsdecode(path)).startswith(home)
        except (TypeError, ValueError):
            return isinstance(path, int)  # an already open file descriptor
    def _guard(event, args):
        if event.startswith("socket.") and event != "socket.gethostname":
            raise PermissionError("network access is disabled in the sandbox")
        if event == "open" and args[0] is not None and not inside(args[0]):
            mode, flags = args[1] or "", args[2] or 0
            if any(c in str(mode) for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise PermissionError(f"writing outside the sandbox folder: {args[0]}")
        if event in ("os.remove", "os.rmdir", "os.rename", "os.chmod", "os.chown", "shutil.rmtree"):
            if not inside(args[0]):
                raise PermissionError(f"changing files outside the sandbox folder: {args[0]}")
    sys.addaudithook(_guard)
    code = compile(source, "<program>", "exec")
    exec(code, {"__name__": "__main__"})
    sys.stdout.flush()
    sys.__stdout__.write("\n" + nonce + "\n")
    sys.__stdout__.flush()
_main()
"""

_CLONE_NEWNET = 0x40000000
_NOBODY = 65534
_SYSTEM_PYTHON = "/usr/bin/python3"


def _drops_privileges() -> bool:
    """As root we run programs as `nobody` (RLIMIT_NPROC does not bind root). Our own
    interpreter may sit under a home folder nobody cannot enter, so that mode uses the system
    Python, which is enough for the standard-library programs we run."""
    return os.geteuid() == 0 and os.path.exists(_SYSTEM_PYTHON)


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_bytes: int = 1 << 30
    processes: int = 32
    file_bytes: int = 16 << 20
    open_files: int = 64


@dataclass(frozen=True)
class Outcome:
    status: str  # passed | failed | timeout | crashed
    reason: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _confine(limits: Limits, workdir: str) -> None:
    """Runs in the child between fork and exec."""
    os.setsid()
    try:  # a private network namespace has no interfaces: no connection can leave
        ctypes.CDLL(None, use_errno=True).unshare(_CLONE_NEWNET)
    except Exception:
        pass
    for kind, value in (
        (resource.RLIMIT_CPU, limits.cpu_s),
        (resource.RLIMIT_AS, limits.memory_bytes),
        (resource.RLIMIT_FSIZE, limits.file_bytes),
        (resource.RLIMIT_NOFILE, limits.open_files),
        (resource.RLIMIT_CORE, 0),
    ):
        # soft < hard: the soft limit sends a catchable signal (SIGXCPU, SIGXFSZ) we can name
        resource.setrlimit(kind, (value, value + 1 if kind == resource.RLIMIT_CPU else value))
    if _drops_privileges():
        os.setgroups([])
        os.setgid(_NOBODY)
        os.setuid(_NOBODY)
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
    os.chdir(workdir)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: str, size: int) -> str:
    with open(path, "rb") as file:
        file.seek(max(0, os.path.getsize(path) - size))
        return file.read().decode("utf-8", "replace")


def _verdict(returncode: int, timed_out: bool, out: str, err: str, nonce: str, limits: Limits) -> tuple[str, str]:
    """(status, reason) from how the program ended: the nonce on the last line of its output is
    the only way to pass, so exiting early with code 0 cannot fake one."""
    if timed_out:
        return "timeout", f"wall time over {limits.wall_s:g}s"
    if returncode < 0:
        name = signal.Signals(-returncode).name
        if name == "SIGXCPU":
            return "timeout", f"CPU time over {limits.cpu_s}s"
        if name == "SIGXFSZ":
            return "crashed", "output or file size limit"
        return "crashed", f"killed by {name}"
    last_line = out.rstrip("\n").rsplit("\n", 1)[-1] if out.strip() else ""
    if returncode == 0 and last_line == nonce:
        return "passed", ""
    if returncode == 0:
        return "failed", "exited before the tests finished"
    if "MemoryError" in err:
        return "crashed", "memory limit"
    tail = err.splitlines()[-1] if err else f"exit code {returncode}"
    return "failed", tail[:300]


def _sandbox_folder() -> str:
    """A fresh folder for one program, owned by the user it will run as."""
    workdir = tempfile.mkdtemp(prefix="schoolhouse-sandbox-")
    if _drops_privileges():
        os.chown(workdir, _NOBODY, _NOBODY)
    return workdir


def _execute(source: str, nonce: str, limits: Limits, workdir: str) -> tuple[int, bool, str, str]:
    """Run the program under its limits in `workdir`: (return code, timed out, stdout tail, stderr tail).
    Output goes to files the file-size limit caps, so a flood cannot fill our memory."""
    interpreter = _SYSTEM_PYTHON if _drops_privileges() else sys.executable
    env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
           "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    out_path, err_path = os.path.join(workdir, ".stdout"), os.path.join(workdir, ".stderr")
    with open(out_path, "wb") as out_file, open(err_path, "wb") as err_file:
        process = subprocess.Popen(
            [interpreter, "-I", "-S", "-c", _RUNNER],
            stdin=subprocess.PIPE,
            stdout=out_file,
            stderr=err_file,
            env=env,
            cwd=workdir,
            preexec_fn=lambda: _confine(limits, workdir),
        )
    try:
        process.communicate((nonce + "\n" + source).encode("utf-8", "replace"), limits.wall_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        _kill_group(process)  # anything it forked dies with it
        process.wait()
    return process.returncode, timed_out, _tail(out_path, 256), _tail(err_path, 4000).strip()


def run_python(source: str, limits: Limits = Limits()) -> Outcome:
    """Run `source` as a program in the sandbox and say whether it reached its end cleanly."""
    nonce = secrets.token_hex(16)
    started = time.monotonic()
    workdir = _sandbox_folder()
    try:
        returncode, timed_out, out, err = _execute(source, nonce, limits, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    status, reason = _verdict(returncode, timed_out, out, err, nonce, limits)
    return Outcome(status, reason, time.monotonic() - started)


def run_many(sources: list[str], limits: Limits = Limits(), workers: int | None = None):
    """Run programs concurrently (each is its own process); results in input order."""
    with ThreadPoolExecutor(max_workers=workers or max(2, os.cpu_count() or 2)) as pool:
        return list(pool.map(lambda s: run_python(s, limits), sources))
