"""Seed passages from the two built-in offline sources and from files and folders `datasets` opens."""

import ast
import json

import datasets
import huggingface_hub.constants
import polars as pl
import pytest

from pipeline.generation.sources import (
    PYTHON_STDLIB,
    WIKI_VITAL,
    SeedSourceError,
    open_seeds,
    stdlib_functions,
    wiki_vital_summaries,
)

SCHEMA = {"seed_id": pl.String, "title": pl.String, "text": pl.String, "category": pl.String}


def assert_seed_frame(frame: pl.DataFrame, prefix: str) -> None:
    assert dict(frame.schema) == SCHEMA
    assert frame["seed_id"].null_count() == frame["text"].null_count() == 0
    assert frame["seed_id"].is_unique().all() and frame["seed_id"].str.starts_with(prefix + ":").all()
    assert frame["seed_id"].to_list() == sorted(frame["seed_id"].to_list())
    assert (frame["text"].str.strip_chars() != "").all()


def test_wiki_vital_summaries():
    frame = wiki_vital_summaries()
    assert_seed_frame(frame, WIKI_VITAL)
    assert frame.height >= 10_000
    counts = dict(frame.group_by("category").len().iter_rows())
    assert len(counts) >= 10 and min(counts.values()) >= 200  # 12 topics in 0.0.7, 256 to 1,828 articles
    assert frame.filter(pl.col("seed_id") == "wiki-vital:Mathematics")["text"].str.contains("Mathematics").all()
    # generation gets the source less its held-out evaluation set (tests/test_experiments.py), cached
    assert open_seeds(WIKI_VITAL) is open_seeds(WIKI_VITAL) and open_seeds(WIKI_VITAL, limit=5).height == 5
    assert 0.9 * frame.height < open_seeds(WIKI_VITAL).height < frame.height


def test_stdlib_functions():
    frame = stdlib_functions()
    assert_seed_frame(frame, PYTHON_STDLIB)
    assert 3_000 <= frame.height <= 10_000 and frame["category"].n_unique() >= 100
    for seed_id, title, text in frame.select("seed_id", "title", "text").iter_rows():
        function = ast.parse(text).body[0]  # a method parses alone: the source is dedented
        assert isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef) and ast.get_docstring(function)
        assert 5 <= text.count("\n") + 1 <= 60 and seed_id == f"{PYTHON_STDLIB}:{title}"
    assert "python-stdlib:json.dumps" in frame["seed_id"].to_list()
    assert stdlib_functions() is frame and 0.9 * frame.height < open_seeds(PYTHON_STDLIB).height < frame.height
    short = stdlib_functions(5, 10)
    assert 0 < short.height < frame.height and short["text"].str.count_matches("\n").max() <= 9


def test_open_seeds_from_parquet(tmp_path):
    path = tmp_path / "notes.parquet"
    pl.DataFrame(
        {
            "id": ["b", "a", "c", "d"],
            "text": ["second", "first", "", None],  # empty and missing texts are dropped
            "title": ["B", "A", "C", "D"],
            "topic": ["x", "y", "z", "w"],
        }
    ).write_parquet(path)
    frame = open_seeds(str(path))
    assert_seed_frame(frame, "notes")
    assert frame.rows() == [("notes:a", "A", "first", "y"), ("notes:b", "B", "second", "x")]
    assert open_seeds(str(path), limit=1)["seed_id"].to_list() == ["notes:a"]


def test_open_seeds_from_saved_dataset(tmp_path):
    folder = tmp_path / "passages"
    rows = {"id": [7, 7, 8], "body": ["one", "two", "three"], "category": ["p", "q", "r"]}  # ids not unique
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(folder)
    frame = open_seeds(str(folder), field="body")
    assert frame["seed_id"].to_list() == ["passages:0", "passages:1", "passages:2"]  # row indices
    assert frame.row(2) == ("passages:2", "", "three", "r")
    datasets.Dataset.from_dict(rows).save_to_disk(tmp_path / "plain")
    assert open_seeds(str(tmp_path / "plain"), field="body")["text"].to_list() == ["one", "two", "three"]
    with pytest.raises(SeedSourceError, match="no split 'test'"):
        open_seeds(str(folder), field="body", split="test")


def test_open_seeds_from_jsonl_and_a_folder_of_files(tmp_path):
    path = tmp_path / "snippets.jsonl"
    path.write_text("".join(json.dumps({"content": f"def f{i}(): pass", "id": i}) + "\n" for i in range(12)))
    frame = open_seeds(str(path), field="content")
    assert_seed_frame(frame, "snippets")
    assert frame.height == 12
    assert frame["seed_id"][:3].to_list() == ["snippets:0", "snippets:1", "snippets:10"]  # sorted as strings
    shards = tmp_path / "shards"
    shards.mkdir()
    for name in "ab":
        pl.DataFrame({"text": [f"{name}{i}" for i in range(3)]}).write_parquet(shards / f"{name}.parquet")
    assert open_seeds(str(shards))["text"].to_list() == ["a0", "a1", "a2", "b0", "b1", "b2"]


def test_open_seeds_errors_name_the_source_and_field(tmp_path, monkeypatch):
    missing = tmp_path / "missing.parquet"
    with pytest.raises(SeedSourceError, match=f"{missing}.*'text'.*no such file"):
        open_seeds(str(missing))
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    with pytest.raises(SeedSourceError, match=f"{empty}.*'text'.*is empty"):
        open_seeds(str(empty))
    no_rows = tmp_path / "no_rows.parquet"
    pl.DataFrame({"text": []}, schema={"text": pl.String}).write_parquet(no_rows)
    with pytest.raises(SeedSourceError, match=f"{no_rows}.*'text'"):
        open_seeds(str(no_rows))
    other = tmp_path / "other.parquet"
    pl.DataFrame({"body": ["a"], "id": [1]}).write_parquet(other)
    with pytest.raises(SeedSourceError, match=rf"{other}.*'content'.*columns are \['body', 'id'\]"):
        open_seeds(str(other), field="content")
    with pytest.raises(SeedSourceError, match="holds Int64, not text"):
        open_seeds(str(other), field="id")
    with pytest.raises(SeedSourceError, match="built-in"):
        open_seeds(WIKI_VITAL, field="extract")
    # Offline mode fails at once; without it the hub client retries for ~25 s before it gives up.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SeedSourceError, match="'nobody-here/no-such-corpus' \\(field 'text'\\): cannot be opened"):
        open_seeds("nobody-here/no-such-corpus")
