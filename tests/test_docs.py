"""The documentation holds together: every relative link in README.md and docs/*.md reaches a file
or folder of the repository (and a heading there, when it names one), the layout map names every
module and only paths that exist, and the README stays one short page. External links are not
fetched."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 220

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
CODE_SPAN = re.compile(r"`[^`]*`")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s+<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...
REPO_PATH = re.compile(r"^(?:tests|bench|pipeline|assets|trainers|docs|\.ci)/")
FILE_NAME = re.compile(r"\.(?:py|sh|yaml|yml|txt|md|json|toml)$")
TREE = ("assets", "pipeline", "trainers", "bench", "tests", "docs")


def prose(path: Path) -> list[str]:
    """The page's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    for line in prose(path):
        if match := HEADING.match(line):
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    text = CODE_SPAN.sub("", "\n".join(prose(path)))
    return INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)


def test_the_pages_exist():
    names = {page.name for page in PAGES}
    assert {"README.md", "index.md", "layout.md", "benchmarks.md"} <= names, names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_its_heading(page):
    broken = []
    for target in links(page):
        if EXTERNAL.match(target):
            continue  # not fetched: no network in the tests
        file_part, _, anchor = target.partition("#")
        destination = (page.parent / file_part).resolve() if file_part else page
        if not destination.exists():
            broken.append(f"{target}: no such file or folder")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading #{anchor} in {destination.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def layout_spans() -> list[str]:
    text = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    return [span.rstrip(".,;:") for span in re.findall(r"`([^`\s]+)`", text)]


def test_every_path_in_the_layout_map_exists():
    paths = [span for span in layout_spans() if REPO_PATH.match(span)]
    assert len(paths) >= 10, paths
    missing = [p for p in paths if not (any(ROOT.glob(p)) if "*" in p else (ROOT / p).exists())]
    assert not missing, f"docs/layout.md names paths that do not exist: {missing}"


def test_every_file_the_layout_map_names_by_its_name_exists():
    """`rules.py` under `curation/`, `judge/text.yaml`, `tasks/*.yaml`: somewhere in the tree."""
    files = [span for span in layout_spans() if FILE_NAME.search(span) and not REPO_PATH.match(span)]
    assert len(files) >= 50, files
    missing = [f for f in files if not (ROOT / f).exists() and not any(any(ROOT.joinpath(d).rglob(f)) for d in TREE)]
    assert not missing, f"docs/layout.md names files that do not exist: {missing}"


def test_the_layout_map_names_every_module():
    text = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    named = {span.rstrip("/").rsplit("/", 1)[-1] for span in re.findall(r"`([^`\s]+)`", text)}
    unnamed = []
    for folder in ("assets", "pipeline", "trainers", "bench"):
        for path in sorted((ROOT / folder).rglob("*")):
            parts = path.relative_to(ROOT).parts
            if path.suffix not in (".py", ".sh") or path.name == "__init__.py":
                continue
            if any(part.startswith((".", "__pycache__")) for part in parts):
                continue
            if path.name not in named:
                unnamed.append("/".join(parts))
    assert not unnamed, f"docs/layout.md does not name: {unnamed}"


def test_the_readme_is_one_short_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; the rest belongs in docs/"
