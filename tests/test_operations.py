"""Operations: the asset graph pinned by a snapshot, a Postgres-backed instance, and the UI used
as a person uses it (dagster dev, the Materialize button's GraphQL call, headless Chromium)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from assets.definitions import defs

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"
SCREENSHOT = Path(__file__).parent / "screenshots" / "asset-graph.png"


def service(name: str, present: bool) -> None:
    """CI (.ci/run) installs and starts every service; elsewhere a missing one skips its test."""
    if not present:
        if os.environ.get("SCHOOLHOUSE_REQUIRE_SERVICES"):
            pytest.fail(f"{name} is required here (SCHOOLHOUSE_REQUIRE_SERVICES is set) but missing")
        pytest.skip(f"{name} is not available; .ci/run installs it")


def graph_snapshot() -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        spec = node.assets_def.specs_by_key[key]
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "kinds": sorted(spec.kinds),
            "deps": sorted(d.to_user_string() for d in node.parent_keys),
            "partitioned": node.partitions_def is not None,
            "pool": node.pools and sorted(node.pools)[0] or None,
            "kubernetes": node.assets_def.op.tags.get("dagster-k8s/config"),  # a GPU step asks for a GPU there
        }
    checks = {}
    for check_key in graph.asset_check_keys:
        spec = graph.get_check_spec(check_key)
        checks[f"{check_key.asset_key.to_user_string()}:{check_key.name}"] = {"blocking": spec.blocking}
    return {
        "assets": assets,
        "checks": dict(sorted(checks.items())),
        "jobs": sorted(j.name for j in defs.jobs),
        "schedules": {
            s.name: {"cron": s.cron_schedule, "job": s.job_name} for s in sorted(defs.schedules, key=lambda s: s.name)
        },
        "sensors": sorted(s.name for s in defs.sensors),
    }


def test_asset_graph_matches_the_snapshot():
    current = graph_snapshot()
    if os.environ.get("SCHOOLHOUSE_UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert SNAPSHOT.exists(), f"{SNAPSHOT} is missing: write it with SCHOOLHOUSE_UPDATE_SNAPSHOTS=1"
    assert current == json.loads(SNAPSHOT.read_text()), "asset graph changed: review, then update the snapshot"


@pytest.mark.integration
def test_materializes_with_a_postgres_backed_instance(tmp_path, artifact_home):
    url = os.environ.get("SCHOOLHOUSE_TEST_POSTGRES_URL")
    service("PostgreSQL (SCHOOLHOUSE_TEST_POSTGRES_URL)", bool(url))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        f"storage:\n  postgres:\n    postgres_url: {url}\ntelemetry:\n  enabled: false\n"
    )
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        job = defs.resolve_job_def("generate_batch")
        result = job.execute_in_process(instance=instance, partition_key="2026-11-20|code",
                                        op_selection=["topics"], raise_on_error=False)  # fmt: skip
        assert result.success
        event = instance.get_latest_materialization_event(dg.AssetKey("topics"))
        assert event is not None and event.run_id == result.run_id
        assert instance.get_run_by_id(result.run_id).is_success


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.loads(response.read())
    assert "errors" not in payload, payload
    return payload["data"]


LAUNCH = """
mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""


class Browser:
    """Headless Chromium driven over the DevTools protocol: open a page, click, read, screenshot."""

    def __init__(self, profile: Path):
        from pipeline.teacher.server import free_port

        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        self.port = free_port()
        self.process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--remote-debugging-port={self.port}", f"--user-data-dir={profile}",
             "--window-size=1600,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json", timeout=5) as response:
                    pages = [t for t in json.loads(response.read()) if t["type"] == "page"]
                self.socket_url = pages[0]["webSocketDebuggerUrl"]
                break
            except (OSError, IndexError, KeyError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self._id = 0

    def call(self, method: str, **params) -> dict:
        import asyncio

        import websockets

        async def once() -> dict:
            async with websockets.connect(self.socket_url, max_size=None) as socket:
                self._id += 1
                await socket.send(json.dumps({"id": self._id, "method": method, "params": params}))
                while True:
                    message = json.loads(await socket.recv())
                    if message.get("id") == self._id:
                        return message.get("result", {})

        return asyncio.run(once())

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def open(self, url: str, until: tuple[str, ...], timeout_s: float = 90, scroll: bool = False) -> str:
        """Navigate, then wait until the page's text shows every string in `until`. With `scroll`
        (for Dagster's virtualized lists, which hold only the rows in view) each look also scrolls
        every scrollable part of the page one screen down, and the text is what every look saw."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout_s
        seen = ""
        while time.monotonic() < deadline:
            text = self.evaluate("document.body ? document.body.innerText : ''") or ""
            seen = f"{seen}\n{text}" if scroll else text
            if all(part in seen for part in until):
                break
            if scroll:
                self.evaluate("for (const e of document.querySelectorAll('*')) "
                              "if (e.scrollHeight > e.clientHeight + 1) e.scrollTop += e.clientHeight")  # fmt: skip
            time.sleep(0.5)
        return seen

    def screenshot(self, path: Path) -> None:
        import base64

        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.mark.integration
def test_ui_materializes_like_the_button_and_shows_the_graph(tmp_path, artifact_home):
    service("Chromium", bool(shutil.which("chromium") or shutil.which("chromium-browser")))
    from pipeline.teacher.server import free_port

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    log = open(tmp_path / "dagster-dev.log", "wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "dev", "-m", "assets.definitions", "-h", "127.0.0.1",
         "-p", str(port)],
        cwd=ROOT, env={**os.environ, "DAGSTER_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # dagster dev's children may ignore SIGTERM: we kill the group
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        location = None
        while time.monotonic() < deadline and location is None:
            try:
                data = graphql(port, "{ workspaceOrError { ... on Workspace { locationEntries { name "
                               "locationOrLoadError { __typename } } } } }")  # fmt: skip
                entries = data["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation":
                    location = entries[0]["name"]
            except OSError:
                pass
            time.sleep(1)
        assert location, (tmp_path / "dagster-dev.log").read_text()[-3000:]

        # What the Materialize button sends for the selected asset.
        params = {
            "selector": {"repositoryLocationName": location, "repositoryName": "__repository__",
                         "pipelineName": "__ASSET_JOB", "assetSelection": [{"path": ["topics"]}],
                         "assetCheckSelection": []},
            "mode": "default",
            "executionMetadata": {"tags": []},
        }  # fmt: skip
        launched = graphql(port, LAUNCH, {"executionParams": params})["launchPipelineExecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        status = None
        while time.monotonic() < deadline + 180 and status not in ("SUCCESS", "FAILURE", "CANCELED"):
            time.sleep(2)
            status = graphql(port, "query R($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
                             {"id": run_id})["runOrError"]["status"]  # fmt: skip
        assert status == "SUCCESS", (tmp_path / "dagster-dev.log").read_text()[-3000:]
        assert (artifact_home / "tables" / "topics.parquet").exists()

        # What "Skip" on Dagster's first-visit community dialog records, so it never covers the graph.
        assert graphql(port, "mutation { setNuxSeen }")["setNuxSeen"] is True
        browser = Browser(tmp_path / "chromium-profile")
        try:
            # The catalog lists every asset; the lineage page draws the graph with the run's result.
            names = ("topics", "generations", "decontaminated", "student_model", "exam_report", "hub_release",
                     "experiment_arm", "experiment_report")
            catalog = browser.open(f"http://127.0.0.1:{port}/assets", until=names, scroll=True)
            for name in names:
                assert name in catalog, f"{name} is not listed in the catalog"
            groups = ("generation", "curation", "training", "exam", "release", "experiments")
            lineage = browser.open(f"http://127.0.0.1:{port}/asset-groups", until=groups)
            for group in groups:
                assert group in lineage, f"group {group} is not on the lineage page"
            # The generation group's lineage after the run: topics materialized, the batches not yet.
            group = f"http://127.0.0.1:{port}/locations/__repository__@{location}/asset-groups/generation/lineage"
            page = browser.open(group, until=("topics", "prompts", "generations", "Materialized"))
            assert "Materialized" in page and "0% filled" in page, page
            time.sleep(3)  # let the graph lay out; the dialog would open after 1 s
            assert "Join the Dagster community" not in browser.evaluate("document.body.innerText")
            shot = tmp_path / "asset-graph.png"
            browser.screenshot(shot)
        finally:
            browser.close()
        assert shot.stat().st_size > 20_000
        if os.environ.get("SCHOOLHOUSE_UPDATE_SCREENSHOTS"):  # the picture in the README
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, SCREENSHOT)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        log.close()
