"""Code rows: a teacher-written exercise (function, then assert-based tests) run in the sandbox."""

from __future__ import annotations

import ast
import re

from pipeline.markdown import fenced_python_blocks
from pipeline.sandbox import Limits, run_python


def exercise_parts(text: str) -> tuple[str, str] | None:
    """Split a code exercise into (solution, tests): the first fenced block that defines a
    function, and every later fenced block with an assert. None when the format is not there."""
    blocks = fenced_python_blocks(text)
    for i, block in enumerate(blocks):
        if re.search(r"^\s*def \w+\s*\(", block, flags=re.MULTILINE):
            tests = [b for b in blocks[i + 1 :] if re.search(r"^\s*assert\b", b, flags=re.MULTILINE)]
            return (block, "\n".join(tests)) if tests else None
    return None


def check_exercise(text: str, limits: Limits) -> tuple[str | None, dict]:
    """Run a code exercise's tests against its solution; (reason or None, what was measured)."""
    parts = exercise_parts(text)
    if parts is None:
        return "curation:code_format", {"code": "no function block followed by a block of asserts"}
    solution, tests = parts
    for name, source in (("solution", solution), ("tests", tests)):
        try:
            ast.parse(source)
        except SyntaxError as error:
            return "curation:syntax_error", {"code": f"{name}: {error.msg} (line {error.lineno})"}
    outcome = run_python(solution + "\n\n" + tests, limits)
    checks = {"code": outcome.status, "why": outcome.reason, "seconds": round(outcome.seconds, 3)}
    return (None if outcome.passed else f"curation:tests_{outcome.status}"), checks
