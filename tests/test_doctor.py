"""The preflight: every check on this machine, against the session's real vLLM server (started
with an API key), a wrong model name, a wrong key and a dead URL; a run's start-up check refuses
before anything is asked."""

import os
import socket

import pytest

from pipeline import doctor
from pipeline.sandbox.isolation import check_isolation
from pipeline.settings import resolve
from pipeline.teacher.client import TeacherRefused
from pipeline.teacher.serving import serving
from tests.test_generation import MODEL

# $SCHOOLHOUSE_TEACHER_URL is a server of the caller's: its key (if any) is not the tests'.
OWN_SERVER = not os.environ.get("SCHOOLHOUSE_TEACHER_URL")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _url_settings(url: str, **teacher):
    return resolve("demo", {"teacher": {"mode": "url", "urls": [url], **teacher}})


@pytest.mark.integration
def test_the_teacher_check_passes_on_the_real_server_and_names_each_failure(teacher_url, monkeypatch):
    (good,) = doctor.diagnose(_url_settings(teacher_url), ["teacher"])
    assert good.passed and good.name == f"teacher {teacher_url}" and f"serves {MODEL}" in good.found

    (wrong_model,) = doctor.diagnose(_url_settings(teacher_url, model="Qwen2.5-72B-Instruct"), ["teacher"])
    assert not wrong_model.passed and wrong_model.name == f"teacher {teacher_url}"
    assert f"serves {MODEL}, not 'Qwen2.5-72B-Instruct'" in wrong_model.found
    assert f"set teacher.model to one of: {MODEL}" in wrong_model.fix

    if OWN_SERVER:  # started with the tests' key: a wrong one, or none, is refused
        assert "key from $OPENAI_API_KEY accepted" in good.found
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
    assert str(failed.value).splitlines() == [doctor.format_report([doctor.teacher_serves(
        teacher_url, "Qwen", os.environ.get("OPENAI_API_KEY"), "OPENAI_API_KEY")])]  # only the failed line  # fmt: skip


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
    assert set(checks) == set(doctor.PARTS) == {"teacher", "sandbox", "deepspeed", "gpus", "disk", "hub",
                                                        "cluster"}
    assert all(c.passed and not c.fix for c in checks.values()), doctor.format_report(list(checks.values()))
    assert "managed" in checks["teacher"].found  # the run starts its own: no server to ask yet
    assert "bubblewrap isolates" in checks["sandbox"].found and "no repo named" in checks["hub"].found
    if torch.cuda.is_available():
        return
    assert "on the CPU" in checks["deepspeed"].found and "deepspeed_shm_comm" in checks["deepspeed"].found
    assert checks["gpus"].found == "training on the CPU (0 GPUs seen)"

    failing = resolve("demo", {"training": {"num_gpus": 1}, "release": {"repo_id": "me/student"},
                               "generation": {"samples_per_domain": 10**9}})  # fmt: skip
    failed = {c.name: c for c in doctor.diagnose(failing) if not c.passed}
    assert set(failed) == {"gpus", "deepspeed", "disk", "hub"}
    assert "training.num_gpus = 1, this machine has 0" in failed["gpus"].found
    assert "no CUDA device" in failed["deepspeed"].found
    assert "HF_TOKEN is not set" in failed["hub"].found and failed["disk"].fix.startswith("free space")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_token")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")  # no hub answers here
    (hub,) = doctor.diagnose(failing, ["hub"])
    assert not hub.passed and "the hub did not confirm the token" in hub.found
    assert "hf_not_a_token" not in doctor.format_report([hub])

    monkeypatch.setenv("CXX", "no-such-c++")  # DeepSpeed's CPU op cannot JIT-build at the run's start
    (no_compiler,) = doctor.diagnose(resolve("demo"), ["deepspeed"])
    assert not no_compiler.passed and "no-such-c++" in no_compiler.found and "C++ compiler" in no_compiler.fix


def test_a_machine_that_cannot_isolate_fails_the_sandbox_check_unless_unconfined(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap
    check_isolation.cache_clear()
    (sandbox,) = doctor.diagnose(resolve("demo"), ["sandbox"])
    assert not sandbox.passed and "bwrap" in sandbox.found and "install bubblewrap" in sandbox.fix
    (unconfined,) = doctor.diagnose(resolve("demo", {"curation": {"sandbox": {"mode": "unconfined"}}}), ["sandbox"])
    assert unconfined.passed and "unconfined" in unconfined.found


def test_the_dagster_check_reads_the_instances_run_storage(tmp_path, monkeypatch):
    from assets.cli import EXTRA_CHECKS

    settings = resolve("demo")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    (check,) = doctor.diagnose(settings, ["dagster"], EXTRA_CHECKS)
    assert check.passed and f"instance at {tmp_path}" in check.found
    (tmp_path / "dagster.yaml").write_text("run_storage: {module: no_such_module, class: NoSuchStorage}\n")
    (broken,) = doctor.diagnose(settings, ["dagster"], EXTRA_CHECKS)
    assert not broken.passed and "did not answer" in broken.found and "dagster.yaml" in broken.fix
    with pytest.raises(ValueError, match="no check named 'dagster'"):
        doctor.diagnose(settings, ["dagster"])  # the library has none: the command passes it in
