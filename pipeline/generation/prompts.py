"""Prompt plans: seeded, reproducible lists of teacher requests that never repeat across batches.

A plan draws combinations from a *space*, the product of a few axes (see `pipeline.generation.
spaces`): a seed passage x a format x a persona for text (Cosmopedia's web-seeded prompts), a
standard-library function x an application x a difficulty for code (Magicoder's OSS-Instruct),
or the topic tree's leaves x audiences x styles. A combination's key names its values
(`seed=wiki-vital:Photosynthesis|format=qa|persona=nurse`), so a key keeps its meaning when an
axis grows (new seeds, personas, leaves).

A batch walks the space in an order seeded by its key and takes the first combinations that no
other batch of its domain has drawn: the keys of every batch are on disk (`PlanLedger`), read and
written under one lock, so two batches planned at once cannot draw the same prompt. Re-planning a
batch reuses its own keys, so a re-run asks for the same prompts (and its journal's answers stay
valid). A repeated prompt with a new sampling seed is not a new prompt: when the space runs out,
planning fails saying how many distinct prompts were left, unless `generation.allow_repeats`.

Cost at 20M planned rows: the ledger holds an 8-byte hash per key (160 MB read per batch, one
sorted array); drawing a batch of 10k is a few vectorized membership tests of 64k candidates.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from math import prod
from pathlib import Path

import numpy as np
import polars as pl

from trainers import atomic

_CHUNK = 65_536  # candidates drawn at once
_PERMUTE_BELOW = 4_000_000  # spaces up to this size are walked as a full permutation (exhaustible exactly)


class PlanExhausted(ValueError):
    """A batch asks for more distinct prompts than its space has left."""


def row_id(prompt: str, sampling: dict, teacher_model: str) -> str:
    """Stable id: the same prompt, sampling and teacher always give the same id."""
    payload = json.dumps([prompt, sampling, teacher_model], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def batch_seed(seed: int, batch: str) -> int:
    """A seed per batch: every day draws new prompts, and the same day always the same ones."""
    return int(hashlib.sha256(f"{seed}|{batch}".encode()).hexdigest()[:8], 16)


def key_hashes(keys: list[str]) -> np.ndarray:
    """64-bit hashes of plan keys (blake2b: stable across machines and library versions)."""
    return np.array([int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little") for k in keys],
                    dtype=np.uint64)  # fmt: skip


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[str, ...]  # value ids, in a fixed order

    @cached_property
    def value_set(self) -> frozenset[str]:
        return frozenset(self.values)


@dataclass(frozen=True)
class Space:
    """The combinations one plan draws from, and how a combination becomes a request."""

    name: str  # e.g. "text/seeded"; the ledger counts what each space has given
    axes: tuple[Axis, ...]
    render: Callable[[dict[str, str]], dict]  # combination -> the row's planned fields

    @property
    def size(self) -> int:
        return prod(len(axis.values) for axis in self.axes)

    def keys(self, indexes: np.ndarray) -> list[str]:
        """The keys of combinations numbered 0..size-1 (mixed radix, the last axis fastest)."""
        parts, rest = [], indexes.astype(np.int64)
        for axis in reversed(self.axes):
            rest, digit = np.divmod(rest, len(axis.values))
            parts.append([f"{axis.name}={axis.values[d]}" for d in digit.tolist()])
        return ["|".join(fields) for fields in zip(*reversed(parts), strict=True)]

    def combination(self, key: str) -> dict[str, str]:
        return dict(field.split("=", 1) for field in key.split("|"))

    def candidates(self, seed: int) -> Iterator[list[str]]:
        """Keys in an order seeded by the batch: a full permutation of a small space (so every
        combination comes up once), random draws from a large one."""
        rng = np.random.default_rng(seed)
        if self.size <= _PERMUTE_BELOW:
            order = rng.permutation(self.size)
            for start in range(0, self.size, _CHUNK):
                yield self.keys(order[start : start + _CHUNK])
        else:
            while True:
                yield self.keys(rng.integers(0, self.size, _CHUNK))


@dataclass(frozen=True)
class Drawn:
    keys: list[str]
    repeats: int  # keys some batch drew before (only with allow_repeats)
    left_before: int  # distinct combinations no batch had drawn


def draw(space: Space, n: int, seed: int, used: np.ndarray, used_in_space: int, allow_repeats: bool,
         reuse: list[str] = ()) -> Drawn:  # fmt: skip
    """`n` keys: `reuse` first (this batch's own earlier plan), then fresh ones in seeded order
    that are not in `used` (sorted hashes of every other batch's keys)."""
    left = max(space.size - used_in_space, 0)
    keys = list(dict.fromkeys(reuse))[:n]
    taken = set(keys)
    if len(keys) < n and left < n - len(keys) and not allow_repeats:
        raise PlanExhausted(
            f"{space.name}: {left:,} distinct prompts are left of {space.size:,} and the batch asks for "
            f"{n - len(keys):,} more; add seeds (generation.text_seeds / code_seeds), personas or topic leaves "
            "(generation.topic_leaves), or set generation.allow_repeats"
        )
    drawn_fresh = 0
    for chunk in space.candidates(seed):
        if len(keys) >= n or drawn_fresh >= left:
            break
        fresh = ~np.isin(key_hashes(chunk), used, assume_unique=False)
        for key, is_fresh in zip(chunk, fresh.tolist(), strict=True):
            if is_fresh and key not in taken:
                keys.append(key)
                taken.add(key)
                drawn_fresh += 1
                if len(keys) >= n:
                    break
    if len(keys) < n and not allow_repeats:
        raise PlanExhausted(f"{space.name}: only {len(keys):,} distinct prompts could be drawn for {n:,} requests")
    repeats = 0
    rng = random.Random(seed)
    while len(keys) < n:  # allowed repeats: the space is spent, draw again from all of it
        keys.extend(space.keys(np.array([rng.randrange(space.size)])))
        repeats += 1
    return Drawn(keys, repeats, left)


class PlanLedger:
    """Every batch's drawn keys, one Parquet file per batch under `<folder>/<domain>/`, so that a
    new batch can skip them. Planning holds the domain's lock from reading to writing."""

    def __init__(self, folder: Path, domain: str):
        self.folder = folder / domain

    def path(self, batch: str) -> Path:
        return self.folder / f"{batch.replace('|', '_')}.parquet"

    @contextlib.contextmanager
    def locked(self) -> Iterator[PlanLedger]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def own(self, batch: str) -> list[str]:
        path = self.path(batch)
        return pl.read_parquet(path, columns=["key"])["key"].to_list() if path.exists() else []

    def others(self, batch: str, space: str) -> tuple[np.ndarray, int]:
        """(sorted hashes of every other batch's keys, how many distinct of them are in `space`)."""
        files = [p for p in sorted(self.folder.glob("*.parquet")) if p != self.path(batch)]
        if not files:
            return np.zeros(0, dtype=np.uint64), 0
        frame = pl.concat([pl.read_parquet(p, columns=["hash", "space"]) for p in files]).unique("hash")
        in_space = frame.filter(pl.col("space") == space).height
        return np.sort(frame["hash"].to_numpy().astype(np.uint64)), in_space

    def coverage(self, space: Space) -> dict[str, float | int]:
        """Over every batch so far: distinct prompts drawn from `space`, their share of it, and the
        share of its first axis (the seeds, leaves or concepts) that some prompt used."""
        frames = [pl.read_parquet(p, columns=["key", "space"]) for p in sorted(self.folder.glob("*.parquet"))]
        drawn = pl.concat(frames) if frames else pl.DataFrame(schema={"key": pl.String, "space": pl.String})
        keys = drawn.filter(pl.col("space") == space.name)["key"].unique()
        first = space.axes[0]
        used = keys.str.extract(f"^{first.name}=([^|]*)").n_unique() if keys.len() else 0
        return {"corpus_prompts": keys.len(), "corpus_prompt_coverage": keys.len() / max(space.size, 1),
                f"corpus_{first.name}_coverage": used / max(len(first.values), 1)}  # fmt: skip

    def save(self, batch: str, space: str, keys: list[str]) -> None:
        frame = pl.DataFrame({"key": keys, "hash": key_hashes(keys), "space": [space] * len(keys)})
        atomic.write_parquet(frame, self.path(batch), f"the plan of batch {batch}")


@dataclass(frozen=True)
class Plan:
    rows: list[dict]
    space: str
    possible: int  # combinations in the space
    left_before: int  # distinct combinations no earlier batch had drawn
    repeats: int  # planned rows whose prompt an earlier batch (or this one) already asked


def plan_batch(space: Space, n: int, seed: int, sampling: dict, teacher_model: str, ledger: PlanLedger | None,
               batch: str, allow_repeats: bool = False) -> Plan:  # fmt: skip
    """The deterministic plan for one batch: one dict per request, with its id and sampling seed.
    With a ledger, keys no other batch drew (and this batch's own keys on a re-run)."""
    with ledger.locked() if ledger else contextlib.nullcontext():
        used, used_in_space = ledger.others(batch, space.name) if ledger else (np.zeros(0, np.uint64), 0)
        reuse = ledger.own(batch) if ledger else []
        reuse = [k for k in reuse if _in_space(space, k)]
        drawn = draw(space, n, seed, used, used_in_space, allow_repeats, reuse)
        if ledger:
            ledger.save(batch, space.name, drawn.keys)
    rows = []
    for index, key in enumerate(drawn.keys):
        row = space.render(space.combination(key))
        # A per-row seed keeps repeated prompts distinct answers and makes every row reproducible.
        row_sampling = dict(sampling, seed=(seed * 1_000_003 + index) % 2**31)
        row.update(plan_key=key, sampling=json.dumps(row_sampling, sort_keys=True),
                   id=row_id(row["prompt"] + row["answer_prefix"], row_sampling, teacher_model))  # fmt: skip
        rows.append(row)
    return Plan(rows, space.name, space.size, drawn.left_before, drawn.repeats)


def _in_space(space: Space, key: str) -> bool:
    combination = space.combination(key)
    names = [axis.name for axis in space.axes]
    return names == list(combination) and all(combination[a.name] in a.value_set for a in space.axes)
