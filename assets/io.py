"""Every arrow of the asset graph is a file: polars frames as Parquet, folders as a pointer.

dagster-polars does not work with polars 2 (it passes the removed `rechunk` argument), and the
cases we need fit in a page, so this is our own small IO manager.
"""

import json
from pathlib import Path

import dagster as dg
import polars as pl

from pipeline.paths import artifact_home
from trainers import atomic


class ArtifactIOManager(dg.ConfigurableIOManager):
    """`pl.DataFrame` -> `<home>/tables/<asset>[/<date>/<domain>].parquet`;
    `Path` -> `<home>/pointers/<asset>.json`, with <home> = $SCHOOLHOUSE_HOME (default ./state).

    An unpartitioned asset downstream of a batch-partitioned one receives the concatenation of
    every batch materialized so far (tables; a `pl.LazyFrame` input gets them as a lazy scan, so
    the corpus is streamed, not loaded), or {batch: folder} (folders)."""

    def _path(self, key: dg.AssetKey, partition: str | None, kind: str, suffix: str) -> Path:
        name = "/".join(key.path)
        if partition is not None:
            name += "/" + str(partition).replace("|", "/")
        return artifact_home() / kind / f"{name}{suffix}"

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        if obj is None:
            return
        partition = context.asset_partition_key if context.has_asset_partitions else None
        if isinstance(obj, pl.DataFrame):
            path = self._path(context.asset_key, partition, "tables", ".parquet")
            # whole or absent, and two runs writing the same table at once cannot collide
            atomic.write_parquet(obj, path, f"the table of {context.asset_key.to_user_string()}")
            context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})
        elif isinstance(obj, Path):
            path = self._path(context.asset_key, partition, "pointers", ".json")
            atomic.write_text(path, json.dumps({"path": str(obj.resolve())}),
                              f"the pointer of {context.asset_key.to_user_string()}")  # fmt: skip
            context.add_output_metadata({"path": dg.MetadataValue.path(str(obj.resolve()))})
        else:
            raise TypeError(f"{context.asset_key.to_user_string()}: cannot store {type(obj).__name__}")

    @staticmethod
    def _wants_lazy(context: dg.InputContext) -> bool:
        return context.dagster_type is not None and context.dagster_type.typing_type is pl.LazyFrame

    def load_input(self, context: dg.InputContext) -> object:
        key = context.asset_key
        if context.has_asset_partitions:
            keys = context.asset_partition_keys
            pointer = self._path(key, keys[0], "pointers", ".json")
            if len(keys) == 1 and pointer.exists():  # a folder made for one partition
                return Path(json.loads(pointer.read_text())["path"])
            paths = [self._path(key, k, "tables", ".parquet") for k in keys]
            present = [p for p in paths if p.exists()]
            folders = {k: self._path(key, k, "pointers", ".json") for k in keys}
            folders = {k: Path(json.loads(p.read_text())["path"]) for k, p in folders.items() if p.exists()}
            if folders and not present:
                return folders
            if not present:
                raise FileNotFoundError(
                    f"{key.to_user_string()}: no batch has been materialized yet (looked under "
                    f"{artifact_home() / 'tables' / key.to_user_string()})"
                )
            # diagonal: a batch written before a column was added has nulls there
            if self._wants_lazy(context):  # read in streaming by the step, never whole in memory
                return pl.concat([pl.scan_parquet(p) for p in present], how="diagonal_relaxed")
            return pl.concat([pl.read_parquet(p) for p in present], how="diagonal_relaxed")
        table = self._path(key, None, "tables", ".parquet")
        if table.exists():
            return pl.read_parquet(table)
        pointer = self._path(key, None, "pointers", ".json")
        if pointer.exists():
            return Path(json.loads(pointer.read_text())["path"])
        raise FileNotFoundError(
            f"{key.to_user_string()} has not been materialized yet (no {table.name} "
            f"or {pointer.name} under {artifact_home()})"
        )
