"""A real multi-node Ray cluster on one machine, to try the cluster path and to test it: a head
(no CPUs: it only keeps the cluster's state and schedules) and worker nodes, each a `ray start
--block` of its own, in a session of its own with its own temp folder, and each with a resource
named after it (`worker_0`, `worker_1`, ...) so that work can be seen, or pinned, per node.

Stopping kills the sessions, so nothing the cluster started is left behind, and `ray stop` (which
stops every Ray process of the user on the machine) is never needed.

    python -m pipeline.cluster.local --workers 2     # prints the address; Ctrl-C stops it
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.teacher.server import free_port

# a driver of its own prints the live nodes, {node id: name}
_NODES = """
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
alive = [n for n in ray.nodes() if n["Alive"]]
names = {n["NodeID"]: [r for r in n["Resources"] if r == "head" or r.startswith("worker_")] for n in alive}
print(json.dumps({node: (found or ["?"])[0] for node, found in names.items()}))
"""


def _ray() -> str:
    return str(Path(sys.executable).with_name("ray"))


def session_processes(session: int) -> list[int]:
    """The pids of the live processes in `session`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":  # field 6 of stat, after the state and ppid, pgrp
            pids.append(int(entry.name))
    return pids


def _signal_session(session: int, signum: int) -> None:
    for pid in session_processes(session):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


class LocalCluster:
    """Head + `workers` worker nodes of `cpus_per_worker` CPUs each, as separate processes."""

    def __init__(self, workers: int = 2, cpus_per_worker: int = 1, env: dict | None = None):
        self.workers, self.cpus_per_worker = workers, cpus_per_worker
        # short: Ray's unix sockets live under the temp folder and a socket path is at most 107 bytes
        self.root = Path(tempfile.mkdtemp(prefix="shray-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
        self.nodes: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, args: list[str]) -> None:
        folder = self.root / name
        folder.mkdir()
        log = (self.root / f"{name}.log").open("w")
        self.nodes[name] = subprocess.Popen(
            [_ray(), "start", "--block", "--disable-usage-stats", f"--temp-dir={folder}", *args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env, start_new_session=True,
        )  # fmt: skip

    def start(self, timeout_s: float = 300) -> str:
        # every port this cluster listens on is its own: a second cluster (or another user's) may run beside it
        self._start("head", ["--head", f"--port={self.port}", f"--ray-client-server-port={free_port()}",
                             f"--dashboard-agent-listen-port={free_port()}", "--num-cpus=0", "--num-gpus=0",
                             "--include-dashboard=false", '--resources={"head": 1}'])  # fmt: skip
        for k in range(self.workers):
            self._start(f"worker_{k}", [f"--address={self.address}", f"--dashboard-agent-listen-port={free_port()}",
                                        f"--num-cpus={self.cpus_per_worker}", "--num-gpus=0",
                                        f'--resources={{"worker_{k}": 1}}'])  # fmt: skip
        self.wait_for(self.workers + 1, timeout_s)
        return self.address

    def alive_nodes(self) -> dict[str, str]:
        """The cluster's live nodes, {node id: name} (head, worker_0, ...), asked by a driver process
        of its own."""
        done = subprocess.run([sys.executable, "-c", _NODES, self.address], capture_output=True, text=True,
                              env=self.env, timeout=120)  # fmt: skip
        return json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {}

    def wait_for(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, process in self.nodes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"ray node {name} exited ({process.returncode}): "
                                       f"{(self.root / f'{name}.log').read_text()[-2000:]}")  # fmt: skip
            if len(self.alive_nodes()) >= count:
                return
            time.sleep(0.5)
        logs = "\n".join(f"--- {name}\n{(self.root / f'{name}.log').read_text()[-1000:]}" for name in self.nodes)
        raise TimeoutError(f"the local Ray cluster at {self.address} did not have {count} nodes within "
                           f"{timeout_s}s\n{logs}")  # fmt: skip

    def running_tasks(self, name: str) -> list[str]:
        """What the node's task workers are running now, from their process titles (`ray::<task>`;
        an idle worker is `ray::IDLE`), seen from outside the cluster."""
        titles = []
        for pid in session_processes(self.nodes[name].pid):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::") and not title.startswith("ray::IDLE"):
                titles.append(title)
        return titles

    def _kill_sessions(self, names: list[str], timeout_s: float = 30) -> None:
        """SIGKILL the nodes' sessions until nothing is left in them (a process forked during a
        pass is caught by the next)."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = [pid for name in names for pid in session_processes(self.nodes[name].pid)]
            if not left:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes of the local Ray cluster would not die: {left}")
            for name in names:
                _signal_session(self.nodes[name].pid, signal.SIGKILL)
            time.sleep(0.1)
        for name in names:
            self.nodes[name].wait()

    def kill(self, name: str) -> None:
        """SIGKILL a node and everything it started (its raylet, object store and workers)."""
        self._kill_sessions([name])

    def processes(self) -> list[int]:
        return [pid for process in self.nodes.values() for pid in session_processes(process.pid)]

    def stop(self, grace_s: float = 5) -> None:
        """SIGTERM every node's session, then SIGKILL what is left; remove the temp folders."""
        for process in self.nodes.values():
            _signal_session(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        self._kill_sessions(list(self.nodes))
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=int, default=1)
    args = parser.parse_args(argv)
    with LocalCluster(args.workers, args.cpus_per_worker) as cluster:
        print(f"Ray cluster at {cluster.address} (head + {args.workers} workers); set orchestration.engine: ray and "
              f"orchestration.ray.address: {cluster.address}. Ctrl-C stops it.", flush=True)  # fmt: skip
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
