"""Curated rows -> packed token shards -> the student, trained by trainers/ in its own process."""

import json
import sys
from pathlib import Path

import dagster as dg
import polars as pl

from pipeline.report import line_chart
from pipeline.resources import Schoolhouse
from pipeline.rows import KEPT
from pipeline.teacher_weights import EMBEDDED_TEACHER_NAME, prepare_embedded_teacher
from trainers.data import pack, write_meta


def student_tokenizer_dir(schoolhouse: Schoolhouse) -> str:
    chosen = schoolhouse.settings.training.tokenizer
    if chosen:
        return chosen
    return str(prepare_embedded_teacher(schoolhouse.path("teacher", EMBEDDED_TEACHER_NAME)))


@dg.asset(group_name="training", kinds={"numpy"})
def training_mix(schoolhouse: Schoolhouse, decontaminated: pl.DataFrame) -> dg.Output[Path]:
    """Kept rows tokenized with the student tokenizer and packed into EOS-separated shards;
    a seeded held-out slice goes to `valid-code.bin` / `valid-text.bin` for perplexity."""
    from transformers import AutoTokenizer

    cfg = schoolhouse.settings.training
    tokenizer_dir = student_tokenizer_dir(schoolhouse)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    kept = decontaminated.filter(KEPT).sort("id")
    # A stable, content-independent split: the same id is always on the same side.
    bucket = pl.col("id").hash(seed=cfg.seed) % 10_000
    heldout = kept.filter(bucket < int(cfg.heldout_fraction * 10_000))
    train = kept.filter(bucket >= int(cfg.heldout_fraction * 10_000))
    out = schoolhouse.path("training_mix")
    shards = {
        "train": pack(train["text"].to_list(), tokenizer, out, "train"),
        **{
            f"valid-{domain}": pack(heldout.filter(pl.col("domain") == domain)["text"].to_list(), tokenizer, out,
                                    f"valid-{domain}")
            for domain in ("code", "text")
        },
    }  # fmt: skip
    write_meta(out, tokenizer_dir, len(tokenizer), tokenizer.eos_token_id, tokenizer.bos_token_id, shards)
    by_domain = train.group_by("domain").len()
    return dg.Output(
        out,
        metadata={
            "train_tokens": shards["train"]["tokens"],
            "train_documents": shards["train"]["documents"],
            "heldout_documents": shards["valid-code"]["documents"] + shards["valid-text"]["documents"],
            "documents_by_domain": dg.MetadataValue.json(dict(by_domain.iter_rows())),
        },
    )


def trainer_command(settings, config_path: Path) -> list[str]:
    """One process on a CPU; the DeepSpeed launcher (one process per GPU) otherwise."""
    if settings.num_gpus == 0:
        return [sys.executable, "-m", "trainers.train", "--config", str(config_path)]
    return ["deepspeed", "--num_gpus", str(settings.num_gpus), "--module", "trainers.train",
            "--config", str(config_path)]  # fmt: skip


@dg.asset(group_name="training", kinds={"deepspeed", "pytorch"}, pool="gpu")
def student_model(
    context: dg.AssetExecutionContext,
    schoolhouse: Schoolhouse,
    pipes_subprocess_client: dg.PipesSubprocessClient,
    training_mix: Path,
) -> dg.Output[Path]:
    """The Phi student trained with DeepSpeed by `trainers.train`, exported as an HF folder."""
    cfg = schoolhouse.settings.training
    out_dir = schoolhouse.path("student")
    run = {
        "data_dir": str(training_mix),
        "out_dir": str(out_dir),
        "size": cfg.size,
        "init_from": cfg.init_from,
        "seq_len": cfg.seq_len,
        "micro_batch_size": cfg.micro_batch_size,
        "grad_accum_steps": cfg.grad_accum_steps,
        "max_steps": cfg.max_steps,
        "lr": cfg.lr,
        "warmup_steps": cfg.warmup_steps,
        "weight_decay": cfg.weight_decay,
        "grad_clip": cfg.grad_clip,
        "zero_stage": cfg.zero_stage,
        "precision": cfg.precision,
        "seed": cfg.seed,
        "peak_tflops": 989.0 if cfg.num_gpus else 0.0,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    # A fresh run starts clean; resuming a crashed run is the trainer's job (checkpoints).
    for stale in ("metrics.jsonl", "summary.json"):
        (out_dir / stale).unlink(missing_ok=True)
    config_path = out_dir / "run.json"
    config_path.write_text(json.dumps(run, indent=2))
    result = pipes_subprocess_client.run(
        command=trainer_command(cfg, config_path), context=context
    ).get_materialize_result()
    summary = json.loads((out_dir / "summary.json").read_text())
    metrics = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    chart = line_chart([m["step"] for m in metrics], [m["loss"] for m in metrics],
                       "training loss", out_dir / "loss.png", "step", "loss")  # fmt: skip
    return dg.Output(
        Path(summary["model_dir"]),
        metadata={**(result.metadata or {}), "loss_curve": chart},
    )
