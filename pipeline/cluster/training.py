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
import subprocess
import sys


def _node_address() -> tuple[str, int]:
    """This node's address and a port free on it, for the ranks to meet at."""
    import ray

    from pipeline.teacher.server import free_port

    return ray.util.get_node_ip_address(), free_port()


def _run_node(config: str, nodes: int, rank: int, per_node: int, master: str, port: int) -> tuple[int, str]:
    """One node's ranks, in a process group that dies with this task (even by SIGKILL: Ray kills
    a task's worker when its driver, the Dagster step, is cancelled)."""
    from trainers.process_group import start_group, stop_group

    command = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--node_rank={rank}",
               f"--nproc_per_node={per_node}", f"--master_addr={master}", f"--master_port={port}",
               "-m", "trainers.train", "--config", config]  # fmt: skip
    child = start_group(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = child.communicate()
    finally:
        stop_group(child, grace_s=5)
    return child.returncode, err[-3000:]


def train_on_ray(config: str, address: str, nodes: int, gpus_per_node: int = 0, cpus_per_node: int = 1,
                 timeout_s: float = 600) -> None:  # fmt: skip
    """Train the run `config` on `nodes` nodes of the cluster at `address`, `gpus_per_node` ranks
    on each (one rank per node on CPUs); raises naming the node whose ranks failed."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    ray.init(address=address, log_to_driver=False, configure_logging=False)
    bundle = {"CPU": cpus_per_node, **({"GPU": gpus_per_node} if gpus_per_node else {})}
    group = placement_group([bundle] * nodes, strategy="STRICT_SPREAD")
    try:
        if not group.wait(timeout_s):
            raise TimeoutError(f"the cluster at {address} did not offer {nodes} nodes of {bundle} in {timeout_s}s")

        def on(rank: int) -> PlacementGroupSchedulingStrategy:
            return PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=rank)

        master, port = ray.get(ray.remote(_node_address).options(num_cpus=0, scheduling_strategy=on(0)).remote())
        node = ray.remote(_run_node)
        runs = [node.options(num_cpus=cpus_per_node, num_gpus=gpus_per_node, max_retries=0,
                             scheduling_strategy=on(rank)).remote(config, nodes, rank, max(gpus_per_node, 1), master,
                                                                  port) for rank in range(nodes)]  # fmt: skip
        for rank, (code, err) in enumerate(ray.get(runs)):
            if code != 0:
                raise RuntimeError(f"training node {rank} of {nodes} exited {code}:\n{err}")
    finally:
        remove_placement_group(group)
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--gpus-per-node", type=int, default=0)
    args = parser.parse_args(argv)
    train_on_ray(args.config, args.address, args.nodes, args.gpus_per_node)
    return 0


if __name__ == "__main__":
    sys.exit(main())
