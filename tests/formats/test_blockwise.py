"""Block-wise 8-bit code books and quantization against bit-pattern and per-element references."""

import pytest
import torch

from slimkit.errors import UserInputError
from slimkit.formats.blockwise import (
    blockwise_decode,
    blockwise_encode,
    check_block_size,
    code_book,
    dynamic_map,
    linear_map,
)
from tests.reference.optim import blockwise_dequantize, blockwise_quantize, dynamic_tree_map

# Entries of bitsandbytes 0.50.2's create_dynamic_map (printed from that library).
BNB_SIGNED_FIRST = [-0.992968738079071, -0.9789062738418579, -0.96484375, -0.9507812261581421]
BNB_SIGNED_AROUND_ZERO = [-5.500000384017767e-07, 0.0, 5.500000384017767e-07, 3.250000190746505e-06]
BNB_UNSIGNED_FIRST = [0.0, 3.2500003044333425e-07, 7.749999895168003e-07, 2.1249998098937795e-06]
BNB_UNSIGNED_LAST = [0.982421875, 0.9894530773162842, 0.9964843988418579, 1.0]


@pytest.mark.parametrize("signed", [True, False])
def test_dynamic_map_equals_the_bit_pattern_construction(signed):
    reference = torch.tensor(dynamic_tree_map(signed), dtype=torch.float64)
    book = dynamic_map(signed).double()
    # bitsandbytes builds the book in float32 arithmetic: 1-2 ulp from the exact values.
    assert torch.allclose(book, reference, rtol=3e-7, atol=0)


def test_dynamic_map_matches_bitsandbytes_entries():
    signed, unsigned = dynamic_map(True), dynamic_map(False)
    assert signed[:4].tolist() == BNB_SIGNED_FIRST
    assert signed[126:130].tolist() == BNB_SIGNED_AROUND_ZERO
    assert unsigned[:4].tolist() == BNB_UNSIGNED_FIRST
    assert unsigned[-4:].tolist() == BNB_UNSIGNED_LAST


def test_linear_map_spans_the_range_and_holds_zero():
    signed = linear_map(True)
    assert signed.shape == (256,) and signed[0] == -1 and signed[-1] == 1
    # 255 even steps put 0 on a code (float32 linspace gives 3.7e-9 there); the spare slot is a 0
    assert signed[127] == 0 and abs(signed[128]) < 1e-8
    assert torch.allclose(linear_map(False), torch.arange(256) / 255.0, rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", ["dynamic", "linear"])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("block_size", [256, 2048])
def test_encode_matches_the_per_element_reference(name, signed, block_size):
    generator = torch.Generator().manual_seed(3)
    # heavy-tailed, like optimizer moments; 2 full blocks of 256 and a short one
    x = torch.randn(700, generator=generator) * torch.rand(700, generator=generator) ** 4
    x = x if signed else x.abs()
    book = code_book(name, signed)
    codes, absmax = blockwise_encode(x, book, block_size)
    ref_codes, ref_absmax = blockwise_quantize(x.tolist(), book.values.tolist(), block_size)
    assert absmax.tolist() == ref_absmax
    # compare values, not indices: the signed linear book holds 0 twice
    decoded = blockwise_decode(codes, absmax, book, block_size)
    expected = torch.tensor(blockwise_dequantize(ref_codes, ref_absmax, book.values.tolist(), block_size))
    assert torch.equal(decoded, expected.float())


def test_encode_keeps_the_shape_and_zero_blocks_decode_to_zero():
    x = torch.zeros(3, 300)
    x[0, :10] = torch.linspace(-1, 1, 10)
    book = code_book("dynamic", True)
    codes, absmax = blockwise_encode(x, book, 256)
    assert codes.shape == (3, 300) and codes.dtype == torch.uint8 and absmax.shape == (4,)
    decoded = blockwise_decode(codes, absmax, book, 256)
    assert torch.equal(decoded[1:], torch.zeros(2, 300))
    # +absmax round-trips (the book ends at 1); the signed book's lowest code is -0.993, not -1
    assert decoded[0, 9] == 1 and decoded[0, 0] == book.values[0]


@pytest.mark.parametrize("name", ["dynamic", "linear"])
@pytest.mark.parametrize("signed", [True, False])
def test_lookup_table_finds_the_same_code_as_binary_search(name, signed):
    book = code_book(name, signed)
    generator = torch.Generator().manual_seed(7)
    uniform = torch.rand(20000, generator=generator) * 2 - 1
    tiny = torch.randn(20000, generator=generator) * 10.0 ** torch.randint(-9, 0, (20000,), generator=generator)
    midpoints = book.midpoints[:-1]
    # the midpoints themselves and their float32 neighbours are where a table could go wrong
    edges = torch.cat([midpoints, midpoints.nextafter(torch.tensor(2.0)), midpoints.nextafter(torch.tensor(-2.0))])
    special = torch.tensor([-1.0, -0.0, 0.0, 1.0, torch.finfo(torch.float32).tiny])
    y = torch.cat([uniform, tiny.clamp(-1, 1), edges.clamp(-1, 1), special])
    assert torch.equal(book.nearest(y), torch.bucketize(y, midpoints).to(torch.uint8))


def test_bad_code_book_and_block_size_name_the_value():
    with pytest.raises(UserInputError, match="unknown code book 'log'.*dynamic, linear"):
        code_book("log", signed=True)
    with pytest.raises(UserInputError, match="block_size=512 is not supported; use 256 or 2048"):
        check_block_size(512)
