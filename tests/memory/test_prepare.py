from torch import nn

from slimkit.adapters.lora import adapter_layers
from slimkit.memory.prepare import prepare
from slimkit.memory.setup import TrainSetup
from slimkit.models import from_spec


def test_lora_leaves_a_tied_lm_head_out_and_works_on_a_model_without_one():
    gpt, _, _ = prepare(from_spec("gpt:n_layer=1,n_embd=32"), TrainSetup(lora_rank=2))
    assert sorted(adapter_layers(gpt)) == ["blocks.0.attn.proj", "blocks.0.attn.qkv", "blocks.0.mlp.0",
                                           "blocks.0.mlp.2"]
    # an encoder has no lm_head: excluding one it lacks would be a pattern that matches nothing
    encoder, optimizer, _ = prepare(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)), TrainSetup(lora_rank=2))
    assert sorted(adapter_layers(encoder)) == ["0", "2"]
    # only the adapters train: A (rank x in) and B (out x rank) of each layer
    trained = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
    assert trained == (2 * 8 + 8 * 2) + (2 * 8 + 4 * 2)
