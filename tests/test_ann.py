"""The ANN index of dedup by meaning (`pipeline.curation.ann`, real usearch): what exact search
finds at the threshold, batches added apart or at once, a batch removed and added again, saved and
opened, a save killed part way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.curation.ann import MANIFEST, VectorIndex, exact_search

ROOT = Path(__file__).resolve().parent.parent
D = 384
THRESHOLD = 0.9


def unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def around(rng, centres: np.ndarray, cosine: np.ndarray) -> np.ndarray:
    other = rng.standard_normal(centres.shape).astype(np.float32)
    other = unit(other - (other * centres).sum(1, keepdims=True) * centres)
    return unit(centres * cosine[:, None] + other * np.sqrt(1 - cosine**2)[:, None])


def planted(rows: int = 3000, queries: int = 900, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows around 40 centres (cosine 0.5-0.8); queries: near-duplicates of rows (three per row,
    cosine 0.85-0.99) and as many unrelated rows of the same clusters."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((40, D)))
    base = around(rng, centres[rng.integers(0, 40, rows)], rng.uniform(0.5, 0.8, rows))
    sources = np.repeat(rng.choice(rows, queries // 6, replace=False), 3)
    copies = around(rng, base[sources], rng.uniform(0.85, 0.99, len(sources)))
    others = queries - len(sources)
    unrelated = around(rng, centres[rng.integers(0, 40, others)], rng.uniform(0.5, 0.8, others))
    return base, np.vstack([copies, unrelated])


def pairs(keys: np.ndarray, sims: np.ndarray, threshold: float = THRESHOLD) -> set[tuple[int, int]]:
    q, m = np.nonzero((keys >= 0) & (sims >= threshold))
    return set(zip(q.tolist(), keys[q, m].tolist(), strict=True))


@pytest.fixture(scope="module")
def data():
    return planted()


def test_finds_what_exact_search_finds(tmp_path, data):
    base, queries = data
    keys = np.arange(len(base)) + 10**12  # keys as the pipeline makes them: (day << 40) + place
    index = VectorIndex.open(tmp_path / "index", D, shard_rows=1000)  # three sealed shards beside the open one
    index.add(keys, base)
    assert len(index) == len(base) and len(index.sealed) == 3
    found_keys, found_sims = index.search(queries, 8)
    exact_keys, exact_sims = exact_search(keys, base, queries, 8)
    for t in (0.85, 0.9, 0.95):
        want = pairs(exact_keys, exact_sims, t)
        assert len(want) >= 100 and pairs(found_keys, found_sims, t) == want
    assert found_keys.dtype == np.int64 and found_sims.dtype == np.float32
    assert (np.diff(found_sims, axis=1) <= 0).all()  # most similar first
    shown = found_keys >= 0
    exact = np.einsum("nd,nkd->nk", queries, base[np.where(shown, found_keys - 10**12, 0)])
    assert np.abs(found_sims[shown] - exact[shown]).max() < 1e-3  # bfloat16: a threshold decides as exact


def test_fewer_rows_than_asked(tmp_path):
    index = VectorIndex.open(tmp_path / "index", D)
    keys, sims = index.search(unit(np.ones((2, D))), 4)
    assert (keys == -1).all() and np.isneginf(sims).all()
    vectors = planted(rows=3, queries=6)[0]
    index.add([7, 8, 9], vectors)
    keys, sims = index.search(vectors[:1], 5)
    assert keys[0, 0] == 7 and sims[0, 0] == pytest.approx(1, abs=1e-3)
    assert sorted(keys[0, :3]) == [7, 8, 9] and (keys[0, 3:] == -1).all() and np.isneginf(sims[0, 3:]).all()
    with pytest.raises(ValueError, match="non-negative"):
        index.add([-1], vectors[:1])


def test_two_batches_equal_one(tmp_path, data):
    base, queries = data
    once = VectorIndex.open(tmp_path / "once", D, shard_rows=1200)
    once.add(np.arange(len(base)), base)
    apart = VectorIndex.open(tmp_path / "apart", D, shard_rows=1200)
    apart.add(np.arange(1700), base[:1700])
    apart.add(np.arange(1700, len(base)), base[1700:])
    assert len(once) == len(apart) == len(base)
    for got, want in zip(apart.search(queries, 8), once.search(queries, 8), strict=True):
        np.testing.assert_array_equal(got, want)  # one thread adds: the same graph


def test_remove_a_batch_and_add_it_again(tmp_path, data):
    base, queries = data
    index = VectorIndex.open(tmp_path / "index", D, shard_rows=1000)
    index.add(np.arange(2000), base[:2000])  # batch 1
    index.add(np.arange(2000, 3000), base[2000:])  # batch 2: a sealed shard's end and the open shard
    index.save()
    rerun = np.arange(1500, 3000)  # a re-run of the later rows: their keys leave first
    assert index.remove(rerun) == 1500 and index.remove(rerun) == 0
    assert len(index) == 1500
    keys, sims = index.search(queries, 8)
    assert not np.isin(keys, rerun).any()
    assert pairs(keys, sims) == pairs(*exact_search(np.arange(1500), base[:1500], queries, 8))
    index.save()
    index = VectorIndex.open(tmp_path / "index", D, shard_rows=1000)
    assert len(index) == 1500 and not np.isin(index.search(queries, 8)[0], rerun).any()
    index.add(rerun, base[1500:])
    index.add(rerun[:10], base[1500:1510])  # keys present are replaced, never doubled
    assert len(index) == 3000
    assert pairs(*index.search(queries, 8)) == pairs(*exact_search(np.arange(3000), base, queries, 8))


def test_save_then_open_gives_the_same_results(tmp_path, data):
    base, queries = data
    folder = tmp_path / "index"
    index = VectorIndex.open(folder, D, shard_rows=1000)
    index.add(np.arange(2500), base[:2500])
    index.save()
    again = VectorIndex.open(folder, D, shard_rows=1000)
    assert len(again) == 2500
    for got, want in zip(again.search(queries, 8), index.search(queries, 8), strict=True):
        np.testing.assert_array_equal(got, want)
    named = json.loads((folder / MANIFEST).read_text())
    files = [MANIFEST, named["open"], *(s["file"] for s in named["sealed"])]
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)
    with pytest.raises(ValueError, match="768-d"):
        VectorIndex.open(folder, 768)


def _child(folder: Path, code: str) -> subprocess.Popen:
    """A process that opens the index at `folder` (as `index`, planted rows as `base`), runs `code`."""
    script = textwrap.dedent(f"""
        import os, sys
        import numpy as np
        from trainers import atomic
        from pipeline.curation.ann import VectorIndex
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from test_ann import planted
        base, _ = planted()
        index = VectorIndex.open({str(folder)!r}, {D}, shard_rows=1000)
    """) + textwrap.dedent(code)
    return subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


@pytest.mark.parametrize("killed_in", ["a shard's file", "the list of shards"])
def test_killed_save_leaves_the_old_index(tmp_path, data, killed_in):
    base, queries = data
    folder = tmp_path / "index"
    index = VectorIndex.open(folder, D, shard_rows=1000)
    index.add(np.arange(1500), base[:1500])
    index.save()
    before = index.search(queries, 8)
    # the process dies inside save: after writing part of a new shard's file, or after the new
    # shards are whole but before index.json names them
    die = ("atomic._fsync = lambda path: os._exit(9)" if killed_in == "a shard's file"
           else "atomic.write_json = lambda *a, **k: os._exit(9)")  # fmt: skip
    child = _child(folder, f"""
        index.remove(np.arange(0, 1500, 2))
        index.add(np.arange(1500, 3000), base[1500:])
        {die}
        index.save()
    """)
    assert child.wait(timeout=120) == 9, child.stdout.read()
    assert list(folder.iterdir()) != []
    again = VectorIndex.open(folder, D, shard_rows=1000)
    assert len(again) == 1500
    for got, want in zip(again.search(queries, 8), before, strict=True):
        np.testing.assert_array_equal(got, want)
    again.add(np.arange(1500, 1600), base[1500:1600])
    again.save()  # the next save clears what the killed one left
    named = json.loads((folder / MANIFEST).read_text())
    files = {MANIFEST, named["open"], *(s["file"] for s in named["sealed"])}
    assert {p.name for p in folder.iterdir()} == files
    assert len(VectorIndex.open(folder, D)) == 1600


def test_sigkill_during_saves_leaves_a_whole_index(tmp_path, data):
    """A process adds batches of 500 and saves after each, until it is killed at some moment:
    the index then holds whole batches only, at least as many as it said were saved."""
    base, queries = data
    folder = tmp_path / "index"
    child = _child(folder, """
        for batch in range(6):
            index.add(np.arange(batch * 500, batch * 500 + 500), base[batch * 500 : batch * 500 + 500])
            index.save()
            print(batch + 1, flush=True)
        import time
        time.sleep(60)
    """)
    saved = 0
    while saved < 3:
        line = child.stdout.readline()
        assert line, "the child ended before saving 3 batches"
        saved = int(line)
    time.sleep(0.05 + 0.1 * np.random.default_rng().random())  # mid-way through a later add or save
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    index = VectorIndex.open(folder, D, shard_rows=1000)
    assert len(index) % 500 == 0 and len(index) >= saved * 500
    rows = len(index)
    assert pairs(*index.search(queries, 8)) == pairs(*exact_search(np.arange(rows), base[:rows], queries, 8))
