"""The generation journal: every teacher answer appended as one JSON line, flushed and fsynced as
it arrives, so a crash loses at most the requests in flight and a re-run asks only for the rest."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from trainers import atomic


def read_journal(path: Path) -> dict[str, dict]:
    """Finished answers by id. Only a torn last line (a crash mid-write: no newline, no JSON) is
    ignored; any other line that is not a JSON object with an "id" raises `ValueError` naming the
    file and the line: a damaged journal is not silently asked again."""
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    with path.open("rb") as journal:  # bytes: a torn line may end inside a UTF-8 character
        for number, line in enumerate(journal, start=1):
            try:
                record = json.loads(line)
            except ValueError as error:  # bad JSON or bad UTF-8
                if not line.endswith(b"\n"):  # only the last line can lack one: torn mid-write
                    break
                raise ValueError(f"{path}:{number}: not a journal line ({error}); fix or delete that line "
                                 "(a deleted answer is asked again)") from None  # fmt: skip
            if not isinstance(record, dict) or "id" not in record:
                raise ValueError(f'{path}:{number}: not a journal line (a JSON object with an "id")')
            done[record["id"]] = record
    return done


def exclusive(path: Path, log: logging.Logger | None = None) -> contextlib.AbstractContextManager[None]:
    """Hold the journal's lock (`<journal>.lock`): other runs of the same batch wait, saying so."""
    return atomic.exclusive(path, log)


@contextlib.contextmanager
def appending(path: Path) -> Iterator[IO[str]]:
    """The journal open for `append`. A torn last line is dropped first, so that the next answer
    starts a line of its own instead of joining the fragment into a damaged line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        with path.open("r+b") as raw:
            end = raw.seek(0, os.SEEK_END)
            raw.seek(end - 1)
            if raw.read(1) != b"\n":
                start = _last_line_start(raw, end)
                raw.seek(start)
                try:
                    json.loads(raw.read())
                except ValueError:  # torn: drop it
                    raw.truncate(start)
                else:  # a whole record, only lacking its newline
                    raw.write(b"\n")
    with path.open("a", encoding="utf-8") as journal:
        yield journal


def _last_line_start(raw: IO[bytes], end: int, chunk: int = 1 << 16) -> int:
    position = end
    while position > 0:
        step = min(chunk, position)
        position -= step
        raw.seek(position)
        newline = raw.read(step).rfind(b"\n")
        if newline >= 0:
            return position + newline + 1
    return 0


def missing_ids(ids: Iterable[str], journal: Path) -> list[str]:
    """The planned ids the journal does not have yet (none: the teacher is not needed)."""
    done = read_journal(journal)
    return [key for key in ids if key not in done]


def append(journal: IO[str], record: dict) -> None:
    """One answer, on disk before anything else happens with it."""
    journal.write(json.dumps(record, ensure_ascii=False) + "\n")
    journal.flush()
    os.fsync(journal.fileno())
