"""Where artifacts live: $SCHOOLHOUSE_HOME, else ./state."""

from __future__ import annotations

import os
from pathlib import Path


def artifact_home() -> Path:
    return Path(os.environ.get("SCHOOLHOUSE_HOME", "state")).resolve()
