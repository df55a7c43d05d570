"""Curated rows -> packed token shards -> the student, trained by trainers/ in its own process."""

import json
import sys
from pathlib import Path

import dagster as dg
import polars as pl

from pipeline.replay import replay_documents
from pipeline.report import line_chart
from pipeline.resources import Schoolhouse
from pipeline.rows import KEPT
from pipeline.settings import model_overrides
from pipeline.teacher_weights import EMBEDDED_TEACHER_NAME, prepare_embedded_teacher
from trainers.data import pack, write_meta
from trainers.train import TrainConfig


def student_tokenizer_dir(schoolhouse: Schoolhouse) -> str:
    chosen = schoolhouse.settings.training.tokenizer
    if chosen:
        return chosen
    return str(prepare_embedded_teacher(schoolhouse.path("teacher", EMBEDDED_TEACHER_NAME)))


@dg.asset(group_name="training", kinds={"numpy"})
def training_mix(schoolhouse: Schoolhouse, decontaminated: pl.DataFrame) -> dg.Output[Path]:
    """Kept rows tokenized with the student tokenizer and packed into EOS-separated shards, one
    per source (`train-code`, `train-text`, and `train-replay` when a replay source is set); a
    seeded held-out slice goes to `valid-code` / `valid-text` for perplexity."""
    from transformers import AutoTokenizer

    cfg = schoolhouse.settings.training
    tokenizer_dir = student_tokenizer_dir(schoolhouse)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    kept = decontaminated.filter(KEPT).sort("id")
    # A stable, content-independent split: the same id is always on the same side.
    bucket = pl.col("id").hash(seed=cfg.seed) % 10_000
    heldout = kept.filter(bucket < int(cfg.heldout_fraction * 10_000))
    train = kept.filter(bucket >= int(cfg.heldout_fraction * 10_000))
    sources = {domain: train.filter(pl.col("domain") == domain)["text"].to_list() for domain in ("code", "text")}
    if cfg.mixture.get("replay", 0) > 0:
        sources["replay"] = replay_documents(cfg.replay_path, cfg.replay_split, cfg.replay_text_field,
                                             cfg.replay_max_documents)  # fmt: skip
    out = schoolhouse.path("training_mix")
    for stale in out.glob("*.bin"):
        stale.unlink()
    shards = {f"train-{name}": pack(docs, tokenizer, out, f"train-{name}") for name, docs in sources.items()}
    for domain in ("code", "text"):
        docs = heldout.filter(pl.col("domain") == domain)["text"].to_list()
        shards[f"valid-{domain}"] = pack(docs, tokenizer, out, f"valid-{domain}")
    for name, weight in cfg.mixture.items():
        if weight > 0 and shards[f"train-{name}"]["tokens"] <= cfg.seq_len:
            raise ValueError(
                f"training.mixture.{name} = {weight} but the {name} source has "
                f"{shards[f'train-{name}']['tokens']} tokens, not one sequence of training.seq_len = {cfg.seq_len}"
            )
    write_meta(out, tokenizer_dir, len(tokenizer), tokenizer.eos_token_id, tokenizer.bos_token_id, shards)
    return dg.Output(
        out,
        metadata={
            **{f"{name}_tokens": info["tokens"] for name, info in shards.items()},
            **{f"{name}_documents": info["documents"] for name, info in shards.items()},
            "mixture": dg.MetadataValue.json(cfg.mixture),
        },
    )


@dg.asset(group_name="training", kinds={"deepspeed", "pytorch"}, pool="gpu")
def student_model(
    context: dg.AssetExecutionContext,
    schoolhouse: Schoolhouse,
    pipes_subprocess_client: dg.PipesSubprocessClient,
    training_mix: Path,
) -> dg.Output[Path]:
    """The Phi student trained with DeepSpeed by `trainers.train` (started by `trainers.launch`,
    which stops the whole process group when the run is cancelled), exported as an HF folder."""
    cfg = schoolhouse.settings.training
    out_dir = schoolhouse.path("student")
    fields = set(TrainConfig.__dataclass_fields__) - {"data_dir", "out_dir"}
    run = {name: value for name, value in cfg.model_dump(mode="json").items() if name in fields}
    run.update(data_dir=str(training_mix), out_dir=str(out_dir), model_overrides=model_overrides(cfg.model_overrides),
               peak_tflops=cfg.peak_tflops if cfg.num_gpus else 0.0)  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    # A fresh run starts clean; resuming a crashed run is the trainer's job (checkpoints).
    for stale in ("metrics.jsonl", "summary.json"):
        (out_dir / stale).unlink(missing_ok=True)
    config_path = out_dir / "run.json"
    config_path.write_text(json.dumps(run, indent=2))
    command = [sys.executable, "-m", "trainers.launch", "--config", str(config_path),
               "--num-gpus", str(cfg.num_gpus), "--hostfile", cfg.hostfile]  # fmt: skip
    result = pipes_subprocess_client.run(command=command, context=context).get_materialize_result()
    summary = json.loads((out_dir / "summary.json").read_text())
    metrics = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    chart = line_chart([m["step"] for m in metrics], [m["loss"] for m in metrics],
                       "training loss", out_dir / "loss.png", "step", "loss")  # fmt: skip
    return dg.Output(
        Path(summary["model_dir"]),
        metadata={**(result.metadata or {}), "loss_curve": chart},
    )
