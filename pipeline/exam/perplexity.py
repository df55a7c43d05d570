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


def document_losses(model, tokenizer, documents: list[str], seq_len: int, batch_size: int = 16) -> np.ndarray:
    """Mean next-token loss of each document, one value per document: its tokens and the EOS that
    ends it, each predicted after an EOS (as a document starts in the packed training data), in
    pieces of up to seq_len targets, a piece continuing from the last token of the one before
    (a document longer than seq_len is scored without context beyond its piece)."""
    import torch
    import torch.nn.functional as F

    eos = tokenizer.eos_token_id
    pieces = []  # (document, seq_len + 1 tokens at most)
    encoded = tokenizer(documents, add_special_tokens=False)["input_ids"] if documents else []
    for index, ids in enumerate(encoded):
        tokens = [eos, *ids, eos]
        pieces += [(index, tokens[start : start + seq_len + 1]) for start in range(0, len(tokens) - 1, seq_len)]
    pieces.sort(key=lambda piece: len(piece[1]))  # similar lengths share a batch: little padding
    total, count = np.zeros(len(documents)), np.zeros(len(documents))
    device = next(model.parameters()).device
    with torch.inference_mode():
        for first in range(0, len(pieces), batch_size):
            batch = pieces[first : first + batch_size]
            width = max(len(tokens) for _, tokens in batch)
            ids = torch.full((len(batch), width), eos, dtype=torch.long)
            for row, (_, tokens) in enumerate(batch):  # padded on the right: a causal model's earlier
                ids[row, : len(tokens)] = torch.tensor(tokens)  # positions do not see the padding
            logits = model(input_ids=ids[:, :-1].to(device)).logits
            for row, (document, tokens) in enumerate(batch):
                targets = ids[row, 1 : len(tokens)].to(device)
                losses = F.cross_entropy(logits[row, : len(tokens) - 1].float(), targets, reduction="sum")
                total[document] += losses.item()
                count[document] += targets.numel()
    return total / np.maximum(count, 1)
