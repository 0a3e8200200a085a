"""slimkit's torch decoders of GGUF's block types against the gguf package's reference dequantizers."""

import numpy as np
import pytest
import torch

from slimkit.formats import ggml

gguf = pytest.importorskip("gguf", reason="the gguf reader (test extra) is not installed")


@pytest.mark.parametrize("ggml_type", ggml.BLOCK_TYPES, ids=[ggml.TYPES[t][0] for t in ggml.BLOCK_TYPES])
def test_every_block_type_decodes_bit_for_bit_as_gguf_does(ggml_type):
    name, weights, size = ggml.TYPES[ggml_type]
    rng = np.random.default_rng(ggml_type)
    raw = rng.integers(0, 256, (12, size), dtype=np.uint8)  # any codes, sub-block scales and masks
    halves = rng.standard_normal((12, 2)).astype(np.float16).view(np.uint8)  # finite float16 d (and m / dmin)
    if name == "Q6_K":
        raw[:, 208:210] = halves[:, :2]
    else:
        raw[:, 0:2] = halves[:, :2]
        if name in ("Q4_1", "Q5_1", "Q4_K", "Q5_K"):
            raw[:, 2:4] = halves[:, 2:4]
    raw = raw.reshape(3, -1)  # 3 rows of 4 blocks
    reference = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[name]).reshape(3, 4 * weights)
    ours = ggml.dequantize(torch.from_numpy(raw), ggml_type, reference.shape)
    assert ours.dtype == torch.float32 and np.array_equal(ours.numpy(), reference)
