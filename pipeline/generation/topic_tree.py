"""The topic tree and the personas, grown by the teacher on demand.

The tree starts from the shipped topics (field -> topic), the user's topics file, the seed
corpus' categories and the code concepts. When a plan needs more leaves (`generation.
topic_leaves`), the teacher splits the shallowest leaves into subtopics (Cosmopedia v2 grew 5,000
BISAC topics into 34,000 this way; GLAN's field -> subject -> syllabus -> concept), answering in
JSON held to a schema by vLLM's structured outputs. Personas grow the same way from seed
passages (PersonaHub: "who would read or write this?").

Every node records its lineage: parent, teacher, prompt, version. A new node is refused when it
repeats a node by meaning (cosine of the name's embedding >= `SAME_MEANING`) or copies an exam
item (it contains an MMLU question, or is as close to one as a paraphrase). The teacher's answers
are journaled like any generation, so re-growing replays the journal: the same tree, no teacher.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.generation import journal as answers
from pipeline.generation.seeds import code_concepts, text_topics
from pipeline.teacher.client import ChatRequest, TeacherClient

log = logging.getLogger("schoolhouse.topic_tree")

VERSION = "tree-v1"  # the growth prompts; a change makes new requests
SAME_MEANING = 0.9  # names at least this cosine-similar are one node
EXAM_COPY = 0.9  # a name at least this similar to an MMLU item copies it
SUBTOPICS = 5  # children the teacher proposes per expanded leaf
NO_CATEGORY = ("", None, "Uncategorized")  # seed categories that name no subject
SCHEMA = pl.Schema({
    "node_id": pl.String, "parent_id": pl.String, "kind": pl.String, "domain": pl.String, "name": pl.String,
    "description": pl.String, "depth": pl.Int64, "source": pl.String, "teacher": pl.String, "prompt": pl.String,
    "version": pl.String,
})  # fmt: skip

_SUBTOPICS_SCHEMA = {
    "type": "object",
    "properties": {"subtopics": {"type": "array", "minItems": SUBTOPICS, "maxItems": SUBTOPICS,
                                 "items": {"type": "string", "minLength": 3, "maxLength": 60}}},  # fmt: skip
    "required": ["subtopics"],
    "additionalProperties": False,
}
_PERSONA_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "minLength": 3, "maxLength": 40},
                   "description": {"type": "string", "minLength": 10, "maxLength": 160}},  # fmt: skip
    "required": ["name", "description"],
    "additionalProperties": False,
}


def node_id(parent_id: str | None, kind: str, name: str) -> str:
    return hashlib.sha256(f"{parent_id}|{kind}|{name.lower()}".encode()).hexdigest()[:16]


def _node(parent_id, kind, domain, name, depth, source, description="", teacher="", prompt="") -> dict:
    return dict(node_id=node_id(parent_id, kind, name), parent_id=parent_id, kind=kind, domain=domain, name=name,
                description=description, depth=depth, source=source, teacher=teacher, prompt=prompt,
                version=VERSION)  # fmt: skip


def shipped_tree(user_topics: list[tuple[str, str]] = (), seed_categories: list[str] = (),
                 personas: dict[str, str] | None = None) -> pl.DataFrame:  # fmt: skip
    """The tree before the teacher grows it: fields -> topics, seed categories, code concepts."""
    rows: dict[str, dict] = {}

    def add(row: dict) -> str:
        rows.setdefault(row["node_id"], row)
        return row["node_id"]

    for source, pairs in (("shipped", [(f, t) for f, ts in text_topics().items() for t in ts]),
                          ("topics_file", list(user_topics))):  # fmt: skip
        for field_name, topic in pairs:
            parent = add(_node(None, "topic", "text", field_name, 0, source))
            add(_node(parent, "topic", "text", topic, 1, source))
    for category in seed_categories:
        add(_node(None, "topic", "text", category, 0, "seed_category"))
    python = add(_node(None, "topic", "code", "python", 0, "shipped"))
    for concept in code_concepts():
        add(_node(python, "topic", "code", concept, 1, "shipped"))
    for name, description in (personas or {}).items():
        add(_node(None, "persona", "text", name, 0, "shipped", description))
    return pl.DataFrame(list(rows.values()), schema=SCHEMA)


def seed_categories(seeds: pl.DataFrame) -> list[str]:
    return sorted(set(seeds["category"].drop_nulls()) - set(NO_CATEGORY))


def leaves(tree: pl.DataFrame, domain: str) -> pl.DataFrame:
    """Topic nodes of `domain` with no children, with the name of their root (the field)."""
    topics = tree.filter((pl.col("kind") == "topic") & (pl.col("domain") == domain))
    parents = set(topics["parent_id"].drop_nulls())
    roots = _roots(topics)
    return topics.filter(~pl.col("node_id").is_in(parents)).with_columns(
        field=pl.col("node_id").replace_strict(roots, default=None)
    )


def _roots(topics: pl.DataFrame) -> dict[str, str]:
    """node_id -> its root's name."""
    parent = dict(zip(topics["node_id"], topics["parent_id"], strict=True))
    name = dict(zip(topics["node_id"], topics["name"], strict=True))
    roots = {}
    for node in parent:
        top = node
        while parent.get(top):
            top = parent[top]
        roots[node] = name[top]
    return roots


def text_leaves(tree: pl.DataFrame) -> list[tuple[str, str]]:
    """(field, topic) of every text leaf; a root with no children is its own field."""
    return [(row["field"], row["name"]) for row in leaves(tree, "text").sort("node_id").iter_rows(named=True)]


def personas(tree: pl.DataFrame) -> dict[str, str]:
    people = tree.filter(pl.col("kind") == "persona").sort("depth", "source", "node_id")
    return dict(zip(people["name"], people["description"], strict=True))


@dataclass
class GrowthStats:
    requested: int = 0
    added: int = 0
    refused: dict[str, int] = field(default_factory=dict)

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


@dataclass
class Gatekeeper:
    """Refuses a new name that repeats a node by meaning or copies an exam item."""

    embed: object  # Embedder: list[str] -> L2-normalized vectors
    exam_questions: list[str]
    exam_vectors: np.ndarray
    max_words: int = 12  # a topic is a short phrase; a persona's description a sentence
    names: list[str] = field(default_factory=list)
    vectors: np.ndarray | None = None

    def __post_init__(self) -> None:
        self._questions = [_normal(q) for q in self.exam_questions]

    def know(self, names: list[str]) -> None:
        fresh = [n for n in names if n]
        if fresh:
            vectors = self.embed(fresh, "topic names")
            self.vectors = vectors if self.vectors is None else np.vstack([self.vectors, vectors])
            self.names += fresh

    def verdict(self, name: str) -> str | None:
        """None to accept, else why not."""
        normal = _normal(name)
        if not normal or len(normal.split()) > self.max_words:
            return "length"
        if normal in {_normal(n) for n in self.names}:
            return "duplicate"
        if len(normal.split()) >= 5 and any(normal in q or q in normal for q in self._questions):
            return "exam_copy"
        vector = self.embed([name], "topic names")[0]
        if self.exam_vectors.size and float((self.exam_vectors @ vector).max()) >= EXAM_COPY:
            return "exam_copy"
        if self.vectors is not None and float((self.vectors @ vector).max()) >= SAME_MEANING:
            return "same_meaning"
        return None


def _normal(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


class LazyTeacher:
    """A teacher client opened on first use: re-growing from a full journal starts no server."""

    def __init__(self, open_client: Callable[[], contextlib.AbstractContextManager[TeacherClient]]):
        self._open, self._stack, self._client = open_client, contextlib.ExitStack(), None

    def __call__(self) -> TeacherClient:
        if self._client is None:
            self._client = self._stack.enter_context(self._open())
        return self._client

    def __enter__(self) -> LazyTeacher:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()


Teacher = Callable[[], TeacherClient] | None


def _ask(teacher: Teacher, requests: list[ChatRequest], journal: Path, what: str) -> dict[str, dict]:
    """Answers by key: the journal's, and the teacher's for the rest (journaled as they come)."""
    from pipeline.generation.generate import collect

    done = answers.read_journal(journal)
    missing = [r for r in requests if r.key not in done]
    if missing:
        if teacher is None:
            raise ValueError(f"{len(missing)} {what} answers are not in {journal} and no teacher was given")
        client = teacher()
        client.check_reachable()
        asyncio.run(collect(client, missing, journal, what))
        done = answers.read_journal(journal)
    return done


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def grow_topics(tree: pl.DataFrame, target_leaves: int, teacher: Teacher, journal: Path,
                gate: Gatekeeper, teacher_model: str, domain: str = "text",
                max_rounds: int = 8) -> tuple[pl.DataFrame, GrowthStats]:  # fmt: skip
    """Split the shallowest leaves until the tree has `target_leaves` leaves of `domain` (or a
    round adds none: the teacher has nothing new to say)."""
    stats = GrowthStats()
    gate.know(tree.filter(pl.col("kind") == "topic")["name"].to_list())
    for _ in range(max_rounds):
        current = leaves(tree, domain)
        short = target_leaves - current.height
        if short <= 0:
            break
        # each split turns one leaf into up to SUBTOPICS leaves: a net gain of SUBTOPICS - 1
        chosen = current.sort("depth", "node_id").head(-(-short // (SUBTOPICS - 1)))
        paths = _paths(tree)
        requests = [_split_request(row, paths[row["node_id"]]) for row in chosen.iter_rows(named=True)]
        stats.requested += len(requests)
        done = _ask(teacher, requests, journal, "topic tree")
        added = []
        for row, request in zip(chosen.iter_rows(named=True), requests, strict=True):
            for name in _json(done[request.key].get("text", "")).get("subtopics", [])[:SUBTOPICS]:
                name = " ".join(str(name).split())
                why = gate.verdict(name)
                if why:
                    stats.refuse(why)
                    continue
                gate.know([name])
                added.append(_node(row["node_id"], "topic", domain, name, row["depth"] + 1, "teacher",
                                   teacher=teacher_model, prompt=request.prompt))  # fmt: skip
        if not added:
            log.warning("the teacher added no new topic this round: %d leaves of %d", current.height, target_leaves)
            break
        stats.added += len(added)
        tree = _first(pl.concat([tree, pl.DataFrame(added, schema=SCHEMA)]))
    return tree, stats


def _first(tree: pl.DataFrame) -> pl.DataFrame:
    return tree.unique("node_id", keep="first", maintain_order=True)


def _paths(tree: pl.DataFrame) -> dict[str, str]:
    parent = dict(zip(tree["node_id"], tree["parent_id"], strict=True))
    name = dict(zip(tree["node_id"], tree["name"], strict=True))
    paths = {}
    for node in parent:
        chain, at = [], node
        while at:
            chain.append(name[at])
            at = parent.get(at)
        paths[node] = " > ".join(reversed(chain))
    return paths


def _split_request(row: dict, path: str) -> ChatRequest:
    prompt = (f'You are writing the syllabus of a textbook. List {SUBTOPICS} distinct subtopics of "{row["name"]}" '
              f"(in: {path}) that a textbook chapter would teach, each a short noun phrase of 2 to 6 words. "
              'Answer in JSON: {"subtopics": [...]}.')  # fmt: skip
    key = hashlib.sha256(f"{VERSION}|{row['node_id']}|{prompt}".encode()).hexdigest()[:20]
    return ChatRequest(key=key, prompt=prompt, max_tokens=200, temperature=0.0, top_p=1.0, seed=0,
                       answer_schema=_SUBTOPICS_SCHEMA)  # fmt: skip


def grow_personas(tree: pl.DataFrame, target: int, seeds: pl.DataFrame, teacher: Teacher, journal: Path,
                  gate: Gatekeeper, teacher_model: str, seed: int = 0) -> tuple[pl.DataFrame, GrowthStats]:  # fmt: skip
    """Add personas the teacher reads off seed passages until `target` came from the teacher."""
    stats = GrowthStats()
    have = tree.filter((pl.col("kind") == "persona") & (pl.col("source") == "teacher")).height
    if target <= have or seeds.is_empty():
        return tree, stats
    gate.know(tree.filter(pl.col("kind") == "persona")["description"].to_list())
    sample = seeds.sample(min(seeds.height, 2 * (target - have) + 8), seed=seed, shuffle=True)
    requests = [_persona_request(row) for row in sample.iter_rows(named=True)]
    stats.requested = len(requests)
    done = _ask(teacher, requests, journal, "personas")
    added = []
    for request in requests:
        if have + len(added) >= target:
            break
        answer = _json(done[request.key].get("text", ""))
        name, description = " ".join(str(answer.get("name", "")).split()), str(answer.get("description", "")).strip()
        why = gate.verdict(description) if name and description else "empty"
        if why:
            stats.refuse(why)
            continue
        gate.know([description])
        added.append(_node(None, "persona", "text", name, 0, "teacher", description, teacher_model, request.prompt))
    stats.added = len(added)
    return (_first(pl.concat([tree, pl.DataFrame(added, schema=SCHEMA)])) if added else tree), stats


def _persona_request(seed_row: dict) -> ChatRequest:
    passage = " ".join(seed_row["text"].split()[:120])
    prompt = (f"Here is a passage:\n\n{passage}\n\nWho would read or write this text? Describe one such person: "
              "a short name (2 to 4 words) and one sentence about them. "
              'Answer in JSON: {"name": ..., "description": ...}.')
    key = hashlib.sha256(f"{VERSION}|persona|{seed_row['seed_id']}|{prompt}".encode()).hexdigest()[:20]
    return ChatRequest(key=key, prompt=prompt, max_tokens=120, temperature=0.0, top_p=1.0, seed=0,
                       answer_schema=_PERSONA_SCHEMA)  # fmt: skip


@dataclass
class TreeReport:
    topics: GrowthStats = field(default_factory=GrowthStats)
    personas: GrowthStats = field(default_factory=GrowthStats)


def build(settings, journal_dir: Path, log_path: Path | None = None, on_line=None) -> tuple[pl.DataFrame, TreeReport]:
    """The tree for `settings` (Settings): shipped, then grown by the teacher as far as
    `generation.topic_leaves` and `generation.teacher_personas` ask. The teacher (and the
    embedding model that guards new nodes) is started only when the journal lacks answers."""
    from pipeline.generation.seeds import read_topics_file
    from pipeline.generation.spaces import shipped_personas, text_seeds

    g = settings.generation
    user_topics = read_topics_file(g.topics_file) if g.topics_file else []
    # the seed corpus' categories start branches of their own (a bad seed source fails here, before any request)
    seeds = text_seeds(g)
    categories = seed_categories(seeds)
    tree, report = shipped_tree(user_topics, categories, shipped_personas()), TreeReport()
    grow = leaves(tree, "text").height < g.topic_leaves or g.teacher_personas > 0
    if not grow:
        return tree, report

    from pipeline.curation.embeddings import Embedder
    from pipeline.curation.semantic import SemanticExamIndex, exam_items
    from pipeline.teacher.serving import serving

    embedder = Embedder(settings.curation.semantic.embedding_model)
    exam, questions = SemanticExamIndex.build(embedder), exam_items()[1]
    with LazyTeacher(lambda: serving(settings.teacher, log_path=log_path, on_line=on_line)) as teacher:
        if leaves(tree, "text").height < g.topic_leaves:
            gate = Gatekeeper(embedder, questions, exam.vectors)
            tree, report.topics = grow_topics(tree, g.topic_leaves, teacher, journal_dir / "topic_tree.jsonl", gate,
                                              settings.teacher.model)  # fmt: skip
        if g.teacher_personas:
            gate = Gatekeeper(embedder, questions, exam.vectors, max_words=40)
            tree, report.personas = grow_personas(tree, g.teacher_personas, seeds, teacher,
                                                  journal_dir / "personas.jsonl", gate, settings.teacher.model,
                                                  g.seed)  # fmt: skip
    return tree, report
