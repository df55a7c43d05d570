"""Starting and stopping the trainer as a whole, and the replay source for continued pre-training."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from pipeline.training.replay import replay_documents
from trainers.launch import trainer_command


def test_gpu_runs_go_through_the_deepspeed_launcher_with_the_hostfile():
    assert trainer_command("run.json", 0)[1:] == ["-m", "trainers.train", "--config", "run.json"]
    command = trainer_command("run.json", 8, hostfile="/etc/schoolhouse/hosts")
    assert command[1:] == ["-m", "deepspeed.launcher.runner", "--num_gpus", "8", "--hostfile",
                           "/etc/schoolhouse/hosts", "--module", "trainers.train", "--config", "run.json"]  # fmt: skip


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.integration
@pytest.mark.parametrize("how", ["cancel", "kill", "kill with SIGTERM ignored"])
def test_stopping_the_launcher_stops_the_trainer(tmp_path, how):
    from tests.test_trainer import write_packed_text

    data = write_packed_text(tmp_path / "data")
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"data_dir": str(data), "out_dir": str(tmp_path / "out"), "seq_len": 32,
                                  "micro_batch_size": 2, "max_steps": 100_000, "log_every": 1,
                                  "mixture": {"text": 1.0}}))  # fmt: skip
    # "SIGTERM ignored": the environment that starts the launcher ignores SIGTERM, and so would
    # everything it starts if dispositions were inherited.
    ignore = (lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN)) if "ignored" in how else None
    launcher = subprocess.Popen([sys.executable, "-m", "trainers.launch", "--config", str(config)],
                                stderr=subprocess.PIPE,
                                preexec_fn=ignore)  # fmt: skip
    metrics = tmp_path / "out" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not metrics.exists() or not metrics.read_text().strip():
        assert launcher.poll() is None, launcher.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    (guard,) = _children(launcher.pid)
    (trainer,) = _children(guard)
    if how == "cancel":  # what Dagster's Pipes client sends when a run is cancelled
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=60) != 0
    else:  # the step process dies outright
        launcher.kill()
        launcher.wait()
    deadline = time.monotonic() + 60
    while (_alive(trainer) or _alive(guard)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(trainer) and not _alive(guard)


def test_replay_documents_from_parquet_and_from_a_datasets_folder(tmp_path):
    pl.DataFrame({"text": [f"document {i}" for i in range(50)], "id": range(50)}).write_parquet(tmp_path / "a.parquet")
    assert replay_documents(str(tmp_path / "a.parquet"), "train", "text", 10) == [f"document {i}" for i in range(10)]
    with pytest.raises(ValueError, match=r"training.replay_text_field = 'body': no such column"):
        replay_documents(str(tmp_path / "a.parquet"), "train", "body", 10)

    folder = tmp_path / "jsonl"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"content": f"line {i}"}) + "\n" for i in range(20)))
    assert replay_documents(str(folder), "train", "content", 5) == [f"line {i}" for i in range(5)]
    with pytest.raises(ValueError, match=r"training.replay_path = '.*missing.parquet': no such file"):
        replay_documents(str(tmp_path / "missing.parquet"), "train", "text", 5)
