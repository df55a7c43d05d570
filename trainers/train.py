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

SCHEDULES = ("cosine", "constant", "wsd")


@dataclass
class TrainConfig:
    data_dir: str
    out_dir: str
    size: str = "tiny"
    init_from: str = ""  # a Hugging Face folder to continue pre-training from
    model_overrides: dict = field(default_factory=dict)  # any PhiConfig field
    mixture: dict = field(default_factory=lambda: {"code": 0.5, "text": 0.5})  # weights over train-<source> shards
    seq_len: int = 256
    micro_batch_size: int = 8
    grad_accum_steps: int = 1
    max_steps: int = 100
    lr: float = 1e-3
    schedule: str = "cosine"  # cosine | constant | wsd (warmup-stable-decay)
    warmup_steps: int = 10
    warmup_start_ratio: float = 0.0  # re-warm for continued pre-training: start at this * lr
    decay_fraction: float = 0.2  # wsd: the last fraction of steps decays linearly
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    zero_stage: int = 0  # 0-3; one process has nothing to partition
    precision: str = "bf16"
    loss_chunk_tokens: int = 4096  # chunked head + cross-entropy; 0 = the model's full-logit loss
    activation_checkpointing: bool = False
    compile: bool = False  # torch.compile each decoder layer (GPU)
    seed: int = 0
    checkpoint_every: int = 0  # 0: only at the end
    log_every: int = 10
    export: bool = True  # write the Hugging Face folder at the end (benchmarks skip it)
    peak_tflops: float = 0.0  # per device, for MFU; 0 = unknown (CPU)

    def check(self, world: int = 1) -> None:
        """Fail before any work, naming the field."""
        from trainers.data import mixture_counts
        from trainers.model import check_shape

        if not self.init_from:
            check_shape(self.size, self.seq_len, self.model_overrides)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"training.schedule = {self.schedule!r}: must be one of {', '.join(SCHEDULES)}")
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"training.precision = {self.precision!r}: must be bf16 or fp32")
        if not 0 <= self.zero_stage <= 3:
            raise ValueError(f"training.zero_stage = {self.zero_stage}: must be 0-3")
        mixture_counts(self.mixture, self.micro_batch_size * self.grad_accum_steps * world)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup (from warmup_start_ratio * lr), then cosine decay to min_lr_ratio * lr, a
    constant lr, or warmup-stable-decay: constant until the last decay_fraction of the steps, which
    decay linearly to the floor (so a stable-phase checkpoint can be continued or decayed later)."""
    if step < cfg.warmup_steps:
        start = cfg.warmup_start_ratio
        return cfg.lr * (start + (1 - start) * (step + 1) / cfg.warmup_steps)
    floor = cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "wsd":
        decay_steps = max(1, round(cfg.decay_fraction * cfg.max_steps))
        progress = (step - (cfg.max_steps - decay_steps)) / decay_steps
        return cfg.lr * (1 - (1 - floor) * min(1.0, max(0.0, progress)))
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (floor + (1 - floor) * cosine)


def flops_per_token(matmul_params: int, layers: int, hidden: int, seq_len: int) -> float:
    """Training FLOPs per token: 6N + 12·L·H·Q·T with H·Q = d_model (PaLM, appendix B), N without
    the input embedding (a lookup, not a matmul), as the GPU baseline counts it."""
    return 6 * matmul_params + 12 * layers * hidden * seq_len


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
            values = {
                key: {"raw_value": value, "type": "json"} if isinstance(value, (dict, list)) else value
                for key, value in metadata.items()
                if value is not None
            }
            self.pipes.report_asset_materialization(metadata=values)
        else:
            print(json.dumps(metadata, indent=2), flush=True)


@contextlib.contextmanager
def reporter(rank: int):
    # dagster-pipes is only needed when Dagster started us (a GPU box may run the trainer alone)
    if rank == 0 and "DAGSTER_PIPES_CONTEXT" in os.environ:
        from dagster_pipes import open_dagster_pipes

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


def build_model(cfg: TrainConfig, meta: dict, on_gpu: bool):
    """The Phi student (from scratch or a Hugging Face checkpoint) wrapped with its loss."""
    import torch
    from transformers import AutoModelForCausalLM, PhiForCausalLM

    from trainers.loss import CausalLMLoss
    from trainers.model import phi_config

    torch.manual_seed(cfg.seed)
    attention = "sdpa"  # flash / memory-efficient kernels on a GPU
    if cfg.init_from:
        model = AutoModelForCausalLM.from_pretrained(cfg.init_from, dtype=torch.float32, attn_implementation=attention)
        positions = model.config.max_position_embeddings
        if cfg.seq_len > positions:
            raise ValueError(
                f"training.seq_len = {cfg.seq_len}: above {cfg.init_from}'s max_position_embeddings ({positions})"
            )
    else:
        config = phi_config(cfg.size, meta["vocab_size"], meta["bos_token_id"], meta["eos_token_id"],
                            **cfg.model_overrides)  # fmt: skip
        config._attn_implementation = attention
        model = PhiForCausalLM(config)
    model.config.use_cache = False
    if cfg.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.compile and on_gpu:
        for layer in model.model.layers:  # regional compilation: one graph per block, compiled once
            layer.compile()
    return CausalLMLoss(model, cfg.loss_chunk_tokens)


def export(engine, cfg: TrainConfig, meta: dict, on_gpu: bool, rank: int) -> Path:
    """Write a safetensors Hugging Face folder (fp32 on CPU, bf16 on GPU) with the tokenizer."""
    import deepspeed
    import torch
    from transformers import AutoTokenizer

    out = Path(cfg.out_dir) / "model"
    model = engine.module.model
    params = list(model.parameters())
    gather = deepspeed.zero.GatheredParameters(params) if cfg.zero_stage == 3 else contextlib.nullcontext()
    with gather:
        if rank == 0:
            dtype = torch.bfloat16 if on_gpu else torch.float32
            state = {k: v.detach().to("cpu", dtype) for k, v in model.state_dict().items()}
            if out.exists():
                shutil.rmtree(out)
            model.config.dtype = dtype  # what from_pretrained will load it as
            model.config.use_cache = True
            model.save_pretrained(out, state_dict=state, safe_serialization=True)
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


def _resume(engine, ckpt_dir: Path, mixture, metrics_path: Path, rank: int) -> int:
    """Load the latest checkpoint (weights, optimizer, schedule, data position, RNG); metrics
    logged after it are dropped, since those steps run again."""
    import torch

    if not (ckpt_dir / "latest").is_file():
        if rank == 0:
            metrics_path.unlink(missing_ok=True)
        return 0
    _, client = engine.load_checkpoint(str(ckpt_dir))
    mixture.load_state_dict(client["data"])
    torch.set_rng_state(client["torch_rng"])
    step = client["step"]
    if rank == 0 and metrics_path.is_file():
        kept = [line for line in metrics_path.read_text().splitlines() if json.loads(line)["step"] <= step]
        metrics_path.write_text("".join(line + "\n" for line in kept))
    return step


def train(cfg: TrainConfig) -> dict:
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if not _cuda_available() else "cuda")
    _distributed_defaults()
    world = int(os.environ["WORLD_SIZE"])
    cfg.check(world)
    _prepare_op_builds()
    import deepspeed
    import torch
    import torch.distributed as dist

    from trainers.data import Mixture, read_meta
    from trainers.model import parameter_count

    on_gpu = torch.cuda.is_available()
    rank = int(os.environ["RANK"])
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", verbose=False)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)

    meta = read_meta(Path(cfg.data_dir))
    per_rank = cfg.micro_batch_size * cfg.grad_accum_steps
    mixture = Mixture(Path(cfg.data_dir), cfg.mixture, cfg.seq_len, per_rank * world, cfg.seed)
    model = build_model(cfg, meta, on_gpu)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=deepspeed_config(cfg, on_gpu),
        # DeepSpeed steps the schedule at each optimizer step and saves it in checkpoints.
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_at(step, cfg) / cfg.lr),
    )
    device = engine.device

    out_dir = Path(cfg.out_dir)
    ckpt_dir = out_dir / "checkpoints"
    metrics_path = out_dir / "metrics.jsonl"
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    step = _resume(engine, ckpt_dir, mixture, metrics_path, rank)
    first_step = step

    config = model.model.config
    n_params = parameter_count(config) if config.model_type == "phi" else sum(p.numel() for p in model.parameters())
    per_token = flops_per_token(n_params - config.vocab_size * config.hidden_size, config.num_hidden_layers,
                                config.hidden_size, cfg.seq_len)  # fmt: skip
    tokens_per_step = per_rank * cfg.seq_len * world
    losses: list[float] = []
    with reporter(rank) as report, metrics_path.open("a") as metrics:
        report.log(
            f"training {cfg.size if not cfg.init_from else cfg.init_from} ({n_params / 1e6:.1f}M parameters) "
            f"from step {step} to {cfg.max_steps}: {tokens_per_step:,} tokens per step, mixture "
            f"{mixture.counts} sequences, ZeRO-{cfg.zero_stage}, {world} process(es)"
        )
        started = time.perf_counter()
        window_start, window_tokens = started, 0
        while step < cfg.max_steps:
            engine.train()
            picks = mixture.next_step()[rank * per_rank : (rank + 1) * per_rank]
            rows = torch.from_numpy(mixture.read(picks)).to(device)
            lr = engine.get_lr()[0]  # this step's; the scheduler moves on inside engine.step()
            step_loss = torch.zeros((), device=device)
            for micro in rows.split(cfg.micro_batch_size):
                loss = engine(micro[:, :-1], micro[:, 1:])
                engine.backward(loss)
                engine.step()
                step_loss += loss.detach().float() / cfg.grad_accum_steps
            if world > 1:  # the loss of the global batch, not rank 0's share
                dist.all_reduce(step_loss)
                step_loss /= world
            step += 1
            losses.append(step_loss.item())
            window_tokens += tokens_per_step
            record = {"step": step, "loss": losses[-1], "lr": lr}
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                seconds = time.perf_counter() - window_start
                tok_s = window_tokens / seconds
                mfu = tok_s * per_token / (cfg.peak_tflops * 1e12 * world) if cfg.peak_tflops else None
                record.update(tokens_per_s=tok_s, mfu=mfu)
                eta = (cfg.max_steps - step) * seconds / max(1, window_tokens / tokens_per_step)
                report.log(
                    f"step {step}/{cfg.max_steps} loss {losses[-1]:.4f} lr {record['lr']:.2e} "
                    f"{tok_s:,.0f} tok/s" + (f" MFU {mfu:.1%}" if mfu else "") + f" ETA {eta:.0f}s"
                )
                window_start, window_tokens = time.perf_counter(), 0
            if rank == 0:
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.max_steps:
                _save_checkpoint(engine, ckpt_dir, step, mixture)
        seconds = time.perf_counter() - started
        model_dir = export(engine, cfg, meta, on_gpu, rank) if cfg.export else None
        trained = step - first_step
        summary = {
            "model_dir": str(model_dir) if model_dir else None,
            "parameters": n_params,
            "steps": step,
            "resumed_from_step": first_step,
            "final_loss": losses[-1] if losses else None,
            "first_loss": losses[0] if losses else None,
            "train_seconds": round(seconds, 2),
            "tokens_per_s": round(tokens_per_step * trained / seconds, 1) if trained else None,
            "mixture_sequences_per_step": mixture.counts,
            "zero_stage": cfg.zero_stage,
            "world_size": world,
            "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 1) if on_gpu else None,
        }
        if rank == 0:
            (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        report.finish(summary)
    return summary


def _save_checkpoint(engine, ckpt_dir: Path, step: int, mixture) -> None:
    import torch

    client = {"step": step, "data": mixture.state_dict(), "torch_rng": torch.get_rng_state()}
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
