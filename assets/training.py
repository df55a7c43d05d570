"""Curated rows -> packed token shards (per batch) -> the training mix -> the student, trained by
trainers/ in its own process. Logic lives in pipeline.training (the mix) and trainers (the
training program)."""

import json
import sys
from pathlib import Path

import dagster as dg
import polars as pl

from assets.metadata import line_chart
from assets.partitions import BATCHES, batch_parts
from assets.resources import GPU_STEP_TAGS, Schoolhouse
from pipeline.settings import Engine, Settings
from pipeline.teacher.weights import embedded_teacher
from pipeline.training.mix import assemble_mix, pack_batch
from trainers import atomic
from trainers.config import TrainConfig


def student_tokenizer_dir(schoolhouse: Schoolhouse) -> str:
    return schoolhouse.settings.training.tokenizer or str(embedded_teacher())


@dg.asset(group_name="training", kinds={"numpy"}, partitions_def=BATCHES)
def token_shards(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse,
                 decontaminated: pl.DataFrame) -> dg.Output[Path]:  # fmt: skip
    """The batch's kept rows tokenized with the student tokenizer, packed once into EOS-separated
    `train-<domain>.bin` and a seeded held-out `valid-<domain>.bin` (the split hashes the row id)."""
    cfg = schoolhouse.settings.training
    date, domain = batch_parts(context.partition_key)
    out = schoolhouse.path("tokens", date, domain)
    shards = pack_batch(decontaminated, cfg, student_tokenizer_dir(schoolhouse), out)
    return dg.Output(out, metadata={**{f"{name}_tokens": info["tokens"] for name, info in shards.items()},
                                    **{f"{name}_documents": info["documents"] for name, info in shards.items()}})


@dg.asset(group_name="training", kinds={"numpy"})
def training_mix(schoolhouse: Schoolhouse, token_shards: dict[str, Path]) -> dg.Output[Path]:
    """Every batch's token shards, listed per source (`train-code`, `train-text`, and
    `train-replay` when a replay source is set, packed here) in one meta.json: the trainer reads
    their union; nothing is tokenized again."""
    cfg = schoolhouse.settings.training
    out = schoolhouse.path("training_mix")
    shards = assemble_mix(list(token_shards.values()), cfg, student_tokenizer_dir(schoolhouse), out)
    return dg.Output(
        out,
        metadata={
            "batches": len(token_shards),
            **{f"{name}_tokens": info["tokens"] for name, info in shards.items()},
            **{f"{name}_documents": info["documents"] for name, info in shards.items()},
            "mixture": dg.MetadataValue.json(cfg.mixture),
        },
    )


def trainer_command(config_path: Path, settings: Settings) -> list[str]:
    """This machine's launcher (`trainers.launch`: the trainer, or DeepSpeed's launcher over the
    GPUs and a hostfile's nodes), or, with `orchestration.ray.train_nodes`, the run placed on that
    many nodes of the Ray cluster (`pipeline.cluster.training`)."""
    cfg, cluster = settings.training, settings.orchestration
    if cluster.engine == Engine.ray and cluster.ray.train_nodes:
        return [sys.executable, "-m", "pipeline.cluster.training", "--config", str(config_path),
                "--address", cluster.ray.address, "--nodes", str(cluster.ray.train_nodes),
                "--gpus-per-node", str(cfg.num_gpus)]  # fmt: skip
    return [sys.executable, "-m", "trainers.launch", "--config", str(config_path), "--num-gpus", str(cfg.num_gpus),
            "--hostfile", cfg.hostfile]  # fmt: skip


def run_trainer(context: dg.AssetExecutionContext, client: dg.PipesSubprocessClient, run: TrainConfig,
                settings: Settings) -> tuple[dict, dict]:  # fmt: skip
    """Train one run in its own process (`trainer_command`, which stops the whole process group
    when the run is cancelled): (the trainer's summary, metadata with the loss curve)."""
    out_dir = Path(run.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A fresh run starts clean; resuming a crashed run is the trainer's job (checkpoints).
    for stale in ("metrics.jsonl", "summary.json"):
        (out_dir / stale).unlink(missing_ok=True)
    config_path = out_dir / "run.json"
    atomic.write_text(config_path, run.model_dump_json(indent=2), "the training run's config")
    result = client.run(command=trainer_command(config_path, settings), context=context).get_materialize_result()
    summary = json.loads((out_dir / "summary.json").read_text())
    metrics = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    heldout = heldout_curves(metrics)
    points = {f"held-out {source}": curve for source, curve in heldout.items()}
    chart = line_chart([m["step"] for m in metrics], [m["loss"] for m in metrics], "training loss",
                       out_dir / "loss.png", "step", "loss", points)  # fmt: skip
    last = {f"heldout_loss_{source}": dg.MetadataValue.float(ys[-1]) for source, (_, ys) in heldout.items()}
    return summary, {**(result.metadata or {}), "loss_curve": chart, **last}


def heldout_curves(metrics: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """Each held-out source's loss at the steps the trainer evaluated it: (steps, losses)."""
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for record in metrics:
        for source, loss in (record.get("heldout_loss") or {}).items():
            steps, losses = curves.setdefault(source, ([], []))
            steps.append(record["step"])
            losses.append(loss)
    return curves


@dg.asset(group_name="training", kinds={"deepspeed", "pytorch"}, pool="gpu", op_tags=GPU_STEP_TAGS)
def student_model(
    context: dg.AssetExecutionContext,
    schoolhouse: Schoolhouse,
    pipes_subprocess_client: dg.PipesSubprocessClient,
    training_mix: Path,
) -> dg.Output[Path]:
    """The Phi student trained with DeepSpeed by `trainers.train` (started by `trainers.launch`,
    which stops the whole process group when the run is cancelled), exported as an HF folder."""
    cfg = schoolhouse.settings.training
    run = cfg.train_config(data_dir=str(training_mix), out_dir=str(schoolhouse.path("student")))
    summary, metadata = run_trainer(context, pipes_subprocess_client, run, schoolhouse.settings)
    return dg.Output(Path(summary["model_dir"]), metadata=metadata)
