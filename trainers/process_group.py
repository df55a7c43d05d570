"""Child processes that are stopped as a whole, and never outlive whoever started them.

The vLLM server and the trainer both start helpers of their own (engine workers, one rank per
GPU), which a plain terminate() would orphan. `start_group` starts a command under a guard: the
guard leads a process group of its own and runs the command in it; when the process that started
it dies, even by SIGKILL, the guard kills the whole group. Every process starts with default
signal dispositions (a SIGTERM ignored by whoever started us is not inherited) and a
parent-death signal of SIGKILL, which cannot be ignored. `stop_group` stops the group: SIGTERM,
then SIGKILL after a grace period.

The guard is this module: `python -m trainers.process_group --parent PID -- COMMAND...`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time

_PR_SET_PDEATHSIG = 1


def reset_signals() -> None:
    """Default dispositions and an empty mask; callable between fork and exec, from any thread."""
    libc = ctypes.CDLL(None, use_errno=True)
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            libc.signal(int(sig), ctypes.c_void_p(0))  # SIG_DFL (signal.signal needs the main thread)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """`sig` to this process when the thread that started it ends (Linux's parent-death signal)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def _guard_setup() -> None:
    os.setsid()
    reset_signals()


def _in_child() -> None:
    """The guarded command: default signals, SIGKILL when the guard dies."""
    reset_signals()
    die_with_parent()


def start_group(command: list[str], **popen: object) -> subprocess.Popen:
    """Start `command` in a process group of its own, led by a guard that kills the group when
    this process dies. The returned process is the guard; its exit code is the command's."""
    guard = [sys.executable, "-m", "trainers.process_group", "--parent", str(os.getpid()), "--", *command]
    # No parent-death signal for the guard itself: it must outlive us long enough to kill the group.
    return subprocess.Popen(guard, preexec_fn=_guard_setup, **popen)


def stop_group(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM to the child's whole group, then SIGKILL to what is left after `grace_s`."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # stragglers of a leader that already exited
        os.killpg(process.pid, signal.SIGKILL)


def guard(parent: int, command: list[str], poll_s: float = 0.2) -> int:
    """Run `command` in this process group; if `parent` dies first, kill the group (and us)."""
    # A stop request reaches the whole group; the guard waits for the command to finish with it.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    child = subprocess.Popen(command, preexec_fn=_in_child)
    while True:
        try:
            code = child.wait(timeout=poll_s)
            return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell says
        except subprocess.TimeoutExpired:
            pass
        if os.getppid() != parent:  # reparented: whoever started us is gone
            os.killpg(0, signal.SIGKILL)
            time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parent", type=int, required=True, help="the process whose death stops the group")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    return guard(args.parent, command)


if __name__ == "__main__":
    sys.exit(main())
