"""The seed lists prompts are drawn from, read from the package's data files.

`data/text_topics.yaml`: text topics by field; `data/code_concepts.txt`: Python concepts for
exercises; `data/variations.yaml`: audiences, styles and difficulties; `data/templates/`: one
prompt template per template name. Edit the files, not code, to change what the teacher is asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

DATA = Path(__file__).parent / "data"


def data_lines(path: Path) -> list[str]:
    """Non-empty lines with '#' comments removed."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


@cache
def text_topics() -> dict[str, tuple[str, ...]]:
    topics = yaml.safe_load((DATA / "text_topics.yaml").read_text(encoding="utf-8"))
    return {field: tuple(items) for field, items in topics.items()}


@cache
def code_concepts() -> tuple[str, ...]:
    return tuple(data_lines(DATA / "code_concepts.txt"))


@dataclass(frozen=True)
class Variations:
    audiences: dict[str, str]  # key stored in the row -> description put in the prompt
    styles: dict[str, str]
    difficulties: tuple[str, ...]
    code_answer_prefix: str


@cache
def variations() -> Variations:
    values = yaml.safe_load((DATA / "variations.yaml").read_text(encoding="utf-8"))
    return Variations(values["audiences"], values["styles"], tuple(values["difficulties"]),
                      values["code_answer_prefix"])  # fmt: skip


@cache
def template(name: str) -> str:
    """The prompt template stored under a template name ('text/v1' -> data/templates/text-v1.txt)."""
    path = DATA / "templates" / f"{name.replace('/', '-')}.txt"
    if not path.is_file():
        raise ValueError(f"prompt template {name!r}: no file {path}")
    return path.read_text(encoding="utf-8").removesuffix("\n")


def read_topics_file(path: str | Path) -> list[tuple[str, str]]:
    """A user topics file: one `field: topic` (or just `topic`) per line; '#' starts a comment."""
    topics = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        field, _, topic = line.rpartition(":")
        topic = topic.strip()
        if not topic:
            raise ValueError(f"{path}:{number}: empty topic")
        topics.append((field.strip() or "general", topic))
    return topics
