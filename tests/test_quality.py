"""Educational value: judge prompts and score parsing, the classifier on real embeddings, versions,
and the scores on rows; the teacher as judge is exercised against the real vLLM server."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.curation.embeddings import Embedder, row_vectors
from pipeline.curation.quality_classifier import HeadStore, apply_scores, confusion_plot, features, fingerprint, train
from pipeline.curation.quality_labels import JudgePrompt, judge, label_requests, parse_score, sample_rows
from pipeline.training.replay import python_docs
from tests.conftest import TEST_API_KEY

TEXT = JudgePrompt.load("text")


@pytest.mark.parametrize(
    ("answer", "score", "reason"),
    [
        ("The extract is a clear lesson.\nEducational score: 4", 4.0, None),
        ("Justification ... **Educational score:** 3", 3.0, None),
        ("educational score = 2/5", 2.0, None),
        ("First I thought Educational score: 1, but on reflection Educational score: 3", 3.0, None),
        ("This is a good text about plants.", None, "quality_label:no_score"),
        ("Educational score: <total points>", None, "quality_label:no_score"),
        ("Educational score: 7", None, "quality_label:out_of_range"),
        ("", None, "quality_label:no_score"),
    ],
)
def test_a_score_is_read_or_the_label_is_rejected_with_why(answer, score, reason):
    assert parse_score(answer, TEXT) == (score, reason)


def test_the_shipped_prompts_load_and_a_bad_one_names_its_file(tmp_path):
    code = JudgePrompt.load("code")
    assert "learn basic coding concepts" in code.template and TEXT.name == "fineweb-edu-additive"
    assert TEXT.version != code.version
    rendered = TEXT.render("def f():\n    return 1\n" + "word " * 1000, 10)
    assert "def f():\n    return 1" in rendered and rendered.count("word") == 7
    bad = tmp_path / "judge.yaml"
    bad.write_text("name: x\ntemplate: no placeholder\nscore_pattern: 'score (\\d)'\n")
    with pytest.raises(ValueError, match=r"judge\.yaml: template has no \{text\}"):
        JudgePrompt.load("text", str(bad))
    with pytest.raises(ValueError, match="curation.quality.prompt_code"):
        JudgePrompt.load("code", str(tmp_path / "missing.yaml"))


def test_the_sample_is_seeded_and_only_kept_rows():
    frame = pl.DataFrame({"id": [f"r{i}" for i in range(30)], "status": ["kept", "rejected"] * 15})
    first, again = sample_rows(frame, 8, seed=3), sample_rows(frame.reverse(), 8, seed=3)
    assert first["id"].to_list() == again["id"].to_list() and (first["status"] == "kept").all()
    assert sample_rows(frame, 100, seed=3).height == 15 and sample_rows(frame, 0, seed=3).height == 0


CHATTER = (Path(__file__).parent / "data" / "chatter.txt").read_text().splitlines()  # ads and small talk


@pytest.fixture(scope="module")
def graded():
    """Reference pages (graded 4) and ads and chatter (graded 1): the head must learn the
    difference from the embeddings alone."""
    rng = np.random.default_rng(0)
    pages = [p for p in python_docs() if len(p.split()) > 80][:40]
    chatter = [" ".join(rng.choice(CHATTER, size=6, replace=False)) for _ in pages]
    texts, scores = pages + chatter, [4.0] * len(pages) + [1.0] * len(chatter)
    embedder = Embedder("all-MiniLM-L6-v2")
    return embedder, embedder(texts), np.array(scores)


def test_the_head_learns_the_grades_better_than_their_mean(graded, tmp_path):
    embedder, vectors, y = graded
    x = features(vectors, ["text"] * len(y))
    head = train(x, y, embedder.identity, threshold=3.0)
    held = head.held_out
    assert held.labels == len(y)
    assert held.mae < 0.5 * held.baseline_mae  # held-out: each label predicted by a head that never saw it
    assert held.f1 > 0.9 and held.spearman > 0.7
    assert sum(map(sum, held.confusion)) == len(y)
    predicted = head.predict(x)
    assert predicted.min() >= 0 and predicted.max() <= 5

    store = HeadStore(tmp_path / "classifier")
    labels = pl.DataFrame({"id": [str(i) for i in range(len(y))], "score": y})
    head.fingerprint = fingerprint(labels, embedder.identity, 3.0)
    first = store.save(head, labels, confusion_plot(held, "test"))
    assert first.name == "v0001" and (first / "confusion.png").stat().st_size > 1000
    loaded = HeadStore.load(first)
    assert np.allclose(loaded.predict(x), predicted) and loaded.held_out == held
    assert json.loads((first / "head.json").read_text())["version"] == "v0001"
    second = store.save(train(x[:-4], y[:-4], embedder.identity, 3.0), labels.head(-4), confusion_plot(held, "t"))
    assert second.name == "v0002" and store.latest().version == "v0002" and first.exists()


def test_too_few_labels_is_an_error_that_says_what_to_change(graded):
    embedder, vectors, y = graded
    with pytest.raises(ValueError, match="curation.quality.sample"):
        train(features(vectors[:5], ["text"] * 5), y[:5], embedder.identity, 3.0)


def test_kept_rows_get_scores_and_min_quality_rejects_with_the_reason():
    frame = pl.DataFrame({"id": ["a", "b", "c"], "status": ["kept", "kept", "rejected"],
                          "reason": [None, None, "dedup:exact"], "quality_score": [None, None, None]},
                         schema_overrides={"quality_score": pl.Float64})  # fmt: skip
    kept_all = apply_scores(frame, {"a": 4.2, "b": 1.5}, min_quality=0)
    assert kept_all["quality_score"].to_list() == [4.2, 1.5, None] and kept_all["status"].to_list()[:2] == ["kept"] * 2
    strict = apply_scores(frame, {"a": 4.2, "b": 1.5}, min_quality=3)
    assert strict["status"].to_list() == ["kept", "rejected", "rejected"]
    assert strict["reason"].to_list() == [None, "quality:educational_value", "dedup:exact"]
    with pytest.raises(ValueError, match="no embedding"):
        apply_scores(frame, {"a": 4.2}, min_quality=0)


@pytest.mark.integration
def test_the_teacher_grades_through_the_journal_and_resumes(teacher_url, tmp_path):
    from pipeline.settings import resolve
    from pipeline.teacher.client import TeacherClient

    pages = python_docs()[:6]
    rows = pl.DataFrame({"id": [f"p{i}" for i in range(6)], "domain": ["text"] * 6, "batch": ["b"] * 6,
                         "text": pages, "status": ["kept"] * 6})  # fmt: skip
    prompts = {"text": TEXT}
    teacher = resolve("demo").teacher
    requests = label_requests(rows, prompts, teacher.model, 200, seed=0)
    journal = tmp_path / "judge.jsonl"
    client = TeacherClient([teacher_url], teacher.model, concurrency=8, api_key=TEST_API_KEY)
    labels, stats = judge(requests, prompts, client, journal, teacher.model)
    assert stats.requested == 6 and labels.height == 6
    assert len(journal.read_text().splitlines()) == 6
    for label in labels.iter_rows(named=True):  # every answer is a score in range, or a reason why not
        assert (label["status"] == "labeled") == (label["score"] is not None)
        assert label["status"] == "labeled" or label["reason"].startswith("quality_label:")
        assert label["score"] is None or 0 <= label["score"] <= 5
        assert label["score"] == parse_score(label["answer"], TEXT)[0]
    again, resumed = judge(requests, prompts, None, journal, teacher.model)  # no teacher needed now
    assert resumed.resumed == 6 and again.equals(labels)


def test_row_vectors_feed_the_features_in_order(graded):
    embedder, vectors, _ = graded
    column = pl.Series(vectors[:3], dtype=pl.Array(pl.Float32, embedder.dimensions))
    frame = pl.DataFrame({"id": ["x", "x", "y"], "passage": [0, 1, 0], "vector": column})
    ids, matrix = row_vectors(frame)
    assert ids == ["x", "y"] and features(matrix, ["code", "text"])[:, -1].tolist() == [1.0, 0.0]
