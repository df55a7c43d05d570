"""Training benchmark on the CPU: this trainer vs Hugging Face `Trainer`, same model, same data.

The tiny Phi student (the demo's shape) trains on the same packed windows (MMLU questions, 14k
documents, tokenized with the student tokenizer), same micro batch, sequence length, steps,
optimizer settings (AdamW, betas 0.9/0.95, weight decay 0.1, clip 1.0) and warmup + cosine
schedule, in bf16 and in fp32. This trainer runs as `make demo` runs it (DeepSpeed, one process
on gloo, ZeRO stage 0, the chunked head + loss); HF Trainer runs with `use_cpu` and, for bf16, its
autocast. Each side runs `--repeats` times in its own process; the loop's time is measured,
start-up excluded (HF: `train_runtime`; here: the trainer's own loop time). Prints the median
tokens/s of each side, their ratio, and each side's mean training loss.

    python bench/train_cpu.py [--steps 60] [--repeats 3]

To measure what an AVX2-only machine does on a machine with AVX-512, restrict both kernel
libraries: `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python bench/train_cpu.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEQ, BATCH, LR, WARMUP = 256, 8, 1e-3, 10


def pack_data(out: Path) -> None:
    from transformers import AutoTokenizer

    from pipeline.exam.data import read_mmlu
    from pipeline.teacher.weights import embedded_teacher
    from trainers.data import pack, write_meta

    folder = embedded_teacher()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    shards = {"train-text": pack([item.question for item in read_mmlu()], tokenizer, out, "train-text")}
    write_meta(out, str(folder), len(tokenizer), tokenizer.eos_token_id, tokenizer.bos_token_id, shards)


def hf_trainer(data_dir: str, out_dir: str, steps: int, precision: str) -> dict:
    """HF Trainer on the windows this trainer would read, in the same order."""
    import torch
    from transformers import PhiForCausalLM, Trainer, TrainingArguments

    from trainers.data import Mixture, read_meta
    from trainers.model import phi_config

    meta = read_meta(Path(data_dir))
    mixture = Mixture(Path(data_dir), {"text": 1.0}, SEQ, BATCH, seed=0)
    rows = [torch.from_numpy(mixture.read(mixture.next_step())) for _ in range(steps)]

    class Windows(torch.utils.data.Dataset):
        def __len__(self):
            return steps * BATCH

        def __getitem__(self, i):
            row = rows[i // BATCH][i % BATCH]
            return {"input_ids": row[:-1], "labels": row[:-1]}

    torch.manual_seed(0)
    model = PhiForCausalLM(phi_config("tiny", meta["vocab_size"], meta["bos_token_id"], meta["eos_token_id"]))
    args = TrainingArguments(
        output_dir=out_dir, max_steps=steps, per_device_train_batch_size=BATCH, learning_rate=LR,
        lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1}, warmup_steps=WARMUP,
        weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=1.0, bf16=precision == "bf16",
        use_cpu=True, logging_steps=steps, save_strategy="no", report_to=[], dataloader_num_workers=0,
        disable_tqdm=True,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=Windows())
    result = trainer.train()
    return {"tokens_per_s": steps * BATCH * SEQ / result.metrics["train_runtime"], "final_loss": result.training_loss}


def ours(data_dir: str, out_dir: str, steps: int, precision: str) -> dict:
    from trainers.train import TrainConfig, train

    summary = train(TrainConfig(data_dir=data_dir, out_dir=out_dir, mixture={"text": 1.0}, seq_len=SEQ,
                                micro_batch_size=BATCH, max_steps=steps, lr=LR, warmup_steps=WARMUP,
                                precision=precision, log_every=steps))  # fmt: skip
    losses = [json.loads(line)["loss"] for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    return {"tokens_per_s": summary["tokens_per_s"], "final_loss": sum(losses) / len(losses)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", nargs=4, metavar=("SIDE", "DATA", "OUT", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # one measurement, in a process of its own
        side, data, out, precision = args.one
        print(json.dumps((ours if side == "schoolhouse" else hf_trainer)(data, out, args.steps, precision)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        pack_data(data)
        import torch

        from trainers.config import native_bf16_cpu

        auto = "bf16" if native_bf16_cpu() else "fp32"
        print(f"tiny Phi, seq {SEQ}, micro batch {BATCH}, {args.steps} steps, {os.cpu_count()} CPUs, "
              f"median of {args.repeats}; PyTorch CPU kernels {torch.backends.cpu.get_cpu_capability()}, "
              f"precision auto picks {auto}\n")  # fmt: skip
        print(f"{'precision':10}{'side':16}{'tokens/s':>10}{'mean loss':>11}")
        for precision in ("bf16", "fp32"):
            results: dict[str, list[dict]] = {"schoolhouse": [], "hf-trainer": []}
            for repeat in range(args.repeats):
                for side in results:
                    out = Path(tmp) / f"{side}-{precision}-{repeat}"
                    run = subprocess.run(
                        [sys.executable, __file__, "--steps", str(args.steps), "--one", side, str(data), str(out),
                         precision],
                        capture_output=True, text=True, env={**os.environ, "MASTER_PORT": "29655"},
                    )  # fmt: skip
                    if run.returncode:
                        sys.exit(f"{side} failed:\n{run.stderr[-3000:]}")
                    results[side].append(json.loads(run.stdout.strip().splitlines()[-1]))
            speed = {side: statistics.median(r["tokens_per_s"] for r in rs) for side, rs in results.items()}
            for side, rs in results.items():
                loss = statistics.median(r["final_loss"] for r in rs)
                print(f"{precision:10}{side:16}{speed[side]:>10,.0f}{loss:>11.3f}")
            print(f"{precision:10}{'ratio':16}{speed['schoolhouse'] / speed['hf-trainer']:>10.2f}x\n")


if __name__ == "__main__":
    main()
