"""The chunked head + cross-entropy against PyTorch's full-logit loss: same loss, same gradients."""

import pytest
import torch
import torch.nn.functional as F

from trainers.loss import IGNORE, CausalLMLoss, linear_cross_entropy


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_loss_and_gradients_equal_the_full_logit_ones(dtype, tolerance):
    torch.manual_seed(0)
    hidden = torch.randn(2, 150, 64, dtype=dtype, requires_grad=True)
    weight = torch.randn(1000, 64, dtype=dtype, requires_grad=True)
    bias = torch.randn(1000, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, 1000, (2, 150))
    targets[0, :7] = IGNORE
    chunked = linear_cross_entropy(hidden, weight, bias, targets, chunk=77)  # chunks that do not divide
    (3 * chunked).backward()
    ours = [t.grad.clone() for t in (hidden, weight, bias)]
    for t in (hidden, weight, bias):
        t.grad = None
    full = F.cross_entropy(F.linear(hidden, weight, bias).float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
    (3 * full).backward()
    assert chunked.item() == pytest.approx(full.item(), rel=1e-5)
    for mine, theirs in zip(ours, (hidden.grad, weight.grad, bias.grad), strict=True):
        scale = theirs.float().abs().max()
        assert (mine.float() - theirs.float()).abs().max() <= tolerance * scale


def test_the_phi_model_trains_the_same_with_either_head():
    from transformers import PhiConfig, PhiForCausalLM

    config = PhiConfig(vocab_size=500, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=64)  # fmt: skip
    ids = torch.randint(0, 500, (3, 33))
    losses, grads = [], []
    for chunk in (0, 16):
        torch.manual_seed(0)
        wrapped = CausalLMLoss(PhiForCausalLM(config), chunk=chunk)
        loss = wrapped(ids[:, :-1], ids[:, 1:])
        loss.backward()
        losses.append(loss.item())
        grads.append(wrapped.model.model.layers[0].mlp.fc1.weight.grad.clone())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    # the head is still a plain linear map for generation and export
    assert wrapped.model.lm_head(torch.zeros(1, 32)).shape == (1, 500)
    assert set(wrapped.model.state_dict()) == set(PhiForCausalLM(config).state_dict())
