"""The training mix: a stable held-out split, one shard per source, a source too small fails."""

import polars as pl
import pytest

from pipeline.settings import resolve
from pipeline.training.mix import build_training_mix, raw_rows, split_heldout
from pipeline.training.replay import heldout_split, replay_documents
from tests.test_curation import PROSE, rows
from trainers.data import PackedTokens, read_meta


def test_the_heldout_split_is_stable_as_batches_arrive():
    first = rows(*[("text", f"{PROSE} {i}") for i in range(400)], prefix="a")
    rejected = first.with_columns(status=pl.lit("rejected"), id=pl.col("id") + "x")
    train, heldout = split_heldout(pl.concat([first, rejected]), fraction=0.1, seed=0)
    assert train.height + heldout.height == 400  # rejected rows are in neither
    assert 20 <= heldout.height <= 60
    assert not set(train["id"]) & set(heldout["id"])
    more = pl.concat([first, rows(*[("text", f"{PROSE} more {i}") for i in range(400)], prefix="b")])
    train2, heldout2 = split_heldout(more, fraction=0.1, seed=0)
    assert set(heldout["id"]) <= set(heldout2["id"]) and set(train["id"]) <= set(train2["id"])
    assert split_heldout(first, fraction=0.1, seed=1)[1]["id"].to_list() != heldout["id"].to_list()


def test_kept_rows_become_one_shard_per_source(embedded_teacher_dir, tmp_path):
    code = "### Function\n```python\ndef f(x):\n    return x\n```\n" * 20
    frame = rows(*[("text", f"{PROSE} {i}") for i in range(60)], *[("code", f"{code}{i}") for i in range(60)])
    settings = resolve("demo", {"training": {"seq_len": 64, "heldout_fraction": 0.2}}).training
    shards = build_training_mix(frame, settings, str(embedded_teacher_dir), tmp_path)
    assert set(shards) == {"train-code", "train-text", "valid-code", "valid-text"}
    assert shards["train-text"]["documents"] + shards["valid-text"]["documents"] == 60
    assert read_meta(tmp_path)["shards"] == shards
    assert PackedTokens(tmp_path, "train-code", 64, seed=0).windows > 1

    small = resolve("demo", {"training": {"seq_len": 1000, "model_overrides": {"max_position_embeddings": 1024},
                                          "mixture": {"code": 0.5, "text": 0.5},
                                          "heldout_fraction": 0}}).training  # fmt: skip
    one_of_each = pl.concat([frame.filter(pl.col("domain") == domain).head(1) for domain in ("code", "text")])
    tiled = build_training_mix(one_of_each, small, str(embedded_teacher_dir), tmp_path / "small")
    for source in ("train-code", "train-text"):  # one document each, shorter than a sequence: repeated to fill one
        assert tiled[source]["repeated"] >= 2 and tiled[source]["tokens"] > 1000
        assert tiled[source]["documents"] == tiled[source]["repeated"]
    text_only = frame.filter(pl.col("domain") == "text")
    with pytest.raises(ValueError, match=r"training.mixture.code = 0.5 but the code source has 0 tokens"):
        build_training_mix(text_only, small, str(embedded_teacher_dir), tmp_path / "empty")


def test_raw_rows_are_every_row_but_the_heldout_slice_and_its_copies():
    kept = rows(*[("text", f"{PROSE} {i}") for i in range(200)])
    train, heldout = split_heldout(kept, fraction=0.2, seed=0)
    held = heldout["id"][0]
    rejected = rows(("text", "junk " * 30), ("text", f"{PROSE} copy"), ("text", f"{PROSE} near"), ("text", ""),
                    prefix="bad").with_columns(status=pl.lit("rejected"), reason=pl.lit("curation:x"))  # fmt: skip
    rejected = rejected.with_columns(
        checks=pl.Series(["{}", f'{{"duplicate_of": "{held}"}}', f'{{"near_duplicate_of": "{held}"}}', "{}"]),
    )
    raw = raw_rows(pl.concat([kept, rejected]), heldout)
    assert set(raw["id"]) == set(train["id"]) | {"bad000"}  # the junk stays; copies of held-out rows and empty text go
    assert not set(raw["id"]) & set(heldout["id"])


def test_python_docs_are_an_offline_replay_source_with_a_spread_heldout_slice():
    documents = replay_documents("python-docs", "train", "text", 10_000)
    assert len(documents) > 200 and all(100 < len(d) < 10_000 for d in documents)
    train, heldout = heldout_split(documents, 0.2)
    assert abs(len(heldout) - len(documents) / 5) <= 1 and not set(train) & set(heldout)
    assert documents.index(heldout[-1]) > 0.9 * len(documents)  # spread over the source, not its first fifth
