"""GPU training benchmark: this trainer on the phi-1.5 shape against the shared baseline.

1. Correctness: a small Phi trains on a few random windows repeated, with the full machinery
   (DeepSpeed, chunked head + loss, compiled layers on a GPU); the loss must fall by 2 nats.
2. Speed: phi-1.5 (1.42B), sequence 2048, micro batch 8, random tokens, bf16 with fp32 master
   weights, ZeRO-1, FusedAdam, SDPA, torch.compile'd layers, chunked linear + cross-entropy;
   the first steps (compilation) are left out of the figure.
3. The baseline, `baseline_phi_train.py` modes `torch` and `deepspeed1`, in the same run on the
   same card.

Prints tokens/s, MFU (989.4 TFLOP/s dense bf16, the baseline's count of FLOPs) and peak memory.
`--dry` runs everything at toy size on the CPU (the baseline needs a GPU and is skipped).
Started by bench/gpu_train.sh, which installs the wheels first.
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BASELINE = ROOT / "bench" / ".gpu" / "baseline_phi_train.py"
PEAK_TFLOPS = 989.4
VOCAB = 51_200


def random_shard(folder: Path, tokens: np.ndarray) -> Path:
    """A packed folder the trainer reads: one text source of the given tokens."""
    from trainers.data import write_meta

    folder.mkdir(parents=True, exist_ok=True)
    tokens.astype(np.uint16).tofile(folder / "train-text.bin")
    write_meta(folder, "", VOCAB, eos=0, bos=0, shards={"train-text": {"tokens": int(tokens.size), "documents": 1}})
    return folder


def run_trainer(config: dict, port: int) -> list[dict]:
    """The trainer in its own process, as the training asset starts it; its per-step metrics."""
    path = Path(config["out_dir"]) / "run.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    env = {**os.environ, "MASTER_PORT": str(port)}
    subprocess.run([sys.executable, "-m", "trainers.train", "--config", str(path)], check=True, env=env, cwd=ROOT)
    lines = (Path(config["out_dir"]) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry", action="store_true", help="toy sizes on the CPU")
    args = parser.parse_args()
    import torch

    gpu = torch.cuda.is_available()
    if not gpu and not args.dry:
        sys.exit("no GPU: run with --dry for the CPU check")
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # 1. the loss falls: 16 random windows, repeated, are learnable by heart
        seq = 64 if args.dry else 512
        windows = rng.integers(1, VOCAB, size=(16, seq))
        data = random_shard(Path(tmp) / "repeat", np.tile(windows.reshape(-1), 40))
        small = {"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 1024, "num_attention_heads": 4}
        check = run_trainer({"data_dir": str(data), "out_dir": f"{tmp}/check", "size": "tiny",
                             "model_overrides": {**small, "max_position_embeddings": seq}, "mixture": {"text": 1.0},
                             "seq_len": seq - 1, "micro_batch_size": 8, "max_steps": 40, "lr": 3e-3,
                             "warmup_steps": 5, "compile": gpu, "loss_chunk_tokens": 1024, "log_every": 40,
                             "zero_stage": 1, "export": False}, port=29700)  # fmt: skip
        first, last = check[0]["loss"], check[-1]["loss"]
        print(json.dumps({"check": "loss falls", "first_loss": round(first, 3), "last_loss": round(last, 3),
                          "passed": last < first - 2.0}), flush=True)  # fmt: skip
        if not last < first - 2.0:
            sys.exit("the loss did not fall: not timing a trainer that does not learn")

        # 2. this trainer on the phi-1.5 shape
        size, seq, batch = ("phi-1.5", 2048, 8) if not args.dry else ("tiny", 128, 2)
        steps, warm = (16, 4) if not args.dry else (4, 2)
        data = random_shard(Path(tmp) / "random", rng.integers(0, VOCAB, size=(steps + 2) * batch * (seq + 1)))
        metrics = run_trainer({"data_dir": str(data), "out_dir": f"{tmp}/speed", "size": size,
                               "mixture": {"text": 1.0}, "seq_len": seq, "micro_batch_size": batch,
                               "max_steps": steps, "warmup_steps": 2, "lr": 2e-4, "zero_stage": 1,
                               "compile": gpu, "loss_chunk_tokens": 4096, "log_every": warm,
                               "peak_tflops": PEAK_TFLOPS if gpu else 0.0, "export": False}, port=29701)  # fmt: skip
        timed = [m for m in metrics if "tokens_per_s" in m][1:]  # the first window holds compilation
        summary = json.loads((Path(tmp) / "speed" / "summary.json").read_text())
        rows.append({"mode": "schoolhouse", "tokens_per_s": round(statistics.median(m["tokens_per_s"] for m in timed)),
                     "mfu": round(statistics.median(m["mfu"] for m in timed), 4) if gpu else None,
                     "peak_mem_GB": summary["peak_memory_gb"], "loss": round(metrics[-1]["loss"], 3)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)

    # 3. the baseline, same card, same run
    for mode in ("torch", "deepspeed1"):
        if not gpu:
            rows.append({"mode": mode, "skipped": "needs a GPU"})
            continue
        if not BASELINE.is_file():
            sys.exit(f"{BASELINE} is missing: bench/gpu_train.sh --prepare copies it")
        out = subprocess.run([sys.executable, str(BASELINE), mode], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)

    device = torch.cuda.get_device_name() if gpu else "CPU (dry run)"
    print(f"\n{device}\n{'mode':14}{'tokens/s':>10}{'MFU':>8}{'peak GB':>9}")
    for row in rows:
        if "skipped" in row:
            print(f"{row['mode']:14}  skipped: {row['skipped']}")
            continue
        mfu = f"{row['mfu']:.1%}" if row.get("mfu") is not None else "-"
        print(f"{row['mode']:14}{row['tokens_per_s']:>10,}{mfu:>8}{row.get('peak_mem_GB') or '-':>9}")
    if gpu:
        print(f"\nratio to deepspeed1: {rows[0]['tokens_per_s'] / rows[2]['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
