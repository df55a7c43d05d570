"""The `schoolhouse` command: settings from --profile and --set, a bad value stops it before any
run, every subcommand explains itself with an example, and a deployment's profile reaches its
scheduled runs."""

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import dagster as dg
import polars as pl
import pytest

from assets.cli import EXAMPLES, _default_dates, _parser, main, parse_sets
from pipeline.settings import ConfigError


def test_set_names_the_launchpad_fields_and_reads_values_as_yaml():
    overrides = parse_sets(["training.max_steps=200", "exam.tasks=[arc_easy, piqa]", "curation.quality.min_score=2.5",
                            "teacher.urls=[http://gpu-host:8000/v1]", "generation.allow_repeats=true"])  # fmt: skip
    assert overrides == {"training": {"max_steps": 200}, "exam": {"tasks": ["arc_easy", "piqa"]},
                         "curation": {"quality": {"min_score": 2.5}}, "teacher": {"urls": ["http://gpu-host:8000/v1"]},
                         "generation": {"allow_repeats": True}}  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--set", "training.max_steps"], "write stage.field=value"),
        (["train", "--set", "trainig.max_steps=3"], "'trainig' is not a stage"),
        (["train", "--set", "training.max_steps=many"], "training.max_steps = 'many'"),
        (["train", "--set", "training.max_stepz=3"], "training.max_stepz"),
        (["run", "--profile", "gigantic"], "profile = 'gigantic'"),
        (["run", "--profile", "phi-1.5"], "profile phi-1.5 needs your values for: teacher.urls"),
    ],
)
def test_a_bad_setting_stops_the_command_before_any_run(argv, message, artifact_home, capsys, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(artifact_home / "dagster"))
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (artifact_home / "dagster" / "history").exists()  # no run was recorded


def test_parse_sets_rejects_yaml_that_does_not_parse():
    with pytest.raises(ConfigError, match="not YAML"):
        parse_sets(["exam.tasks=[arc_easy"])


def test_every_subcommand_explains_itself_with_an_example():
    for command, example in EXAMPLES.items():
        shown = subprocess.run([sys.executable, "-m", "assets.cli", command, "--help"], capture_output=True,
                               text=True, timeout=120)  # fmt: skip
        assert shown.returncode == 0 and f"example: {example}" in shown.stdout, shown.stderr
    assert "schoolhouse doctor" in subprocess.run([sys.executable, "-m", "assets.cli", "--help"], capture_output=True,
                                                  text=True, timeout=120).stdout  # fmt: skip


def test_experiments_ask_the_profiles_fixed_batch_dates_so_every_run_draws_the_same_prompts():
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    for argv, dates in ((["experiments", "--profile", "experiments"], ["2026-12-06"]),
                        (["experiments", "--profile", "demo"], [today]),  # no fixed dates: today's batches
                        (["run", "--profile", "experiments"], [today])):  # fmt: skip
        assert _default_dates(_parser().parse_args(argv), {}) == dates
    overrides = {"experiments": {"batch_dates": ["2026-03-01", "2026-03-02"]}}
    args = _parser().parse_args(["experiments", "--profile", "experiments"])
    assert _default_dates(args, overrides) == ["2026-03-01", "2026-03-02"]
    with pytest.raises(ConfigError, match="batch_dates"):
        _default_dates(args, {"experiments": {"batch_dates": ["yesterday"]}})


def test_a_scheduled_run_uses_the_deployments_profile(artifact_home, tmp_path):
    """Under SCHOOLHOUSE_PROFILE=experiments (250 prompts a batch, the demo's 20), a tick of the
    daily text schedule asks for a run with that profile, and the run plans 250 prompts."""
    script = textwrap.dedent("""
        import datetime as dt, json
        import dagster as dg
        from assets.definitions import defs
        tick = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 12, 5, 2, tzinfo=dt.UTC),
                                         repository_def=defs.get_repository_def())
        request = defs.resolve_schedule_def("daily_text_batch").evaluate_tick(tick).run_requests[0]
        weekly = defs.resolve_schedule_def("weekly_train_and_release").evaluate_tick(tick).run_requests[0]
        run = defs.resolve_job_def("generate_batch").execute_in_process(
            run_config=request.run_config, partition_key=request.partition_key, tags=request.tags,
            asset_selection=[dg.AssetKey("topics"), dg.AssetKey("prompts")])
        print(json.dumps({"tags": request.tags, "weekly": weekly.tags, "partition": request.partition_key,
                          "prompts": run.output_for_node("prompts").height}))
    """)
    env = {**os.environ, "SCHOOLHOUSE_PROFILE": "experiments", "SCHOOLHOUSE_HOME": str(artifact_home),
           "DAGSTER_HOME": str(tmp_path)}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["tags"]["schoolhouse/profile"] == seen["weekly"]["schoolhouse/profile"] == "experiments"
    assert seen["partition"] == "2026-12-05|text"
    assert seen["prompts"] == 250  # the experiments profile's samples_per_domain, not the demo's 20


def _schoolhouse(argv: list[str], home, dagster_home, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "SCHOOLHOUSE_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}
    env.pop("SCHOOLHOUSE_PROFILE", None)
    return subprocess.run([sys.executable, "-m", "assets.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


@pytest.mark.integration
def test_generate_then_curate_a_days_batches_from_the_command(teacher_url, artifact_home, tmp_path):
    """`schoolhouse generate` then `schoolhouse curate`: the day's code and text batches at the same
    time, every step in a process of its own, recorded in the instance at $DAGSTER_HOME (as the UI
    shows them) with the profile's tag; curation packs the batches' token shards."""
    sets = ["--set", "generation.samples_per_domain=3", "--set", "generation.max_tokens=256"]
    generated = _schoolhouse(["generate", "--teacher-url", teacher_url, "--date", "2026-11-22", *sets],
                             artifact_home, tmp_path / "dagster")  # fmt: skip
    assert generated.returncode == 0, generated.stderr[-3000:]
    assert "schoolhouse generate finished" in generated.stdout
    instance = dg.DagsterInstance.from_config(str(tmp_path / "dagster"))
    runs = instance.get_runs()
    assert {r.tags["dagster/partition"] for r in runs} == {"2026-11-22|code", "2026-11-22|text"}
    assert {r.tags["schoolhouse/profile"] for r in runs} == {"demo"}
    records = [instance.get_run_record_by_id(r.run_id) for r in runs]
    (first_start, first_end), (second_start, second_end) = [(r.start_time, r.end_time) for r in records]
    assert first_start < second_end and second_start < first_end  # the two runs overlapped
    step_pids = {e.dagster_event.pid for r in runs for e in instance.all_logs(r.run_id)
                 if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.STEP_START}  # fmt: skip
    assert len(step_pids) == 6  # topics, prompts, generations per batch, a process each
    for domain in ("code", "text"):
        rows = pl.read_parquet(artifact_home / "tables" / "generations" / "2026-11-22" / f"{domain}.parquet")
        assert rows.height == 3 and set(rows["domain"]) == {domain}

    no_judge = ["--set", "curation.quality.sample=0"]  # the judge is tested elsewhere
    curated = _schoolhouse(["curate", "--teacher-url", teacher_url, "--date", "2026-11-22", "--domain", "text",
                            *sets, *no_judge], artifact_home, tmp_path / "dagster")  # fmt: skip
    assert curated.returncode == 0, curated.stderr[-3000:]
    text_runs = [r for r in instance.get_runs() if r.tags["dagster/partition"] == "2026-11-22|text"]
    assert len(text_runs) == 2 and len(instance.get_runs()) == 3  # the text batch alone
    assert (artifact_home / "tables" / "decontaminated" / "2026-11-22" / "text.parquet").is_file()
    assert not (artifact_home / "tables" / "decontaminated" / "2026-11-22" / "code.parquet").exists()


def test_a_failed_preflight_stops_the_command_before_any_run(artifact_home, tmp_path):
    """Training on a GPU this machine does not have: the command names the check and its fix, and
    the instance records no run."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = _schoolhouse(["train", "--set", "training.num_gpus=1"], artifact_home, tmp_path / "dagster", timeout=300)
    assert done.returncode == 1
    assert "stopped before any run" in done.stderr and "FAIL" in done.stderr and "gpu" in done.stderr.lower()
    assert not dg.DagsterInstance.from_config(str(tmp_path / "dagster")).get_runs()
