"""The training mix: kept rows (plus a replay source) tokenized with the student tokenizer and
packed into EOS-separated token shards per source, with a held-out slice for perplexity.

In the chain each batch packs its own rows once (`pack_batch`: `train-<domain>.bin`,
`valid-<domain>.bin`), and the training mix is a `meta.json` that lists every batch's files per
source (`assemble_mix`), so a new batch costs its own tokenization and nothing is packed twice.
`build_training_mix` packs a whole frame at once (the experiments' arms, made of chosen rows)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import polars as pl

from pipeline.rows import KEPT
from pipeline.settings import TrainingSettings
from pipeline.training.replay import heldout_split, replay_documents
from trainers import atomic
from trainers.data import pack, read_meta, write_meta

log = logging.getLogger("schoolhouse.training_mix")

DOMAINS = ("code", "text")
_BUCKETS = 10_000


def split_heldout(rows: pl.DataFrame, fraction: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, held out) of the kept rows. The split hashes the id alone, so the same row is always
    on the same side however many batches arrive, and the held-out slice stays clean."""
    kept = rows.filter(KEPT).sort("id")
    bucket = pl.col("id").hash(seed=seed) % _BUCKETS
    cut = int(fraction * _BUCKETS)
    return kept.filter(bucket >= cut), kept.filter(bucket < cut)


def raw_rows(rows: pl.DataFrame, heldout: pl.DataFrame) -> pl.DataFrame:
    """Every generated row with text, rejected ones included: what training would see without
    curation. Except the clean held-out slice and the copies of it that dedup rejected (an exact
    or near duplicate of a held-out row would leak it into training)."""
    text = pl.col("text").is_not_null() & (pl.col("text").str.strip_chars() != "")
    held = heldout["id"].implode()
    duplicate_of = pl.coalesce(pl.col("checks").str.json_path_match("$.duplicate_of"),
                               pl.col("checks").str.json_path_match("$.near_duplicate_of"))  # fmt: skip
    in_heldout_cluster = pl.col("minhash_cluster").is_in(heldout["minhash_cluster"].drop_nulls().implode())
    leaks = pl.col("id").is_in(held) | duplicate_of.is_in(held).fill_null(False) | in_heldout_cluster.fill_null(False)
    return rows.filter(text & ~leaks).sort("id")


def sources(train: pl.DataFrame, heldout: pl.DataFrame, settings: TrainingSettings,
            replay: bool) -> dict[str, list[str]]:  # fmt: skip
    """Documents by shard: `train-<source>` for code, text and (with `replay`) the replay source,
    `valid-<source>` for the held-out slices; the replay source's held-out slice (the old data's
    loss) is every k-th document, k = 1 / heldout_fraction."""
    shards = {}
    for domain in DOMAINS:
        shards[f"train-{domain}"] = train.filter(pl.col("domain") == domain)["text"].to_list()
        shards[f"valid-{domain}"] = heldout.filter(pl.col("domain") == domain)["text"].to_list()
    if replay:
        documents = replay_documents(settings.replay_path, settings.replay_split,
                                     settings.replay_text_field, settings.replay_max_documents)  # fmt: skip
        shards["train-replay"], shards["valid-replay"] = heldout_split(documents, settings.heldout_fraction)
    return shards


def check_sources_fill_a_sequence(shards: dict[str, dict], settings: TrainingSettings) -> None:
    """A source the mixture weights must hold a sequence (a thin one has been tiled by now: only an
    empty one fails)."""
    for name, weight in settings.mixture.items():
        tokens = shards[f"train-{name}"]["tokens"]
        if weight > 0 and tokens <= settings.seq_len:
            raise ValueError(
                f"training.mixture.{name} = {weight} but the {name} source has {tokens} tokens, "
                f"not one sequence of training.seq_len = {settings.seq_len}"
            )


def build_training_mix(rows: pl.DataFrame, settings: TrainingSettings, tokenizer_dir: str, out: Path,
                       raw: bool = False, replay: bool | None = None) -> dict:  # fmt: skip
    """Write `train-<source>.bin`, `valid-<source>.bin` and `meta.json` into `out`; the shards'
    sizes. `raw` trains on every generated row (see `raw_rows`); the held-out slices are the same.
    The replay source is packed when `replay` says so (None: when the mixture weights it)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    train, heldout = split_heldout(rows, settings.heldout_fraction, settings.seed)
    if raw:
        train = raw_rows(rows, heldout)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.bin"):
        stale.unlink()
    if replay is None:
        replay = settings.mixture.get("replay", 0) > 0
    documents = sources(train, heldout, settings, replay)
    shards = {name: pack(docs, tokenizer, out, name) for name, docs in documents.items()}
    for name, weight in settings.mixture.items():
        shard = shards[f"train-{name}"]
        if weight > 0 and 0 < shard["tokens"] <= settings.seq_len:
            # Fewer tokens than one sequence (a small run whose dedup left one exercise): the mixture
            # would repeat them anyway; tile them to fill a sequence and say so, instead of failing.
            repeats = settings.seq_len // shard["tokens"] + 1
            log.warning("the %s source has %d tokens, less than one sequence of %d: repeated %dx",
                        name, shard["tokens"], settings.seq_len, repeats)  # fmt: skip
            shards[f"train-{name}"] = {**pack(documents[f"train-{name}"] * repeats, tokenizer, out, f"train-{name}"),
                                       "repeated": repeats}  # fmt: skip
    check_sources_fill_a_sequence(shards, settings)
    write_meta(out, tokenizer_dir, len(tokenizer), tokenizer.eos_token_id, tokenizer.bos_token_id, shards)
    return shards


def pack_batch(rows: pl.DataFrame, settings: TrainingSettings, tokenizer_dir: str, out: Path) -> dict:
    """One batch's kept rows as `train-<domain>.bin` and `valid-<domain>.bin` (the held-out split
    hashes the id, as `split_heldout`) with a meta.json, written whole into `out`."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    train, heldout = split_heldout(rows, settings.heldout_fraction, settings.seed)
    shards: dict = {}

    def fill(folder: Path) -> None:
        for domain in rows["domain"].unique().sort():
            for split, part in (("train", train), ("valid", heldout)):
                name = f"{split}-{domain}"
                shards[name] = pack(part.filter(pl.col("domain") == domain)["text"].to_list(), tokenizer, folder, name)
        write_meta(folder, tokenizer_dir, len(tokenizer), tokenizer.eos_token_id, tokenizer.bos_token_id, shards)

    atomic.write_folder(out, fill, "the batch's token shards")
    return shards


def assemble_mix(batches: list[Path], settings: TrainingSettings, tokenizer_dir: str, out: Path) -> dict:
    """The training mix in `out`: a meta.json whose shards list the batches' files (relative to
    `out`), plus the replay source packed here (again only when its settings change)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.bin"):  # packed by an earlier design; the replay shards are kept
        if "replay" not in stale.name:
            stale.unlink()
    shards: dict[str, dict] = {}
    for folder in sorted(batches):
        meta = read_meta(folder)
        if meta["vocab_size"] != len(tokenizer):
            raise ValueError(f"{folder} was packed with {meta['tokenizer']} ({meta['vocab_size']} tokens) and the "
                             f"student's tokenizer is {tokenizer_dir} ({len(tokenizer)}): materialize its token "
                             "shards again")  # fmt: skip
        for name, info in meta["shards"].items():
            entry = shards.setdefault(name, {"files": [], "tokens": 0, "documents": 0})
            entry["files"].append(os.path.relpath(folder / info["path"], out))
            entry["tokens"] += info["tokens"]
            entry["documents"] += info["documents"]
    for domain in DOMAINS:
        for split in ("train", "valid"):
            shards.setdefault(f"{split}-{domain}", {"files": [], "tokens": 0, "documents": 0})
    if settings.mixture.get("replay", 0) > 0:
        shards.update(_replay_shards(settings, tokenizer, out))
    for name, weight in settings.mixture.items():
        shard = shards[f"train-{name}"]
        if weight > 0 and 0 < shard["tokens"] <= settings.seq_len and "files" in shard:
            repeats = settings.seq_len // shard["tokens"] + 1  # as build_training_mix: tile a thin source
            log.warning("the %s source has %d tokens, less than one sequence of %d: repeated %dx",
                        name, shard["tokens"], settings.seq_len, repeats)  # fmt: skip
            shards[f"train-{name}"] = {**shard, "files": shard["files"] * repeats, "tokens": shard["tokens"] * repeats,
                                       "repeated": repeats}  # fmt: skip
    check_sources_fill_a_sequence(shards, settings)
    write_meta(out, tokenizer_dir, len(tokenizer), tokenizer.eos_token_id, tokenizer.bos_token_id, shards)
    return shards


def _replay_shards(settings: TrainingSettings, tokenizer, out: Path) -> dict:
    """`train-replay` / `valid-replay` packed in `out`, reused while the replay settings hold."""
    made_of = {"path": settings.replay_path, "split": settings.replay_split, "field": settings.replay_text_field,
               "max": settings.replay_max_documents, "heldout": settings.heldout_fraction,
               "tokenizer": tokenizer.name_or_path, "vocab": len(tokenizer)}  # fmt: skip
    stamp = out / "replay.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("made_of") == made_of:
        return json.loads(stamp.read_text())["shards"]
    documents = replay_documents(settings.replay_path, settings.replay_split, settings.replay_text_field,
                                 settings.replay_max_documents)  # fmt: skip
    train, valid = heldout_split(documents, settings.heldout_fraction)
    shards = {"train-replay": pack(train, tokenizer, out, "train-replay"),
              "valid-replay": pack(valid, tokenizer, out, "valid-replay")}  # fmt: skip
    atomic.write_json(stamp, {"made_of": made_of, "shards": shards}, "the replay shards' stamp")
    return shards
