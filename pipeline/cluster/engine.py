"""Where a batch's per-row work runs: here, in the step's own processes (`local`, the
single-machine path), or in blocks of rows spread over a Ray cluster (`ray`).

The work handed to an engine is a pure function of its block (the prose rules, a program's own
tests, MinHash signatures, passage vectors), so a block gives the same answer on any node, and a
block whose node dies is simply run again on another (Ray's task retries): nothing is lost, and
nothing is counted twice, since only the driver, collecting the blocks in order, writes.
Everything that needs the whole batch at once (LSH clustering, the nearest-neighbour indexes,
the tables) stays with the step, on the machine that runs it.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.progress import Progress
from pipeline.settings import Engine, OrchestrationSettings, RaySettings

log = logging.getLogger("schoolhouse.cluster")

NAMESPACE = "schoolhouse"


@dataclass
class BlockRecord:
    """One block's run: which rows, on which node, how long."""

    what: str
    block: int
    rows: int
    node: str
    seconds: float


def _run_block(fn: Callable[[list], Any], block: list) -> tuple[Any, str, float]:
    """A block's result, with the node it ran on and its seconds (on a Ray worker)."""
    import ray

    started = time.perf_counter()
    result = fn(block)
    return result, ray.get_runtime_context().get_node_id(), time.perf_counter() - started


@dataclass
class LocalEngine:
    """Every block here, in this process: the functions spread their own work over this
    machine's cores (a process pool for the rules, a sandbox per core for code tests)."""

    name: str = "local"
    records: list[BlockRecord] = field(default_factory=list)

    def map(self, fn: Callable[[list], Any], items: Sequence, what: str) -> list[Any]:
        """[fn(items)]: one block, the whole batch."""
        started = time.perf_counter()
        result = fn(items)
        self.records.append(BlockRecord(what, 0, len(items), "local", time.perf_counter() - started))
        return [result]


@dataclass
class RayEngine:
    """Blocks of `block_rows` rows as Ray tasks, spread over the cluster's nodes, each retried up
    to `max_retries` times when its node dies; results in block order."""

    settings: RaySettings
    name: str = "ray"
    records: list[BlockRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        import ray

        if not ray.is_initialized():
            check_reachable(self.settings.address)
            ray.init(address=self.settings.address, namespace=NAMESPACE, log_to_driver=False,
                     configure_logging=False)  # fmt: skip

    def map(self, fn: Callable[[list], Any], items: Sequence, what: str) -> list[Any]:
        import ray

        size = self.settings.block_rows
        blocks = [list(items[first : first + size]) for first in range(0, len(items), size)]
        if not blocks:
            return []
        task = ray.remote(_run_block).options(scheduling_strategy="SPREAD", max_retries=self.settings.max_retries,
                                              retry_exceptions=False, name=f"schoolhouse:{what}")  # fmt: skip
        fn_ref = ray.put(fn)
        pending = {task.remote(fn_ref, block): index for index, block in enumerate(blocks)}
        results: list[Any] = [None] * len(blocks)
        progress = Progress(f"{what} on ray", len(items), log)
        try:
            while pending:
                [done], _ = ray.wait(list(pending), num_returns=1)
                index = pending.pop(done)
                results[index], node, seconds = ray.get(done)
                self.records.append(BlockRecord(what, index, len(blocks[index]), node, seconds))
                progress.advance(len(blocks[index]))
        finally:  # a block that failed for good, or a cancelled step: the cluster stops the rest
            for ref in pending:
                ray.cancel(ref, force=True)
        return results

    def nodes(self) -> dict[str, dict]:
        """The cluster's live nodes by id: their address and resources."""
        import ray

        return {n["NodeID"]: {"address": n["NodeManagerAddress"], "resources": n["Resources"]}
                for n in ray.nodes() if n["Alive"]}  # fmt: skip


def check_reachable(address: str, timeout_s: float = 10) -> None:
    """Fail in seconds, naming the setting, when nothing listens at the cluster's address (Ray's
    own client waits minutes before it gives up)."""
    if address == "auto":
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ConnectionError(f"orchestration.ray.address = {address!r}: no Ray cluster answers there ({error}); "
                              "start one (`ray start --head`, or `python -m pipeline.cluster.local` to try it on "
                              "this machine) or correct the address") from None  # fmt: skip


def engine_for(settings: OrchestrationSettings) -> LocalEngine | RayEngine:
    return RayEngine(settings.ray) if settings.engine == Engine.ray else LocalEngine()


def blocks_by_node(records: list[BlockRecord]) -> dict[str, int]:
    """How many blocks each node ran (a block run again after its node died counts where it finished)."""
    return dict(Counter(record.node for record in records))
