import copy

import pytest
import torch
import torch.nn.functional as F

from slimkit.data import digits
from slimkit.errors import UserInputError
from slimkit.models.tasks import get_task
from slimkit.manifest import get_manifest
from slimkit.models.spec import from_spec
from slimkit.privacy.accountant import epsilon
from slimkit.privacy.federated import FederatedConfig, _aggregate, dirichlet_split, federated_average


def test_fedavg_with_one_client_equals_centralised_sgd():
    x, y = digits().train.x, digits().train.y
    model, reference = from_spec("mlp:hidden=32-16"), from_spec("mlp:hidden=32-16")
    federated_average(model, (x, y), FederatedConfig(clients=1, alpha=None, rounds=1, local_epochs=2, lr=0.1,
                                                     batch_size=32, seed=0))
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(0)  # the one client's batch order: seed 0, round 0, client 0
    for _ in range(2):
        for idx in torch.randperm(len(y), generator=generator).split(32):
            optimizer.zero_grad()
            F.cross_entropy(reference(x[idx]), y[idx]).backward()
            optimizer.step()
    for got, want in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_fedavg_round_is_the_weighted_mean_of_independent_client_runs():
    x, y = digits().train.x, digits().train.y
    model, start = from_spec("mlp:hidden=16"), from_spec("mlp:hidden=16")
    config = FederatedConfig(clients=3, alpha=None, rounds=1, local_epochs=1, lr=0.1, batch_size=64, seed=0)
    federated_average(model, (x, y), config)
    parts = dirichlet_split(y, 3, None, seed=0)
    want = [torch.zeros_like(p) for p in start.parameters()]
    for client, idx in enumerate(parts):  # each client from the same start, plain SGD on its own examples
        local = copy.deepcopy(start)
        optimizer = torch.optim.SGD(local.parameters(), lr=0.1)
        generator = torch.Generator().manual_seed(client)  # client seed: seed 0, round 0, this client
        for batch in torch.randperm(len(idx), generator=generator).split(64):
            optimizer.zero_grad()
            F.cross_entropy(local(x[idx][batch]), y[idx][batch]).backward()
            optimizer.step()
        for total, param in zip(want, local.parameters()):
            total += param.detach() * len(idx) / len(y)
    for got, expected in zip(model.parameters(), want):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_dirichlet_split_is_a_partition_and_small_alpha_is_skewed():
    y = digits().train.y
    skew = {}
    for alpha in (0.1, 100.0):
        parts = dirichlet_split(y, 10, alpha, seed=1)
        assert sorted(torch.cat(parts).tolist()) == list(range(len(y)))
        assert min(len(p) for p in parts) >= 10
        skew[alpha] = sum(torch.bincount(y[p], minlength=10).max().item() / len(p) for p in parts) / 10
    assert skew[0.1] > 0.5 > 0.2 > skew[100.0]
    iid = dirichlet_split(y, 10, None)
    assert max(len(p) for p in iid) - min(len(p) for p in iid) <= 1


def test_weighted_average_with_and_without_secure_aggregation():
    updates, sizes = {0: torch.ones(6), 1: torch.full((6,), -2.0)}, {0: 1, 1: 3}
    generator = torch.Generator()
    plain = _aggregate(updates, sizes, 6, FederatedConfig(clients=2), generator, 0)
    torch.testing.assert_close(plain, torch.full((6,), -5 / 4))
    masked = _aggregate(updates, sizes, 6, FederatedConfig(clients=2, secure_aggregation=True), generator, 0)
    torch.testing.assert_close(masked, plain, atol=1e-6, rtol=0)


def test_dp_fedavg_clips_updates_and_reports_client_level_epsilon():
    updates = {0: torch.full((4,), 10.0), 1: torch.full((4,), 0.01)}
    config = FederatedConfig(clients=4, clients_per_round=2, clip=1.0)
    step = _aggregate(updates, {0: 500, 1: 3}, 4, config, torch.Generator(), 0)  # equal weights, whatever the sizes
    torch.testing.assert_close(step, (torch.full((4,), 0.5) + 0.01) / 2)  # the big update clipped to norm 1
    model = from_spec("mlp:hidden=16")
    config = FederatedConfig(clients=10, clients_per_round=5, rounds=3, local_epochs=1, clip=1.0, noise_multiplier=1.0,
                             lr=0.05)
    result = federated_average(model, digits().train, config)
    assert result.epsilon == pytest.approx(epsilon(1.0, 0.5, 3, 1e-5))
    assert get_manifest(model)[-1]["technique"] == "dp-fedavg"


def test_non_iid_fedavg_learns():
    model = from_spec("mlp:hidden=64")
    accuracy = {}
    federated_average(model, digits().train, FederatedConfig(clients=10, alpha=0.3, rounds=4, lr=0.3, local_epochs=2),
                      on_round=lambda r, m: accuracy.update({r: get_task("digits").quality(m)["accuracy"]}))
    assert list(accuracy) == [1, 2, 3, 4]
    assert accuracy[4] > max(0.5, accuracy[1])  # untrained: 0.1


@pytest.mark.parametrize("settings, message", [
    (dict(noise_multiplier=1.0), "needs clip="),
    (dict(clients=5, clients_per_round=6), "clients_per_round=6"),
    (dict(alpha=0.0), "alpha=0.0"),
])
def test_bad_config(settings, message):
    with pytest.raises(UserInputError, match=message):
        FederatedConfig(**settings)


def test_too_many_clients_for_the_data():
    with pytest.raises(UserInputError, match="cannot give 200 clients 10 each"):
        dirichlet_split(digits().train.y, 200, 0.3)


def test_config_round_trip():
    config = FederatedConfig(clients=5, alpha=None, clip=0.5, noise_multiplier=1.0)
    assert FederatedConfig.from_dict(config.to_dict()) == config
