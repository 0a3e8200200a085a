"""Secure aggregation by pairwise masks (the idea of Bonawitz et al. 2017, without dropout recovery).

Every pair of clients (i < j) shares a seed; client i adds the mask it expands to, client j subtracts
it. Each masked vector alone is uniformly random, and in the sum every mask meets its negative, so the
server learns the sum and nothing else. The arithmetic is on fixed-point integers modulo 2^48: float
masks would not cancel exactly, modular ones do, bit for bit.

Simulated here: the pair seeds come from one root seed (a real deployment agrees on them with
Diffie-Hellman), and every selected client must report (a client that drops out leaves its masks
in the sum; the protocol's secret-shared recovery is not implemented).

>>> agg = SecureAggregator(participants=[0, 3, 7], length=4, seed=1)
>>> masked = [agg.mask(c, torch.full((4,), float(c))) for c in (0, 3, 7)]
>>> agg.unmask_sum(masked).tolist()
[10.0, 10.0, 10.0, 10.0]
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from slimkit.errors import UserInputError

MODULUS_BITS = 48  # sums of up to 2^15 clients stay inside int64 before the modulo
FRACTION_BITS = 24  # fixed-point resolution 6e-8; magnitudes up to 2^23 (8.4e6) in the sum


def encode(vector: Tensor, fraction_bits: int = FRACTION_BITS) -> Tensor:
    """Float vector -> fixed-point integers in [0, 2^48) (negatives wrap around, two's-complement style)."""
    limit = 2 ** (MODULUS_BITS - 1 - fraction_bits)
    if vector.abs().max() >= limit:
        raise UserInputError(f"a value of magnitude {vector.abs().max().item():.3g} does not fit the fixed-point "
                             f"range +-{limit:g}; clip client updates (DP-FedAvg's clip) or lower fraction_bits")
    fixed = torch.round(vector.double() * 2**fraction_bits).long()
    return torch.remainder(fixed, 2**MODULUS_BITS)


def decode(values: Tensor, fraction_bits: int = FRACTION_BITS) -> Tensor:
    """Inverse of ``encode`` (values >= 2^47 are the negatives); float32."""
    signed = torch.where(values >= 2 ** (MODULUS_BITS - 1), values - 2**MODULUS_BITS, values)
    return (signed.double() / 2**fraction_bits).float()


class SecureAggregator:
    """Pairwise masks for one round's participants; the server only ever adds masked vectors."""

    def __init__(self, participants: list[int], length: int, seed: int = 0) -> None:
        if len(set(participants)) != len(participants):
            raise UserInputError(f"participants {participants} repeat a client")
        self.participants, self.length, self.seed = sorted(participants), length, seed

    def pair_mask(self, i: int, j: int) -> Tensor:
        """The mask clients i < j share (expanded from their common seed)."""
        digest = hashlib.sha256(f"{self.seed}:{i}:{j}".encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
        return torch.randint(0, 2**MODULUS_BITS, (self.length,), generator=generator, dtype=torch.long)

    def mask(self, client: int, vector: Tensor) -> Tensor:
        """What ``client`` sends: its encoded vector plus the masks shared with later clients, minus earlier ones."""
        if client not in self.participants:
            raise UserInputError(f"client {client} is not among this round's participants {self.participants}")
        if vector.numel() != self.length:
            raise UserInputError(f"client {client} sent {vector.numel()} values, the round expects {self.length}")
        total = encode(vector.flatten())
        for other in self.participants:
            if other > client:
                total = total + self.pair_mask(client, other)
            elif other < client:
                total = total - self.pair_mask(other, client)
        return torch.remainder(total, 2**MODULUS_BITS)

    def unmask_sum(self, masked: list[Tensor]) -> Tensor:
        """The server: the sum of the clients' vectors, from their masked versions (one from each participant)."""
        if len(masked) != len(self.participants):
            raise UserInputError(f"{len(masked)} masked vectors for {len(self.participants)} participants; every "
                                 "participant must report, or the masks do not cancel")
        return self.unmask(torch.stack(masked).sum(0))

    def unmask(self, masked_sum: Tensor) -> Tensor:
        """The sum of the clients' vectors from the sum of all their masked vectors (however it was grouped)."""
        return decode(torch.remainder(masked_sum, 2**MODULUS_BITS))
