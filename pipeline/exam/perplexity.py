"""Held-out perplexity on the slices of the training mix kept aside for it."""

from __future__ import annotations

import math
from pathlib import Path

from trainers.data import PackedTokens


def heldout_perplexity(model, data_dir: Path, split: str, seq_len: int, max_windows: int = 64,
                       batch_size: int = 8) -> float | None:  # fmt: skip
    """exp(mean loss over every predicted token) of up to `max_windows` held-out windows: each
    window of seq_len + 1 tokens scores all seq_len of its targets, and every token weighs the
    same whatever batch it is in. None without enough tokens for one window."""
    import torch
    import torch.nn.functional as F

    try:
        windows = PackedTokens(data_dir, split, seq_len, seed=0)
    except (ValueError, FileNotFoundError):
        return None  # too few held-out tokens for one window
    n = min(windows.windows, max_windows)
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            batch = torch.from_numpy(windows.next_batch(min(batch_size, n - start))).to(device)
            inputs, targets = batch[:, :-1], batch[:, 1:]
            logits = model(input_ids=inputs).logits
            for row in range(len(batch)):  # upcast one row at a time: [seq x vocab] in fp32, not the batch
                total += F.cross_entropy(logits[row].float(), targets[row], reduction="sum").item()
            tokens += targets.numel()
    return math.exp(total / tokens)
