"""Code rows: a teacher-written exercise (function, then assert-based tests) run in the sandbox."""

from __future__ import annotations

import ast
import re

from pipeline.markdown import fenced_python_blocks
from pipeline.sandbox.pool import Outcome


def exercise_parts(text: str) -> tuple[str, str] | None:
    """Split a code exercise into (solution, tests): the first fenced block that defines a
    function, and every later fenced block with an assert. None when the format is not there."""
    blocks = fenced_python_blocks(text)
    for i, block in enumerate(blocks):
        if re.search(r"^\s*def \w+\s*\(", block, flags=re.MULTILINE):
            tests = [b for b in blocks[i + 1 :] if re.search(r"^\s*assert\b", b, flags=re.MULTILINE)]
            return (block, "\n".join(tests)) if tests else None
    return None


def exercise_program(text: str) -> str | tuple[str, dict]:
    """The program that runs an exercise's tests against its solution, or (reason, what was
    found) when there is nothing runnable: no exercise format, or code that does not parse."""
    parts = exercise_parts(text)
    if parts is None:
        return "curation:code_format", {"code": "no function block followed by a block of asserts"}
    solution, tests = parts
    for name, source in (("solution", solution), ("tests", tests)):
        try:
            ast.parse(source)
        except SyntaxError as error:
            return "curation:syntax_error", {"code": f"{name}: {error.msg} (line {error.lineno})"}
    return solution + "\n\n" + tests


def sandbox_verdict(outcome: Outcome) -> tuple[str | None, dict]:
    """(reason or None, what was measured) for a program's outcome in the sandbox."""
    checks = {"code": outcome.status, "why": outcome.reason, "seconds": round(outcome.seconds, 3)}
    return (None if outcome.passed else f"curation:tests_{outcome.status}"), checks
