"""Publishing a release folder: to the Hugging Face hub when a repo id and a token are given,
else a local copy that a reader never sees half-written."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from trainers import atomic

log = logging.getLogger("schoolhouse.release")


@dataclass
class Published:
    destination: str  # a commit URL on the hub, or a local folder
    remote: bool


def publish(folder: Path, repo_id: str, repo_type: str, token: str | None, local_target: Path,
            endpoint: str | None = None, attempts: int = 4) -> Published:  # fmt: skip
    """Upload `folder` to the hub when a repo id and a token are given, else copy it locally.

    Transient hub errors (connection problems, 429, 5xx) are retried with exponential backoff.
    The token is passed to the client only; it never goes into a log line or a return value."""
    if not (repo_id and token):
        return Published(str(copy_folder(folder, local_target)), remote=False)
    api = HfApi(token=token, endpoint=endpoint)
    for attempt in range(1, attempts + 1):
        try:
            api.create_repo(repo_id, repo_type=repo_type, exist_ok=True)
            commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type,
                                       commit_message="schoolhouse release")  # fmt: skip
            return Published(commit.commit_url, remote=True)
        except (HfHubHTTPError, OSError) as error:
            status = getattr(getattr(error, "response", None), "status_code", None)
            transient = status is None or status == 429 or status >= 500
            if not transient or attempt == attempts:
                raise
            wait = 2**attempt
            log.warning("upload to %s failed (%s), retrying in %ss", repo_id, status or type(error).__name__, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def copy_folder(folder: Path, target: Path) -> Path:
    """Replace `target` with a copy of `folder`; a reader never sees a half-written release."""
    return atomic.write_folder(target, lambda tmp: shutil.copytree(folder, tmp, dirs_exist_ok=True), "the release")
