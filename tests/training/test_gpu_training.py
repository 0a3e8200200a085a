"""Training on CUDA (skipped without a GPU): bf16 with the flash SDPA backend, fp16 loss scaling,
8-bit AdamW and QLoRA on the device, and the planner's prediction against max_memory_allocated."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from slimkit.adapters import LoRAConfig, lora
from slimkit.memory import TrainSetup, from_module, measure, plan
from slimkit.models.gpt import GPT, GPTConfig
from slimkit.optim import AdamW8bit
from slimkit.training import GeneratorBatches, TrainConfig, train

pytestmark = pytest.mark.gpu


def gpt(device="cuda") -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=64, n_layer=2, n_head=4, n_embd=128)).to(device)


def batches(batch_size: int = 4) -> GeneratorBatches:  # CPU batches: the loop moves them to the model's device
    def draw(g):
        x = (torch.randint(0, 256, (batch_size, 1), generator=g) + torch.arange(65)) % 256
        return x[:, :-1], x[:, 1:]

    return GeneratorBatches(draw)


def test_bf16_trains_with_the_flash_backend_alone():
    model = gpt()
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # raises if flash cannot run these inputs
        result = train(model, batches(), TrainConfig(steps=30, lr=3e-3, precision="bf16"))
    assert result.precision == "bf16" and result.losses[-1] < 0.5 * result.losses[0]


def test_fp16_loss_scaling_skips_overflow_and_keeps_training():
    calls = {"n": 0}

    def overflow_once(model, batch):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, 256).float(), y.reshape(-1), reduction="sum")
        calls["n"] += 1
        return (loss * 1e30 if calls["n"] == 1 else loss), y.numel()

    result = train(gpt(), batches(), TrainConfig(steps=20, lr=3e-3, precision="fp16"), loss_fn=overflow_once)
    assert result.skipped_steps >= 1 and result.losses[-1] < result.losses[1]


def test_adamw8bit_step_on_cuda_equals_the_cpu_step():
    # identical gradients on both devices, so that only the optimizer's own arithmetic can differ
    torch.manual_seed(0)
    shapes = [(256, 128), (4096,), (3, 1000)]  # blocked 8-bit states, and a small fp32-state tensor
    cpu = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    cuda = [torch.nn.Parameter(p.detach().cuda()) for p in cpu]
    optimizers = [AdamW8bit(ps, lr=1e-2, weight_decay=0.1) for ps in (cpu, cuda)]
    for _ in range(5):
        grads = [torch.randn(s) for s in shapes]
        for params, optimizer in zip((cpu, cuda), optimizers):
            for p, g in zip(params, grads):
                p.grad = g.to(p.device)
            optimizer.step()
    for a, b in zip(cpu, cuda):  # CUDA runs the fused Triton step, the CPU the unfused reference
        assert torch.allclose(a, b.cpu(), atol=1e-6, rtol=0)
        for key, value in optimizers[0].state[a].items():
            other = optimizers[1].state[b][key].cpu()
            if value.dtype == torch.uint8:  # a float rounding may flip a code at a midpoint, rarely
                assert (value != other).float().mean() < 1e-3, key
            else:
                assert torch.allclose(value, other, rtol=1e-6, atol=0), key


def test_qlora_on_cuda_trains_only_adapters_and_matches_cpu_forward():
    model = gpt()
    lora.inject(model, LoRAConfig(rank=8, alpha=16, targets=("blocks.*",), base="nf4"))
    x = torch.randint(0, 256, (2, 64))
    cpu_copy = gpt("cpu")
    lora.inject(cpu_copy, LoRAConfig(rank=8, alpha=16, targets=("blocks.*",), base="nf4"))
    cpu_copy.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    assert torch.allclose(model(x.cuda()).cpu(), cpu_copy(x), atol=1e-3)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "lora" not in k}
    train(model, batches(), TrainConfig(steps=5, lr=1e-3, precision="bf16"))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())


@pytest.mark.parametrize("changes", [dict(precision="amp-bf16"), dict(precision="fp32", checkpointing="full"),
                                     dict(precision="amp-bf16", optimizer="adamw8bit")])
def test_planner_predicts_the_cuda_peak_within_10_percent(changes):
    model = GPT(GPTConfig(n_layer=4, n_head=8, n_embd=512, block_size=512)).cuda()
    setup = TrainSetup(batch=8, seq=512, device="cuda", **changes)
    predicted = plan(from_module(model), setup).peak
    measured = measure(model, setup).peak
    assert abs(predicted / measured - 1) <= 0.10, (predicted, measured)
