"""The preflight: every check on this machine, against the session's real vLLM server (started
with an API key), a wrong model name, a wrong key and a dead URL; a run's start-up check refuses
before anything is asked."""

import os
import socket

import pytest

from pipeline import doctor
from pipeline.settings import resolve
from pipeline.teacher.client import TeacherRefused
from pipeline.teacher.serving import serving
from tests.conftest import TEST_API_KEY


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _url_settings(url: str, **teacher):
    return resolve("demo", {"teacher": {"mode": "url", "urls": [url], **teacher}})


@pytest.mark.integration
def test_the_teacher_check_passes_on_the_real_server_and_names_each_failure(teacher_url, monkeypatch):
    if os.environ.get("SCHOOLHOUSE_TEACHER_URL"):
        pytest.skip("a server of the caller's: its key is not the tests'")
    (good,) = doctor.diagnose(_url_settings(teacher_url), ["teacher"])
    assert good.passed and "serves SmolLM2-135M-Instruct, key from $OPENAI_API_KEY accepted" in good.found

    (wrong_model,) = doctor.diagnose(_url_settings(teacher_url, model="Qwen2.5-72B-Instruct"), ["teacher"])
    assert not wrong_model.passed and wrong_model.name == f"teacher {teacher_url}"
    assert "serves SmolLM2-135M-Instruct, not 'Qwen2.5-72B-Instruct'" in wrong_model.found
    assert "set teacher.model to one of: SmolLM2-135M-Instruct" in wrong_model.fix

    monkeypatch.setenv("MY_TEACHER_KEY", "sk-wrong")
    (wrong_key,) = doctor.diagnose(_url_settings(teacher_url, api_key_env="MY_TEACHER_KEY"), ["teacher"])
    assert not wrong_key.passed and "HTTP 401" in wrong_key.found and "$MY_TEACHER_KEY" in wrong_key.fix
    assert "sk-wrong" not in doctor.format_report([wrong_key])
    (no_key,) = doctor.diagnose(_url_settings(teacher_url, api_key_env=""), ["teacher"])
    assert not no_key.passed and "set teacher.api_key_env" in no_key.fix

    dead = f"http://127.0.0.1:{_closed_port()}/v1"
    (unreachable,) = doctor.diagnose(_url_settings(dead), ["teacher"])
    assert not unreachable.passed and unreachable.name == f"teacher {dead}" and "no answer" in unreachable.found
    with pytest.raises(doctor.PreflightFailed) as failed:
        doctor.preflight(_url_settings(teacher_url, model="Qwen"), ["teacher", "disk", "hub"])
    assert str(failed.value).splitlines() == [doctor.format_report([doctor.served_model(
        teacher_url, "Qwen", TEST_API_KEY, "OPENAI_API_KEY")])]  # only the failed line  # fmt: skip


@pytest.mark.integration
def test_a_runs_start_up_check_refuses_a_wrong_model_before_asking_anything(teacher_url):
    settings = _url_settings(teacher_url, model="Qwen2.5-72B-Instruct").teacher
    with serving(settings) as client, pytest.raises(TeacherRefused) as refused:
        client.check_reachable()
    message = str(refused.value)
    assert teacher_url in message and "'Qwen2.5-72B-Instruct'" in message and "set teacher.model" in message


def test_the_machine_checks_say_what_they_found_and_fail_with_a_fix(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("SCHOOLHOUSE_HOME", str(tmp_path))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    checks = {c.name: c for c in doctor.diagnose(resolve("demo"))}
    assert set(checks) == {"teacher", "sandbox", "deepspeed", "gpus", "disk", "hub"}
    assert checks["teacher"].passed and "managed" in checks["teacher"].found  # the run starts its own
    assert checks["sandbox"].passed and "bubblewrap" in checks["sandbox"].found
    assert checks["deepspeed"].passed and checks["disk"].passed and checks["hub"].passed
    if torch.cuda.is_available():
        return
    failing = resolve("demo", {"training": {"num_gpus": 1}, "release": {"repo_id": "me/student"},
                               "generation": {"samples_per_domain": 10**9}})  # fmt: skip
    failed = {c.name: c for c in doctor.diagnose(failing) if not c.passed}
    assert set(failed) == {"gpus", "deepspeed", "disk", "hub"}
    assert "training.num_gpus = 1, this machine has 0" in failed["gpus"].found
    assert "HF_TOKEN is not set" in failed["hub"].found and failed["disk"].fix.startswith("free space")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_token")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")  # no hub answers here
    (hub,) = doctor.diagnose(failing, ["hub"])
    assert not hub.passed and "the hub did not confirm the token" in hub.found
