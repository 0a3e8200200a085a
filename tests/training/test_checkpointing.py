import pytest
import torch

from slimkit.errors import UserInputError
from slimkit.models.gpt import GPT, GPTConfig
from slimkit.training import disable_checkpointing, enable_checkpointing


def gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=32, n_layer=4, n_head=2, n_embd=32))


def gradients(model, x):
    model.zero_grad(set_to_none=True)
    model(x).logsumexp(-1).mean().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def saved_bytes(model, x) -> int:
    """Bytes of the tensors autograd keeps for backward (the activations checkpointing saves)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    return total


X = torch.randint(0, 256, (2, 32))


@pytest.mark.parametrize("targets", ["blocks", ["blocks.*.mlp"], ["blocks.1", "blocks.1.attn"]])
def test_checkpointing_keeps_gradients_exact(targets):
    plain = gradients(gpt(), X)
    model = gpt()
    enable_checkpointing(model, targets)
    torch.testing.assert_close(gradients(model, X), plain, rtol=0, atol=0)


def test_frozen_base_with_trainable_inner_layers_still_gets_gradients():
    # LoRA-like: everything frozen but the MLP output layers; the block input has no requires_grad
    def frozen():
        model = gpt().requires_grad_(False)
        for block in model.blocks:
            block.mlp[2].requires_grad_(True)
        return model

    plain = gradients(frozen(), X)
    model = frozen()
    enable_checkpointing(model, "blocks")
    got = gradients(model, X)
    assert set(got) == set(plain) and len(got) == 8  # weight + bias of 4 blocks: none silently lost
    torch.testing.assert_close(got, plain, rtol=0, atol=0)


def test_checkpointing_saves_fewer_activations_and_can_be_undone():
    model = gpt()
    full = saved_bytes(model, X)
    names = enable_checkpointing(model, "blocks")
    assert names == ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]
    assert saved_bytes(model, X) < 0.3 * full
    disable_checkpointing(model)
    assert saved_bytes(model, X) == full
    assert set(gpt().state_dict()) == set(model.state_dict())


def test_nested_names_are_checkpointed_once():
    assert enable_checkpointing(gpt(), ["blocks.1", "blocks.1.*"]) == ["blocks.1"]


def test_unknown_name_lists_the_closest():
    with pytest.raises(UserInputError, match=r"no module matches \['block.0.mpl'\]; closest names: .*blocks.0.mlp"):
        enable_checkpointing(gpt(), ["block.0.mpl"])


def test_model_without_blocks_asks_for_patterns():
    with pytest.raises(UserInputError, match="Sequential has no block list .* name the modules"):
        enable_checkpointing(torch.nn.Sequential(torch.nn.Linear(2, 2)), "blocks")
