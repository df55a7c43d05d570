"""Curation one batch at a time keeps exactly what curating everything at once keeps: dedup
(exact, MinHash, by meaning) against indexes of earlier batches, a re-run batch, a batch that
arrives after a later one, and token shards appended per batch and read as one."""

import numpy as np
import polars as pl
import pytest

from pipeline.curation.dedup import DedupIndex, dedup_batch
from pipeline.curation.minhash import MinHashParams
from pipeline.curation.semantic_dedup import SemanticIndex, semantic_dedup_batch, semantic_duplicates
from tests.test_curation import mutate, rows, texts_in

BATCHES = ["2026-11-20|text", "2026-11-21|text", "2026-11-22|text"]


def corpus(seed: int = 0, per_batch: int = 40) -> list[pl.DataFrame]:
    """Three batches of one domain: originals, exact copies and near variants (0.5-3% of words
    changed) of rows of the same and of earlier batches."""
    rng = np.random.default_rng(seed)
    vocabulary = [f"w{i}" for i in range(4000)]
    made: list[list[str]] = []
    frames = []
    for b, batch in enumerate(BATCHES):
        docs = []
        for _ in range(per_batch):
            kind = rng.random()
            if made and kind < 0.15:
                docs.append(list(made[rng.integers(len(made))]))  # an exact copy
            elif made and kind < 0.45:
                docs.append(mutate(made[rng.integers(len(made))], rng.uniform(0.005, 0.03), rng))
            else:
                docs.append(list(rng.choice(vocabulary, 150)))
            made.append(docs[-1])
        frames.append(rows(*[("text", " ".join(d)) for d in docs], batch=batch, prefix=f"b{b}-"))
    return frames


def fates(frame: pl.DataFrame) -> list[tuple]:
    return frame.sort("id").select("id", "status", "reason", "checks", "minhash_cluster").rows()


@pytest.mark.parametrize("verify", [0.0, 0.8])
def test_dedup_batch_by_batch_equals_all_at_once(tmp_path, verify):
    batches = corpus()
    texts = texts_in(*batches)
    together, _ = dedup_batch(pl.concat(batches), DedupIndex(tmp_path / "all", MinHashParams()), texts, verify)
    index = DedupIndex(tmp_path / "one-by-one", MinHashParams())
    apart = pl.concat([dedup_batch(b, index, texts, verify)[0] for b in batches])
    assert fates(apart) == fates(together)
    rejected = together.filter(pl.col("status") == "rejected")["reason"].value_counts()
    assert set(rejected["reason"]) == {"dedup:exact", "dedup:near"}  # the corpus exercises both


def test_a_rerun_batch_is_the_same_and_names_the_batches_after_it(tmp_path):
    batches = corpus(1)
    texts = texts_in(*batches)
    index = DedupIndex(tmp_path, MinHashParams())
    first = [dedup_batch(b, index, texts, 0.8) for b in batches]
    again, stats = dedup_batch(batches[1], index, texts, 0.8)
    assert fates(again) == fates(first[1][0])
    assert stats.later_batches == [BATCHES[2]] and first[2][1].later_batches == []


def test_a_batch_added_after_a_later_one_then_the_later_one_rerun(tmp_path):
    """Batch 2 fails and batch 3 is curated without it; when batch 2 comes, it is compared with
    batch 1 only and names batch 3 as depending on it; re-running 3 gives the all-at-once result."""
    batches = corpus(2)
    texts = texts_in(*batches)
    together, _ = dedup_batch(pl.concat(batches), DedupIndex(tmp_path / "all", MinHashParams()), texts, 0.8)
    index = DedupIndex(tmp_path / "late", MinHashParams())
    dedup_batch(batches[0], index, texts, 0.8)
    dedup_batch(batches[2], index, texts, 0.8)  # its turn came while batch 2 was failing
    second, stats = dedup_batch(batches[1], index, texts, 0.8)
    assert stats.later_batches == [BATCHES[2]]
    third, _ = dedup_batch(batches[2], index, texts, 0.8)
    first, _ = dedup_batch(batches[0], index, texts, 0.8)
    assert fates(pl.concat([first, second, third])) == fates(together)


def test_index_made_with_other_minhash_settings_is_refused_by_name(tmp_path):
    batches = corpus(3, per_batch=10)
    texts = texts_in(*batches)
    dedup_batch(batches[0], DedupIndex(tmp_path, MinHashParams()), texts)
    with pytest.raises(ValueError, match="2026-11-20.*other MinHash settings"):
        dedup_batch(batches[1], DedupIndex(tmp_path, MinHashParams(bands=10, rows=5)), texts)


def planted_vectors(seed: int, n: int, dims: int = 48) -> np.ndarray:
    """Unit vectors, a third of them noisy copies (cosine ~0.85-0.99) of random earlier ones."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dims))
    copies = np.flatnonzero(rng.random(n) < 0.35)
    copies = copies[copies > 0]
    parents = np.array([rng.integers(0, c) for c in copies])
    noise = rng.uniform(0.1, 0.6, (copies.size, 1)) * rng.standard_normal((copies.size, dims))
    vectors[copies] = vectors[parents] + noise
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_semantic_dedup_batch_by_batch_equals_all_at_once_and_exact_search(tmp_path):
    batches = corpus(4, per_batch=60)
    frame = pl.concat(batches)
    ids = frame.sort("batch", "id")["id"].to_list()
    vectors = planted_vectors(4, len(ids))
    threshold = 0.9

    def index(name: str) -> SemanticIndex:
        return SemanticIndex(tmp_path / name, "text", vectors.shape[1], {"model": "planted"})

    together, _ = semantic_dedup_batch(frame, ids, vectors, index("all"), threshold)
    one_by_one = index("one-by-one")
    apart = pl.concat([semantic_dedup_batch(b, ids, vectors, one_by_one, threshold)[0] for b in batches])
    assert fates(apart) == fates(together)
    exact = semantic_duplicates(vectors, threshold)  # the rule on the whole matrix, brute force
    expected = {ids[i]: ids[r] for i, r in enumerate(exact) if r != i}
    rejected = together.filter(pl.col("reason") == "dedup:semantic")
    assert 10 < len(expected) < len(ids) / 2
    assert dict(zip(rejected["id"], rejected["checks"].str.json_path_match("$.semantic_duplicate_of"),
                    strict=True)) == expected  # fmt: skip
    rerun, stats = semantic_dedup_batch(batches[1], ids, vectors, one_by_one, threshold)
    assert fates(rerun) == fates(apart.filter(pl.col("batch") == BATCHES[1]))
    assert stats.later_batches == [BATCHES[2]]


def test_token_shards_appended_per_batch_read_as_one_and_resume(tmp_path, embedded_teacher_dir):
    from pipeline.settings import TrainingSettings
    from pipeline.training.mix import assemble_mix, pack_batch
    from trainers.data import Mixture, PackedTokens, pack

    settings = TrainingSettings(seq_len=32, mixture={"text": 1.0}, heldout_fraction=0.1)
    batches = corpus(5, per_batch=30)
    folders = [tmp_path / "tokens" / b.replace("|", "-") for b in BATCHES]
    for frame, folder in zip(batches, folders, strict=True):
        pack_batch(frame, settings, str(embedded_teacher_dir), folder)
    mix = tmp_path / "mix"
    shards = assemble_mix(folders, settings, str(embedded_teacher_dir), mix)
    assert len(shards["train-text"]["files"]) == 3 and shards["valid-text"]["documents"] > 0

    from transformers import AutoTokenizer

    from pipeline.training.mix import split_heldout

    whole = tmp_path / "whole"  # the same rows packed in one file, batch after batch
    train = [split_heldout(b, settings.heldout_fraction, settings.seed)[0] for b in batches]
    pack([t for part in train for t in part["text"].to_list()], AutoTokenizer.from_pretrained(embedded_teacher_dir),
         whole, "train-text")  # fmt: skip
    union = PackedTokens(mix, "train-text", 32, seed=0).tokens
    single = np.fromfile(whole / "train-text.bin", dtype=union.parts[0].dtype)
    assert len(union) == single.size == shards["train-text"]["tokens"]
    for start in (0, len(union.parts[0]) - 5, single.size - 40):  # across a file's end, too
        assert np.array_equal(union[start : start + 33], single[start : start + 33])

    first = Mixture(mix, {"text": 1.0}, 32, sequences=4, seed=1)
    for _ in range(3):
        first.next_step()
    state = first.state_dict()
    resumed = Mixture(mix, {"text": 1.0}, 32, sequences=4, seed=1)
    resumed.load_state_dict(state)
    for _ in range(5):
        assert np.array_equal(resumed.read(resumed.next_step()), first.read(first.next_step()))


def test_an_ann_index_of_another_embedding_model_is_refused_by_name(tmp_path):
    batches = corpus(6, per_batch=10)
    ids = pl.concat(batches).sort("batch", "id")["id"].to_list()
    vectors = planted_vectors(6, len(ids))
    first = SemanticIndex(tmp_path, "text", vectors.shape[1], {"model": "one"})
    semantic_dedup_batch(batches[0], ids, vectors, first, 0.9)
    with pytest.raises(ValueError, match="holds vectors of .*one.*the embedding model changed"):
        SemanticIndex(tmp_path, "text", vectors.shape[1], {"model": "another"})
