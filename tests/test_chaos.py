"""Kill points of `make chaos` (tests/chaos.py).

In `make test` (about 2 minutes): the generation of one small batch killed at three seeded points
(the step's own process in the middle of `generations`, tearing its journal; the command's own
process alone stopped with SIGTERM in the middle of `generations`, as `kill PID` does, which must
take its run and steps with it; the whole command inside the `topics` step, which holds a pool
slot), then the same command twice at
once: both succeed, and the batch is whole: every planned prompt answered once, the table equal to
the journal row for row, nothing doubled, no temporary file, no process of a killed command left.

Marked `chaos` (`pytest -m chaos`, `make chaos`; about 15 minutes on 2 cores): two points of the
whole generate + curate chain compared with an uninterrupted run."""

import polars as pl
import pytest

from pipeline.generation.journal import read_journal
from tests import chaos
from trainers import atomic

SMALL = ["--set", "generation.samples_per_domain=4", "--set", "generation.max_tokens=96"]
# (step, what is killed, seconds after the step starts): seeded, as `make chaos` draws them
POINTS = [*chaos.points(0, ["generations"], ("step", "stop")), ("topics", "command", 0.0)]


@pytest.mark.integration
def test_generation_killed_at_seeded_points_then_run_twice_at_once_is_whole(teacher_url, tmp_path):
    home = tmp_path / "home"
    landed = []
    for step, target, delay in POINTS:
        killed, alive = chaos.kill_inside("generate", home, teacher_url, step, target, delay, SMALL)
        assert alive == [], f"{step}, {target}: processes of the killed command still running: {alive}"
        landed.append(killed)
    assert landed[1], "the stop inside `generations` came after the step ended"
    assert landed[-1], "the kill inside `topics` came after the step ended"

    # the same batch twice at once: the next command reaps the killed runs (their pool slots), one
    # waits for the other where they share the journal, and both succeed
    commands = [chaos.schoolhouse("generate", home, teacher_url, SMALL) for _ in range(2)]
    outputs = [c.communicate(timeout=600)[0] for c in commands]
    assert [c.returncode for c in commands] == [0, 0], "\n---\n".join(o[-3000:] for o in outputs)
    assert any("pool slots freed" in o for o in outputs), "no command reaped the run killed inside `topics`"

    table = pl.read_parquet(home / "tables" / "generations" / chaos.DATE / f"{chaos.DOMAIN}.parquet")
    planned = pl.read_parquet(home / "tables" / "prompts" / chaos.DATE / f"{chaos.DOMAIN}.parquet")["id"]
    journal = read_journal(home / "journals" / chaos.DATE / f"{chaos.DOMAIN}.jsonl")
    assert table.height == 4 and sorted(table["id"]) == sorted(planned)
    assert {r["id"]: r["text"] for r in table.iter_rows(named=True)} == {i: journal[i]["text"] for i in table["id"]}
    assert chaos.doubled(home) == [] and atomic.leftovers(home) == []


@pytest.mark.chaos
@pytest.mark.integration
def test_a_batch_killed_inside_its_steps_resumes_to_the_same_rows(teacher_url, tmp_path):
    expected = chaos.fingerprint(chaos.reference(tmp_path, teacher_url))
    assert expected["kept"] and expected["shards"]
    # the unpartitioned step that batch runs share (a pool slot of one), killed with its command;
    # a step's own process killed in the middle of dedup
    for step, target in (("quality_classifier", "command"), ("deduped", "step")):
        outcome = chaos.one_point(tmp_path, teacher_url, step, target, 0.5, expected)
        assert outcome.killed, f"{step}: the step ended before the kill"
        assert outcome.divergences == [], f"{step}, {target}: {outcome.divergences}"
