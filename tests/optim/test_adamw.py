"""AdamW (float32 states) against torch.optim.AdamW and the per-element reference; bad input."""

import io

import pytest
import torch
from torch import nn

from slimkit.data import digits
from slimkit.errors import UserInputError
from slimkit.optim import AdamW, adamw_update_, state_bytes
from tests.reference.optim import adamw_step


def mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    data = digits()
    x, y = data.train.x[:256].flatten(1), data.train.y[:256]
    losses = []
    for step in range(steps):
        batch = slice(step * 32 % 256, step * 32 % 256 + 32)
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def groups(model: nn.Module) -> list[dict]:
    # two groups with their own lr and weight decay: both must reach the step
    return [{"params": model[0].parameters(), "lr": 3e-3, "weight_decay": 0.1},
            {"params": model[2].parameters()}]


def test_matches_torch_adamw_over_many_steps():
    ours, theirs = mlp(), mlp()
    kwargs = dict(lr=1e-3, betas=(0.8, 0.99), eps=1e-7, weight_decay=0.05)
    train(ours, AdamW(groups(ours), **kwargs), 100)
    train(theirs, torch.optim.AdamW(groups(theirs), foreach=False, **kwargs), 100)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert (a - b).abs().max() < 1e-6


def test_a_non_contiguous_parameter_is_updated_as_torch_does():
    ours, theirs = (nn.Parameter(torch.randn(64, 80, generator=torch.Generator().manual_seed(3)).t())
                    for _ in range(2))
    optimizers = AdamW([ours]), torch.optim.AdamW([theirs], foreach=False)
    for step in range(3):
        grad = torch.randn(80, 64, generator=torch.Generator().manual_seed(step))
        for param, optimizer in zip((ours, theirs), optimizers):
            param.grad = grad.clone()
            optimizer.step()
    assert not ours.is_contiguous() and (ours - theirs).abs().max() < 1e-6


def test_update_matches_the_per_element_reference():
    generator = torch.Generator().manual_seed(2)
    param, m, v = (torch.randn(50, generator=generator) for _ in range(3))
    v = v.abs()
    ref_param, ref_m, ref_v = param.tolist(), m.tolist(), v.tolist()
    hyper = dict(lr=0.01, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)
    for step in (1, 2, 3):
        grad = torch.randn(50, generator=generator)
        adamw_update_(param, grad, m, v, step, **hyper)
        adamw_step(ref_param, grad.tolist(), ref_m, ref_v, step, **hyper)
    assert torch.allclose(param, torch.tensor(ref_param).float(), rtol=0, atol=1e-6)
    assert torch.allclose(m, torch.tensor(ref_m).float(), rtol=1e-6, atol=1e-7)
    assert torch.allclose(v, torch.tensor(ref_v).float(), rtol=1e-6, atol=1e-7)


def test_bfloat16_parameters_keep_float32_moments_through_a_state_dict():
    model = mlp().to(torch.bfloat16)
    optimizer = AdamW(model.parameters())
    model(torch.randn(4, 64, dtype=torch.bfloat16)).sum().backward()
    optimizer.step()
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    resumed = AdamW(model.parameters())
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    state = resumed.state[model[0].weight]
    assert state["exp_avg"].dtype == torch.float32 and state["exp_avg_sq"].dtype == torch.float32
    assert torch.equal(state["exp_avg"], optimizer.state[model[0].weight]["exp_avg"])


def test_state_bytes_counts_both_moments_and_the_step():
    model = mlp()
    optimizer = AdamW(model.parameters())
    assert state_bytes(optimizer) == 0
    train(model, optimizer, 1)
    count = sum(p.numel() for p in model.parameters())
    assert state_bytes(optimizer) == 8 * count + 4 * len(list(model.parameters()))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-1e-3), r"param group 0: lr=-0.001 must be >= 0"),
        (dict(betas=(0.9, 1.0)), r"betas=\(0.9, 1.0\) must be two numbers in \[0, 1\)"),
        (dict(betas=(-0.1, 0.99)), r"betas=\(-0.1, 0.99\) must be two numbers in \[0, 1\)"),
        (dict(eps=-1.0), r"eps=-1.0 must be >= 0"),
        (dict(weight_decay=-0.1), r"weight_decay=-0.1 must be >= 0"),
    ],
)
def test_bad_hyperparameters_name_the_value(kwargs, message):
    with pytest.raises(UserInputError, match=message):
        AdamW(mlp().parameters(), **kwargs)


def test_a_bad_value_in_a_later_param_group_names_the_group():
    model = mlp()
    with pytest.raises(UserInputError, match="param group 1: lr=-1"):
        AdamW([{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": -1}])


def test_sparse_gradients_are_refused_with_the_parameter():
    embedding = nn.Embedding(10, 4, sparse=True)
    optimizer = AdamW(embedding.parameters())
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(UserInputError, match=r"parameter 0 of param group 0 \(shape \(10, 4\)\) has a sparse"):
        optimizer.step()


class PackedState(torch.Tensor):
    """A tensor subclass made of two plain tensors, as torchao's 8-bit optimizer states are."""

    @staticmethod
    def __new__(cls, codes, scale):
        return torch.Tensor._make_wrapper_subclass(cls, codes.shape, dtype=torch.float32)

    def __init__(self, codes, scale):
        self.codes, self.scale = codes, scale

    def __tensor_flatten__(self):
        return ["codes", "scale"], None

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise NotImplementedError(f"{func} is not needed by this test")


def test_state_bytes_counts_shared_tensors_once_and_subclasses_by_their_parts():
    param = nn.Parameter(torch.zeros(1000))
    optimizer = torch.optim.SGD([param], lr=0.1)
    shared = torch.zeros(256)  # e.g. a code book every parameter's state refers to
    packed = PackedState(torch.zeros(1000, dtype=torch.uint8), torch.zeros(4))
    optimizer.state[param] = {"book1": shared, "book2": shared, "moment": packed, "step": 3}
    assert state_bytes(optimizer) == 256 * 4 + 1000 + 4 * 4
