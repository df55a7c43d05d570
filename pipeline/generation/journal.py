"""The generation journal: every teacher answer appended as one JSON line, flushed and fsynced as
it arrives, so a crash loses at most the requests in flight and a re-run asks only for the rest."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO


def read_journal(path: Path) -> dict[str, dict]:
    """Finished answers by id; a torn last line (a crash mid-write) is ignored."""
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    with path.open("r", encoding="utf-8") as journal:
        for line in journal:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[record["id"]] = record
    return done


def missing_ids(ids: Iterable[str], journal: Path) -> list[str]:
    """The planned ids the journal does not have yet (none: the teacher is not needed)."""
    done = read_journal(journal)
    return [key for key in ids if key not in done]


def append(journal: IO[str], record: dict) -> None:
    """One answer, on disk before anything else happens with it."""
    journal.write(json.dumps(record, ensure_ascii=False) + "\n")
    journal.flush()
    os.fsync(journal.fileno())
