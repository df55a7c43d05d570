"""General-knowledge tasks read with `datasets`: each declaration against a few rows written in
its hub data set's exact schema, the prompts the harness would build, and the exam around them."""

import json

import polars as pl
import pytest

from pipeline.exam.knowledge import load_rows, row_requests, sit_knowledge_task
from pipeline.exam.models import ExamModel
from pipeline.exam.tasks import tasks
from pipeline.settings import ConfigError, resolve
from tests.test_exam import tiny  # noqa: F401 - the fixture

ARC = {"id": "Mercury_7175875", "question": "An astronomer observes that a planet rotates faster after a "
       "meteorite impact. Which is the most likely effect of this increase in rotation?",
       "choices": {"text": ["Planetary density will decrease.", "Planetary years will become longer.",
                            "Planetary days will become shorter.", "Planetary gravity will become stronger."],
                   "label": ["A", "B", "C", "D"]}, "answerKey": "C"}  # fmt: skip
ROWS = {
    "arc_easy": [ARC, {**ARC, "id": "x2", "answerKey": "1", "choices": {"text": ["yes", "no"], "label": ["1", "2"]}}],
    "arc_challenge": [ARC],
    "hellaswag": [{"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.",
                   "ctx_b": "he", "ctx": "A man is sitting on a roof. he", "endings": [
                       "is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                       "is holding a rubik's cube.", "starts pulling up roofing [title] on a roof."],
                   "source_id": "activitynet~v_-JhWjGDPHMY", "split": "val", "split_type": "indomain",
                   "label": "3"}],
    "piqa": [{"goal": "When boiling butter, when it's ready, you can",
              "sol1": "Pour it onto a plate", "sol2": "Pour it into a jar", "label": 1}],
    "winogrande": [{"sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
                    "option1": "Sarah", "option2": "Maria", "answer": "1"}],
    "openbookqa": [{"id": "7-980", "question_stem": "The sun is responsible for",
                    "choices": {"text": ["puppies learning new tricks", "children growing up and getting old",
                                         "flowers wilting in a vase", "plants sprouting, blooming and wilting"],
                                "label": ["A", "B", "C", "D"]}, "answerKey": "D"}],
    "boolq": [{"question": "do iran and afghanistan speak the same language",
               "passage": "Persian language -- Persian is a Western Iranian language.", "idx": 0, "label": 1}],
}  # fmt: skip


def write_rows(tmp_path, name: str) -> str:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS[name]))
    return str(path)


def test_each_task_builds_the_harness_prompt_from_a_hub_row(tmp_path):
    built = {name: row_requests(tasks()[name], load_rows(tasks()[name], write_rows(tmp_path, name))[0])
             for name in ROWS}  # fmt: skip
    requests, texts, target = built["arc_easy"]
    assert requests[0].context == f"Question: {ARC['question']}\nAnswer:" and target == 2
    assert [r.continuation for r in requests] == [" " + t for t in texts] and texts == ARC["choices"]["text"]
    requests, _, target = built["hellaswag"]
    assert requests[0].context == "Roof shingle removal: A man is sitting on a roof. He" and target == 3
    assert requests[3].continuation == " starts pulling up roofing. on a roof."
    requests, _, target = built["piqa"]
    assert requests[1].context == "Question: When boiling butter, when it's ready, you can\nAnswer:" and target == 1
    assert [r.continuation for r in requests] == [" Pour it onto a plate", " Pour it into a jar"]
    requests, texts, target = built["winogrande"]  # partial scoring: the option is in the context
    assert [r.context for r in requests] == ["Sarah was a much better surgeon than Maria so Sarah",
                                             "Sarah was a much better surgeon than Maria so Maria"]  # fmt: skip
    assert {r.continuation for r in requests} == {" always got the harder cases."} and target == 0
    requests, _, target = built["openbookqa"]
    assert requests[0].context == "The sun is responsible for" and target == 3
    requests, _, target = built["boolq"]
    assert requests[0].context == ("Persian language -- Persian is a Western Iranian language.\n"
                                   "Question: do iran and afghanistan speak the same language?\nAnswer:")  # fmt: skip
    assert [r.continuation for r in requests] == [" no", " yes"] and target == 1
    assert built["arc_challenge"][0][0].context == built["arc_easy"][0][0].context


def test_a_task_reports_acc_and_acc_norm_from_the_same_scores(tiny, tmp_path):  # noqa: F811
    model, tokenizer = tiny
    task = tasks()["arc_easy"]
    rows = load_rows(task, write_rows(tmp_path, "arc_easy"))
    results = sit_knowledge_task(ExamModel(model, tokenizer, model), task, rows, 4)
    assert sorted(set(results["benchmark"])) == ["arc_easy", "arc_easy_norm"] and results.height == 4
    assert (results["correct"] == (results["predicted"] == results["target"])).all()
    for row in results.iter_rows(named=True):
        scores = [float(s) for s in row["detail"].split(", ")]
        assert int(row["predicted"]) == max(range(len(scores)), key=scores.__getitem__)


def test_the_exam_sits_chosen_tasks_from_local_files_and_a_bad_one_is_named(tiny, tmp_path, monkeypatch):  # noqa: F811
    import datasets

    from pipeline.exam.sitting import sit_exam

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # as on these machines, without waiting on timeouts
    model, tokenizer = tiny
    data = {"piqa": write_rows(tmp_path, "piqa"), "boolq": write_rows(tmp_path, "boolq")}
    cfg = resolve("demo", {"exam": {"mmlu_limit": 4, "humaneval_limit": 1, "max_new_tokens": 8,
                                    "tasks": ["piqa", "boolq"], "task_data": data}}).exam  # fmt: skip
    results = sit_exam(ExamModel(model, tokenizer, model), cfg)
    assert results.group_by("benchmark").len().sort("benchmark").rows() == [
        ("boolq", 1), ("humaneval", 1), ("mmlu", 4), ("mmlu_continuation", 4), ("mmlu_continuation_norm", 4),
        ("piqa", 1), ("piqa_norm", 1)]  # fmt: skip
    assert resolve("demo").exam.tasks == []  # the offline default: MMLU and HumanEval only
    with pytest.raises(ConfigError, match=r"exam.tasks: 'sciq' is not a declared datasets task \(arc_challenge"):
        resolve("demo", {"exam": {"tasks": ["sciq"]}})
    with pytest.raises(ValueError, match=r"exam task piqa: cannot load '.*missing.jsonl'"):
        load_rows(tasks()["piqa"], str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match=r"exam task boolq: cannot load 'aps/super_glue'"):
        load_rows(tasks()["boolq"])  # the hub is not reachable here


def test_the_forgetting_report_covers_every_task_run():
    from pipeline.exam.scores import forgetting

    student = pl.DataFrame({"benchmark": ["piqa"] * 12, "subject": ["piqa"] * 12, "item": [str(i) for i in range(12)],
                            "correct": [False] * 12})  # fmt: skip
    reference = student.with_columns(correct=pl.lit(True))
    report = forgetting(student, reference, threshold=0.05)
    assert report.rows(named=True)[0]["subject"] == "piqa" and report["flagged"].to_list() == [True]
