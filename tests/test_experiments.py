"""Experiments: declarations, the comparison with intervals, and a real experiment (a trained start
and two arms with DeepSpeed on the CPU) through its Dagster jobs."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from pipeline.experiments.declaration import experiments, read_experiment
from pipeline.experiments.report import START, compare
from pipeline.rows import REJECTED_STATUS
from tests.test_curation import PROSE, rows

ROOT = Path(__file__).resolve().parent.parent


def results(values: dict[tuple[str, str], list[float]], per_cluster: int = 1) -> pl.DataFrame:
    return pl.DataFrame([{"arm": arm, "metric": metric, "item": f"{i:04d}", "cluster": str(i // per_cluster),
                          "value": v} for (arm, metric), vs in values.items() for i, v in enumerate(vs)])  # fmt: skip


def test_the_shipped_experiments_declare_what_the_issue_asks():
    shipped = experiments("")
    assert set(shipped["curation"].arms) == {"curated", "raw"} and shipped["curation"].row_kinds == ["curated", "raw"]
    forgetting = shipped["forgetting"]
    assert forgetting.start == {"mixture": {"replay": 1.0}} and forgetting.old == "replay"
    assert {a: arm.training["mixture"].get("replay", 0) for a, arm in forgetting.arms.items()} == {
        "finetune": 0, "replay-5": 0.05, "replay-25": 0.25, "scratch": 0.5}  # fmt: skip
    assert forgetting.arms["scratch"].init == "scratch" and forgetting.reference_arm == "finetune"


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ({"arms": {"a": {}, "b": {"training": {"max_steps": 5}}}}, r"training.max_steps: set by the experiment"),
        ({"arms": {"a": {}, "b": {"training": {"lr_peak": 1}}}}, r"training.lr_peak: not a training field"),
        ({"arms": {"a": {}, "b": {"rows": "filtered"}}}, r"arms.b.rows = 'filtered': .*'curated' or 'raw'"),
        ({"arms": {"a": {}}}, r"at least two arms"),
        ({"reference": "c", "arms": {"a": {}, "b": {}}}, r"reference = 'c': not one of the arms"),
        ({"old": "books", "arms": {"a": {}, "b": {}}}, r"old = 'books': must be one of code, text, replay"),
        ({"arms": {"a": {}, "b": {}}, "seed": 3}, r"seed = 3: Extra inputs are not permitted"),
    ],
)
def test_a_bad_declaration_fails_naming_the_file_and_field(tmp_path, declaration, message):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(declaration))
    with pytest.raises(ValueError, match=message) as error:
        read_experiment(path)
    assert str(path) in str(error.value)


def test_a_verdict_needs_an_interval_that_excludes_zero():
    rng = np.random.default_rng(0)
    better = (rng.random(400) < 0.8).astype(float)
    worse = np.where(rng.random(400) < 0.7, 0.0, better)  # the same items, most answers lost
    noise = better.copy()  # a few answers flipped, as many each way
    noise[np.flatnonzero(better == 1)[:6]], noise[np.flatnonzero(better == 0)[:6]] = 0.0, 1.0
    frame = results({("a", "mmlu_mc"): list(better), ("b", "mmlu_mc"): list(worse), ("c", "mmlu_mc"): list(noise),
                     ("a", "heldout_loss_code"): [2.0] * 50, ("b", "heldout_loss_code"): [2.5] * 50,
                     ("c", "heldout_loss_code"): list(2.0 + rng.normal(0, 0.05, 50))})  # fmt: skip
    experiment = read_experiment_from({"reference": "a", "arms": {"a": {}, "b": {}, "c": {}}})
    report = compare(frame, experiment, vocab_size=1000).filter(pl.col("arm") != "a")
    verdicts = {(r["arm"], r["metric"]): r["verdict_vs_reference"] for r in report.iter_rows(named=True)}
    unclear = "no clear difference"
    assert verdicts == {("b", "mmlu_mc"): "worse", ("c", "mmlu_mc"): unclear,
                        ("b", "heldout_loss_code"): "worse", ("c", "heldout_loss_code"): unclear}  # fmt: skip
    b = report.filter((pl.col("arm") == "b") & (pl.col("metric") == "mmlu_mc")).row(0, named=True)
    assert b["delta_vs_reference"] == pytest.approx(worse.mean() - better.mean())
    assert b["low_vs_reference"] < b["delta_vs_reference"] < b["high_vs_reference"] < 0


def test_the_share_of_progress_lost_is_measured_against_the_start():
    # start 3.0 on the old data, uniform guess ln(1000) = 6.91: an arm at 4.0 lost 1/3.91 of it
    frame = results({(START, "heldout_loss_replay"): [3.0] * 20, ("ft", "heldout_loss_replay"): [4.0] * 20,
                     ("cpt", "heldout_loss_replay"): [3.0 + 0.1 * (i % 2) for i in range(20)]})  # fmt: skip
    experiment = read_experiment_from({"old": "replay", "reference": "ft", "arms": {"ft": {}, "cpt": {}}})
    report = compare(frame, experiment, vocab_size=1000)
    lost = {r["arm"]: r for r in report.filter(pl.col("metric") == "progress_lost_replay").iter_rows(named=True)}
    assert lost["ft"]["value"] == pytest.approx(1 / (math.log(1000) - 3.0))
    assert lost["ft"]["verdict_vs_start"] == "lost part of it"
    assert lost["cpt"]["value"] == pytest.approx(0.05 / (math.log(1000) - 3.0))
    assert lost["cpt"]["delta_vs_reference"] == pytest.approx(lost["cpt"]["value"] - lost["ft"]["value"])
    assert lost["cpt"]["verdict_vs_reference"] == "better"  # lost less than fine-tuning, interval below zero
    with pytest.raises(ValueError, match=r"no results yet for arm cpt"):
        compare(frame.filter(pl.col("arm") != "cpt"), experiment, vocab_size=1000)


def read_experiment_from(values: dict, name: str = "made") -> object:
    from pipeline.experiments.declaration import Experiment

    return Experiment.model_validate({"name": name, **values})


def _decontaminated(home: Path) -> None:
    """The curated rows an experiment reads, as `decontaminated` stores them: kept text and code,
    and rejected rows that only the raw arm sees."""
    code = "### Function\n```python\ndef double(x):\n    return 2 * x\n```\n" * 6
    kept = rows(*[("text", f"{PROSE} {i}") for i in range(30)], *[("code", f"{code}# {i}") for i in range(30)])
    rejected = rows(*[("text", f"buy now {i} " * 40) for i in range(20)], prefix="bad").with_columns(
        status=pl.lit(REJECTED_STATUS), reason=pl.lit("curation:top_2gram_frac"))
    (home / "tables").mkdir(parents=True, exist_ok=True)
    pl.concat([kept, rejected]).write_parquet(home / "tables" / "decontaminated.parquet")


@pytest.mark.integration
def test_an_experiment_trains_its_start_and_arms_and_reports_from_their_runs(artifact_home, tmp_path):
    folder = tmp_path / "declared"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(yaml.safe_dump({
        "description": "forgetting on two arms", "start": {"mixture": {"replay": 1.0}}, "old": "replay",
        "reference": "finetune",
        "arms": {"finetune": {"training": {"mixture": {"code": 1.0}}},
                 "replay": {"training": {"mixture": {"code": 0.75, "replay": 0.25}}}}}))  # fmt: skip
    _decontaminated(artifact_home)
    config = {"profile": "experiments",
              "training": {"seq_len": 32, "micro_batch_size": 4, "log_every": 2, "replay_max_documents": 60},
              "experiments": {"max_steps": 4, "start_max_steps": 6, "heldout_windows": 8, "resamples": 200},
              "exam": {"mmlu_limit": 6, "humaneval_limit": 1, "max_new_tokens": 16}}  # fmt: skip
    env = {**os.environ, "SCHOOLHOUSE_EXPERIMENTS": str(folder), "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "experiment_run.py"), "tiny", json.dumps(config)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["partition"] for r in runs] == ["tiny", "tiny.finetune", "tiny.replay", "tiny"]

    experiment = artifact_home / "experiments" / "tiny"
    start = json.loads((experiment / "start" / "summary.json").read_text())
    assert start["steps"] == 6 and start["mixture_sequences"] == {"replay": 24}
    for arm, mixture in (("finetune", {"code": 16}), ("replay", {"code": 12, "replay": 4})):
        summary = json.loads((experiment / "arms" / arm / "summary.json").read_text())
        run = json.loads((experiment / "arms" / arm / "run.json").read_text())
        assert summary["steps"] == 4 and summary["mixture_sequences"] == mixture  # the same budget
        assert run["init_from"] == str(experiment / "start" / "model")  # continued from the start
    # the report's numbers are the arms' own results, item for item
    arms = pl.concat([pl.read_parquet(p) for p in (artifact_home / "tables" / "experiment_arm").glob("tiny.*.parquet")])
    report = pl.read_parquet(experiment / "report.parquet")
    measured = report.filter(pl.col("arm") != START, ~pl.col("metric").str.starts_with("progress"))
    for row in measured.iter_rows(named=True):
        mine = arms.filter((pl.col("arm") == row["arm"]) & (pl.col("metric") == row["metric"]))["value"]
        assert row["value"] == pytest.approx(mine.mean()) and row["items"] == mine.len()
        assert row["low"] <= row["value"] <= row["high"]
    metrics = set(report["metric"])
    assert {"mmlu", "mmlu_continuation", "mmlu_continuation_norm", "humaneval", "heldout_loss_code",
            "heldout_loss_replay", "progress_lost_replay"} <= metrics  # fmt: skip
    assert set(report["arm"]) == {START, "finetune", "replay"}
    assert (experiment / "report.png").stat().st_size > 1000 and "# tiny" in (experiment / "report.md").read_text()
