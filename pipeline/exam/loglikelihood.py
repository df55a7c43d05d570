"""The exam's one log-likelihood engine: sum of log p(continuation | context) for many requests.

Requests that share a context share one forward pass: the context is read once and every
continuation follows it as a branch of its own (a tree attention mask, position ids that restart
after the context). A leading part many passes share (a subject's description line, fixed
shots) is read once: its keys and values are computed a single time and every pass that starts
with it attends to them. Passes run longest first; the output head and the softmax run only at
the positions that are scored.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace

from pipeline.progress import Progress

log = logging.getLogger("schoolhouse.exam")


@dataclass(frozen=True)
class Request:
    context: str
    continuation: str
    shared: str = ""  # how the context starts when many requests start alike: computed once for them all


@dataclass
class _Pass:
    """One sequence fed to the model: a shared context, then each continuation's tokens (all but
    the last, which is only predicted) as branches that see the context and their own prefix. Its
    first `prefix` tokens come from the prefix cache instead."""

    context: list[int]
    branches: list[tuple[int, list[int]]] = field(default_factory=list)  # (request, continuation)
    prefix: int = 0

    @property
    def length(self) -> int:
        return len(self.context) + sum(len(tokens) - 1 for _, tokens in self.branches) - self.prefix

    def layout(self) -> tuple[list[int], list[int], list[int], list[tuple[int, list[int], list[int]]]]:
        """Token ids, position ids, the branch each token belongs to (-1: context), and for every
        request the sequence indices whose outputs predict its continuation tokens, all after
        the cached prefix."""
        ids, positions, branch = list(self.context), list(range(len(self.context))), [-1] * len(self.context)
        scored = []
        for b, (request, tokens) in enumerate(self.branches):
            start = len(ids)
            ids += tokens[:-1]
            positions += range(len(self.context), len(self.context) + len(tokens) - 1)
            branch += [b] * (len(tokens) - 1)
            scored.append((request, [len(self.context) - 1, *range(start, len(ids))], tokens))
        cut = self.prefix
        return (ids[cut:], positions[cut:], branch[cut:],
                [(request, [i - cut for i in at], tokens) for request, at, tokens in scored])  # fmt: skip


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _plan_passes(model, tokenizer, requests: list[Request]) -> list[_Pass]:
    limit = model.config.max_position_embeddings
    passes: dict[tuple[int, ...], _Pass] = {}
    shared_tokens: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        context = tokenizer(r.context, add_special_tokens=False).input_ids
        continuation = tokenizer(r.continuation, add_special_tokens=False).input_ids
        if not context or not continuation:
            raise ValueError(f"request {i}: context and continuation must both be non-empty")
        ids = (context + continuation)[-(limit + 1) :]  # the model sees at most `limit` positions
        n = min(len(continuation), len(ids) - 1)
        key = tuple(ids[: len(ids) - n])
        found = passes.setdefault(key, _Pass(list(key)))
        found.branches.append((i, ids[len(ids) - n :]))
        if r.shared and len(ids) == len(context) + len(continuation):  # not cut at the front
            if r.shared not in shared_tokens:
                shared_tokens[r.shared] = tokenizer(r.shared, add_special_tokens=False).input_ids
            # in tokens, the shared text ends where the context's tokens stop agreeing with its own
            # (a token may straddle the boundary); one context token is left to predict from
            found.prefix = min(_common_prefix(shared_tokens[r.shared], found.context), len(found.context) - 1)
    # computing a prefix apart pays only when several passes start with it
    uses = Counter(tuple(p.context[: p.prefix]) for p in passes.values() if p.prefix)
    for p in passes.values():
        if p.prefix and uses[tuple(p.context[: p.prefix])] < 2:
            p.prefix = 0
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


class _PrefixCache:
    """Keys and values of each shared prefix, computed once (one pass per prefix), and the
    batch's cache built from them: every row's prefix, padded to the longest, padding masked."""

    def __init__(self, decoder, device):
        self.decoder, self.device, self.kv = decoder, device, {}

    def get(self, prefix: tuple[int, ...]):
        import torch

        if prefix not in self.kv:
            out = self.decoder(input_ids=torch.tensor([prefix], device=self.device), use_cache=True)
            self.kv[prefix] = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        return self.kv[prefix]

    def batch(self, prefixes: list[tuple[int, ...]]):
        from transformers import DynamicCache

        width = max(len(p) for p in prefixes)
        rows = [self.get(p) if p else None for p in prefixes]
        template = next(r for r in rows if r is not None)
        layers = []
        for layer, (keys, values) in enumerate(template):
            shape = (len(prefixes), keys.shape[1], width, keys.shape[3])
            k, v = keys.new_zeros(shape), values.new_zeros(shape)
            for row, kv in enumerate(rows):
                if kv is not None:
                    k[row, :, : kv[layer][0].shape[2]] = kv[layer][0][0]
                    v[row, :, : kv[layer][1].shape[2]] = kv[layer][1][0]
            layers.append((k, v))
        return DynamicCache(layers), width


def loglikelihoods(model, tokenizer, requests: list[Request], batch_size: int) -> list[float]:
    """Sum of log p(continuation | context) for each request.

    Requests that share a context share one forward pass: the context is read once and every
    continuation follows it as its own branch (a tree attention mask and position ids that restart
    after the context), so the four answers of a cloze question cost one pass over the question
    and the four one-token letters of a multiple-choice question are read off the same position.
    The `shared` start of many contexts is read once and attended to from the cache. Passes run
    longest first, so batches pad little and memory peaks early; the output head and softmax are
    applied only at the positions that are scored.
    """
    import torch

    passes = sorted(_plan_passes(model, tokenizer, requests), key=lambda p: -p.length)
    scores = [0.0] * len(requests)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    cached = _PrefixCache(decoder, device)
    progress = Progress("log-likelihood requests", len(requests), log)
    with torch.inference_mode():
        for start in range(0, len(passes), batch_size):
            batch = passes[start : start + batch_size]
            chunk = [p.layout() for p in batch]
            width = max(len(ids) for ids, *_ in chunk)
            prefixes = [tuple(p.context[: p.prefix]) for p in batch]
            cache, before = cached.batch(prefixes) if any(prefixes) else (None, 0)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            position_ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.full((len(chunk), 1, width, before + width), torch.finfo(dtype).min, dtype=dtype)
            for row, (ids, positions, branch, _) in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                position_ids[row, : len(ids)] = torch.tensor(positions)
                mask[row, 0, : len(ids), : len(prefixes[row])] = 0  # the row's own cached prefix
                mask[row, 0, :, before:] = _tree_mask(branch, width, dtype)
            hidden = decoder(input_ids=input_ids.to(device), position_ids=position_ids.to(device),
                             attention_mask=mask.to(device), past_key_values=cache,
                             use_cache=cache is not None).last_hidden_state  # fmt: skip
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


@dataclass(frozen=True)
class Question:
    """A multiple-choice item: one request per choice, and the characters acc_norm divides each
    choice's score by."""

    requests: list[Request]
    lengths: list[int]


def _close(scores: list[float], lengths: list[int], margin: float) -> bool:
    """Whether a score error of up to `margin` nats per choice could change the best choice by
    raw log-likelihood (acc) or by log-likelihood per character (acc_norm)."""
    if len(scores) < 2:
        return False
    first, second = sorted(range(len(scores)), key=lambda i: -scores[i])[:2]
    if scores[first] - scores[second] < 2 * margin:
        return True
    per_char = [s / max(1, n) for s, n in zip(scores, lengths, strict=True)]
    first, second = sorted(range(len(scores)), key=lambda i: -per_char[i])[:2]
    return per_char[first] - per_char[second] < margin / max(1, lengths[first]) + margin / max(1, lengths[second])


def _scores(scorer, tokenizer, requests: list[Request], batch_size: int) -> list[float]:
    from pipeline.exam.served import ServedModel, served_loglikelihoods

    if isinstance(scorer, ServedModel):
        return served_loglikelihoods(scorer, tokenizer, requests)
    return loglikelihoods(scorer, tokenizer, requests, batch_size)


def choice_scores(exam, questions: list[Question], batch_size: int) -> list[list[float]]:
    """Each question's choice log-likelihoods from `exam.scorer` (the model, a bf16 copy of it, or
    a server). Where the scorer is a bf16 copy, the questions whose best choices it put within
    `exam.recheck_margin` nats of each other are scored again by the fp32 model, whose scores then
    stand."""
    flat = _scores(exam.scorer, exam.tokenizer, [r for q in questions for r in q.requests], batch_size)
    scores, at = [], 0
    for question in questions:
        scores.append(flat[at : at + len(question.requests)])
        at += len(question.requests)
    if not exam.rechecks:
        return scores
    close = [i for i, q in enumerate(questions) if _close(scores[i], q.lengths, exam.recheck_margin)]
    log.info("re-checking %d of %d items in %s", len(close), len(questions), exam.model.dtype)
    again = choice_scores(replace(exam, scorer=exam.model), [questions[i] for i in close], batch_size)
    for i, rescored in zip(close, again, strict=True):
        scores[i] = rescored
    return scores

