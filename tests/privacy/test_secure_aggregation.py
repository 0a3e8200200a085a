import pytest
import torch

from slimkit.errors import UserInputError
from slimkit.privacy.secure_aggregation import MODULUS_BITS, SecureAggregator, decode, encode


def test_masks_cancel_exactly_in_the_sum():
    clients = [1, 4, 5, 9]
    vectors = [torch.randn(1000) * 10 for _ in clients]
    agg = SecureAggregator(clients, 1000, seed=7)
    masked = [agg.mask(c, v) for c, v in zip(clients, vectors)]
    modulus = 2**MODULUS_BITS
    plain = torch.remainder(torch.stack([encode(v) for v in vectors]).sum(0), modulus)
    assert torch.equal(torch.remainder(torch.stack(masked).sum(0), modulus), plain)  # bit for bit
    for m, v in zip(masked, vectors):  # no single masked vector gives its vector away
        assert (m != encode(v)).float().mean() > 0.99
    want = torch.stack(vectors).double().sum(0)
    assert (agg.unmask_sum(masked).double() - want).abs().max() <= len(clients) * 2.0**-24 + 1e-5


def test_pair_masks_sum_to_zero():
    agg = SecureAggregator([0, 1, 2], 50, seed=3)
    zero = torch.zeros(50)
    masks = [agg.mask(c, zero) for c in (0, 1, 2)]
    assert torch.equal(torch.remainder(torch.stack(masks).sum(0), 2**MODULUS_BITS), torch.zeros(50, dtype=torch.long))


def test_encode_round_trips_negative_values():
    v = torch.tensor([-3.25, 0.0, 1e-7, 1234.5])
    torch.testing.assert_close(decode(encode(v)), v, atol=2**-24, rtol=0)


@pytest.mark.parametrize("call, message", [
    (lambda a: a.mask(3, torch.zeros(4)), "client 3 is not among"),
    (lambda a: a.mask(0, torch.zeros(5)), "sent 5 values"),
    (lambda a: a.unmask_sum([a.mask(0, torch.zeros(4))]), "every participant must report"),
    (lambda a: a.mask(0, torch.full((4,), 1e7)), "does not fit the fixed-point range"),
])
def test_bad_use(call, message):
    with pytest.raises(UserInputError, match=message):
        call(SecureAggregator([0, 1], 4))
