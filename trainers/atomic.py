"""Files that are whole or absent, and that two writers cannot collide on.

Every writer gets a temporary name of its own beside the target (process id + random suffix), the
data is flushed to disk before the rename, and the folder entry after it: two runs writing the same
table at once each rename a complete file of their own (the last one wins, and both are equal when
they are the same computation), and a kill or a power cut leaves the old file or the new one, never
half of one. A write that fails (a full disk, a read-only folder) raises `WriteError` naming the
path and what was being written, and removes its temporary file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

TMP_MARK = ".tmp-"  # every temporary name contains it; tests look for leftovers by it


class WriteError(OSError):
    """A file or folder of the project could not be written; nothing half-written is left."""


def temporary_name(target: Path) -> Path:
    """A name beside `target` that no other writer uses, hidden, on the same file system."""
    return target.with_name(f".{target.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_stale(target: Path) -> None:
    """Temporary names of `target` left by writers that were killed (their process is gone)."""
    for stale in target.parent.glob(f".{target.name}{TMP_MARK}*"):
        if _alive(int(stale.name.rsplit(TMP_MARK, 1)[1].split("-")[0])):
            continue
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Every file under `folder`, and the folders, on disk (before a name points at them)."""
    for root, _, files in os.walk(folder):
        for name in files:
            _fsync(Path(root) / name)
        _fsync(Path(root))


@contextlib.contextmanager
def _failures_named(target: Path, what: str, tmp: Path) -> Iterator[None]:
    try:
        yield
    except BaseException as error:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):  # on a read-only folder nothing was made
                tmp.unlink(missing_ok=True)
        if isinstance(error, WriteError) or not isinstance(error, Exception):
            raise
        # polars and others report a full disk as their own error type: the path is what matters
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise WriteError(getattr(error, "errno", None), f"could not write {what} to {target}: {reason}") from error


def write_file(target: Path | str, write: Callable[[Path], object], what: str = "a file") -> Path:
    """Call `write(tmp)` to fill a temporary file, then put it at `target` in one rename."""
    target = Path(target)
    tmp = temporary_name(target)
    with _failures_named(target, what, tmp):
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(target)
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(target.parent)
    return target


def write_parquet(frame, target: Path | str, what: str = "a table") -> Path:
    return write_file(target, frame.write_parquet, what)


def write_text(target: Path | str, text: str, what: str = "a file") -> Path:
    return write_file(target, lambda tmp: tmp.write_text(text, encoding="utf-8"), what)


def write_json(target: Path | str, value: object, what: str = "a file") -> Path:
    return write_text(target, json.dumps(value, indent=2), what)


def write_folder(target: Path | str, fill: Callable[[Path], object], what: str = "a folder") -> Path:
    """Call `fill(tmp)` to fill a temporary folder, then swap it in for `target`.

    A folder cannot replace a non-empty one in one rename, so the old one is renamed aside first
    and removed after: a reader sees the old folder, briefly none, then the new one, never a mix.
    """
    target = Path(target)
    tmp = temporary_name(target)
    with _failures_named(target, what, tmp):
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(target)
        tmp.mkdir()
        fill(tmp)
        fsync_tree(tmp)
        old = temporary_name(target) if target.exists() else None
        if old is not None:
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target


def leftovers(folder: Path | str) -> list[Path]:
    """Temporary files or folders under `folder` (a writer killed mid-write leaves them)."""
    return sorted(p for p in Path(folder).rglob(f"*{TMP_MARK}*"))


@contextlib.contextmanager
def exclusive(path: Path, log: logging.Logger | None = None, what: str = "it") -> Iterator[None]:
    """Hold `<path>.lock` (fcntl, released by the kernel when the holder dies): other processes that
    want the same lock wait, saying so."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(path.name + ".lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log:
                log.info("another run is writing %s: waiting for it to finish", what if what != "it" else path)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
