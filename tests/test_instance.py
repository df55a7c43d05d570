"""Two `schoolhouse` commands started at once on a new Dagster instance: both open it. Without the
lock in `assets.cli._dagster_home`, both created its SQLite storage and stamped its schema version
(seen as "table alembic_version already exists", or an instance that never opens again with
"more than one head"), about once in five tries on 2 cores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPEN = """
import dagster as dg
from assets.cli import _dagster_home
_dagster_home()
with dg.DagsterInstance.get() as instance:
    instance.get_runs(limit=1)
"""


@pytest.mark.integration
def test_two_commands_creating_one_instance_at_once_both_open_it(tmp_path):
    for attempt in range(3):
        home = tmp_path / f"home-{attempt}"
        env = {**os.environ, "SCHOOLHOUSE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
        both = [subprocess.Popen([sys.executable, "-c", OPEN], cwd=ROOT, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]  # fmt: skip
        outputs = [p.communicate(timeout=120)[0] for p in both]
        assert [p.returncode for p in both] == [0, 0], "\n---\n".join(o[-2000:] for o in outputs)
