"""The shared OBS sweep gives GPTQ's codes and scales and SparseGPT's weights and masks exactly as the
code landed before it (tests/reference/obs_landed.py): the same float operations in the same order, so
the comparison is bit for bit (torch.equal), on random layers with dead inputs, for every option."""

import pytest
import torch

from slimkit.formats import PerChannel, PerGroup
from slimkit.pruning.sparsegpt import sparsegpt
from slimkit.quantization.gptq import gptq
from tests.reference.obs_landed import gptq_landed, sparsegpt_landed


def _layer(seed: int, out: int = 24, cols: int = 96):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(out, cols, generator=g)
    X = torch.randn(256, cols, generator=g) * torch.rand(cols, generator=g) * 3
    X[:, 5] = 0  # an input the calibration never saw: its Hessian diagonal is zero
    return W, X.T.double() @ X.double()


@pytest.mark.parametrize("options", [
    {}, {"act_order": True}, {"static_groups": True}, {"mse_clip": True}, {"symmetric": False},
    {"block_size": 32}, {"group_size": None}, {"group_size": None, "act_order": True}])
@pytest.mark.parametrize("fmt", ["int4", "int3", "nf4"])
def test_gptq_gives_the_landed_codes_and_scales(options, fmt):
    if fmt == "nf4" and options.get("symmetric") is False:
        pytest.skip("nf4 has no zero point")
    W, H = _layer(0)
    group_size = options.pop("group_size", 16)
    granularity = PerChannel() if group_size is None else PerGroup(group_size)
    q, scales, zeros = gptq(W, H, fmt, granularity=granularity, **options)
    q0, scales0, zeros0 = gptq_landed(W, H, fmt, group_size=group_size, **options)
    assert torch.equal(q, q0) and torch.equal(scales, scales0)
    assert (zeros is None and zeros0 is None) or torch.equal(zeros, zeros0)


@pytest.mark.parametrize("options", [{"sparsity": 0.5}, {"sparsity": 0.7, "block_size": 32},
                                     {"sparsity": 0.0, "nm": (2, 4)}, {"sparsity": 0.0, "nm": (4, 8), "damp": 0.1}])
def test_sparsegpt_gives_the_landed_weights_and_masks(options):
    W, H = _layer(1)
    sparsity = options.pop("sparsity")
    w, keep = sparsegpt(W, H, sparsity, **options)
    w0, keep0 = sparsegpt_landed(W, H, sparsity, **options)
    assert torch.equal(keep, keep0) and torch.equal(w, w0)
