import pytest
import torch

from slimkit.models import GPT, MLP, GPTConfig, ResNet
from tests.reference.attention import causal_attention


def test_digit_models_give_logits_per_class():
    x = torch.rand(5, 1, 8, 8)
    assert MLP()(x).shape == (5, 10)
    assert ResNet().eval()(x).shape == (5, 10)


def test_gpt_size_ties_embeddings_and_uses_sdpa_correctly():
    model = GPT(GPTConfig()).eval()
    assert model.lm_head.weight is model.wte.weight
    assert 800_000 <= sum(p.numel() for p in model.parameters()) <= 3_000_000
    attn, x = model.blocks[0].attn, torch.randn(2, 16, model.config.n_embd)
    B, T, C = x.shape
    q, k, v = (t.view(B, T, attn.n_head, -1).transpose(1, 2) for t in attn.qkv(x).split(C, dim=2))
    expected = attn.proj(causal_attention(q, k, v).transpose(1, 2).reshape(B, T, C))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


def test_gpt_is_causal():
    model = GPT(GPTConfig(n_layer=2)).eval()
    idx = torch.randint(0, 256, (1, 20))
    changed = idx.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 256
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[:, :10], model(changed)[:, :10])


def test_gpt_rejects_too_long_input_and_bad_heads():
    with pytest.raises(ValueError, match="block_size=128"):
        GPT().eval()(torch.zeros(1, 129, dtype=torch.long))
    with pytest.raises(ValueError, match="multiple of n_head"):
        GPTConfig(n_embd=100, n_head=3)
