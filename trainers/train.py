"""Train the Phi student with DeepSpeed on packed token shards, then export a Hugging Face folder.

Runnable by hand (`python -m trainers.train --config run.json`) or launched by the
`student_model` asset through Dagster Pipes; with the `deepspeed` launcher on GPUs only rank 0
talks to Dagster. On a CPU it runs as one process with the gloo backend.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class TrainConfig:
    data_dir: str
    out_dir: str
    size: str = "tiny"
    init_from: str = ""
    seq_len: int = 256
    micro_batch_size: int = 8
    grad_accum_steps: int = 1
    max_steps: int = 100
    lr: float = 1e-3
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    zero_stage: int = 2
    precision: str = "bf16"
    seed: int = 0
    checkpoint_every: int = 0  # 0: only at the end
    log_every: int = 10
    peak_tflops: float = 0.0  # per device, for MFU; 0 = unknown (CPU)
    model_overrides: dict = field(default_factory=dict)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio * lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def flops_per_token(n_params: int, layers: int, hidden: int, seq_len: int) -> float:
    """Training FLOPs per token: 6N + 12·L·H·Q·T with H·Q = d_model (PaLM, appendix B)."""
    return 6 * n_params + 12 * layers * hidden * seq_len


class Reporter:
    """Rank 0 reports through Dagster Pipes when launched by Dagster, else prints."""

    def __init__(self, pipes=None, rank: int = 0):
        self.pipes, self.rank = pipes, rank

    def log(self, message: str) -> None:
        if self.rank != 0:
            return
        if self.pipes:
            self.pipes.log.info(message)
        else:
            print(message, flush=True)

    def finish(self, metadata: dict) -> None:
        if self.rank != 0:
            return
        if self.pipes:
            self.pipes.report_asset_materialization(metadata=metadata)
        else:
            print(json.dumps(metadata, indent=2), flush=True)


@contextlib.contextmanager
def reporter(rank: int):
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    if rank == 0 and PipesEnvVarParamsLoader().is_dagster_pipes_process():
        with open_dagster_pipes() as pipes:
            yield Reporter(pipes, rank)
    else:
        yield Reporter(None, rank)


def _distributed_defaults() -> None:
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"),
                       ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29533")):  # fmt: skip
        os.environ.setdefault(key, value)


def deepspeed_config(cfg: TrainConfig, on_gpu: bool) -> dict:
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "gradient_clipping": cfg.grad_clip,
        "bf16": {"enabled": cfg.precision == "bf16"},
        "zero_optimization": {"stage": cfg.zero_stage},
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": cfg.lr,
                "betas": [0.9, 0.95],
                "eps": 1e-8,
                "weight_decay": cfg.weight_decay,
                "torch_adam": not on_gpu,
            },  # fmt: skip
        },
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def build_model(cfg: TrainConfig, meta: dict):
    import torch
    from transformers import AutoModelForCausalLM, PhiForCausalLM

    from trainers.model import phi_config

    torch.manual_seed(cfg.seed)
    if cfg.init_from:
        return AutoModelForCausalLM.from_pretrained(cfg.init_from, dtype=torch.float32)
    config = phi_config(cfg.size, meta["vocab_size"], meta["bos_token_id"], meta["eos_token_id"],
                        **cfg.model_overrides)  # fmt: skip
    if cfg.seq_len > config.max_position_embeddings:
        raise ValueError(
            f"training.seq_len = {cfg.seq_len}: above the model's max_position_embeddings "
            f"({config.max_position_embeddings}) for size {cfg.size!r}"
        )
    return PhiForCausalLM(config)


def export(engine, cfg: TrainConfig, meta: dict, on_gpu: bool, rank: int) -> Path:
    """Write a safetensors Hugging Face folder (fp32 on CPU, bf16 on GPU) with the tokenizer."""
    import deepspeed
    import torch
    from transformers import AutoTokenizer

    out = Path(cfg.out_dir) / "model"
    params = list(engine.module.parameters())
    gather = deepspeed.zero.GatheredParameters(params) if cfg.zero_stage == 3 else contextlib.nullcontext()
    with gather:
        if rank == 0:
            dtype = torch.bfloat16 if on_gpu else torch.float32
            state = {k: v.detach().to("cpu", dtype) for k, v in engine.module.state_dict().items()}
            if out.exists():
                shutil.rmtree(out)
            engine.module.config.dtype = dtype  # what from_pretrained will load it as
            engine.module.save_pretrained(out, state_dict=state, safe_serialization=True)
            AutoTokenizer.from_pretrained(meta["tokenizer"]).save_pretrained(out)
    return out


def _prepare_op_builds(stale_after_s: float = 600.0) -> None:
    """DeepSpeed JIT-builds ops (a shared-memory comm op even on CPU) under a plain lock file.
    A build killed half-way leaves that file behind and every later run waits on it forever, so
    builds go to this environment's own folder and a lock older than any real build is removed."""
    folder = Path(os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions")))
    for lock in folder.glob("*/*/lock") if folder.exists() else ():
        if time.time() - lock.stat().st_mtime > stale_after_s:
            lock.unlink(missing_ok=True)


def train(cfg: TrainConfig) -> dict:
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if not _cuda_available() else "cuda")
    _distributed_defaults()
    _prepare_op_builds()
    import deepspeed
    import torch

    from trainers.data import PackedTokens, read_meta
    from trainers.model import parameter_count

    on_gpu = torch.cuda.is_available()
    rank = int(os.environ["RANK"])
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", verbose=False)
    world = int(os.environ["WORLD_SIZE"])
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)

    meta = read_meta(Path(cfg.data_dir))
    data = PackedTokens(Path(cfg.data_dir), "train", cfg.seq_len, seed=cfg.seed + rank)
    model = build_model(cfg, meta)
    if on_gpu:
        model.config._attn_implementation = "sdpa"
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=deepspeed_config(cfg, on_gpu),
        # DeepSpeed steps the schedule at each optimizer step and saves it in checkpoints.
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_at(step, cfg) / cfg.lr),
    )
    device = engine.device

    ckpt_dir = Path(cfg.out_dir) / "checkpoints"
    step = 0
    if (ckpt_dir / "latest").is_file():
        _, client = engine.load_checkpoint(str(ckpt_dir))
        step = client["step"]
        data.load_state_dict(client["data"])
        torch.set_rng_state(client["torch_rng"])

    n_params = parameter_count(model.config)
    per_token = flops_per_token(n_params, model.config.num_hidden_layers, model.config.hidden_size,
                                cfg.seq_len)  # fmt: skip
    tokens_per_step = cfg.micro_batch_size * cfg.grad_accum_steps * cfg.seq_len * world
    metrics_path = Path(cfg.out_dir) / "metrics.jsonl"
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    losses: list[float] = []
    with reporter(rank) as report, metrics_path.open("a") as metrics:
        report.log(
            f"training {cfg.size} ({n_params / 1e6:.1f}M parameters) from step {step} "
            f"to {cfg.max_steps}, {tokens_per_step} tokens per step, ZeRO-{cfg.zero_stage}"
        )
        started = time.perf_counter()
        window_start, window_tokens = started, 0
        while step < cfg.max_steps:
            engine.train()
            step_loss = 0.0
            for _ in range(cfg.grad_accum_steps):
                batch = torch.from_numpy(data.next_batch(cfg.micro_batch_size)).to(device)
                out = engine(input_ids=batch[:, :-1], labels=batch[:, :-1])
                engine.backward(out.loss)
                engine.step()
                step_loss += out.loss.item() / cfg.grad_accum_steps
            step += 1
            losses.append(step_loss)
            window_tokens += tokens_per_step
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                seconds = time.perf_counter() - window_start
                tok_s = window_tokens / seconds
                mfu = tok_s * per_token / (cfg.peak_tflops * 1e12 * world) if cfg.peak_tflops else None
                record = {"step": step, "loss": step_loss, "lr": engine.get_lr()[0],
                          "tokens_per_s": tok_s, "mfu": mfu}  # fmt: skip
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                eta = (cfg.max_steps - step) * seconds / max(1, window_tokens / tokens_per_step)
                report.log(
                    f"step {step}/{cfg.max_steps} loss {step_loss:.4f} lr {record['lr']:.2e} "
                    f"{tok_s:,.0f} tok/s" + (f" MFU {mfu:.1%}" if mfu else "") + f" ETA {eta:.0f}s"
                )
                window_start, window_tokens = time.perf_counter(), 0
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.max_steps:
                _save_checkpoint(engine, ckpt_dir, step, data)
        seconds = time.perf_counter() - started
        model_dir = export(engine, cfg, meta, on_gpu, rank)
        summary = {
            "model_dir": str(model_dir),
            "parameters": n_params,
            "steps": step,
            "final_loss": losses[-1] if losses else None,
            "first_loss": losses[0] if losses else None,
            "train_seconds": round(seconds, 2),
            "tokens_per_s": round(tokens_per_step * len(losses) / seconds, 1) if losses else None,
            "zero_stage": cfg.zero_stage,
            "world_size": world,
        }
        if rank == 0:
            (Path(cfg.out_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
        report.finish(summary)
    return summary


def _save_checkpoint(engine, ckpt_dir: Path, step: int, data) -> None:
    import torch

    client = {"step": step, "data": data.state_dict(), "torch_rng": torch.get_rng_state()}
    engine.save_checkpoint(str(ckpt_dir), tag=f"step{step}", client_state=client)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="JSON file with TrainConfig fields")
    parser.add_argument("--local_rank", type=int, default=None, help="set by the deepspeed launcher")
    args = parser.parse_args(argv)
    values = json.loads(Path(args.config).read_text())
    unknown = sorted(set(values) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        raise SystemExit(f"{args.config}: unknown training fields: {', '.join(unknown)}")
    train(TrainConfig(**values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
