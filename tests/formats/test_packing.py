"""pack / unpack against a bit-by-bit reference."""

import pytest
import torch

from slimkit.errors import UserInputError
from slimkit.formats import pack, unpack
from slimkit.formats.packing import load_codes, store_codes
from tests.reference.formats import pack_bits


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("numel", [0, 1, 7, 13, 1001])
def test_pack_matches_reference_and_unpack_inverts_it(bits, numel):
    generator = torch.Generator().manual_seed(bits * 1000 + numel)
    codes = torch.randint(0, 2**bits, (numel,), generator=generator, dtype=torch.uint8)
    packed = pack(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == (numel * bits + 7) // 8
    assert packed.tolist() == pack_bits(codes.tolist(), bits)
    assert torch.equal(unpack(packed, bits, numel), codes)


def test_packing_densities():
    codes = torch.ones(8, dtype=torch.uint8)
    assert pack(codes, 4).numel() == 4  # two per byte
    assert pack(codes, 2).numel() == 2  # four per byte
    assert pack(codes, 3).numel() == 3  # eight codes in three bytes
    assert pack(codes[:7], 3).numel() == 3  # tail padded
    assert pack(torch.tensor([1, 2], dtype=torch.uint8), 4).tolist() == [0x21]  # low nibble first


def test_pack_keeps_any_shape_flat():
    codes = torch.randint(0, 16, (3, 5, 7), dtype=torch.uint8)
    assert torch.equal(unpack(pack(codes, 4), 4, codes.numel()), codes.flatten())


@pytest.mark.parametrize("bits", [16, 19])
def test_wide_codes_store_and_load(bits):
    codes = torch.randint(0, 2**bits, (11,), dtype=torch.int32)
    stored = store_codes(codes, bits)
    assert stored.numel() == 11 * ((bits + 7) // 8) and stored.dtype == torch.uint8
    assert torch.equal(load_codes(stored, bits, 11), codes)


def test_pack_errors_say_what_to_fix():
    with pytest.raises(UserInputError, match="bits must be an integer from 1 to 8"):
        pack(torch.zeros(4, dtype=torch.uint8), 9)
    with pytest.raises(UserInputError, match="do not fit in 3 bits"):
        pack(torch.tensor([8], dtype=torch.uint8), 3)
    with pytest.raises(UserInputError, match="expects uint8"):
        pack(torch.zeros(4, dtype=torch.int64), 4)
    with pytest.raises(UserInputError, match="take 2 uint8 bytes, got 3"):
        unpack(torch.zeros(3, dtype=torch.uint8), 4, 4)
