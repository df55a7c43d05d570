"""The exam's one log-likelihood engine: sum of log p(continuation | context) for many requests.

Requests that share a context share one forward pass: the context is read once and every
continuation follows it as a branch of its own (a tree attention mask, position ids that restart
after the context). Passes run longest first; the output head and the softmax run only at the
positions that are scored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pipeline.progress import Progress

log = logging.getLogger("schoolhouse.exam")


@dataclass(frozen=True)
class Request:
    context: str
    continuation: str


@dataclass
class _Pass:
    """One sequence fed to the model: a shared context, then each continuation's tokens (all but
    the last, which is only predicted) as branches that see the context and their own prefix."""

    context: list[int]
    branches: list[tuple[int, list[int]]] = field(default_factory=list)  # (request, continuation)

    @property
    def length(self) -> int:
        return len(self.context) + sum(len(tokens) - 1 for _, tokens in self.branches)

    def layout(self) -> tuple[list[int], list[int], list[int], list[tuple[int, list[int], list[int]]]]:
        """Token ids, position ids, the branch each token belongs to (-1: context), and for every
        request the sequence indices whose outputs predict its continuation tokens."""
        ids, positions, branch = list(self.context), list(range(len(self.context))), [-1] * len(self.context)
        scored = []
        for b, (request, tokens) in enumerate(self.branches):
            start = len(ids)
            ids += tokens[:-1]
            positions += range(len(self.context), len(self.context) + len(tokens) - 1)
            branch += [b] * (len(tokens) - 1)
            scored.append((request, [len(self.context) - 1, *range(start, len(ids))], tokens))
        return ids, positions, branch, scored


def _plan_passes(model, tokenizer, requests: list[Request]) -> list[_Pass]:
    limit = model.config.max_position_embeddings
    passes: dict[tuple[int, ...], _Pass] = {}
    for i, r in enumerate(requests):
        context = tokenizer(r.context, add_special_tokens=False).input_ids
        continuation = tokenizer(r.continuation, add_special_tokens=False).input_ids
        if not context or not continuation:
            raise ValueError(f"request {i}: context and continuation must both be non-empty")
        ids = (context + continuation)[-(limit + 1) :]  # the model sees at most `limit` positions
        n = min(len(continuation), len(ids) - 1)
        key = tuple(ids[: len(ids) - n])
        passes.setdefault(key, _Pass(list(key))).branches.append((i, ids[len(ids) - n :]))
    return list(passes.values())


def _tree_mask(branch: list[int], width: int, dtype):
    """Additive mask: context tokens see earlier context; a branch token sees the context and
    earlier tokens of its own branch; padding sees only itself."""
    import torch

    n = len(branch)
    b = torch.tensor(branch)
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
    allowed = causal & ((b[None, :] == -1) | (b[None, :] == b[:, None]))
    full = torch.eye(width, dtype=torch.bool)
    full[:n, :n] = allowed
    mask = torch.zeros(width, width, dtype=dtype)
    return mask.masked_fill_(~full, torch.finfo(dtype).min)


def loglikelihoods(model, tokenizer, requests: list[Request], batch_size: int) -> list[float]:
    """Sum of log p(continuation | context) for each request.

    Requests that share a context share one forward pass: the context is read once and every
    continuation follows it as its own branch (a tree attention mask and position ids that restart
    after the context), so the four answers of a cloze question cost one pass over the question
    and the four one-token letters of a multiple-choice question are read off the same position.
    Passes run longest first, so batches pad little and memory peaks early; the output head and
    softmax are applied only at the positions that are scored.
    """
    import torch

    passes = sorted(_plan_passes(model, tokenizer, requests), key=lambda p: -p.length)
    scores = [0.0] * len(requests)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    progress = Progress("log-likelihood requests", len(requests), log)
    with torch.inference_mode():
        for start in range(0, len(passes), batch_size):
            chunk = [p.layout() for p in passes[start : start + batch_size]]
            width = max(len(ids) for ids, *_ in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            position_ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.empty((len(chunk), 1, width, width), dtype=dtype)
            for row, (ids, positions, branch, _) in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                position_ids[row, : len(ids)] = torch.tensor(positions)
                mask[row, 0] = _tree_mask(branch, width, dtype)
            hidden = decoder(input_ids=input_ids.to(device), position_ids=position_ids.to(device),
                             attention_mask=mask.to(device)).last_hidden_state  # fmt: skip
            done = 0
            for row, (*_, scored) in enumerate(chunk):
                for request, at, targets in scored:
                    logits = head(hidden[row, at]).float()
                    if softcap:
                        logits = softcap * torch.tanh(logits / softcap)
                    logprobs = torch.log_softmax(logits, dim=-1)
                    scores[request] = logprobs.gather(1, torch.tensor(targets, device=device)[:, None]).sum().item()
                    done += 1
            progress.advance(done)
    return scores
