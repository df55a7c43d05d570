"""Child processes that are stopped as a whole: the vLLM server and the trainer both start
helpers of their own (engine workers, one rank per GPU), which a plain terminate() would orphan."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess

_PR_SET_PDEATHSIG = 1


def own_group_dying_with_parent() -> None:
    """In the child (preexec_fn): its own process group, so that stop_group() reaches everything
    it starts, and SIGTERM when the process that started it dies, so a killed run leaves nothing."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


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
