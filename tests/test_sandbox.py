"""The sandbox against hostile programs, and HumanEval's own solutions through it."""

import os
import tempfile
from pathlib import Path

import pytest

from pipeline.curation.exercises import exercise_parts
from pipeline.exam.data import read_humaneval
from pipeline.sandbox import Limits, run_many, run_python

FAST = Limits(wall_s=5, cpu_s=2)


def test_a_correct_program_passes_and_a_wrong_one_fails():
    assert run_python("import math\nassert math.gcd(12, 18) == 6", FAST).passed
    outcome = run_python("assert 1 + 1 == 3", FAST)
    assert outcome.status == "failed" and "AssertionError" in outcome.reason


@pytest.mark.parametrize(
    "source, status, reason",
    [
        ("while True:\n    pass", "timeout", "CPU time"),
        ("import time\ntime.sleep(60)", "timeout", "wall time"),
        ("import os\nos._exit(0)", "failed", "exited before the tests finished"),
        ("import sys\nsys.exit(0)", "failed", "exited before the tests finished"),
        ("raise SystemExit", "failed", "exited before the tests finished"),
        ("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)", "failed", "network"),
        ("x = bytearray(8 << 30)", "crashed", "memory"),
        ("while True:\n    print('x' * 10000)", "failed", "File too large"),
        ("import os\nwhile True:\n    os.fork()", "failed", "Resource temporarily unavailable"),
    ],
)
def test_hostile_programs_are_rejected_with_the_right_reason(source, status, reason):
    outcome = run_python(source, FAST)
    assert outcome.status == status, outcome
    assert reason in outcome.reason, outcome


def test_files_outside_the_sandbox_are_untouched(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    outside = tmp_path / "new.txt"
    for source in (
        f"open({str(outside)!r}, 'w').write('x')",
        f"import os\nos.remove({str(victim)!r})",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
    ):
        assert not run_python(source, FAST).passed
    assert victim.read_text() == "keep me"
    assert not outside.exists()


def test_writing_inside_its_own_folder_is_allowed_and_cleaned_up():
    folders = Path(tempfile.gettempdir())  # where mkdtemp makes each program's folder
    before = set(folders.glob("schoolhouse-sandbox-*"))
    source = "import os\nopen('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'\n"
    source += f"assert os.path.dirname(os.getcwd()) == {str(folders)!r}"
    assert run_python(source, FAST).passed
    assert set(folders.glob("schoolhouse-sandbox-*")) == before


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    assert run_python("import os\nassert 'HF_TOKEN' not in os.environ", FAST).passed


def test_humaneval_reference_solutions_pass_and_stubs_fail():
    problems = read_humaneval()[:24]
    right = [f"{p.prompt}{p.canonical_solution}\n\n{p.test}\n\ncheck({p.entry_point})\n" for p in problems]
    wrong = [f"{p.prompt}    return None\n\n{p.test}\n\ncheck({p.entry_point})\n" for p in problems]
    assert all(o.passed for o in run_many(right, Limits()))
    assert not any(o.passed for o in run_many(wrong, Limits()))


def test_exercise_format_is_split_into_solution_and_tests():
    text = (
        "### Function\n```python\ndef double(x):\n    return 2 * x\n```\n\n"
        "### Tests\n```python\nassert double(2) == 4\n```\n"
    )
    solution, tests = exercise_parts(text)
    assert "def double" in solution and "assert double(2) == 4" in tests
    assert exercise_parts("no code here") is None
    assert exercise_parts("```python\ndef f():\n    pass\n```") is None  # no tests


def test_runs_as_an_unprivileged_user_when_root():
    if os.geteuid() != 0:
        pytest.skip("only root drops privileges")
    assert run_python("import os\nassert os.geteuid() != 0", FAST).passed
