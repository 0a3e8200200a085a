"""Federated averaging (McMahan et al. 2017) over simulated clients, with DP-FedAvg and secure aggregation.

Each round the server samples clients, sends them the global weights, each client runs
``local_epochs`` of plain SGD on its own examples (through ``slimkit.train``) and returns its update
(local minus global weights). The server averages the updates weighted by the clients' example
counts. DP-FedAvg (McMahan et al. 2018) clips each update to ``clip``, averages with equal weights
over the expected number of clients and adds N(0, (noise_multiplier * clip)^2) to the sum: a
client-level guarantee, accounted like DP-SGD with sample rate clients_per_round / clients.
Secure aggregation masks every update so that the server only learns their sum.

>>> result = federated_average(zoo.build("mlp"), digits().train, FederatedConfig(clients=10, alpha=0.3))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector

from slimkit.configs import Config
from slimkit.errors import UserInputError
from slimkit.manifest import add_entry
from slimkit.privacy.accountant import RDPAccountant
from slimkit.privacy.secure_aggregation import SecureAggregator
from slimkit.progress import progress
from slimkit.training import GeneratorBatches, TrainConfig, train


@dataclass(frozen=True)
class FederatedConfig(Config):
    """Clients, their data split, the rounds, and the optional privacy mechanisms.

    >>> FederatedConfig(clients=10, alpha=0.3, rounds=50).per_round
    10
    """

    WHAT: ClassVar[str] = "federated"

    clients: int = 10
    """Simulated clients the training examples are split over."""
    alpha: float | None = 0.3
    """Dirichlet concentration of each class over clients (small: non-IID, one or two classes per client);
    None: an IID split into equal parts."""
    rounds: int = 50
    """Communication rounds."""
    clients_per_round: int | None = None
    """Clients sampled (without replacement) each round; None: all of them."""
    local_epochs: int = 5
    """Passes of local SGD over a client's examples per round (5, as in McMahan et al.)."""
    batch_size: int = 32
    """Local SGD batch size."""
    lr: float = 0.1
    """Local SGD learning rate (plain SGD, no momentum: client state does not persist between rounds)."""
    clip: float | None = None
    """DP-FedAvg: clip each client's update to this L2 norm (None: plain FedAvg)."""
    noise_multiplier: float = 0.0
    """DP-FedAvg: the server adds N(0, (noise_multiplier * clip)^2) to the sum of clipped updates."""
    delta: float = 1e-5
    """Delta of the client-level (epsilon, delta) guarantee reported with DP-FedAvg."""
    server_lr: float = 1.0
    """Scale of the averaged update applied to the global model."""
    secure_aggregation: bool = False
    """Mask every update pairwise so that the server sees only their sum."""
    min_examples: int = 10
    """Dirichlet splits are redrawn until every client holds at least this many examples."""
    seed: int = 0
    """Seed of the split, the client sampling, the local batches and the server noise."""

    def __post_init__(self) -> None:
        for name in ("clients", "rounds", "local_epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UserInputError(f"{name}={value!r} must be a whole number >= 1")
        if self.clients_per_round is not None and not 1 <= self.clients_per_round <= self.clients:
            raise UserInputError(f"clients_per_round={self.clients_per_round} must lie in [1, clients={self.clients}]")
        if self.alpha is not None and not self.alpha > 0:
            raise UserInputError(f"alpha={self.alpha} must be positive (or None for an IID split)")
        if not self.lr > 0 or not self.server_lr > 0:
            raise UserInputError(f"lr={self.lr} and server_lr={self.server_lr} must be positive")
        if self.clip is not None and not self.clip > 0:
            raise UserInputError(f"clip={self.clip} must be positive (or None)")
        if self.noise_multiplier < 0 or (self.noise_multiplier > 0 and self.clip is None):
            raise UserInputError(f"noise_multiplier={self.noise_multiplier} must be >= 0 and needs clip= "
                                 "(the noise is scaled to the clipped updates)")
        if not 0 < self.delta < 1:
            raise UserInputError(f"delta={self.delta} must lie in (0, 1)")

    @property
    def per_round(self) -> int:
        """Clients taking part in each round."""
        return self.clients_per_round or self.clients



def dirichlet_split(labels: Tensor, clients: int, alpha: float | None, seed: int = 0,
                    min_examples: int = 10) -> list[Tensor]:
    """Example indices per client: each class's examples divided by Dirichlet(alpha) proportions.

    >>> parts = dirichlet_split(digits().train.y, clients=10, alpha=0.3)  # doctest: +SKIP
    """
    if min_examples * clients > len(labels):
        raise UserInputError(f"{len(labels)} examples cannot give {clients} clients {min_examples} each; "
                             "use fewer clients")
    rng = np.random.default_rng(seed)
    if alpha is None:
        return [torch.from_numpy(np.sort(p)) for p in np.array_split(rng.permutation(len(labels)), clients)]
    labels_np = labels.numpy()
    for _ in range(1000):
        parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for label in np.unique(labels_np):
            idx = rng.permutation(np.flatnonzero(labels_np == label))
            cuts = np.round(np.cumsum(rng.dirichlet(np.full(clients, alpha))) * len(idx)).astype(int)[:-1]
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].append(chunk)
        split = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in split) >= min_examples:
            return [torch.from_numpy(p) for p in split]
    raise UserInputError(f"alpha={alpha} with {clients} clients leaves some client below {min_examples} examples "
                         "in 1000 draws; raise alpha or lower min_examples")


def epoch_batches(x: Tensor, y: Tensor, batch_size: int, seed: int) -> GeneratorBatches:
    """Shuffled passes over (x, y) in batches (the last of each pass may be smaller), for ``slimkit.train``."""
    state: dict[str, list] = {"order": []}

    def draw(generator: torch.Generator):
        if not state["order"]:
            state["order"] = list(torch.randperm(len(y), generator=generator).split(batch_size))
        idx = state["order"].pop(0)
        return x[idx], y[idx]

    return GeneratorBatches(draw, seed)


def local_update(model: nn.Module, x: Tensor, y: Tensor, config: FederatedConfig, seed: int) -> Tensor:
    """One client's round: plain SGD for ``local_epochs`` passes from the current weights; returns the change
    of the trainable parameters as one vector (the model is left trained: reload the global weights after)."""
    params = [p for p in model.parameters() if p.requires_grad]
    start = parameters_to_vector(params).detach().clone()
    steps = config.local_epochs * math.ceil(len(y) / config.batch_size)
    train(model, epoch_batches(x, y, config.batch_size, seed),
          TrainConfig(steps=steps, lr=config.lr, schedule="constant", clip_grad_norm=None, seed=seed),
          optimizer=torch.optim.SGD(params, lr=config.lr))
    return parameters_to_vector(params).detach() - start


@dataclass
class FederatedResult:
    rounds: int
    client_sizes: list[int]
    seconds: float
    epsilon: float | None  # client-level, DP-FedAvg only
    update_norms: list[float]  # mean client update norm per round (before clipping)


def federated_average(model: nn.Module, data, config: FederatedConfig = FederatedConfig(),
                      on_round=None) -> FederatedResult:
    """Train ``model`` (the global model, in place) by FedAvg over clients holding parts of ``data``.

    ``data``: (x, y) tensors or an object with .x and .y. ``on_round(round, model)`` is called after
    each round (e.g. to evaluate). Inside a torch.distributed process group (``slimkit federated
    --nproc 2``: gloo on CPU) each process trains its share of every round's clients and the sum of
    their contributions is all-reduced, so that every process ends with the same global model.
    """
    x, y = (data.x, data.y) if hasattr(data, "x") else data
    parts = dirichlet_split(y, config.clients, config.alpha, config.seed, config.min_examples)
    params = [p for p in model.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(config.seed)  # the same draws in every process
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    accountant = RDPAccountant() if config.clip is not None else None
    norms, start = [], time.perf_counter()
    for round_ in progress(range(config.rounds), desc="federated", unit="round"):
        chosen = torch.randperm(config.clients, generator=generator)[:config.per_round].sort().values.tolist()
        global_weights = parameters_to_vector(params).detach().clone()
        updates = {}
        for client in chosen[rank::world]:
            seed = config.seed * 1_000_003 + round_ * 1009 + client
            updates[client] = local_update(model, x[parts[client]], y[parts[client]], config, seed)
            _assign(params, global_weights)
        norm_sum = sum((u.norm() for u in updates.values()), torch.zeros(()))
        if world > 1:
            dist.all_reduce(norm_sum)
        norms.append(float(norm_sum) / len(chosen))
        step = _aggregate(updates, {c: len(parts[c]) for c in chosen}, len(global_weights), config, generator,
                          round_, world)
        _assign(params, global_weights + config.server_lr * step)
        if accountant is not None:
            accountant.step(config.noise_multiplier, config.per_round / config.clients)
        if on_round:
            on_round(round_ + 1, model)
    eps = accountant.epsilon(config.delta) if accountant is not None else None
    add_entry(model, {"layer": "*", "technique": "fedavg" if accountant is None else "dp-fedavg",
                      **config.to_dict(), "epsilon": eps})
    return FederatedResult(config.rounds, [len(p) for p in parts], time.perf_counter() - start, eps, norms)


def _assign(params: list[nn.Parameter], vector: Tensor) -> None:
    """Copy ``vector`` into the parameters in place (torch's vector_to_parameters would make them views of
    ``vector``, so that the next client's training would write into the global weights)."""
    with torch.no_grad():
        for param, chunk in zip(params, vector.split([p.numel() for p in params])):
            param.copy_(chunk.view_as(param))


def _aggregate(updates: dict[int, Tensor], sizes: dict[int, int], length: int, config: FederatedConfig,
               generator: torch.Generator, round_: int, world: int = 1) -> Tensor:
    """The server's step from this process's client ``updates`` (all the round's clients are in ``sizes``):
    FedAvg's mean weighted by example counts, or DP-FedAvg's clipped updates plus noise over the
    expected count of clients; the sum goes through secure aggregation when asked."""
    contributions = {c: u * sizes[c] if config.clip is None else u * min(1.0, config.clip / (float(u.norm()) + 1e-12))
                     for c, u in updates.items()}
    if config.secure_aggregation:
        aggregator = SecureAggregator(sorted(sizes), length, seed=config.seed * 100_003 + round_)
        masked = sum((aggregator.mask(c, v) for c, v in contributions.items()), torch.zeros(length, dtype=torch.long))
        if world > 1:
            dist.all_reduce(masked)  # integer sums: the same bits however they are grouped
        total = aggregator.unmask(masked)
    else:
        total = sum(contributions.values(), torch.zeros(length))
        if world > 1:
            dist.all_reduce(total)
    if config.clip is None:
        return total / sum(sizes.values())
    noise = torch.randn(total.shape, generator=generator) * config.noise_multiplier * config.clip
    return (total + noise) / config.per_round
