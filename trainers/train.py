"""Train the Phi student with DeepSpeed on packed token shards, then export a Hugging Face folder.

Runnable by hand (`python -m trainers.train --config run.yaml`, fields in `trainers.config`) or
launched by the `student_model` asset through Dagster Pipes; with the `deepspeed` launcher on GPUs
only rank 0 talks to Dagster. On a CPU it runs as one process with the gloo backend.

`train` reads top to bottom: `setup` builds the engine and the data, `train_step` runs one
optimizer step, `evaluate` scores the held-out shards, `ProgressLog` writes metrics and progress
lines, `save_checkpoint` / `resume` keep the run restartable, `export` writes the model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainers import atomic
from trainers.config import TrainConfig, chosen_precision, read_config


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


def _group_of_one(backend: str) -> None:
    """One process started alone (not by the deepspeed launcher): a process group of one over an
    in-memory store, with no port at all. A free port picked here would be released before the
    group binds it, and another run on the machine (two arms, a test beside a demo, a vLLM server)
    could take it in between (EADDRINUSE)."""
    alone = "MASTER_PORT" not in os.environ and os.environ.get("WORLD_SIZE", "1") == "1"
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    import torch.distributed as dist

    if alone and not dist.is_initialized():  # else the launcher's ranks meet at its address
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def deepspeed_config(cfg: TrainConfig, on_gpu: bool, precision: str) -> dict:
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "gradient_clipping": cfg.grad_clip,
        "bf16": {"enabled": precision == "bf16"},
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
        if meta["vocab_size"] > model.config.vocab_size:
            raise ValueError(
                f"training.init_from = {cfg.init_from}: its vocabulary ({model.config.vocab_size}) is smaller than "
                f"the data's tokenizer ({meta['tokenizer']}, {meta['vocab_size']}); pack the data with its tokenizer"
            )
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


def _prepare_op_builds(stale_after_s: float = 600.0) -> None:
    """DeepSpeed JIT-builds ops (a shared-memory comm op even on CPU) under a plain lock file.
    A build killed half-way leaves that file behind and every later run waits on it forever, so
    builds go to this environment's own folder and a lock older than any real build is removed."""
    folder = Path(os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions")))
    for lock in folder.glob("*/*/lock") if folder.exists() else ():
        if time.time() - lock.stat().st_mtime > stale_after_s:
            lock.unlink(missing_ok=True)


@dataclass
class Run:
    """Everything one training run holds while it trains."""

    cfg: TrainConfig
    engine: object
    mixture: object
    meta: dict
    rank: int
    world: int
    on_gpu: bool
    parameters: int
    flops_per_token: float
    precision: str  # bf16 | fp32, what `auto` became
    precision_why: str
    heldout: dict[str, np.ndarray]  # each held-out source's fixed evaluation windows

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.out_dir)

    @property
    def checkpoints(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"

    @property
    def sequences_per_rank(self) -> int:
        return self.cfg.micro_batch_size * self.cfg.grad_accum_steps

    @property
    def tokens_per_step(self) -> int:
        return self.sequences_per_rank * self.cfg.seq_len * self.world


def heldout_windows(cfg: TrainConfig, meta: dict) -> dict[str, np.ndarray]:
    """Each `valid-<source>` shard's evaluation windows: the first eval_batches x micro_batch_size
    of its seed-0 order (where the exam's held-out perplexity starts too), read once so every
    evaluation scores the same tokens. A shard shorter than one window is left out."""
    from trainers.data import PackedTokens

    windows = {}
    for split in meta["shards"] if cfg.eval_every else ():
        if not split.startswith("valid-"):
            continue
        try:
            shard = PackedTokens(Path(cfg.data_dir), split, cfg.seq_len, seed=0)
        except ValueError:
            continue
        starts = shard.next_starts(min(shard.windows, cfg.eval_batches * cfg.micro_batch_size))
        windows[split.removeprefix("valid-")] = shard.read(starts)
    return windows


def setup(cfg: TrainConfig) -> Run:
    """The distributed group, the data mixture and the DeepSpeed engine around the model."""
    if not cfg.data_dir or not cfg.out_dir:
        raise ValueError("training config: data_dir and out_dir are required")
    import torch

    on_gpu = torch.cuda.is_available()
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if on_gpu else "cpu")
    _group_of_one("nccl" if on_gpu else "gloo")
    world = int(os.environ["WORLD_SIZE"])
    _prepare_op_builds()
    import deepspeed

    from trainers.data import Mixture, read_meta
    from trainers.model import parameter_count

    precision, why = chosen_precision(cfg.precision, on_gpu)
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", verbose=False)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    meta = read_meta(Path(cfg.data_dir))
    per_rank = cfg.micro_batch_size * cfg.grad_accum_steps
    mixture = Mixture(Path(cfg.data_dir), cfg.mixture, cfg.seq_len, per_rank * world, cfg.seed, cfg.max_steps)
    model = build_model(cfg, meta, on_gpu)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=deepspeed_config(cfg, on_gpu, precision),
        # DeepSpeed steps the schedule at each optimizer step and saves it in checkpoints.
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_at(step, cfg) / cfg.lr),
    )
    config = model.model.config
    n_params = parameter_count(config) if config.model_type == "phi" else sum(p.numel() for p in model.parameters())
    per_token = flops_per_token(n_params - config.vocab_size * config.hidden_size, config.num_hidden_layers,
                                config.hidden_size, cfg.seq_len)  # fmt: skip
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    return Run(cfg, engine, mixture, meta, int(os.environ["RANK"]), world, on_gpu, n_params, per_token, precision, why,
               heldout_windows(cfg, meta))  # fmt: skip


def train_step(run: Run):
    """One optimizer step over this rank's share of the global batch: (this rank's loss, left on
    the device, and the lr). ProgressLog reads the losses back a window at a time."""
    import torch

    cfg, engine = run.cfg, run.engine
    engine.train()
    per_rank = run.sequences_per_rank
    picks = run.mixture.next_step()[run.rank * per_rank : (run.rank + 1) * per_rank]
    rows = torch.from_numpy(run.mixture.read(picks)).to(engine.device)
    lr = engine.get_lr()[0]  # this step's; the scheduler moves on inside engine.step()
    step_loss = torch.zeros((), device=engine.device)
    for micro in rows.split(cfg.micro_batch_size):
        loss = engine(micro[:, :-1], micro[:, 1:])
        engine.backward(loss)
        engine.step()
        step_loss += loss.detach().float() / cfg.grad_accum_steps
    return step_loss, lr


def evaluate(run: Run) -> dict[str, float]:
    """Mean loss per token on each held-out source's fixed windows, in eval mode without gradients.
    The ranks split the windows and run the same number of forwards (ZeRO-3 gathers the weights
    collectively); the sums are reduced. Neither the data order nor any RNG moves, so training
    after it is what it would have been without it."""
    import torch
    import torch.distributed as dist

    engine, micro = run.engine, run.cfg.micro_batch_size
    engine.eval()
    sums = []
    with torch.no_grad():
        for rows in run.heldout.values():
            mine = rows[run.rank :: run.world]
            total = torch.zeros((), device=engine.device)
            for first in range(0, -(-len(rows) // run.world), micro):
                batch = mine[first : first + micro]
                ids = torch.from_numpy(batch if len(batch) else rows[:1]).to(engine.device)
                loss = engine(ids[:, :-1], ids[:, 1:])
                if len(batch):  # an empty share still ran the forward, for the other ranks
                    total += loss.float() * len(batch)  # every window scores seq_len tokens
            sums.append(total)
    engine.train()
    if not sums:
        return {}
    sums = torch.stack(sums)
    if run.world > 1:
        dist.all_reduce(sums)
    return {name: s / len(rows) for (name, rows), s in zip(run.heldout.items(), sums.tolist(), strict=True)}


class ProgressLog:
    """Per-step metrics (rank 0 writes metrics.jsonl) and, every `log_every` steps, a progress
    line with the mean loss, tokens/s, MFU and ETA over the window since the last line. The
    losses stay on the device until a line, an evaluation, a checkpoint or the end reads them back
    all at once: a read every step would make the host wait for the device every step."""

    def __init__(self, run: Run, report: Reporter, metrics_file):
        self.run, self.report, self.metrics = run, report, metrics_file
        self.window_start, self.window_tokens = time.perf_counter(), 0
        self.pending: list[tuple[int, object, float]] = []  # (step, loss on the device, lr), not read yet
        self.records: list[dict] = []  # read, not written yet
        self.window: list[float] = []  # losses since the last line
        self.losses: list[float] = []
        self.heldout: dict[str, float] | None = None  # the latest evaluation's
        self.eval_seconds = 0.0

    def mfu(self, tokens_per_s: float) -> float | None:
        """Model FLOPs utilization: achieved training FLOP/s over the devices' peak."""
        cfg = self.run.cfg
        if not (self.run.on_gpu and cfg.peak_tflops):
            return None
        return tokens_per_s * self.run.flops_per_token / (cfg.peak_tflops * 1e12 * self.run.world)

    def read(self) -> None:
        """The pending steps' losses to the host in one transfer, as the global batch's loss."""
        if not self.pending:
            return
        import torch
        import torch.distributed as dist

        losses = torch.stack([loss for _, loss, _ in self.pending])
        if self.run.world > 1:  # the loss of the global batch, not this rank's share
            dist.all_reduce(losses)
            losses /= self.run.world
        values = losses.tolist()
        self.records += [{"step": step, "loss": loss, "lr": lr}
                         for (step, _, lr), loss in zip(self.pending, values, strict=True)]  # fmt: skip
        self.window += values
        self.losses += values
        self.pending = []

    def step(self, step: int, loss, lr: float, evaluate_now: bool = False, checkpoint: bool = False) -> None:
        """Record a step; at a line, an evaluation or a checkpoint, write everything read so far
        (before the checkpoint, so a resumed run keeps exactly the metrics of the steps it keeps)."""
        cfg = self.run.cfg
        self.pending.append((step, loss, lr))
        self.window_tokens += self.run.tokens_per_step
        if evaluate_now:
            self.read()  # the training queued so far finishes first, so tokens/s leaves out the evaluation
            began = time.perf_counter()
            self.heldout = evaluate(self.run)
            spent = time.perf_counter() - began
            self.eval_seconds += spent
            self.window_start += spent
            self.records[-1]["heldout_loss"] = self.heldout
            if self.heldout:
                losses = ", ".join(f"{name} {value:.4f}" for name, value in self.heldout.items())
                self.report.log(f"step {step}/{cfg.max_steps} held-out loss {losses}")
        line = step % cfg.log_every == 0 or step == cfg.max_steps
        if line or evaluate_now or checkpoint:
            self.read()
        if line:
            seconds = time.perf_counter() - self.window_start
            tok_s = self.window_tokens / seconds
            mfu = self.mfu(tok_s)
            self.records[-1].update(tokens_per_s=tok_s, mfu=mfu)
            eta = (cfg.max_steps - step) * seconds / max(1, self.window_tokens / self.run.tokens_per_step)
            mean = sum(self.window) / len(self.window)
            self.report.log(
                f"step {step}/{cfg.max_steps} loss {mean:.4f} lr {lr:.2e} {tok_s:,.0f} tok/s"
                + (f" MFU {mfu:.1%}" if mfu else "") + f" ETA {eta:.0f}s"
            )
            self.window_start, self.window_tokens, self.window = time.perf_counter(), 0, []
        if self.run.rank == 0 and self.records:
            self.metrics.write("".join(json.dumps(record) + "\n" for record in self.records))
            self.metrics.flush()
        self.records = []


def save_checkpoint(run: Run, step: int) -> None:
    """Weights, optimizer, schedule (DeepSpeed's), data position and RNG under `step<N>`."""
    import torch

    client = {"step": step, "data": run.mixture.state_dict(), "torch_rng": torch.get_rng_state()}
    tag = f"step{step}"
    # DeepSpeed truncates and rewrites `latest` in place (a kill there leaves it empty): it is
    # written here instead, after every rank's files (DeepSpeed's closing barrier), on disk and whole
    run.engine.save_checkpoint(str(run.checkpoints), tag=tag, client_state=client, save_latest=False)
    if run.rank == 0:
        atomic.fsync_tree(run.checkpoints / tag)
        atomic.write_text(run.checkpoints / "latest", tag, "the latest checkpoint's name")


def resume(run: Run) -> int:
    """Load the latest checkpoint, if any, and return its step; metrics logged after it are
    dropped, since those steps run again."""
    import torch

    if not (run.checkpoints / "latest").is_file():
        if run.rank == 0:
            run.metrics_path.unlink(missing_ok=True)
        return 0
    _, client = run.engine.load_checkpoint(str(run.checkpoints))
    run.mixture.load_state_dict(client["data"])
    torch.set_rng_state(client["torch_rng"])
    step = client["step"]
    if run.rank == 0 and run.metrics_path.is_file():
        kept = [line for line in run.metrics_path.read_text().splitlines() if _logged_by(line, step)]
        atomic.write_text(run.metrics_path, "".join(line + "\n" for line in kept), "the training metrics")
    return step


def _logged_by(line: str, step: int) -> bool:
    """A metrics line of a step up to `step`; a line torn by a kill mid-write is not kept."""
    try:
        return json.loads(line)["step"] <= step
    except (ValueError, KeyError, TypeError):
        return False


def export(run: Run) -> Path:
    """Write a safetensors Hugging Face folder (fp32 on CPU, bf16 on GPU) with the tokenizer."""
    import deepspeed
    import torch
    from transformers import AutoTokenizer

    out = run.out_dir / "model"
    model = run.engine.module.model
    params = list(model.parameters())
    gather = deepspeed.zero.GatheredParameters(params) if run.cfg.zero_stage == 3 else contextlib.nullcontext()
    with gather:
        if run.rank == 0:
            dtype = torch.bfloat16 if run.on_gpu else torch.float32
            state = {k: v.detach().to("cpu", dtype) for k, v in model.state_dict().items()}
            model.config.dtype = dtype  # what from_pretrained will load it as
            model.config.use_cache = True

            def fill(folder: Path) -> None:
                model.save_pretrained(folder, state_dict=state, safe_serialization=True)
                AutoTokenizer.from_pretrained(run.meta["tokenizer"]).save_pretrained(folder)

            atomic.write_folder(out, fill, "the trained model")  # the old model stays until the new one is whole
    return out


def train(cfg: TrainConfig) -> dict:
    """Train from the latest checkpoint (or step 0) to `max_steps`; export; return the summary."""
    import torch

    run = setup(cfg)
    step = first_step = resume(run)
    with reporter(run.rank) as report, run.metrics_path.open("a") as metrics:
        shares = ", ".join(f"{name} {float(share):.1%}" for name, share in run.mixture.shares.items())
        heldout = ", ".join(f"{name} ({len(rows)} windows)" for name, rows in run.heldout.items())
        report.log(
            f"training {cfg.init_from or cfg.size} ({run.parameters / 1e6:.1f}M parameters) from step {step} "
            f"to {cfg.max_steps}: {run.tokens_per_step:,} tokens per step, mixture {shares}, "
            f"ZeRO-{cfg.zero_stage}, {run.world} process(es), {run.precision} ({run.precision_why})"
            + (f"; held-out {heldout} every {cfg.eval_every} steps and at the end" if heldout else "")
        )
        progress = ProgressLog(run, report, metrics)
        started = time.perf_counter()
        while step < cfg.max_steps:
            loss, lr = train_step(run)
            step += 1
            evaluate_now = bool(run.heldout) and (step % cfg.eval_every == 0 or step == cfg.max_steps)
            checkpoint = bool(cfg.checkpoint_every) and step % cfg.checkpoint_every == 0 and step < cfg.max_steps
            progress.step(step, loss, lr, evaluate_now, checkpoint)
            if checkpoint:
                save_checkpoint(run, step)
        seconds = time.perf_counter() - started
        losses, training_seconds = progress.losses, seconds - progress.eval_seconds
        model_dir = export(run) if cfg.export else None
        trained = step - first_step
        summary = {
            "model_dir": str(model_dir) if model_dir else None,
            "parameters": run.parameters,
            "steps": step,
            "resumed_from_step": first_step,
            "final_loss": losses[-1] if losses else None,
            "first_loss": losses[0] if losses else None,
            "train_seconds": round(seconds, 2),
            "tokens_per_s": round(run.tokens_per_step * trained / training_seconds, 1) if trained else None,
            "heldout_loss": progress.heldout,
            "mixture_sequences": run.mixture.counts.drawn,
            "zero_stage": cfg.zero_stage,
            "precision": run.precision,
            "world_size": run.world,
            "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 1) if run.on_gpu else None,
        }
        if run.rank == 0:
            atomic.write_json(run.out_dir / "summary.json", summary, "the training summary")
        report.finish(summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="JSON or YAML file with trainers.config.TrainConfig fields")
    parser.add_argument("--local_rank", type=int, default=None, help="set by the deepspeed launcher")
    args = parser.parse_args(argv)
    try:
        cfg = read_config(args.config)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
