"""The `schoolhouse` command: settings from --profile and --set, a bad value stops it before any
run, every subcommand explains itself with an example, and a deployment's profile reaches its
scheduled runs."""

import os
import subprocess
import sys
import textwrap

import pytest

from assets.cli import EXAMPLES, main, parse_sets
from pipeline.settings import ConfigError


def test_set_names_the_launchpad_fields_and_reads_values_as_yaml():
    overrides = parse_sets(["training.max_steps=200", "exam.tasks=[arc_easy, piqa]", "curation.min_quality=2.5",
                            "teacher.urls=[http://gpu-host:8000/v1]", "generation.allow_repeats=true"])  # fmt: skip
    assert overrides == {"training": {"max_steps": 200}, "exam": {"tasks": ["arc_easy", "piqa"]},
                         "curation": {"min_quality": 2.5}, "teacher": {"urls": ["http://gpu-host:8000/v1"]},
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


def test_a_scheduled_run_uses_the_deployments_profile(artifact_home, tmp_path):
    """Under SCHOOLHOUSE_PROFILE=experiments (100 prompts a batch, the demo's 20), a tick of the
    daily text schedule asks for a run with that profile, and the run plans 100 prompts."""
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
    import json

    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["tags"]["schoolhouse/profile"] == seen["weekly"]["schoolhouse/profile"] == "experiments"
    assert seen["partition"] == "2026-12-05|text"
    assert seen["prompts"] == 100  # the experiments profile's samples_per_domain, not the demo's 20
