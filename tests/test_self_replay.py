"""Self-replay: the start's own documents as a replay source, sized to what the arms need,
journaled (a re-run asks only for what is missing), in a folder named by what made them, with a
held-out slice that the training mix keeps apart."""

import contextlib
import json

import polars as pl
import pytest

from pipeline.experiments.declaration import SelfReplay
from pipeline.generation.journal import read_journal
from pipeline.generation.sources import wiki_eval_set
from pipeline.teacher.client import Completion
from pipeline.training.replay import heldout_split, replay_documents
from pipeline.training.self_replay import ARTICLE, folder_for, prompts, replay_tokens, start_teacher, write_self_replay


class FakeStart:
    """A teacher client that answers every prompt with `tokens` words and counts what it was asked."""

    urls, model = ["http://fake/v1"], "start"

    def __init__(self, tokens: int = 10):
        self.tokens, self.asked = tokens, []

    def check_reachable(self) -> None:
        pass

    async def stream(self, requests):
        for request in requests:
            self.asked.append(request)
            text = " ".join(f"w{request.key}-{i}" for i in range(self.tokens))
            yield Completion(request.key, text, "stop", 5, self.tokens)


def opened(client):
    @contextlib.contextmanager
    def teacher():
        yield client

    return teacher


def refused():
    raise AssertionError("the journal holds every answer: no teacher should be opened")


def test_the_documents_hold_what_the_arms_need_and_a_held_out_slice(tmp_path):
    spec = SelfReplay(max_tokens=16, heldout=4)
    start = FakeStart(tokens=10)
    path = write_self_replay(tmp_path, spec, "start-model", tokens=200, fraction=0.2, teacher=opened(start))
    frame = pl.read_parquet(path)
    train, held = frame.filter(pl.col("split") == "train"), frame.filter(pl.col("split") == "heldout")
    assert train["completion_tokens"].sum() >= 200 and held.height >= 4
    # the held-out slice is the training mix's own rule on the documents' order
    texts = replay_documents(str(path), "train", "text", 100_000)
    assert heldout_split(texts, 0.2) == (train["text"].to_list(), held["text"].to_list())
    # each prompt is a vital article's title, never one of the fixed evaluation set's
    assert all(p == ARTICLE.format(title=t) for p, t in frame.select("prompt", "topic").iter_rows())
    assert not set(frame["topic"]) & set(wiki_eval_set()["title"])
    lineage = json.loads((path.parent / "lineage.json").read_text())
    assert lineage["made_of"]["start"] == "start-model" and lineage["wanted_tokens"] == 200
    assert len(read_journal(path.parent / "journal.jsonl")) == len(start.asked) >= frame.height

    # again: every answer is in the journal, so no teacher is opened and the documents are the same
    assert write_self_replay(tmp_path, spec, "start-model", 200, 0.2, refused) == path
    assert pl.read_parquet(path).equals(frame)
    # more tokens: only the missing documents are asked for
    more = FakeStart(tokens=10)
    write_self_replay(tmp_path, spec, "start-model", 400, 0.2, opened(more))
    assert more.asked and not {r.key for r in more.asked} & {r.key for r in start.asked}
    assert pl.read_parquet(path).filter(pl.col("split") == "train")["completion_tokens"].sum() >= 400


def test_another_start_or_other_sampling_is_another_folder(tmp_path):
    spec = SelfReplay()
    assert folder_for(tmp_path, spec, "a") != folder_for(tmp_path, spec, "b")
    assert folder_for(tmp_path, spec, "a") != folder_for(tmp_path, SelfReplay(temperature=0.7), "a")
    assert folder_for(tmp_path, spec, "a") == folder_for(tmp_path, SelfReplay(heldout=50, passes=2), "a")
    neutral = prompts(SelfReplay(prompts="neutral"), 7)
    assert all(topic == "" for topic, _ in neutral) and len({p for _, p in neutral}) == 5
    assert prompts(spec, 5) == prompts(spec, 9)[:5] != prompts(SelfReplay(seed=1), 5)


def test_too_few_tokens_fail_naming_the_journal(tmp_path, monkeypatch):
    monkeypatch.setattr("pipeline.training.self_replay.MAX_ROUNDS", 1)
    with pytest.raises(RuntimeError, match=r"hold too few tokens .* see .*journal.jsonl"):
        write_self_replay(tmp_path, SelfReplay(max_tokens=16, heldout=0), "s", 10_000, 0.2, opened(FakeStart(2)))


def test_the_replay_tokens_are_the_arms_replay_share_of_its_budget(artifact_home):
    from pathlib import Path

    from pipeline.experiments.declaration import experiments
    from pipeline.experiments.runs import arm_config
    from pipeline.settings import resolve

    settings = resolve("experiments")
    experiment = experiments("")["forgetting-pretrained"]
    run = arm_config(settings, experiment, "self-replay", Path("data"))
    assert replay_tokens(run) == run.max_steps * run.micro_batch_size * run.seq_len // 4


def test_the_start_is_asked_where_it_is_served(artifact_home, embedded_teacher_dir):
    from pipeline.settings import resolve

    teacher = resolve("experiments", {"teacher": {"mode": "url", "urls": ["http://t/v1"]}}).teacher
    from pipeline.teacher.weights import embedded_teacher

    assert start_teacher(teacher, str(embedded_teacher())) is teacher  # the configured teacher serves it
    other = start_teacher(teacher, str(artifact_home / "arms" / "model"))
    assert (other.mode, other.model_path, other.model) == ("managed", str(artifact_home / "arms" / "model"), "model")
