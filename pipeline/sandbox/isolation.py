"""The operating system's isolation for untrusted programs: a bubblewrap sandbox.

Inside it a program has its own user, mount, network, PID, IPC, UTS and cgroup namespaces: it
runs as uid 65534 with no capabilities; it sees read-only system folders (/usr and the /bin,
/lib links, the dynamic linker's cache) and nothing else of the host's files, so no home folder,
no project, no state folder; its only writable places are its own folder and /tmp, both private,
size-limited tmpfs; its network namespace has no interface but loopback; its /proc shows only
the sandbox's processes; it dies with the process that started it. The same command serves root
and an ordinary user: bubblewrap creates an unprivileged user namespace either way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache

SANDBOX_UID = 65534
WORKDIR = "/sandbox"
SYSTEM_PYTHON = "/usr/bin/python3"  # the host's own interpreter may sit where the sandbox cannot see
_TOP_LEVEL = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")  # links into /usr, or folders
_ETC = ("/etc/ld.so.cache", "/etc/localtime")


class SandboxUnavailable(RuntimeError):
    """This machine cannot isolate programs; the message names the cause and the fix."""


FIX = (
    "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`; `make install` does this as root) "
    "and allow unprivileged user namespaces (`sysctl -w kernel.unprivileged_userns_clone=1` or "
    "`user.max_user_namespaces > 0`); or set `curation.sandbox.mode: unconfined` to run generated code "
    "without isolation, on purpose"
)


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def bwrap_command(bwrap: str, workdir_bytes: int, tmp_bytes: int) -> list[str]:
    """bubblewrap's arguments for one sandbox, up to (not including) the command it runs."""
    command = [
        bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
        "--ro-bind", "/usr", "/usr",
    ]  # fmt: skip
    for path in _TOP_LEVEL:
        if os.path.islink(path):
            command += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            command += ["--ro-bind", path, path]
    for path in _ETC:
        command += ["--ro-bind-try", path, path]
    command += [
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(tmp_bytes), "--tmpfs", "/tmp",
        "--size", str(workdir_bytes), "--tmpfs", WORKDIR,
        "--chdir", WORKDIR,
        "--clearenv",
        "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", WORKDIR, "--setenv", "TMPDIR", "/tmp",
        "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONHASHSEED", "0", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
        "--remount-ro", "/",
    ]  # fmt: skip
    return command


@cache
def check_isolation() -> str:
    """The bwrap binary, after a real sandbox started on this machine; else SandboxUnavailable."""
    bwrap = bwrap_path()
    if bwrap is None:
        raise SandboxUnavailable(f"cannot isolate generated code: bubblewrap (`bwrap`) is not on PATH. Fix: {FIX}")
    if not os.path.exists(SYSTEM_PYTHON):
        raise SandboxUnavailable(f"cannot isolate generated code: {SYSTEM_PYTHON} is missing. Fix: install python3")
    probe = bwrap_command(bwrap, 1 << 20, 1 << 20) + [SYSTEM_PYTHON, "-I", "-S", "-c", "pass"]
    try:
        result = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SandboxUnavailable(f"cannot isolate generated code: {bwrap} did not run ({error}). Fix: {FIX}") from None
    if result.returncode != 0:
        why = (result.stderr.strip() or f"exit code {result.returncode}").splitlines()[-1]
        raise SandboxUnavailable(f"cannot isolate generated code: bubblewrap failed: {why}. Fix: {FIX}")
    return bwrap
