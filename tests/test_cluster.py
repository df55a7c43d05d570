"""The Ray path on a real cluster: a head and two worker nodes, each a `ray start` process of its
own (pipeline/cluster/local.py), a code batch curated through Dagster on it (rules, sandboxed code
tests, MinHash, embeddings, in blocks), checked from outside against the single-machine path;
then a worker killed mid-batch. Nothing may be left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.cluster.local import LocalCluster, session_processes
from tests.test_curation import rows
from tests.test_trainer import _losses, _run_trainer, packed  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[1]
BATCH = "2026-11-20|code"
TABLES = ("curated", "deduped")

# Runs the batch's curation (curated -> deduped -> embeddings) as one Dagster run in a process of its
# own (as a launched run would), printing {success, metadata of each asset}.
RUN = """
import json, sys
import dagster as dg
from assets.definitions import defs

selection = dg.AssetSelection.assets("curated", "deduped", "embeddings")
job = dg.define_asset_job("curate_batch", selection=selection).resolve(asset_graph=defs.resolve_asset_graph())
result = job.execute_in_process(run_config={"resources": {"schoolhouse": {"config": json.loads(sys.argv[1])}}},
                                instance=dg.DagsterInstance.ephemeral(), partition_key=sys.argv[2],
                                raise_on_error=False)
metadata = {}
for event in result.all_events:
    if event.event_type_value == "ASSET_MATERIALIZATION":
        found = event.event_specific_data.materialization
        metadata[found.asset_key.to_user_string()] = {k: v.value for k, v in found.metadata.items()
                                                      if k in ("engine", "blocks_by_node", "rows")}
print(json.dumps({"success": result.success, "metadata": metadata}))
"""


def exercise(k: int, broken: bool = False) -> str:
    result = 2 * k + (1 if broken else 0)
    return (f'### Function\n```python\ndef scale_{k}(x: int) -> int:\n    """{k} times x, for lesson {k}."""\n'
            f"    return {k} * x\n```\n\n### Tests\n```python\nassert scale_{k}(2) == {result}\n"
            f"assert scale_{k}(-1) == {-k}\n```\n")  # fmt: skip


def code_batch() -> pl.DataFrame:
    """18 exercises that pass their tests, 4 that fail them, 2 exact repeats."""
    texts = [exercise(k) for k in range(18)] + [exercise(k, broken=True) for k in range(18, 22)]
    texts += [texts[0], texts[5]]
    made = datetime(2026, 11, 20, tzinfo=UTC)  # both runs read the same table
    return rows(*[("code", text) for text in texts], batch=BATCH, prefix="c").with_columns(created_at=pl.lit(made))


def stage(home: Path) -> None:
    table = home / "tables" / "generations" / "2026-11-20" / "code.parquet"
    table.parent.mkdir(parents=True)
    code_batch().write_parquet(table)


def run_batch(home: Path, config: dict) -> subprocess.Popen:
    env = {**os.environ, "SCHOOLHOUSE_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", RUN, json.dumps(config), BATCH], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def finished(process: subprocess.Popen, timeout: float = 600) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


def results(home: Path) -> dict:
    tables = {name: pl.read_parquet(home / "tables" / name / "2026-11-20" / "code.parquet") for name in TABLES}
    [vectors] = (home / "embeddings" / "rows").rglob("*.parquet")
    tables["embeddings"] = pl.read_parquet(vectors).sort("id", "passage")
    return tables


def timeless(frame: pl.DataFrame) -> pl.DataFrame:
    """The table without the sandbox's timings (how long a program ran is not a result)."""
    return frame.with_columns(checks=pl.col("checks").str.replace(r', "seconds": [0-9.e-]+', ""))


def assert_same(ray: dict, local: dict) -> None:
    for name in TABLES:
        assert timeless(ray[name]).equals(timeless(local[name])), name  # row for row, every column
    assert ray["embeddings"].select("id", "passage").equals(local["embeddings"].select("id", "passage"))
    np.testing.assert_allclose(np.stack(ray["embeddings"]["vector"].to_numpy()),
                               np.stack(local["embeddings"]["vector"].to_numpy()), atol=1e-5)  # fmt: skip


@pytest.fixture(scope="module")
def local_results(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("local") / "home"
    stage(home)
    report = finished(run_batch(home, {"profile": "demo"}))
    assert report["success"] and report["metadata"]["curated"]["engine"] == "local"
    found = results(home)
    kept = found["deduped"].filter(pl.col("status") == "kept").height
    reasons = found["deduped"]["reason"].to_list()
    assert kept == 18 and sum(r.startswith("curation:") for r in reasons if r) == 4  # the broken four fail
    assert sum(r == "dedup:exact" for r in reasons if r) == 2
    return found


def processes_running(needle: bytes, program_only: bool = False) -> list[int]:
    """Live processes on this machine whose command line (or program, its first word) holds `needle`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if words and needle in (words[0] if program_only else b" ".join(words)):
            found.append(int(entry.name))
    return found


def sandboxes() -> list[int]:
    """Live bubblewrap sandboxes on this machine (a code test's)."""
    return processes_running(b"bwrap", program_only=True)


@pytest.fixture(scope="module")
def cluster():
    """One cluster for the module (a start costs ~10 s on two cores); the kill test, which leaves
    one worker, runs last."""
    with LocalCluster(workers=2, cpus_per_worker=1, env={"OMP_NUM_THREADS": "1"}) as started:
        yield started
    assert started.processes() == [], "processes of the cluster left running"
    assert sandboxes() == [], "a code test's sandbox left running"


def ray_config(cluster: LocalCluster, block_rows: int) -> dict:
    on_ray = {"engine": "ray", "ray": {"address": cluster.address, "block_rows": block_rows}}
    return {"profile": "demo", "orchestration": on_ray}


@pytest.mark.integration
def test_a_batch_curated_on_a_three_node_cluster_equals_the_single_machine_path(cluster, local_results, tmp_path):
    from pipeline.doctor import diagnose
    from pipeline.settings import resolve

    names = cluster.alive_nodes()
    assert sorted(names.values()) == ["head", "worker_0", "worker_1"]
    (check,) = diagnose(resolve("demo", ray_config(cluster, block_rows=3)), ["cluster"])
    assert check.passed, check
    home = tmp_path / "home"
    stage(home)
    report = finished(run_batch(home, ray_config(cluster, block_rows=3)))
    assert report["success"]
    assert_same(results(home), local_results)
    for asset in ("curated", "deduped", "embeddings"):
        ran = report["metadata"][asset]
        assert ran["engine"] == "ray"
        by_node = {names[node]: blocks for node, blocks in ran["blocks_by_node"].items()}
        assert set(by_node) == {"worker_0", "worker_1"}, (asset, by_node)  # both workers, never the head
    # 24 programs tested in blocks of 3: 8 blocks
    assert sum(report["metadata"]["curated"]["blocks_by_node"].values()) == 8


@pytest.mark.integration
def test_training_on_two_cluster_nodes_trains_what_one_process_with_the_same_global_batch_trains(
        cluster, packed, tmp_path):  # noqa: F811
    from assets.training import trainer_command
    from pipeline.settings import resolve

    base = {"data_dir": str(packed), "seq_len": 64, "max_steps": 4, "warmup_steps": 2, "lr": 3e-3, "zero_stage": 2,
            "log_every": 100, "precision": "fp32"}  # fmt: skip
    one = _run_trainer({**base, "out_dir": str(tmp_path / "one"), "micro_batch_size": 8}, tmp_path, "one")
    assert one.wait(timeout=600) == 0, one.stderr.read()[-3000:]
    config = tmp_path / "two.json"
    config.write_text(json.dumps({**base, "out_dir": str(tmp_path / "two"), "micro_batch_size": 4}))
    on_ray = {"engine": "ray", "ray": {"address": cluster.address, "train_nodes": 2}}
    command = trainer_command(config, resolve("demo", {"orchestration": on_ray}))  # what the training step runs
    assert command[:3] == [sys.executable, "-m", "pipeline.cluster.training"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)  # a rank on each worker node
    assert done.returncode == 0, done.stderr[-3000:]
    assert processes_running(str(config).encode()) == []  # no rank of the run left, on any node
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["world_size"] == 2
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), rel=1e-4)


def test_a_bad_or_dead_cluster_address_fails_in_seconds_naming_the_setting():
    from pipeline.cluster.engine import RayEngine
    from pipeline.doctor import diagnose
    from pipeline.settings import ConfigError, RaySettings, resolve
    from pipeline.teacher.server import free_port

    with pytest.raises(ConfigError, match=r"orchestration.ray.address = 'http://head'"):
        resolve("demo", {"orchestration": {"engine": "ray", "ray": {"address": "http://head"}}})
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=r"orchestration.ray.address = '127.0.0.1:\d+': no Ray cluster answers"):
        RayEngine(RaySettings(address=f"127.0.0.1:{free_port()}"))  # nothing listens there
    assert time.monotonic() - started < 15
    dead = resolve("demo", {"orchestration": {"engine": "ray", "ray": {"address": f"127.0.0.1:{free_port()}"}}})
    (check,) = diagnose(dead, ["cluster"])  # `schoolhouse doctor`, and the preflight of curate and train
    assert not check.passed and "no Ray cluster answers there" in check.found and "ray start --head" in check.fix


@pytest.mark.integration
def test_a_worker_killed_mid_batch_is_survived_with_nothing_lost_or_doubled(cluster, local_results, tmp_path):
    names = {name: node for node, name in cluster.alive_nodes().items()}
    home = tmp_path / "home"
    stage(home)
    run = run_batch(home, ray_config(cluster, block_rows=1))
    deadline = time.monotonic() + 300
    while not cluster.running_tasks("worker_0") and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # until worker_0 runs one of the batch's blocks, as its process titles say
    running = cluster.running_tasks("worker_0")
    assert run.poll() is None and running, "no block was seen running on worker_0 before the run ended"
    cluster.kill("worker_0")  # mid-block
    report = finished(run)
    assert report["success"]
    assert_same(results(home), local_results)  # nothing lost, nothing doubled
    after = report["metadata"]["embeddings"]["blocks_by_node"]
    assert set(after) == {names["worker_1"]}  # what came after the kill ran on the survivor
    assert session_processes(cluster.nodes["worker_0"].pid) == []  # the killed node is gone, all of it
