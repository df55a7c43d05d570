"""Where artifacts live: $SCHOOLHOUSE_HOME, else ./state."""

from __future__ import annotations

import os
from pathlib import Path


def artifact_home() -> Path:
    return Path(os.environ.get("SCHOOLHOUSE_HOME", "state")).resolve()


def artifact_path(*parts: str) -> Path:
    """A path under the artifact home whose parent folder exists, ready to be written."""
    path = artifact_home().joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
