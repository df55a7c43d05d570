"""Fenced code in a teacher's or student's markdown answer."""

from __future__ import annotations

import re

_FENCED_PYTHON = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", flags=re.DOTALL)


def fenced_python_blocks(text: str) -> list[str]:
    """The bodies of the ```python (or ```py, or bare ```) blocks, in order."""
    return _FENCED_PYTHON.findall(text)
