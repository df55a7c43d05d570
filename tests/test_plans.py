"""Plans that never repeat, seed-grounded spaces, the topic tree and personas the teacher grows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from pipeline.generation import prompts, spaces, topic_tree
from pipeline.generation.sources import SeedSourceError
from pipeline.settings import resolve
from tests.conftest import TEST_API_KEY

ROOT = Path(__file__).resolve().parents[1]
MODEL = "SmolLM2-135M-Instruct"
SAMPLING = {"temperature": 0.8, "top_p": 0.95, "max_tokens": 64}


def space(domain: str = "text", **generation) -> prompts.Space:
    g = resolve("demo", {"generation": {"code_plan": "seeded", **generation}}).generation
    return spaces.space_for(domain, g, topic_tree.shipped_tree(personas=spaces.shipped_personas()))


def plan(space_: prompts.Space, ledger: prompts.PlanLedger, batch: str, n: int, **kw) -> prompts.Plan:
    return prompts.plan_batch(space_, n, prompts.batch_seed(0, batch), SAMPLING, MODEL, ledger, batch, **kw)


@pytest.mark.parametrize("domain", ["text", "code"])
def test_no_prompt_repeats_across_three_batches(tmp_path, domain):
    seeded = space(domain)
    ledger = prompts.PlanLedger(tmp_path, domain)
    plans = [plan(seeded, ledger, f"2026-11-2{day}|{domain}", 300) for day in range(3)]
    keys = [r["plan_key"] for p in plans for r in p.rows]
    texts = [r["prompt"] for p in plans for r in p.rows]
    assert len(keys) == len(set(keys)) == len(set(texts)) == 900
    assert all(r["seed_id"] and r["seed_source"] for p in plans for r in p.rows)  # lineage
    assert plans[2].left_before == seeded.size - 600


def test_a_re_planned_batch_asks_the_same_prompts_after_later_batches(tmp_path):
    seeded = space("text")
    ledger = prompts.PlanLedger(tmp_path, "text")
    first = plan(seeded, ledger, "2026-11-20|text", 50)
    plan(seeded, ledger, "2026-11-21|text", 50)
    again = plan(seeded, ledger, "2026-11-20|text", 50)
    assert [r["id"] for r in again.rows] == [r["id"] for r in first.rows]  # the journal's answers stay valid


def test_a_spent_space_fails_saying_what_is_left_unless_repeats_are_allowed(tmp_path):
    small = space("text", seed_limit=2)  # 2 passages x 5 formats x 24 personas
    assert small.size == 240
    ledger = prompts.PlanLedger(tmp_path, "text")
    plan(small, ledger, "2026-11-20|text", 100)
    plan(small, ledger, "2026-11-21|text", 100)
    with pytest.raises(prompts.PlanExhausted, match=r"text/seeded: 40 distinct prompts are left of 240.* asks for 100"):
        plan(small, ledger, "2026-11-22|text", 100)
    allowed = plan(small, ledger, "2026-11-22|text", 100, allow_repeats=True)
    assert allowed.repeats == 60 and len(allowed.rows) == 100
    assert len({r["plan_key"] for r in allowed.rows[:40]}) == 40  # the unused ones first


def test_two_batches_planned_at_once_draw_different_prompts(tmp_path):
    planner = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from pipeline.generation import prompts, spaces, topic_tree
        from pipeline.settings import resolve
        g = resolve("demo", {{"generation": {{"seed_limit": 60}}}}).generation
        space = spaces.space_for("text", g, topic_tree.shipped_tree(personas=spaces.shipped_personas()))
        ledger = prompts.PlanLedger(Path({str(tmp_path)!r}), "text")
        batch = sys.argv[-1]
        prompts.plan_batch(space, 2000, prompts.batch_seed(0, batch), {{}}, "m", ledger, batch)
        """)  # fmt: skip
    procs = [subprocess.Popen([sys.executable, "-c", planner, f"2026-11-2{i}|text"], cwd=ROOT, stderr=subprocess.PIPE,
                              text=True) for i in range(3)]  # fmt: skip
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    keys = pl.concat([pl.read_parquet(f) for f in (tmp_path / "text").glob("*.parquet")])["key"]
    assert keys.len() == 6000 and keys.n_unique() == 6000  # of 7,200 combinations, none twice


def test_seeds_from_a_parquet_file_and_a_datasets_folder(tmp_path):
    from datasets import Dataset

    passages = {"id": ["a", "b", "c"], "body": ["Tides rise twice a day.", "Bees dance.", "Iron rusts in water."]}
    pl.DataFrame(passages).write_parquet(tmp_path / "mine.parquet")
    Dataset.from_dict(passages).save_to_disk(str(tmp_path / "mine_ds"))
    for source in (tmp_path / "mine.parquet", tmp_path / "mine_ds"):
        seeded = space("text", text_seeds=str(source), text_seed_field="body")
        rows = prompts.plan_batch(seeded, 12, 1, SAMPLING, MODEL, None, "b").rows
        assert {r["seed_source"] for r in rows} == {str(source)}
        assert {r["seed_id"].rsplit(":", 1)[1] for r in rows} <= {"a", "b", "c"}
        assert all(any(p in r["prompt"] for p in passages["body"]) for r in rows)
    with pytest.raises(SeedSourceError, match=r"mine\.parquet.*'text'"):
        space("text", text_seeds=str(tmp_path / "mine.parquet"))  # no column `text`: fails before any request


def test_plan_stats_meets_the_phi_profiles_needs():
    command = [sys.executable, "-m", "pipeline.generation.plan_stats", "--profile", "phi-1.5", "--days", "2"]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = {line["domain"]: line for line in map(json.loads, out.stdout.splitlines())}
    assert set(lines) == {"code", "text"}
    for domain, possible in (("text", 1_000_000), ("code", 100_000)):
        assert lines[domain]["requests"] == 20_000
        assert lines[domain]["distinct_prompts"] / lines[domain]["requests"] >= 0.99
        assert lines[domain]["possible_prompts"] >= possible


@pytest.fixture(scope="module")
def gatekeeper():
    from pipeline.curation.embeddings import Embedder
    from pipeline.curation.semantic import SemanticExamIndex, exam_items

    embedder = Embedder("all-MiniLM-L6-v2")
    return embedder, exam_items()[1], SemanticExamIndex.build(embedder).vectors


def test_an_exam_question_or_a_same_meaning_topic_is_refused(gatekeeper):
    from pipeline.exam.data import read_mmlu

    embedder, questions, vectors = gatekeeper
    gate = topic_tree.Gatekeeper(embedder, questions, vectors)
    gate.know(["photosynthesis in plants"])
    long_question = next(i.question for i in read_mmlu() if 8 <= len(i.question.split()) <= 12)
    assert gate.verdict(long_question) == "exam_copy"
    assert gate.verdict("Photosynthesis in plants!") == "duplicate"
    assert gate.verdict("plant photosynthesis") == "same_meaning"
    assert gate.verdict("the water cycle in deserts") is None


@pytest.mark.integration
def test_the_teacher_grows_the_tree_and_personas_with_lineage(teacher_url, tmp_path, gatekeeper):
    from pipeline.teacher.client import TeacherClient

    embedder, questions, vectors = gatekeeper
    client = TeacherClient([teacher_url], MODEL, concurrency=4, api_key=TEST_API_KEY)
    tree = topic_tree.shipped_tree(personas=spaces.shipped_personas())
    before = topic_tree.leaves(tree, "text").height
    grown, stats = topic_tree.grow_topics(tree, before + 3, lambda: client, tmp_path / "tree.jsonl",
                                          topic_tree.Gatekeeper(embedder, questions, vectors), MODEL)  # fmt: skip
    new = grown.filter(pl.col("source") == "teacher")
    assert stats.requested >= 1 and new.height == stats.added >= 1, stats
    assert set(new["parent_id"]) <= set(tree["node_id"]) and set(new["teacher"]) == {MODEL}
    assert all("subtopics" in p for p in new["prompt"]) and (new["depth"] >= 1).all()
    # grown again from the journal alone: the same tree, no teacher
    replayed, _ = topic_tree.grow_topics(tree, before + 3, None, tmp_path / "tree.jsonl",
                                         topic_tree.Gatekeeper(embedder, questions, vectors), MODEL)  # fmt: skip
    assert replayed.equals(grown)

    seeds = spaces.text_seeds(resolve("demo", {"generation": {"seed_limit": 30}}).generation)
    gate = topic_tree.Gatekeeper(embedder, questions, vectors, max_words=40)
    people, stats = topic_tree.grow_personas(tree, 2, seeds, lambda: client, tmp_path / "people.jsonl", gate, MODEL)
    added = people.filter((pl.col("kind") == "persona") & (pl.col("source") == "teacher"))
    assert added.height == stats.added >= 1, stats
    assert set(topic_tree.personas(people)) >= set(added["name"])
    assert os.path.getsize(tmp_path / "people.jsonl") > 0
