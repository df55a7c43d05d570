"""Prompt plans: seeded, reproducible lists of teacher requests for one batch.

Text prompts cross a topic with an audience and a style, the way Cosmopedia varies its
textbooks; code prompts cross a Python concept with a difficulty and ask for an exercise in one
fixed format (phi-1's "CodeExercises": signature + docstring, solution, tests) that curation can
parse and run. The wording lives in `data/` (see `pipeline.generation.seeds`).
"""

from __future__ import annotations

import hashlib
import json
import random

from pipeline.generation.seeds import code_concepts, template, text_topics, variations

TEXT_TEMPLATE_NAME = "text/v1"
CODE_TEMPLATE_NAME = "code/exercise-v1"


def row_id(prompt: str, sampling: dict, teacher_model: str) -> str:
    """Stable id: the same prompt, sampling and teacher always give the same id."""
    payload = json.dumps([prompt, sampling, teacher_model], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def plan_text(n: int, seed: int, topics: list[tuple[str, str]] | None = None) -> list[dict]:
    rng = random.Random(f"text-{seed}")
    pool = topics or [(field, topic) for field, items in text_topics().items() for topic in items]
    audiences, styles = variations().audiences, variations().styles
    rows = []
    for _ in range(n):
        field, topic = rng.choice(pool)
        audience = rng.choice(list(audiences))
        style = rng.choice(list(styles))
        prompt = template(TEXT_TEMPLATE_NAME).format(
            words=300,
            style_description=styles[style],
            topic=topic,
            field=field,
            audience_description=audiences[audience],
        )
        rows.append(
            dict(domain="text", topic=f"{field}: {topic}", audience=audience, style=style,
                 template=TEXT_TEMPLATE_NAME, prompt=prompt, answer_prefix="")
        )  # fmt: skip
    return rows


def plan_code(n: int, seed: int) -> list[dict]:
    rng = random.Random(f"code-{seed}")
    concepts, difficulties = code_concepts(), variations().difficulties
    rows = []
    for _ in range(n):
        concept = rng.choice(concepts)
        difficulty = rng.choice(difficulties)
        prompt = template(CODE_TEMPLATE_NAME).format(concept=concept, difficulty=difficulty)
        rows.append(
            dict(domain="code", topic=concept, audience=difficulty, style="exercise", template=CODE_TEMPLATE_NAME,
                 prompt=prompt, answer_prefix=variations().code_answer_prefix)
        )  # fmt: skip
    return rows


def batch_seed(seed: int, batch: str) -> int:
    """A seed per batch: every day draws new prompts, and the same day always the same ones."""
    return int(hashlib.sha256(f"{seed}|{batch}".encode()).hexdigest()[:8], 16)


def plan_prompts(
    domain: str,
    samples: int,
    seed: int,
    sampling: dict,
    teacher_model: str,
    topics: list[tuple[str, str]] | None = None,
) -> list[dict]:
    """The full, deterministic plan for one batch: one dict per request, with its id and seed."""
    if domain == "text":
        planned = plan_text(samples, seed, topics)
    elif domain == "code":
        planned = plan_code(samples, seed)
    else:
        raise ValueError(f"domain = {domain!r}: must be 'code' or 'text'")
    rows, seen = [], set()
    for index, row in enumerate(planned):
        # A per-row seed keeps repeated prompts distinct and makes every row reproducible.
        row_sampling = dict(sampling, seed=(seed * 1_000_003 + index) % 2**31)
        row["sampling"] = json.dumps(row_sampling, sort_keys=True)
        row["id"] = row_id(row["prompt"] + row["answer_prefix"], row_sampling, teacher_model)
        if row["id"] not in seen:
            seen.add(row["id"])
            rows.append(row)
    return rows
