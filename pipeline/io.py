"""Every arrow of the asset graph is a file: polars frames as Parquet, folders as a pointer.

dagster-polars does not work with polars 2 (it passes the removed `rechunk` argument), and the
two cases we need fit in a page, so this is our own small IO manager.
"""


import json
import os
from pathlib import Path

import dagster as dg
import polars as pl

from pipeline.resources import artifact_home


class ArtifactIOManager(dg.ConfigurableIOManager):
    """`pl.DataFrame` -> `<home>/tables/<asset>.parquet`; `Path` -> `<home>/pointers/<asset>.json`,
    with <home> = $SCHOOLHOUSE_HOME (default ./state)."""

    def _base(self, context: dg.OutputContext | dg.InputContext, kind: str, suffix: str) -> Path:
        key = context.asset_key.path
        name = "/".join(key)
        if context.has_partition_key:
            name += f"/{context.partition_key}"
        return artifact_home() / kind / f"{name}{suffix}"

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        if obj is None:
            return
        if isinstance(obj, pl.DataFrame):
            path = self._base(context, "tables", ".parquet")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".parquet.tmp")
            obj.write_parquet(tmp)
            os.replace(tmp, path)  # readers never see a half-written table
            context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})
        elif isinstance(obj, Path):
            path = self._base(context, "pointers", ".json")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"path": str(obj.resolve())}))
            context.add_output_metadata({"path": dg.MetadataValue.path(str(obj.resolve()))})
        else:
            raise TypeError(f"{context.asset_key.to_user_string()}: cannot store {type(obj).__name__}")

    def load_input(self, context: dg.InputContext) -> object:
        table = self._base(context, "tables", ".parquet")
        if table.exists():
            return pl.read_parquet(table)
        pointer = self._base(context, "pointers", ".json")
        if pointer.exists():
            return Path(json.loads(pointer.read_text())["path"])
        raise FileNotFoundError(
            f"{context.asset_key.to_user_string()} has not been materialized yet (no {table.name} "
            f"or {pointer.name} under {artifact_home()})"
        )
