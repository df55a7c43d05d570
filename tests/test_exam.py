"""The exam engine against hand-computed log-likelihoods on a tiny model."""

import json

import polars as pl
import pytest
import torch

from pipeline.exam.data import read_mmlu
from pipeline.exam.humaneval import truncate_completion
from pipeline.exam.loglikelihood import Question, Request, _plan_passes, choice_scores, loglikelihoods
from pipeline.exam.mmlu import mmlu, pick_items, requests_for, shots_for
from pipeline.exam.models import ExamModel
from pipeline.exam.scores import forgetting, summarize
from pipeline.exam.tasks import tasks, tasks_for

CLOZE, MULTIPLE_CHOICE = tasks()["mmlu_cloze"], tasks()["mmlu_mc"]


@pytest.fixture(scope="module")
def tiny(embedded_teacher_dir):
    from transformers import AutoTokenizer, PhiConfig, PhiForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(embedded_teacher_dir)
    torch.manual_seed(0)
    config = PhiConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512)  # fmt: skip
    return PhiForCausalLM(config).eval(), tokenizer


def by_hand(model, tokenizer, request: Request) -> float:
    """One unpadded forward pass per request, summing the continuation's log-probabilities."""
    context = tokenizer(request.context, add_special_tokens=False).input_ids
    continuation = tokenizer(request.continuation, add_special_tokens=False).input_ids
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    return sum(logprobs[len(context) - 1 + i, token].item() for i, token in enumerate(continuation))


def test_batched_scores_equal_hand_computed_ones(tiny):
    model, tokenizer = tiny
    items = read_mmlu()[:6]
    requests = [r for item in items for r in requests_for(MULTIPLE_CHOICE, item, [])]
    requests += [r for item in items for r in requests_for(CLOZE, item, [])]
    # the harness' templates start every item of a subject with its description line: read once
    pool = {items[0].subject: [i for i in read_mmlu() if i.subject == items[0].subject][:40]}
    for task in (tasks()["mmlu"], tasks()["mmlu_continuation"]):
        requests += [r for item in items for r in requests_for(task, item, shots_for(item, pool, 2, seed=0))]
        requests += [r for item in items for r in requests_for(task, item, [])]
    assert {item.subject for item in items} == set(pool) and requests[-1].shared
    batched = loglikelihoods(model, tokenizer, requests, batch_size=5)
    for request, score in zip(requests, batched, strict=True):
        assert score == pytest.approx(by_hand(model, tokenizer, request), abs=1e-4)
    passes = _plan_passes(model, tokenizer, requests)
    assert sum(p.prefix > 0 for p in passes) == 4 * len(items)  # both tasks, with shots and without


def test_bf16_scores_are_rechecked_in_fp32_where_two_choices_are_close(tiny):
    import copy

    model, tokenizer = tiny
    fast = copy.deepcopy(model).to(torch.bfloat16)
    items = read_mmlu()[:24]
    questions = [Question(requests_for(task, item, []), [len(c) for c in item.choices])
                 for task in (CLOZE, MULTIPLE_CHOICE) for item in items]  # fmt: skip
    precise = choice_scores(ExamModel(model, tokenizer, model), questions, batch_size=8)
    bf16 = choice_scores(ExamModel(fast, tokenizer, fast), questions, batch_size=8)
    assert bf16 != precise  # bf16 moves the scores
    # an unbounded margin re-checks every item: the fp32 scores, whatever bf16 said
    assert choice_scores(ExamModel(model, tokenizer, fast, float("inf")), questions, batch_size=8) == precise
    # this tiny model's bf16 scores move by < 0.005 nats; its letters lie 0.007-0.07 apart
    mixed = choice_scores(ExamModel(model, tokenizer, fast, 0.02), questions, batch_size=8)
    rechecked = sum(m == p for m, p in zip(mixed, precise, strict=True))
    assert 0 < rechecked < len(questions)  # some items were close, not all
    for question, m, p in zip(questions, mixed, precise, strict=True):  # the answers are fp32's, by either metric
        for scores in (m, p):
            assert len(scores) == len(question.requests)
        assert max(range(4), key=m.__getitem__) == max(range(4), key=p.__getitem__)
        norm = [[s / n for s, n in zip(side, question.lengths, strict=True)] for side in (m, p)]
        assert max(range(4), key=norm[0].__getitem__) == max(range(4), key=norm[1].__getitem__)


def test_accuracy_is_exactly_what_the_scores_say(tiny):
    model, tokenizer = tiny
    items = pick_items(read_mmlu(), 12, seed=1)
    results = mmlu(ExamModel(model, tokenizer, model), items, read_mmlu(), shots=0, batch_size=8, seed=0)
    expected = {}
    for task in tasks_for("mmlu"):
        for metric in task.metrics:
            correct = 0
            for item in items:
                scores = [by_hand(model, tokenizer, r) for r in requests_for(task, item, [])]
                if metric == "acc_norm":
                    scores = [s / len(item.choices[c]) for c, s in enumerate(scores)]
                correct += max(range(4), key=lambda c: scores[c]) == item.answer
            name = task.name if metric == task.metric else f"{task.name}_norm"
            expected[f"{name}_acc"] = correct / len(items)
    assert set(expected) == {"mmlu_cloze_acc", "mmlu_mc_acc", "mmlu_acc", "mmlu_continuation_acc",
                             "mmlu_continuation_norm_acc", "mmlu_lighteval_cloze_acc",
                             "mmlu_lighteval_cloze_norm_acc"}  # fmt: skip
    summary = summarize(results)
    for key, value in expected.items():
        assert summary[key] == value


def test_the_harness_mmlu_templates_are_its_own_character_for_character():
    """What lm-evaluation-harness 0.4.13 builds for mmlu_<subject> and mmlu_<subject>_continuation:
    description + doc_to_text (+ shots), then target_delimiter " " + the choice."""
    from pipeline.exam.data import MmluItem

    item = MmluItem("mmlu/x/1", "high school biology", "  Which organelle makes ATP?\n", ("Nucleus", "Mitochondrion",
                    "Ribosome", "Golgi body"), 1)  # fmt: skip
    shot = MmluItem("mmlu/x/2", "high school biology", "What carries oxygen?", ("Plasma", "Platelets", "Red cells",
                    "White cells"), 2)  # fmt: skip
    letters = requests_for(tasks()["mmlu"], item, [shot])
    assert letters[0].context == (
        "The following are multiple choice questions (with answers) about high school biology.\n\n"
        "What carries oxygen?\nA. Plasma\nB. Platelets\nC. Red cells\nD. White cells\nAnswer: C\n\n"
        "Which organelle makes ATP?\nA. Nucleus\nB. Mitochondrion\nC. Ribosome\nD. Golgi body\nAnswer:"
    )
    assert [r.continuation for r in letters] == [" A", " B", " C", " D"]
    cloze = requests_for(tasks()["mmlu_continuation"], item, [])
    assert cloze[0].context == ("The following are questions (with answers) about high school biology.\n\n"
                                "Question: Which organelle makes ATP?\nAnswer:")  # fmt: skip
    assert [r.continuation for r in cloze] == [" Nucleus", " Mitochondrion", " Ribosome", " Golgi body"]
    assert tasks()["mmlu_continuation"].metrics == ("acc", "acc_norm") and tasks()["mmlu"].metrics == ("acc",)
    lighteval = requests_for(tasks()["mmlu_lighteval_cloze"], item, [])  # SmolLM2's reported formulation
    assert lighteval[0].context == ("The following are questions about high school biology.\n"
                                    "Question:   Which organelle makes ATP?\n\nAnswer:")  # fmt: skip


def test_a_model_that_always_answers_b_scores_the_share_of_b(tiny):
    model, tokenizer = tiny
    (b_token,) = tokenizer(" B", add_special_tokens=False).input_ids
    items = pick_items(read_mmlu(), 40, seed=2)
    with torch.no_grad():
        model.lm_head.bias[b_token] += 1e4  # every position now prefers " B" by far
    try:
        results = mmlu(ExamModel(model, tokenizer, model), items, read_mmlu(), shots=0, batch_size=16, seed=0)
    finally:
        with torch.no_grad():
            model.lm_head.bias[b_token] -= 1e4
    mc = results.filter(results["benchmark"] == "mmlu_mc")
    assert set(mc["predicted"]) == {"B"}
    assert summarize(results)["mmlu_mc_acc"] == sum(i.answer == 1 for i in items) / len(items)


def test_shots_come_from_the_same_subject_and_never_the_item():
    items = read_mmlu()
    pool = {}
    for item in items:
        pool.setdefault(item.subject, []).append(item)
    for item in pick_items(items, 300, seed=3):
        shots = shots_for(item, pool, 5, seed=0)
        assert len(shots) == 5
        assert all(s.subject == item.subject and s.id != item.id for s in shots)
        assert shots == shots_for(item, pool, 5, seed=0)  # reproducible


def test_pick_items_spreads_over_subjects():
    picked = pick_items(read_mmlu(), 57 * 2, seed=0)
    subjects = {}
    for item in picked:
        subjects[item.subject] = subjects.get(item.subject, 0) + 1
    assert len(subjects) == 57 and set(subjects.values()) == {2}


def test_malformed_exam_file_names_the_line(tmp_path):
    good = {"question": "q", "answer_a": "a", "answer_b": "b", "answer_c": "c", "answer_d": "d",
            "correct_answer": "A", "topic": "t"}  # fmt: skip
    path = tmp_path / "mmlu.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "correct_answer": "E"}) + "\n")
    with pytest.raises(ValueError, match=r"mmlu.jsonl:2: .*correct_answer"):
        read_mmlu(path)
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"mmlu.jsonl:2: malformed"):
        read_mmlu(path)
    bad = dict(good)
    del bad["answer_c"]
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"mmlu.jsonl:1: .*answer_c"):
        read_mmlu(path)


def test_humaneval_completion_is_cut_at_the_next_top_level_statement():
    text = "    return x + 1\n\n\ndef other():\n    pass\n"
    assert truncate_completion(text) == "    return x + 1\n\n"


def test_forgetting_report_flags_only_significant_drops():
    import polars as pl

    def results(correct_by_subject: dict[str, list[bool]]) -> pl.DataFrame:
        return pl.DataFrame([
            {"benchmark": "mmlu_cloze", "item": f"{s}/{i}", "subject": s, "predicted": "A", "target": "A",
             "correct": c, "detail": ""}
            for s, values in correct_by_subject.items() for i, c in enumerate(values)
        ])  # fmt: skip

    teacher = results({"anatomy": [True] * 30, "virology": [True, False] * 15, "law": [True, True, False]})
    student = results({"anatomy": [True] * 10 + [False] * 20,  # a clear drop: 20 of 30 lost
                       "virology": [False, True] * 15,  # as many won as lost: no clear change
                       "law": [False, False, False]})  # everything lost, but 3 items say little  # fmt: skip
    report = {r["subject"]: r for r in forgetting(student, teacher, threshold=0.1, min_items=10).iter_rows(named=True)}
    assert report["anatomy"]["delta"] == pytest.approx(-20 / 30)
    assert report["anatomy"]["delta_high"] < 0 and report["anatomy"]["flagged"]
    assert report["virology"]["delta"] == 0 and report["virology"]["delta_low"] < 0 < report["virology"]["delta_high"]
    assert report["virology"]["verdict"] == "no clear change" and not report["virology"]["flagged"]
    assert report["law"]["verdict"] == "too few items (< 10)" and not report["law"]["flagged"]


def test_the_paired_bootstrap_matches_the_normal_interval_on_a_known_case():
    import numpy as np

    from pipeline.exam.intervals import paired_bootstrap

    differences = np.array([1.0, 0.0] * 200)  # mean 0.5, standard error 0.5 / sqrt(400) = 0.025
    low, high = paired_bootstrap(differences, resamples=4000, seed=1)
    assert low == pytest.approx(0.5 - 1.96 * 0.025, abs=0.006) and high == pytest.approx(0.5 + 1.96 * 0.025, abs=0.006)
    assert paired_bootstrap(np.full(25, -1.0)) == (-1.0, -1.0)


def test_windows_of_one_document_are_resampled_together():
    """25 documents of 4 identical windows each: 25 independent values, not 100, so the clustered
    interval is the normal one of 25 means, twice as wide as treating the windows as independent."""
    import numpy as np

    from pipeline.exam.intervals import mean_interval

    per_document = np.random.default_rng(3).normal(0, 1, 25)
    windows, documents = np.repeat(per_document, 4), np.repeat(np.arange(25), 4)
    low, high = mean_interval(windows, resamples=4000, seed=1, clusters=documents)
    expected = 2 * 1.96 * per_document.std() / np.sqrt(25)
    assert high - low == pytest.approx(expected, rel=0.1)
    naive_low, naive_high = mean_interval(windows, resamples=4000, seed=1)
    assert (high - low) / (naive_high - naive_low) == pytest.approx(2.0, rel=0.15)


def test_a_right_completion_passes_humaneval_and_a_wrong_one_fails():
    from pipeline.exam.data import read_humaneval
    from pipeline.exam.humaneval import score_completions

    problems = read_humaneval()[:3]
    right = score_completions(problems, [p.canonical_solution for p in problems], timeout_s=10)
    assert right["correct"].to_list() == [True, True, True]
    assert right["detail"].to_list() == ["passed"] * 3
    wrong = score_completions(problems, ["    return None\n"] * 3, timeout_s=10)
    assert not any(wrong["correct"]) and all(d.startswith("failed") for d in wrong["detail"])


def test_humaneval_samples_give_pass_at_k_per_problem(tiny):
    from pipeline.exam.data import read_humaneval
    from pipeline.exam.humaneval import humaneval

    model, tokenizer = tiny
    problems = read_humaneval()[:2]
    results = humaneval(model, tokenizer, problems, max_new_tokens=8, batch_size=4, timeout_s=10, samples=3,
                        ks=(1, 2, 10))  # fmt: skip
    assert results.group_by("benchmark").len().sort("benchmark").rows() == [
        ("humaneval", 2), ("humaneval_pass@1", 2), ("humaneval_pass@2", 2)]  # k = 10 > 3 samples: not reported
    sampled = results.filter(pl.col("benchmark") == "humaneval_pass@1")
    assert sampled["detail"].to_list() == ["n=3, c=0"] * 2 and sampled["score"].to_list() == [0.0, 0.0]


def test_heldout_perplexity_scores_every_target_and_weighs_tokens_equally(tiny, tmp_path):
    import math

    import numpy as np
    import torch.nn.functional as F

    from pipeline.exam.perplexity import heldout_perplexity
    from trainers.data import PackedTokens, write_meta

    model, tokenizer = tiny
    seq_len, windows = 16, 11  # batches of 4: 4 + 4 + 3 windows
    tokens = np.random.default_rng(0).integers(0, len(tokenizer), windows * seq_len + 1)
    tokens.astype(np.uint16).tofile(tmp_path / "valid-text.bin")
    write_meta(tmp_path, "", len(tokenizer), 0, 0, {"valid-text": {"tokens": int(tokens.size), "documents": 1}})
    total, count = 0.0, 0
    for window in PackedTokens(tmp_path, "valid-text", seq_len, seed=0).next_batch(windows):
        ids = torch.from_numpy(window)
        with torch.no_grad():
            logits = model(ids[None, :-1]).logits[0]
        total += F.cross_entropy(logits.float(), ids[1:], reduction="sum").item()
        count += seq_len
    expected = math.exp(total / count)
    assert heldout_perplexity(model, tmp_path, "valid-text", seq_len, batch_size=4) == pytest.approx(expected, rel=1e-5)
    assert heldout_perplexity(model, tmp_path, "valid-code", seq_len) is None  # no such slice


@pytest.mark.integration
def test_the_exam_cli_sits_any_model_folder(tiny, tmp_path):
    import subprocess
    import sys

    import polars as pl

    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    out = tmp_path / "results.parquet"
    run = subprocess.run([sys.executable, "-m", "pipeline.exam", str(tmp_path / "model"), "--profile", "demo",
                          "--mmlu-limit", "6", "--humaneval-limit", "1", "--max-new-tokens", "8", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout[run.stdout.index("{"):])
    assert (summary["mmlu_items"], summary["mmlu_continuation_norm_items"], summary["humaneval_items"]) == (6, 6, 1)
    # the demo profile's `auto` on a CPU: fp32, with choices in bf16 where the CPU computes it natively
    from trainers.config import native_bf16_cpu

    native = "torch.bfloat16 (re-checked in torch.float32)"
    assert summary["dtype"] == (native if native_bf16_cpu() else "torch.float32")
    results = pl.read_parquet(out)
    assert results.height == 19
    assert set(results["benchmark"]) == {"mmlu", "mmlu_continuation", "mmlu_continuation_norm", "humaneval"}

    bad = subprocess.run([sys.executable, "-m", "pipeline.exam", str(tmp_path / "model"), "--profile", "huge"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode != 0 and "profile = 'huge'" in bad.stderr


def test_a_served_model_scores_what_the_local_engine_scores(teacher_url, embedded_teacher_dir):
    """The vLLM path (prompt_logprobs on the shared real server) against transformers on the same
    weights in fp32: the same sums within float noise, so the same answers."""
    from pipeline.exam.models import load_model
    from pipeline.exam.served import served_loglikelihoods, served_model

    local = load_model(embedded_teacher_dir, "float32")
    served = served_model(teacher_url)
    items = read_mmlu()[:3]
    requests = [r for task in (tasks()["mmlu"], tasks()["mmlu_continuation"]) for item in items
                for r in requests_for(task, item, [])]  # fmt: skip
    here = loglikelihoods(local.model, local.tokenizer, requests, batch_size=8)
    there = served_loglikelihoods(served, local.tokenizer, requests)
    assert all(s < 0 for s in there)
    assert there == pytest.approx(here, abs=0.05)
    for at in range(0, len(requests), 4):
        assert max(range(4), key=there[at : at + 4].__getitem__) == max(range(4), key=here[at : at + 4].__getitem__)
    with pytest.raises(ValueError, match="no vLLM model list at http://127.0.0.1:9/v1"):
        served_model("http://127.0.0.1:9/v1")
