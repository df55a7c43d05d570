"""Nothing the pipeline starts outlives it: process groups under a guard, default signal
dispositions whatever the starter ignored, and child output always drained."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.teacher.server import drain

# A starter that ignores SIGTERM (as some shells and supervisors leave it), starts a group whose
# members also try to ignore SIGTERM, prints their pids, then waits to be killed.
STARTER = textwrap.dedent("""
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from trainers.process_group import start_group
    tree = "trap '' TERM; sleep 300 & sleep 300 & echo $$ $(jobs -p); wait"
    group = start_group(["bash", "-c", tree], stdout=subprocess.PIPE, text=True)
    print(group.pid, group.stdout.readline().strip(), flush=True)
    time.sleep(300)
""")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def sigterm_disposition(pid: int) -> bool:
    """Whether SIGTERM is ignored by `pid` (SigIgn in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    raise AssertionError("no SigIgn line")


def test_a_killed_starter_takes_its_whole_group_with_it():
    starter = subprocess.Popen([sys.executable, "-c", STARTER], stdout=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))  # fmt: skip
    pids = [int(p) for p in starter.stdout.readline().split()]
    guard, members = pids[0], pids[1:]
    assert len(members) == 3 and all(alive(p) for p in pids)
    assert sigterm_disposition(starter.pid)  # the starter's environment ignores SIGTERM...
    assert not sigterm_disposition(guard)  # ...and the guard does not inherit that
    starter.kill()  # SIGKILL: no handler, no cleanup in the starter
    starter.wait()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids), [p for p in pids if alive(p)]


def test_the_guard_returns_the_commands_exit_code():
    from trainers.process_group import start_group, stop_group

    group = start_group(["sh", "-c", "exit 7"])
    assert group.wait(timeout=30) == 7
    stopped = start_group(["sleep", "300"])
    time.sleep(0.5)
    stop_group(stopped, grace_s=5)
    assert stopped.returncode is not None


def test_output_is_drained_even_when_the_log_and_the_callback_fail(tmp_path):
    """A fresh state folder has no logs/; a callback may raise: the child must never block on a full pipe."""
    child = subprocess.Popen([sys.executable, "-c", "import sys\nfor i in range(200_000): print('line', i)"],
                             stdout=subprocess.PIPE)  # fmt: skip
    log_path = tmp_path / "fresh-state" / "logs" / "vllm.log"

    def callback(line: str) -> None:
        raise RuntimeError("a broken callback")

    drain(child.stdout, log_path, callback)
    assert child.wait(timeout=60) == 0
    lines = log_path.read_text().splitlines()
    assert len(lines) == 200_000 and lines[-1] == "line 199999"


def test_output_is_drained_when_the_log_cannot_be_opened(tmp_path):
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the folder should be")
    child = subprocess.Popen([sys.executable, "-c", "print('x' * 100_000 * 20)"], stdout=subprocess.PIPE)
    drain(child.stdout, blocker / "vllm.log")
    assert child.wait(timeout=60) == 0
    assert os.path.isfile(blocker)


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


# A pipeline step that starts the teacher with SIGTERM ignored in its environment, then waits.
VLLM_STEP = textwrap.dedent("""
    import signal, sys, threading, time
    from pathlib import Path
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from pipeline.teacher.server import VllmServer, free_port
    server = VllmServer(model_dir=Path(sys.argv[1]), served_name="teacher", port=free_port(), dtype="float32",
                        log_path=Path(sys.argv[2]), startup_timeout_s=600)
    threading.Thread(target=server.start, daemon=True).start()
    while server._process is None:
        time.sleep(0.1)
    print(server._process.pid, flush=True)
    time.sleep(900)
""")


@pytest.mark.integration
def test_a_killed_step_leaves_no_vllm_process(embedded_teacher_dir, tmp_path):
    step = subprocess.Popen([sys.executable, "-c", VLLM_STEP, str(embedded_teacher_dir), str(tmp_path / "vllm.log")],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    group = int(step.stdout.readline())
    deadline = time.monotonic() + 300
    while len(group_members(group)) < 4:  # guard, api server, engine core, its worker
        assert step.poll() is None and time.monotonic() < deadline, (tmp_path / "vllm.log").read_text()[-3000:]
        time.sleep(0.5)
    started = group_members(group)
    step.kill()  # the step dies outright, as a SIGKILLed Dagster run would
    step.wait()
    deadline = time.monotonic() + 60
    while group_members(group) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert group_members(group) == [], f"of {started}, still running: {group_members(group)}"


# A command that runs work in the run pool (as `schoolhouse generate` runs a batch), prints the
# worker's pid, then waits to be killed. The worker starts with SIGTERM ignored, as under a starter
# that ignores it; the command itself dies of it.
POOL_COMMAND = textwrap.dedent("""
    import os, signal, time
    from assets.launch import run_pool
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with run_pool(1) as pool:
        print(pool.submit(os.getpid).result(), flush=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        time.sleep(300)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_run_pool_worker_stops_when_its_command_is_killed_alone(sig):
    """`kill PID` or the OOM killer reaches the command's process alone: its run processes go too."""
    command = subprocess.Popen([sys.executable, "-c", POOL_COMMAND], stdout=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    worker = int(command.stdout.readline())
    assert alive(worker)
    os.kill(command.pid, sig)
    command.wait(timeout=30)
    deadline = time.monotonic() + 30
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(worker), f"the run pool's worker {worker} outlived its command ({sig.name})"
