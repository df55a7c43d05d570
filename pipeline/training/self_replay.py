"""Self-replay: the replay source a pretrained start writes itself (generative replay; Huang et al.
2024, "Mitigating Catastrophic Forgetting in Large Language Models with Self-Synthesized
Rehearsal"). When the start's own pre-training data is not available, sample documents from the
start through vLLM and mix them into every step, as `replay` mixes the old data in.

`write_self_replay` reads top to bottom: the prompts (titles of Wikipedia's vital articles, never
those of the fixed evaluation set, or a few prompts that name no topic), the requests for as many
documents as the arms' replay share needs, each answer journaled as it arrives (the generation
journal, `pipeline.generation.generate.collect`: a re-run asks only for what is missing), more
rounds until the documents hold enough tokens, then `documents.parquet` in a folder named by what
made it (`made_of`: the start's weights, the prompts, the sampling), so another start or other
sampling is another folder and the same ones are never asked twice.

The held-out slice is the training mix's own rule (`replay.heldout_split`: every k-th document,
k = 1 / training.heldout_fraction): the documents are ordered, and those positions never train.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import random
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from pipeline.generation import journal as answers
from pipeline.generation.generate import collect
from pipeline.generation.sources import WIKI_VITAL, open_seeds
from pipeline.teacher.client import ChatRequest, TeacherClient
from pipeline.training.replay import heldout_split
from trainers import atomic

if TYPE_CHECKING:
    from pipeline.experiments.declaration import SelfReplay
    from pipeline.settings import TeacherSettings
    from trainers.config import TrainConfig

log = logging.getLogger("schoolhouse.self_replay")

ARTICLE = "Write an encyclopedia article about {title}."
NEUTRAL = ("Write an article.", "Write a document.", "Write an essay.", "Write something informative.",
           "Write a text on a subject of your choice.")  # fmt: skip
# A truncated answer is still the start's writing; an error or an empty answer is not a document.
USABLE = (None, "generation:truncated")
MAX_ROUNDS = 8


def replay_tokens(run: TrainConfig) -> int:
    """The replay tokens one run trains on: its steps x sequences x seq_len x the replay share."""
    share = run.mixture.get("replay", 0) / sum(run.mixture.values())
    return math.ceil(run.max_steps * run.sequences_per_step(max(1, run.num_gpus)) * run.seq_len * share)


def prompts(spec: SelfReplay, count: int) -> list[tuple[str, str]]:
    """(topic, prompt) of the first `count` documents: vital-article titles in an order seeded by
    spec.seed (open_seeds leaves out the fixed evaluation set's), or the neutral prompts in turn."""
    if spec.prompts == "neutral":
        return [("", NEUTRAL[i % len(NEUTRAL)]) for i in range(count)]
    titles = open_seeds(WIKI_VITAL)["title"].to_list()
    random.Random(spec.seed).shuffle(titles)
    return [(titles[i % len(titles)], ARTICLE.format(title=titles[i % len(titles)])) for i in range(count)]


def made_of(spec: SelfReplay, start: str) -> dict:
    """What the documents depend on: the start's weights (folder name and size) and how they are asked."""
    weights = sum(path.stat().st_size for path in Path(start).glob("*.safetensors")) if Path(start).is_dir() else 0
    return {"start": Path(start).name or start, "start_weights_bytes": weights, **spec.model_dump(exclude={"passes",
            "heldout"})}  # fmt: skip


def folder_for(root: Path, spec: SelfReplay, start: str) -> Path:
    digest = hashlib.sha256(json.dumps(made_of(spec, start), sort_keys=True).encode()).hexdigest()[:12]
    return root / digest


def start_teacher(teacher: TeacherSettings, start: str) -> TeacherSettings:
    """The teacher settings that serve the start: the configured teacher when its model is the start
    (the embedded SmolLM2 by default, also in url mode), else a managed vLLM server on the start."""
    from pipeline.teacher.weights import embedded_teacher

    served = teacher.model_path or str(embedded_teacher())
    if Path(served).resolve() == Path(start).resolve():
        return teacher
    return teacher.model_copy(update={"mode": "managed", "model_path": start, "model": Path(start).name})


def _enough(documents: list[dict], tokens: int, heldout: int, fraction: float) -> int | None:
    """The fewest leading documents whose training part holds `tokens` and held-out part `heldout`
    documents (none held out when fraction is 0), or None. A position's side does not depend on
    how many documents follow it, so the split of the whole list holds for every prefix."""
    _, held = heldout_split(list(range(len(documents))), fraction)
    held, trained, kept_apart = set(held), 0, 0
    for position, document in enumerate(documents):
        if position in held:
            kept_apart += 1
        else:
            trained += document["completion_tokens"]
        if trained >= tokens and kept_apart >= heldout * (fraction > 0):
            return position + 1
    return None


def write_self_replay(root: Path, spec: SelfReplay, start: str, tokens: int, fraction: float,
                      teacher: Callable[[], AbstractContextManager[TeacherClient]]) -> Path:  # fmt: skip
    """`documents.parquet` under `root/<made_of digest>/`: the start's documents, enough that the
    training part holds `tokens` x spec.passes tokens and the held-out part (every k-th, k = 1 /
    `fraction`) spec.heldout documents. `teacher()` opens a client of the start; it is entered only
    when the journal lacks answers."""
    folder = folder_for(root, spec, start)
    journal = folder / "journal.jsonl"
    wanted = math.ceil(tokens * spec.passes)
    every = max(2, round(1 / fraction)) if fraction > 0 else 0
    per_document, count, documents, enough = 0.6 * spec.max_tokens, 0, [], None
    with contextlib.ExitStack() as stack:
        client: TeacherClient | None = None
        for _ in range(MAX_ROUNDS):
            train_share = 1 - 1 / every if every else 1.0
            count = max(count + 1, math.ceil(1.1 * wanted / (per_document * train_share)) + 1,
                        spec.heldout * every + every // 2 + 1 if every else 0)  # fmt: skip
            planned = prompts(spec, count)
            requests = [ChatRequest(f"{i:05d}", prompt, spec.max_tokens, spec.temperature, spec.top_p, spec.seed + i)
                        for i, (_, prompt) in enumerate(planned)]  # fmt: skip
            if answers.missing_ids([request.key for request in requests], journal):
                if client is None:
                    client = stack.enter_context(teacher())
                    client.check_reachable()
                asyncio.run(collect(client, requests, journal, "self-replay documents"))
            done = answers.read_journal(journal)
            documents = [{"id": r.key, "topic": topic, "prompt": r.prompt, "text": done[r.key]["text"].strip(),
                          "completion_tokens": done[r.key]["completion_tokens"],
                          "finish_reason": done[r.key]["finish_reason"]}
                         for r, (topic, _) in zip(requests, planned, strict=True)
                         if done[r.key]["reason"] in USABLE and done[r.key]["text"].strip()]  # fmt: skip
            enough = _enough(documents, wanted, spec.heldout, fraction)
            if enough:
                break
            if documents:
                per_document = sum(d["completion_tokens"] for d in documents) / len(documents)
    if not enough:
        raise RuntimeError(f"self-replay: {len(documents)} usable documents of {count} asked hold too few "
                           f"tokens for {wanted:,} training tokens and {spec.heldout} held-out documents; "
                           f"see {journal}")  # fmt: skip
    documents = documents[:enough]
    _, held = heldout_split(list(range(enough)), fraction)
    split = pl.when(pl.int_range(pl.len()).is_in(held)).then(pl.lit("heldout")).otherwise(pl.lit("train"))
    frame = pl.DataFrame(documents).with_columns(split=split)
    path = folder / "documents.parquet"
    atomic.write_parquet(frame, path, "the self-replay documents")
    train = frame.filter(pl.col("split") == "train")
    lineage = {"made_of": made_of(spec, start), "documents": frame.height, "heldout_documents": len(held),
               "train_tokens": int(train["completion_tokens"].sum()), "wanted_tokens": wanted,
               "served_by": {"urls": client.urls, "model": client.model} if client else None}  # fmt: skip
    atomic.write_json(folder / "lineage.json", lineage, "the self-replay documents' lineage")
    log.info("self-replay: %d documents (%d held out), %d training tokens for %d wanted, in %s",
             frame.height, len(held), lineage["train_tokens"], wanted, path)  # fmt: skip
    return path
