"""The program that runs inside a sandbox: one interpreter that forks a child per program.

Started once per worker (`python3 -I -S -c <this file> <isolated>`), so each program costs a
fork instead of an interpreter start. It reads one JSON job per line on stdin and answers one
JSON line on stdout. For each job it:
- makes a fresh folder, forks a child that takes its own session, the job's resource limits,
  /dev/null as stdin and files as stdout/stderr (so it holds no handle to this protocol), then
  runs the program and, only if the program reaches its end, prints the job's nonce;
- waits up to the wall time, then kills the child's session and, inside the sandbox's own PID
  namespace, every other process but this one, so nothing a program started reaches the next;
- sends back the exit status and the tails of the output, and removes the folder and /tmp's files.
This process is not dumpable, so a program (same uid) cannot ptrace it or read its memory.
Standard library only: it runs under the system interpreter with no site packages.
"""

import json
import os
import resource
import select
import shutil
import signal
import sys
import time

PR_SET_DUMPABLE, PR_SET_PDEATHSIG = 4, 1
CATCHABLE = [s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)]


def _prctl(option: int, value: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _limit(limits: dict) -> None:
    for kind, value in (
        (resource.RLIMIT_CPU, limits["cpu_s"]),
        (resource.RLIMIT_AS, limits["memory_bytes"]),
        (resource.RLIMIT_FSIZE, limits["file_bytes"]),
        (resource.RLIMIT_NOFILE, limits["open_files"]),
        (resource.RLIMIT_NPROC, limits["processes"]),
        (resource.RLIMIT_CORE, 0),
    ):
        # soft < hard for CPU: the soft limit sends SIGXCPU, which the host names as a timeout
        resource.setrlimit(kind, (value, value + 1 if kind == resource.RLIMIT_CPU else value))


def _child(job: dict, out_path: str, err_path: str) -> None:
    """In the forked child: confine, run the program, print the nonce if it got to the end."""
    code = 1
    try:
        os.setsid()
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        for sig in CATCHABLE:  # nothing inherited from the host: default dispositions
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write over the file limit fails (EFBIG)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 1)
        os.dup2(os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
        os.closerange(3, 4096)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the child's own stdin, /dev/null
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        _limit(job["limits"])
        program = compile(job["source"], "<program>", "exec")
        exec(program, {"__name__": "__main__", "__builtins__": __builtins__})
        sys.stdout.flush()
        os.write(1, ("\n" + job["nonce"] + "\n").encode())
        code = 0
    except SystemExit as stop:  # an early exit is not a pass, whatever its code
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001 - the program's error is its result
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001, S110 - a full or closed stream changes nothing
            pass
        os._exit(code)


def _tail(path: str, size: int) -> str:
    try:
        with open(path, "rb") as file:
            file.seek(max(0, os.path.getsize(path) - size))
            return file.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _sweep(isolated: bool, child: int) -> None:
    """Kill what the program left: its session, and inside the sandbox every other process."""
    try:
        os.killpg(child, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if not isolated:  # outside a PID namespace /proc holds the user's own processes: hands off
        return
    me = os.getpid()
    for _ in range(50):
        others = []
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) not in (1, me):
                try:
                    with open(f"/proc/{name}/stat", "rb") as stat:
                        if stat.read().rsplit(b")", 1)[-1].split()[0] != b"Z":
                            others.append(int(name))
                except OSError:
                    continue
        if not others:
            return
        for pid in others:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.002)


def _clear(folder: str) -> None:
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def run(job: dict, number: int, isolated: bool, root: str) -> dict:
    folder = os.path.join(root, f"program-{number}")
    os.mkdir(folder, 0o700)
    out_path, err_path = os.path.join(folder, ".stdout"), os.path.join(folder, ".stderr")
    started = time.monotonic()
    os.chdir(folder)
    pid = os.fork()
    if pid == 0:
        _child(job, out_path, err_path)
    os.chdir(root)
    watch = os.pidfd_open(pid)
    ready, _, _ = select.select([watch], [], [], job["limits"]["wall_s"])
    timed_out = not ready
    _sweep(isolated, pid)
    _, status = os.waitpid(pid, 0)
    os.close(watch)
    seconds = time.monotonic() - started
    returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    answer = {"returncode": returncode, "timed_out": timed_out, "seconds": seconds,
              "out": _tail(out_path, 256), "err": _tail(err_path, 4000)}  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)
    if isolated:
        _clear("/tmp")
    return answer


def serve(isolated: bool) -> None:
    _prctl(PR_SET_DUMPABLE, 0)
    root = os.getcwd()
    protocol_in, protocol_out = sys.stdin, sys.stdout
    for number, line in enumerate(protocol_in):
        answer = run(json.loads(line), number, isolated, root)
        protocol_out.write(json.dumps(answer) + "\n")
        protocol_out.flush()


if __name__ == "__main__":
    serve(isolated=sys.argv[1] == "isolated")
