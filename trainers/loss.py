"""The output head and the cross-entropy in one chunked pass, so the [tokens x vocabulary] logits
never exist at once.

For phi-1.5 at micro batch 8 and sequence 2048 the full logits are 16k x 51,200: 3.4 GB in fp32,
plus as much again for their gradient. Here the head runs over chunks of tokens; each chunk's
logits become its loss and, at once, its gradients for the hidden states, the weight and the bias
(softmax minus one-hot), and are freed. Backward only scales the stored gradients. The same idea
as Liger-Kernel's fused linear cross-entropy, in plain PyTorch so that it runs (and is tested) on
the CPU as on the GPU, where torch.compile-d layers and SDPA do the rest of the fusing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk: int):
        valid = targets != IGNORE
        n = max(int(valid.sum()), 1)
        grad_hidden = torch.zeros_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        grad_bias = (
            torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if bias is not None else None
        )
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            h, t = hidden[start : start + chunk], targets[start : start + chunk]
            keep = valid[start : start + chunk]
            logits = F.linear(h, weight, bias).float()
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, t.clamp(min=0)[:, None]).squeeze(1)
            total += ((lse - picked) * keep).sum()
            grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits (fp32)
            grad[torch.arange(len(t), device=t.device), t.clamp(min=0)] -= 1
            grad *= (keep / n)[:, None]
            if grad_bias is not None:
                grad_bias += grad.sum(0)
            if h.is_cuda and h.dtype != torch.float32:  # tensor cores: bf16 operands, fp32 accumulation
                low = grad.to(h.dtype)
                grad_weight += (low.t() @ h).float()
                grad_hidden[start : start + chunk] = low @ weight
            else:  # CPUs: the fp32 softmax as it is, no conversion of the [tokens x vocabulary] block
                grad_weight.addmm_(grad.t(), h.float())
                grad_hidden[start : start + chunk] = (grad @ weight.float()).to(h.dtype)
        ctx.has_bias = bias is not None
        saved = [grad_hidden, grad_weight.to(weight.dtype)]
        if bias is not None:
            saved.append(grad_bias.to(bias.dtype))
        ctx.save_for_backward(*saved)
        return total / n

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight, *grad_bias = ctx.saved_tensors
        scale = grad_output.to(grad_hidden.dtype)
        bias = grad_bias[0] * scale if ctx.has_bias else None
        return grad_hidden * scale, grad_weight * scale, bias, None, None


def linear_cross_entropy(hidden, weight, bias, targets, chunk: int = 4096) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight.T + bias` against `targets` (IGNORE = -100 skipped)."""
    return _LinearCrossEntropy.apply(hidden.reshape(-1, hidden.shape[-1]), weight, bias, targets.reshape(-1), chunk)


class HeadWithLoss(nn.Linear):
    """The model's output head. Called with targets it returns the chunked loss instead of logits;
    being the head module itself, ZeRO-3 gathers its weight for the call like any other."""

    chunk = 4096

    def forward(self, hidden, targets=None):
        if targets is None:
            return super().forward(hidden)
        return linear_cross_entropy(hidden, self.weight, self.bias, targets, self.chunk)

    @classmethod
    def replacing(cls, head: nn.Linear, chunk: int) -> HeadWithLoss:
        new = cls(head.in_features, head.out_features, bias=head.bias is not None, device="meta")
        new.weight, new.bias, new.chunk = head.weight, head.bias, chunk
        return new


class CausalLMLoss(nn.Module):
    """What DeepSpeed trains: the Hugging Face model's decoder, then the loss over the next tokens.
    `chunk` > 0 uses the chunked head; 0 the model's own full-logit head (for comparison)."""

    def __init__(self, model: nn.Module, chunk: int):
        super().__init__()
        self.model, self.chunk = model, chunk
        if chunk:
            model.lm_head = HeadWithLoss.replacing(model.lm_head, chunk)

    def forward(self, input_ids, targets):
        if not self.chunk:
            logits = self.model(input_ids=input_ids, use_cache=False).logits
            return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        hidden = self.model.model(input_ids=input_ids, use_cache=False).last_hidden_state
        return self.model.lm_head(hidden, targets)
