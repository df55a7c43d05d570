"""The spaces prompt plans draw from, one per `generation.text_plan` / `generation.code_plan`.

- text `seeded`: seed passage x format x persona. Each prompt carries one real passage and asks
  for a lesson grounded on it in one of the formats of `data/templates/text-*.txt` (textbook
  section, Wikipedia-style rephrase and question-answer pairs as in WRAP and Nemotron-CC's
  rephrasing, key facts, a story), for one reader (`data/personas.yaml`, the audiences, and the
  personas the teacher added). With the 9,507 vital-article summaries generation may use (the
  rest is the fixed evaluation set, `sources.wiki_eval_set`): 9,507 x 5 x 24.
- text `topics`: topic-tree leaf x audience x style, the original plan (phi-1.5's topics; the
  tree grows with the teacher, see `pipeline.generation.topic_tree`).
- code `seeded`: standard-library function x application x difficulty (OSS-Instruct: an exercise
  inspired by real code, in the fixed exercise format curation runs).
- code `concepts`: concept x application x difficulty.
"""

from __future__ import annotations

from functools import cache

import polars as pl
import yaml

from pipeline.generation import sources, topic_tree
from pipeline.generation.prompts import Axis, Space
from pipeline.generation.seeds import DATA, data_lines, template, variations

TEXT_FORMATS = ("textbook", "wikipedia", "qa", "key-facts", "story")
TEXT_WORDS = 300  # the length a text prompt asks for
SEED_LINES = 80  # a code seed longer than this is cut (a user's corpus may hold whole files)


@cache
def shipped_personas() -> dict[str, str]:
    """Readers of seed-grounded lessons: the audiences, then `data/personas.yaml`."""
    personas = yaml.safe_load((DATA / "personas.yaml").read_text(encoding="utf-8"))
    return {**variations().audiences, **personas}


@cache
def code_applications() -> tuple[str, ...]:
    return tuple(data_lines(DATA / "code_applications.txt"))


def _safe(value: str) -> str:
    """A value id that cannot break a plan key (fields are split on '|')."""
    return value.replace("%", "%25").replace("|", "%7C")


def _words(text: str, limit: int) -> str:
    words = text.split()
    return " ".join(words[:limit]) + (" ..." if len(words) > limit else "")


def text_seeded(seeds: pl.DataFrame, source: str, personas: dict[str, str], seed_words: int = 250) -> Space:
    """Seed passage x format x persona; `seeds` in `pipeline.generation.sources`' columns."""
    by_id = {_safe(r["seed_id"]): r for r in seeds.select("seed_id", "title", "text", "category").iter_rows(named=True)}
    named = {_safe(name): (name, description) for name, description in personas.items()}

    def render(combination: dict[str, str]) -> dict:
        seed, (persona, description) = by_id[combination["seed"]], named[combination["persona"]]
        fmt = combination["format"]
        title = seed["title"] or seed["seed_id"]
        prompt = template(f"text/{fmt}").format(title=title, passage=_words(seed["text"], seed_words),
                                                persona_description=description, words=TEXT_WORDS)  # fmt: skip
        topic = f"{seed['category']}: {title}" if seed["category"] not in topic_tree.NO_CATEGORY else title
        return dict(domain="text", topic=topic, audience=persona, style=fmt, template=f"text/{fmt}", prompt=prompt,
                    answer_prefix="", seed_id=seed["seed_id"], seed_source=source)  # fmt: skip

    axes = (Axis("seed", tuple(by_id)), Axis("format", TEXT_FORMATS), Axis("persona", tuple(named)))
    return Space("text/seeded", axes, render)


def text_topics(leaves: list[tuple[str, str]]) -> Space:
    """Topic-tree leaf (field, topic) x audience x style, with the original text template."""
    by_id = {_safe(f"{field}: {topic}"): (field, topic) for field, topic in leaves}
    audiences, styles = variations().audiences, variations().styles

    def render(combination: dict[str, str]) -> dict:
        field, topic = by_id[combination["leaf"]]
        audience, style = combination["audience"], combination["style"]
        prompt = template("text/v1").format(words=TEXT_WORDS, style_description=styles[style], topic=topic,
                                            field=field, audience_description=audiences[audience])  # fmt: skip
        return dict(domain="text", topic=f"{field}: {topic}", audience=audience, style=style, template="text/v1",
                    prompt=prompt, answer_prefix="", seed_id=None, seed_source=None)  # fmt: skip

    axes = (Axis("leaf", tuple(by_id)), Axis("audience", tuple(audiences)), Axis("style", tuple(styles)))
    return Space("text/topics", axes, render)


def code_seeded(seeds: pl.DataFrame, source: str) -> Space:
    """Seed function x application x difficulty (OSS-Instruct)."""
    by_id = {_safe(r["seed_id"]): r for r in seeds.select("seed_id", "title", "text").iter_rows(named=True)}

    def render(combination: dict[str, str]) -> dict:
        seed = by_id[combination["seed"]]
        application, difficulty = combination["application"], combination["difficulty"]
        code = "\n".join(seed["text"].splitlines()[:SEED_LINES])
        prompt = template("code/oss-instruct").format(title=seed["title"] or seed["seed_id"], code=code,
                                                      difficulty=difficulty, application=application)  # fmt: skip
        return dict(domain="code", topic=seed["title"] or seed["seed_id"], audience=difficulty, style=application,
                    template="code/oss-instruct", prompt=prompt, answer_prefix=variations().code_answer_prefix,
                    seed_id=seed["seed_id"], seed_source=source)  # fmt: skip

    axes = (Axis("seed", tuple(by_id)), Axis("application", code_applications()),
            Axis("difficulty", variations().difficulties))  # fmt: skip
    return Space("code/seeded", axes, render)


def code_concepts(concepts: list[str]) -> Space:
    """Concept x application x difficulty."""
    by_id = {_safe(concept): concept for concept in concepts}

    def render(combination: dict[str, str]) -> dict:
        concept = by_id[combination["concept"]]
        application, difficulty = combination["application"], combination["difficulty"]
        prompt = template("code/exercise-v2").format(concept=concept, application=application, difficulty=difficulty)
        return dict(domain="code", topic=concept, audience=difficulty, style=application,
                    template="code/exercise-v2", prompt=prompt, answer_prefix=variations().code_answer_prefix,
                    seed_id=None, seed_source=None)  # fmt: skip

    axes = (Axis("concept", tuple(by_id)), Axis("application", code_applications()),
            Axis("difficulty", variations().difficulties))  # fmt: skip
    return Space("code/concepts", axes, render)


def text_seeds(g) -> pl.DataFrame:
    """The text seed passages `generation` (GenerationSettings) names; fails before any request."""
    return sources.open_seeds(g.text_seeds, g.text_seed_field, g.seed_split, g.seed_limit)


def code_seeds(g) -> pl.DataFrame:
    return sources.open_seeds(g.code_seeds, g.code_seed_field, g.seed_split, g.seed_limit)


def space_for(domain: str, g, tree: pl.DataFrame) -> Space:
    """The space a batch of `domain` draws from under `generation` settings `g` and the tree."""
    if domain == "text" and g.text_plan == "seeded":
        return text_seeded(text_seeds(g), g.text_seeds, topic_tree.personas(tree), g.seed_words)
    if domain == "text":
        return text_topics(topic_tree.text_leaves(tree))
    if domain == "code" and g.code_plan == "seeded":
        return code_seeded(code_seeds(g), g.code_seeds)
    if domain == "code":
        return code_concepts(topic_tree.leaves(tree, "code").sort("node_id")["name"].to_list())
    raise ValueError(f"domain = {domain!r}: must be 'code' or 'text'")
