"""Training on a Ray cluster's nodes: Ray places the run (one bundle per node, never two on one
node), and on each placed node `torch.distributed.run` starts that node's ranks of the one
trainer (`trainers.train`, DeepSpeed inside), all meeting at the first node's address. Ray only
chooses where and starts; the ranks talk to each other as on any multi-node run (NCCL on GPUs,
gloo on CPUs), and every node must see the run's config and data folders at the same paths
(shared storage).

    python -m pipeline.cluster.training --config run.json --address HEAD:PORT --nodes 2 --gpus-per-node 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def _node_address() -> tuple[str, int]:
    """This node's address and a port free on all its interfaces, for the ranks to meet at."""
    import socket

    import ray

    with socket.socket() as probe:
        probe.bind(("", 0))
        return ray.util.get_node_ip_address(), probe.getsockname()[1]


def _run_node(config: str, nodes: int, rank: int, per_node: int, master: str, port: int) -> tuple[int, str]:
    """One node's ranks, in a process group that dies with this task (even by SIGKILL: Ray kills
    a task's worker when it is cancelled or its driver, the Dagster step, ends): (exit code, the
    tail of its output)."""
    from trainers.process_group import start_group, stop_group

    command = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--node_rank={rank}",
               f"--nproc_per_node={per_node}", f"--master_addr={master}", f"--master_port={port}",
               "-m", "trainers.train", "--config", config]  # fmt: skip
    child = start_group(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = child.communicate()
    finally:
        stop_group(child, grace_s=5)
    return child.returncode, out[-4000:]


def train_on_ray(config: str, address: str, nodes: int, gpus_per_node: int = 0, cpus_per_node: int = 1,
                 timeout_s: float = 600, log=print) -> None:  # fmt: skip
    """Train the run `config` on `nodes` nodes of the cluster at `address`, `gpus_per_node` ranks
    on each (one rank per node on CPUs). The first node to fail stops the others (their ranks
    would wait for it in a collective) and the error names it with its output's tail."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from pipeline.cluster.engine import check_reachable

    check_reachable(address)
    ray.init(address=address, log_to_driver=False, configure_logging=False)
    bundle = {"CPU": cpus_per_node, **({"GPU": gpus_per_node} if gpus_per_node else {})}
    group = placement_group([bundle] * nodes, strategy="STRICT_SPREAD")
    pending: dict = {}
    try:
        if not group.wait(timeout_s):
            raise TimeoutError(f"the cluster at {address} did not offer {nodes} nodes of {bundle} in {timeout_s}s")

        def on(rank: int) -> PlacementGroupSchedulingStrategy:
            return PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=rank)

        master, port = ray.get(ray.remote(_node_address).options(num_cpus=0, scheduling_strategy=on(0)).remote())
        log(f"training on {nodes} nodes of the Ray cluster at {address}, ranks meeting at {master}:{port}")
        node = ray.remote(_run_node)
        for rank in range(nodes):
            run = node.options(num_cpus=cpus_per_node, num_gpus=gpus_per_node, max_retries=0,
                               scheduling_strategy=on(rank))  # fmt: skip
            pending[run.remote(config, nodes, rank, max(gpus_per_node, 1), master, port)] = rank
        while pending:
            [done], _ = ray.wait(list(pending), num_returns=1)
            rank = pending.pop(done)
            code, out = ray.get(done)
            if code != 0:
                raise RuntimeError(f"training node {rank} of {nodes} exited {code}:\n{out}")
            if rank == 0:
                log(out[-2000:])  # rank 0's progress lines
    finally:
        for run in pending:  # the other nodes' ranks would wait for the failed one
            ray.cancel(run, force=True)
        remove_placement_group(group)
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--gpus-per-node", type=int, default=0)
    args = parser.parse_args(argv)
    # Dagster's Pipes reach this driver, not the ranks (a Ray worker has its node's environment):
    # the driver reports the run's summary, as the trainer does when Dagster starts it
    from trainers.config import TrainConfig
    from trainers.train import reporter

    out_dir = Path(TrainConfig.model_validate_json(Path(args.config).read_text()).out_dir)
    with reporter(0) as report:
        train_on_ray(args.config, args.address, args.nodes, args.gpus_per_node, log=report.log)
        report.finish(json.loads((out_dir / "summary.json").read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
