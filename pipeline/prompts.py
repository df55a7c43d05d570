"""Prompt building: seeded, reproducible plans of teacher prompts for both domains.

Text prompts cross a topic with an audience and a style, the way Cosmopedia varies its
textbooks; code prompts cross a Python concept with a difficulty and ask for an exercise in one
fixed format (phi-1's "CodeExercises": signature + docstring, solution, tests) that curation can
parse and run.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from pipeline.seeds import CODE_CONCEPTS, DIFFICULTIES, TEXT_TOPICS

AUDIENCES = {
    "young children": "young children (ages 6-10): short sentences, everyday examples, no jargon",
    "high school": "high school students: clear explanations and worked examples",
    "college": "college students: rigorous, with definitions and derivations where useful",
    "researchers": "researchers: precise, dense, citing the key ideas by name",
}

STYLES = {
    "textbook": "a section of a textbook, with a title and subheadings",
    "lecture": "the transcript of a lecture, speaking directly to the students",
    "blog post": "an engaging blog post",
    "wikiHow": "a wikiHow article with numbered steps and tips",
    "story": "a short story whose characters discover and explain the idea",
}

TEXT_TEMPLATE = (
    'Write {style_description} about "{topic}" (field: {field}) for {audience_description}. '
    "Teach the idea so the reader truly understands it; be accurate and self-contained. "
    "Do not address me and do not add a preamble. Keep it under {words} words."
)

CODE_TEMPLATE = """Write one {difficulty} Python exercise about {concept}: a function with a
docstring, its reference solution, and assert-based tests, in exactly the format of this example.

### Function
```python
def count_vowels(word: str) -> int:
    \"\"\"Return how many vowels (a, e, i, o, u) the lower-cased word contains.\"\"\"
    return sum(1 for letter in word.lower() if letter in "aeiou")
```

### Tests
```python
assert count_vowels("banana") == 3
assert count_vowels("Sky") == 0
assert count_vowels("AEIOU") == 5
```"""

# The answer is started for the teacher (vLLM's continue_final_message), which small teachers
# need to keep to the format; the prefix is part of the stored text.
CODE_ANSWER_PREFIX = "### Function\n```python\n"


def row_id(prompt: str, sampling: dict, teacher_model: str) -> str:
    """Stable id: the same prompt, sampling and teacher always give the same id."""
    payload = json.dumps([prompt, sampling, teacher_model], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


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


def plan_text(n: int, seed: int, topics: list[tuple[str, str]] | None = None) -> list[dict]:
    rng = random.Random(f"text-{seed}")
    pool = topics or [(field, topic) for field, items in TEXT_TOPICS.items() for topic in items]
    rows = []
    for _ in range(n):
        field, topic = rng.choice(pool)
        audience = rng.choice(list(AUDIENCES))
        style = rng.choice(list(STYLES))
        prompt = TEXT_TEMPLATE.format(
            words=300,
            style_description=STYLES[style],
            topic=topic,
            field=field,
            audience_description=AUDIENCES[audience],
        )
        rows.append(
            dict(domain="text", topic=f"{field}: {topic}", audience=audience, style=style,
                 template="text/v1", prompt=prompt, answer_prefix="")
        )  # fmt: skip
    return rows


def plan_code(n: int, seed: int) -> list[dict]:
    rng = random.Random(f"code-{seed}")
    rows = []
    for _ in range(n):
        concept = rng.choice(CODE_CONCEPTS)
        difficulty = rng.choice(DIFFICULTIES)
        prompt = CODE_TEMPLATE.format(concept=concept, difficulty=difficulty)
        rows.append(
            dict(domain="code", topic=concept, audience=difficulty, style="exercise",
                 template="code/exercise-v1", prompt=prompt, answer_prefix=CODE_ANSWER_PREFIX)
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
