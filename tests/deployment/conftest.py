import pytest
import torch


@pytest.fixture
def tiny_llama():
    """A randomly initialised Llama small enough for sub-second round trips (no download)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      dtype="float32")  # as a checkpoint's config.json records it
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.fixture
def token_ids():
    return torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))
