"""The GPU benchmark script runs correctly in its small CPU mode (the GPU run is the same code)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.integration
def test_gpu_training_benchmark_dry_run_on_the_cpu():
    run = subprocess.run(["bash", str(ROOT / "bench" / "gpu_train.sh"), "--dry"], cwd=ROOT, capture_output=True,
                         text=True, timeout=900, env={**os.environ, "PYTHON": sys.executable})  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{") and line.endswith("}")]
    check = next(line for line in lines if line.get("check") == "loss falls")
    assert check["passed"] and check["last_loss"] < check["first_loss"] - 2
    ours = next(line for line in lines if line.get("mode") == "schoolhouse")
    assert ours["tokens_per_s"] > 0
    assert "deepspeed1      skipped: needs a GPU" in run.stdout
