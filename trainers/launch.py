"""Start the trainer and stop all of it: `python -m trainers.launch --config run.yaml`.

On a CPU the trainer is one process; with GPUs it is DeepSpeed's launcher, which starts one
process per GPU (and, given a hostfile, per GPU of every node listed, over ssh/pdsh). Either way
the trainer runs in a process group of its own: SIGINT or SIGTERM here (what Dagster sends when a
run is cancelled) stops the whole group, and if this process is killed outright the group's
guard kills it (see `trainers.process_group`), so a cancelled run leaves no rank holding a GPU.
"""

from __future__ import annotations

import argparse
import signal
import sys

from trainers.process_group import start_group, stop_group


def trainer_command(config: str, num_gpus: int, hostfile: str = "") -> list[str]:
    if num_gpus == 0:
        return [sys.executable, "-m", "trainers.train", "--config", config]
    launcher = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(num_gpus)]
    if hostfile:  # every node listed runs num_gpus ranks; the launcher reaches them over ssh/pdsh
        launcher += ["--hostfile", hostfile]
    return [*launcher, "--module", "trainers.train", "--config", config]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--num-gpus", type=int, default=0)
    parser.add_argument("--hostfile", default="")
    args = parser.parse_args(argv)

    child = start_group(trainer_command(args.config, args.num_gpus, args.hostfile))

    def stop(signum, _frame):
        stop_group(child)
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = child.wait()
    stop_group(child, grace_s=5)  # anything the trainer left behind
    return code


if __name__ == "__main__":
    sys.exit(main())
