"""The `schoolhouse` command: the chain, or one stage of it, as runs in the Dagster instance
(so they show in `schoolhouse ui`), on a profile with single values overridden.

    schoolhouse run                                   # what `make demo` does: today's batches, train, exam, release
    schoolhouse run --profile mine.yaml --set generation.samples_per_domain=500
    schoolhouse generate --date 2026-12-05 --domain text
    schoolhouse curate --date 2026-12-05               # both domains' batches of that day
    schoolhouse train --set training.max_steps=200
    schoolhouse exam
    schoolhouse release
    schoolhouse doctor --profile phi-1.5               # the preflight: one line per check
    schoolhouse ui                                     # the Dagster web UI

The profile is --profile, else $SCHOOLHOUSE_PROFILE, else `demo`. `--set stage.field=value`
names the same fields as the Launchpad (values are read as YAML: 3, 0.5, true, [a, b]). Every
command but `ui` checks first what it needs (`schoolhouse doctor`'s checks) and stops, naming the
fix, before any run starts. State lives in $SCHOOLHOUSE_HOME (default ./state) and the Dagster
instance in $DAGSTER_HOME (default <SCHOOLHOUSE_HOME>/dagster).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from assets.partitions import DOMAINS
from pipeline.paths import artifact_home
from pipeline.settings import STAGES, ConfigError, resolve
from trainers import atomic

log = logging.getLogger("schoolhouse.cli")

# The project's instance config (pools: one GPU step at a time, one writer of a shared table)
INSTANCE_CONFIG = Path(__file__).resolve().parent.parent / "dagster.yaml"

EXAMPLES = {
    "run": "schoolhouse run --profile mine.yaml --set generation.samples_per_domain=500",
    "generate": "schoolhouse generate --date 2026-12-05 --domain text",
    "curate": "schoolhouse curate --date 2026-12-05",
    "train": "schoolhouse train --set training.max_steps=200",
    "exam": "schoolhouse exam --set exam.mmlu_limit=0",
    "release": "schoolhouse release --set release.repo_id=me/student",
    "experiments": "schoolhouse experiments --profile experiments",
    "doctor": "schoolhouse doctor --profile mine.yaml",
    "ui": "schoolhouse ui",
}
HELP = {
    "run": "the whole chain: the day's batch of every domain, then train, exam and release",
    "generate": "plan and generate batches (date x domain): prompts and the teacher's answers",
    "curate": "curate generated batches against every earlier one and pack their token shards",
    "train": "train the student on every batch's token shards so far",
    "exam": "the student's exam (MMLU, HumanEval, general-knowledge tasks) and the forgetting report",
    "release": "the model card, the dataset card and the release (hub or local folder)",
    "experiments": "the declared experiments: data, starting checkpoint, each arm, report",
    "doctor": "check what a run needs on this machine, one line per check; exit 1 when any fails",
    "ui": "the Dagster web UI on this instance",
}


def parse_sets(pairs: list[str]) -> dict[str, dict]:
    """`stage.field=value` pairs -> the resource's overrides ({stage: {field: value}})."""
    overrides: dict[str, dict] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        stage, dot, field = name.strip().partition(".")
        if not sep or not dot or not field:
            raise ConfigError(f"--set {pair!r}: write stage.field=value, e.g. training.max_steps=200")
        if stage not in STAGES:
            raise ConfigError(f"--set {pair!r}: {stage!r} is not a stage (one of {', '.join(STAGES)})")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {pair!r}: the value is not YAML ({error})") from None
        *groups, name = field.split(".")  # a component's field: curation.gopher.min_words
        section = overrides.setdefault(stage, {})
        for group in groups:
            section = section.setdefault(group, {})
        section[name] = value
    return overrides


def _date(text: str) -> str:
    try:
        return datetime.strptime(text, "%Y-%m-%d").strftime("%Y-%m-%d")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date as YYYY-MM-DD") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="schoolhouse", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(f"  {e}" for e in EXAMPLES.values()))  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, text in HELP.items():
        sub = commands.add_parser(name, help=text, description=f"{text}.\n\nexample: {EXAMPLES[name]}",
                                  formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        if name == "ui":
            sub.add_argument("--port", type=int, default=3000)
            continue
        sub.add_argument("--profile", default=os.environ.get("SCHOOLHOUSE_PROFILE", "demo"),
                         help="a shipped profile (demo, experiments, phi-1.5, phi-2) or a YAML file "
                              "(default: $SCHOOLHOUSE_PROFILE, else demo)")  # fmt: skip
        sub.add_argument("--set", dest="sets", action="append", default=[], metavar="STAGE.FIELD=VALUE",
                         help="override one setting (repeatable), as in the Launchpad")  # fmt: skip
        if name in ("doctor",):
            continue
        if name in ("run", "generate", "curate", "experiments"):
            sub.add_argument("--teacher-url", help="ask this running server (its /v1 URL) instead of starting one")
            sub.add_argument("--date", dest="dates", action="append", metavar="YYYY-MM-DD", type=_date,
                             help="a batch date (repeatable; default: today, UTC)")  # fmt: skip
        if name in ("generate", "curate"):
            sub.add_argument("--domain", dest="domains", action="append", choices=DOMAINS,
                             help="a domain (repeatable; default: all)")  # fmt: skip
        if name == "experiments":
            sub.add_argument("--skip-batches", action="store_true",
                             help="use the batches curated so far; start no teacher")  # fmt: skip
    return parser


def _dagster_home() -> Path:
    """$DAGSTER_HOME, else <SCHOOLHOUSE_HOME>/dagster with the project's instance config."""
    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(artifact_home() / "dagster")
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    # The first command on a new instance creates its storage; two creating it at once both stamp
    # its schema version ("table alembic_version already exists", or two heads: the instance is
    # broken for good). Commands open it one after the other; after the first this takes a moment.
    with atomic.exclusive(home / "opening"):
        if not (home / "dagster.yaml").exists() and INSTANCE_CONFIG.exists():
            atomic.write_text(home / "dagster.yaml", INSTANCE_CONFIG.read_text(), "the Dagster instance's config")
        import dagster as dg

        with contextlib.suppress(Exception), dg.DagsterInstance.from_config(str(home)):
            pass  # an instance that does not open is reported by the `dagster` check, naming the fix
    return home


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("schoolhouse").setLevel(logging.INFO)  # ours; the libraries' INFO lines are noise here
    if args.command == "ui":
        _dagster_home()
        dagster = str(Path(sys.executable).with_name("dagster"))  # this environment's, activated or not
        os.execv(dagster, [dagster, "dev", "-m", "assets.definitions", "--port", str(args.port)])
    try:
        overrides = {"profile": args.profile, **parse_sets(args.sets)}
        settings = resolve(args.profile, overrides)
    except ConfigError as error:  # before anything is written, the instance included
        print(f"schoolhouse: {error}", file=sys.stderr)
        return 2
    _dagster_home()
    if args.command == "doctor":
        return doctor(settings)
    return launch_command(args, overrides)


def dagster_storage(settings) -> list:
    """The Dagster instance at $DAGSTER_HOME answers a read of its run storage."""
    import dagster as dg

    from pipeline.doctor import Check

    home = os.environ["DAGSTER_HOME"]
    try:
        with dg.DagsterInstance.get() as instance:
            instance.get_runs(limit=1)
            storage = type(instance.run_storage).__name__
    except Exception as error:
        found = f"the instance at {home} did not answer ({type(error).__name__}: {error})"[:300]
        return [Check("dagster", False, found,
                      "check $DAGSTER_HOME/dagster.yaml and its storage (docs/operations.md)")]  # fmt: skip
    return [Check("dagster", True, f"instance at {home} ({storage}) answers")]


EXTRA_CHECKS = {"dagster": dagster_storage}


def doctor(settings) -> int:
    from pipeline.doctor import PARTS, diagnose, format_report

    checks = diagnose(settings, [*PARTS, *EXTRA_CHECKS], EXTRA_CHECKS)
    print(format_report(checks))
    failed = sum(not c.passed for c in checks)
    print(f"\n{len(checks) - failed} passed, {failed} failed (profile {settings.profile})")
    return 1 if failed else 0


def launch_command(args, overrides: dict) -> int:
    import dagster as dg

    from assets import runs
    from assets.launch import reap_dead_runs
    from pipeline.doctor import PreflightFailed, preflight

    started = time.monotonic()
    dates = getattr(args, "dates", None) or _default_dates(args, overrides)
    stage = runs.STAGES.get(args.command)
    skip_batches = getattr(args, "skip_batches", False)
    needs = runs.CHAIN_NEEDS if stage is None else stage.needs
    if args.command == "experiments":
        needs = ("deepspeed", "dagster", "disk") + (() if skip_batches else ("teacher", "sandbox"))
    results = []
    with dg.DagsterInstance.get() as instance:
        # runs a killed command left STARTED would hold their pool slots forever: the next step would wait
        reap_dead_runs(instance)
        try:
            # what needs no teacher is checked before one starts (2-4 minutes on a CPU)
            preflight(resolve(args.profile, overrides), [n for n in needs if n != "teacher"], EXTRA_CHECKS)
            teacher = runs.teacher_for(overrides, getattr(args, "teacher_url", None), needed="teacher" in needs)
            with teacher as run_overrides:
                preflight(resolve(args.profile, run_overrides), [n for n in needs if n == "teacher"])
                if stage is not None:
                    results = runs.run_stage(instance, stage, run_overrides, dates, getattr(args, "domains", None))
                elif not skip_batches:  # run, experiments: the day's batches first
                    results = runs.run_batches(instance, run_overrides, dates)
        except PreflightFailed as error:
            print(f"schoolhouse {args.command}: stopped before any run; a check failed (`schoolhouse doctor` "
                  f"shows them all):\n{error}", file=sys.stderr)  # fmt: skip
            return 1
        if all(r.success for r in results):  # the rest asks no teacher
            if args.command == "run":
                results.append(runs.run_job(instance, "train_and_release", overrides))
            elif args.command == "experiments":
                results += runs.run_experiments(instance, overrides)
    return _summary(args.command, results, (time.monotonic() - started) / 60)


def _default_dates(args, overrides: dict) -> list[str]:
    """Today's batches; for `experiments`, the profile's `experiments.batch_dates` where it names any,
    so that a run on any day asks the teacher the same prompts as the one its docs report."""
    if args.command == "experiments":
        fixed = resolve(args.profile, overrides).experiments.batch_dates
        if fixed:
            return fixed
    return [datetime.now(UTC).strftime("%Y-%m-%d")]


def _summary(command: str, results: list, minutes: float) -> int:
    home = artifact_home()
    failed = [r for r in results if not r.success]
    if failed:
        print(f"\nschoolhouse {command} failed after {minutes:.1f} min in run {failed[0].run_id}; "
              "open it with `schoolhouse ui`.", file=sys.stderr)  # fmt: skip
        return 1
    print(f"\nschoolhouse {command} finished in {minutes:.1f} min (runs {', '.join(r.run_id[:8] for r in results)}).")
    if command == "experiments":
        print(f"  reports: {home / 'experiments'}/*/report.md (UI: group `experiments`, asset experiment_report)")
    elif command == "run":
        print(f"  student model : {home / 'student' / 'model'}\n"
              f"  quality scores: {home / 'quality'} (classifier versions, score chart)\n"
              f"  exam report   : {home / 'tables' / 'exam_report.parquet'}\n"
              f"  release folder: {home / 'release'}")  # fmt: skip
    print(f"  all artifacts : {home}\nOpen the runs and the asset graph with `schoolhouse ui`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
