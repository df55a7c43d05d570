"""Held-out loss and perplexity on the slices of the training mix kept aside for them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from trainers.data import PackedTokens, read_meta


def window_losses(model, data_dir: Path, split: str, seq_len: int, max_windows: int = 64,
                  batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Mean next-token loss of each of up to `max_windows` held-out windows (seq_len + 1 tokens,
    all seq_len targets scored), in a fixed order, so that two models are scored on the same
    windows; and the document each window starts in (windows of one document are not
    independent). Empty without enough tokens for one window."""
    import torch
    import torch.nn.functional as F

    try:
        windows = PackedTokens(data_dir, split, seq_len, seed=0)
    except (ValueError, FileNotFoundError):
        return np.zeros(0), np.zeros(0, dtype=np.int64)  # too few held-out tokens for one window
    n = min(windows.windows, max_windows)
    starts = windows.next_starts(n)
    eos = read_meta(data_dir)["eos_token_id"]
    documents_before = np.concatenate([[0], np.cumsum(np.asarray(windows.tokens) == eos)])
    device = next(model.parameters()).device
    losses = []
    with torch.inference_mode():
        for first in range(0, n, batch_size):
            batch = torch.from_numpy(windows.read(starts[first : first + batch_size])).to(device)
            logits = model(input_ids=batch[:, :-1]).logits
            for row in range(len(batch)):  # upcast one row at a time: [seq x vocab] in fp32, not the batch
                losses.append(F.cross_entropy(logits[row].float(), batch[row, 1:]).item())
    return np.asarray(losses), documents_before[np.asarray(starts, dtype=np.int64)]


def heldout_perplexity(model, data_dir: Path, split: str, seq_len: int, max_windows: int = 64,
                       batch_size: int = 8) -> float | None:  # fmt: skip
    """exp(mean loss over every predicted token); every window has seq_len targets, so the mean
    of the windows' means is the mean over tokens. None without enough tokens for one window."""
    losses, _ = window_losses(model, data_dir, split, seq_len, max_windows, batch_size)
    return math.exp(losses.mean()) if losses.size else None
