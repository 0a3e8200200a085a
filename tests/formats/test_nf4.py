"""NF4 code book against the published QLoRA table; encoding against brute-force nearest code."""

import torch

from slimkit.formats import NF4_CODE, decode, encode, qparams

# bitsandbytes' NF4 table (QLoRA, Dettmers et al. 2023, appendix E).
PUBLISHED_NF4 = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]  # fmt: skip


def test_code_book_matches_the_published_table():
    assert (NF4_CODE.double() - torch.tensor(PUBLISHED_NF4, dtype=torch.float64)).abs().max() < 1e-6


def test_encode_picks_the_nearest_code():
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(64, 500, generator=generator)
    scale, _ = qparams(x, "nf4", dim=1)
    codes = encode(x, "nf4", scale).long()
    normalised = (x * (1.0 / scale)).double()
    distances = (normalised[..., None] - NF4_CODE.double()).abs()  # (64, 500, 16)
    chosen = distances.gather(-1, codes[..., None]).squeeze(-1)
    assert torch.equal(chosen, distances.min(-1).values)
    assert (codes == distances.argmin(-1)).float().mean() == 1.0


def test_decode_scales_the_code_book():
    codes = torch.arange(16, dtype=torch.uint8)
    assert torch.equal(decode(codes, "nf4", torch.tensor(2.0)), NF4_CODE * 2)
    assert torch.equal(encode(NF4_CODE * 3, "nf4", torch.tensor(3.0)), codes)
