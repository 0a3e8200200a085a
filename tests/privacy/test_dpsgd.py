import pytest
import torch
from torch import nn

from slimkit.data import digits
from slimkit.errors import UserInputError
from slimkit.io import load, save
from slimkit.manifest import get_manifest
from slimkit.models import zoo
from slimkit.models.spec import from_spec
from slimkit.privacy import DPConfig, make_private, replace_batchnorm
from slimkit.privacy.accountant import epsilon
from slimkit.privacy.grads import GhostClipping, VmapClipping, per_example_cross_entropy, per_sample_gradients
from slimkit.training import TrainConfig
from tests.reference.privacy_grads import clipped_sum, per_example_gradients

DP_TRAIN = dict(optimizer="sgd", schedule="constant", clip_grad_norm=None, threads=1)


def _batch(n=12):
    d = digits().train
    return d.x[:n], d.y[:n]


class TokenModel(nn.Module):
    """Linear layers over a sequence (B, T, 8): exercises ghost norms with T > 1 (both formulas)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.a, self.b = nn.Linear(8, hidden), nn.Linear(hidden, 5)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def _lora_token_model():
    """LoRA adapters on both layers, the bases frozen: DP-SGD on the adapters only."""
    from slimkit.adapters.lora import LoRAConfig, inject

    torch.manual_seed(0)
    model = TokenModel(16)
    inject(model, LoRAConfig(rank=2, alpha=4, include=("a", "b")))
    with torch.no_grad():
        for layer in (model.a, model.b):
            layer.lora_B.weight.normal_()  # B = 0 would give A no gradient at all
    return model


def _small_cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 10))


@pytest.mark.parametrize("make", [lambda: from_spec("mlp:hidden=32-16"), _small_cnn])
def test_vmap_per_sample_gradients_equal_a_per_example_loop(make):
    model, (x, y) = make(), _batch()
    got, losses = per_sample_gradients(model, x, y, per_example_cross_entropy)
    want = per_example_gradients(model, x, y, per_example_cross_entropy)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(losses, per_example_cross_entropy(model(x), y))


@pytest.mark.parametrize("engine, make, data", [
    ("ghost", lambda: from_spec("mlp:hidden=32-16"), "digits"),
    ("ghost", lambda: TokenModel(3), "tokens"),  # T^2 > in*out: per-sample gradients formed per layer
    ("ghost", lambda: TokenModel(64), "tokens"),  # T^2 <= in*out: Gram matrices
    ("ghost", _lora_token_model, "tokens"),  # the adapters run as modules while hooks watch them
    ("vmap", _lora_token_model, "tokens"),  # and under torch.func's transforms
    ("vmap", _small_cnn, "digits")])
def test_clipped_sum_and_norms_equal_the_loop(engine, make, data):
    model = make()
    if data == "digits":
        x, y = _batch()
    else:
        x, y = torch.randn(6, 7, 8), torch.randint(0, 5, (6, 7))
    clipper = GhostClipping(model) if engine == "ghost" else VmapClipping()
    reference = per_example_gradients(model, x, y, per_example_cross_entropy)
    max_norm = 0.5 * float(clipped_sum(reference, 1.0)[1].median())  # about half the examples get clipped
    want, want_norms = clipped_sum(reference, max_norm)
    loss, norms = clipper.clipped_loss(model, x, y, per_example_cross_entropy, max_norm)
    loss.backward()
    torch.testing.assert_close(norms, want_norms, atol=1e-5, rtol=1e-4)
    for name, param in model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, want[name], atol=1e-6, rtol=1e-4)
    assert loss.item() == pytest.approx(per_example_cross_entropy(model(x), y).sum().item(), rel=1e-6)
    clipper.close()


def test_each_clipped_gradient_norm_is_at_most_c():
    model, (x, y) = from_spec("mlp:hidden=32-16"), _batch(8)
    private = make_private(model, None, (x, y), noise_multiplier=0.0, max_grad_norm=0.01, batch_size=1,
                           delta=1e-3)
    for i in range(len(y)):
        model.zero_grad()
        loss, _ = private.loss_fn(model, (x[i:i + 1] * 50, y[i:i + 1]))  # large inputs: large raw gradients
        loss.backward()
        norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
        assert private.last_norms[0] > 0.01 and norm <= 0.01 * (1 + 1e-5)


def test_accumulation_equals_one_batch_and_noise_is_added_once_per_logical_batch():
    def grads_after_one_step(accumulate, sigma):
        model = from_spec("mlp:hidden=32-16")
        private = make_private(model, None, digits().train, noise_multiplier=sigma, batch_size=64, seed=3)
        seen = {}

        class Keep:
            def on_before_optimizer_step(self, state):
                seen["grad"] = torch.cat([p.grad.flatten() for p in state.model.parameters()])

        private.train(TrainConfig(steps=1, lr=1e-9, accumulate=accumulate, **DP_TRAIN), callbacks=[Keep()])
        return seen["grad"]

    torch.testing.assert_close(grads_after_one_step(4, 0.0), grads_after_one_step(1, 0.0), atol=1e-7, rtol=1e-5)
    # sigma * C / B = 1000 / 64 per coordinate when the noise is added once (twice would give sqrt(4) times more)
    noisy = grads_after_one_step(4, 1000.0)
    assert noisy.std().item() == pytest.approx(1000 / 64, rel=0.05)


def test_training_records_epsilon_in_the_bar_and_the_manifest(tmp_path):
    model = zoo.build("mlp")
    private = make_private(model, None, digits().train, noise_multiplier=1.5, batch_size=128, max_grad_norm=1.0)
    seen = []

    class Peek:
        def on_step_end(self, state):
            seen.append(state.postfix["eps"])

    private.train(TrainConfig(steps=20, lr=0.5, **DP_TRAIN), callbacks=[Peek()])
    want = epsilon(1.5, 128 / 1257, 20, 1e-5)
    assert float(seen[-1]) == pytest.approx(want, rel=1e-2)
    entry = get_manifest(load(save(model, tmp_path / "dp")))[-1]
    assert entry["technique"] == "dp-sgd" and entry["epsilon"] == pytest.approx(want)
    assert entry["steps"] == 20 and entry["sample_rate"] == pytest.approx(128 / 1257)


def test_a_resumed_run_counts_the_steps_before_the_checkpoint(tmp_path):
    def run(steps, resume):
        private = make_private(zoo.build("mlp"), None, digits().train, noise_multiplier=1.0, batch_size=64)
        private.train(TrainConfig(steps=steps, lr=0.1, checkpoint_dir=str(tmp_path), resume=resume, **DP_TRAIN))
        return private

    run(4, resume=False)
    resumed = run(7, resume=True)
    assert resumed.accountant.steps == 7
    assert resumed.epsilon() == pytest.approx(epsilon(1.0, 64 / 1257, 7, 1e-5))


def test_poisson_batches_vary_around_the_expected_size():
    private = make_private(zoo.build("mlp"), None, digits().train, noise_multiplier=1.0, batch_size=100,
                           poisson=True)
    sizes = [len(private.batches.next()[1]) for _ in range(200)]
    assert len(set(sizes)) > 5 and sum(sizes) / len(sizes) == pytest.approx(100, rel=0.05)


def test_batchnorm_is_refused_naming_the_layers_and_groupnorm_replaces_it(tmp_path):
    with pytest.raises(UserInputError, match=r"stem\.1, blocks\.0\.bn1.*replace_batchnorm"):
        make_private(zoo.build("cnn"), None, digits().train, noise_multiplier=1.0)
    model = replace_batchnorm(zoo.build("cnn"))
    private = make_private(model, None, digits().train, noise_multiplier=1.0, batch_size=16)
    assert private.engine == "vmap"
    private.train(TrainConfig(steps=1, lr=0.1, **DP_TRAIN))
    x = digits().test.x[:4]
    torch.testing.assert_close(load(save(model, tmp_path / "gn"))(x), model.eval()(x))


def test_delta_above_one_over_n_warns():
    with pytest.warns(UserWarning, match=r"delta=0.01 >= 1/N"):
        make_private(zoo.build("mlp"), None, digits().train, noise_multiplier=1.0, delta=0.01)


def test_unreachable_target_epsilon_names_the_smallest():
    with pytest.raises(UserInputError, match="smallest reachable epsilon is"):
        make_private(zoo.build("mlp"), None, digits().train, target_epsilon=0.05, steps=100)


@pytest.mark.parametrize("config, message", [
    (dict(clip_grad_norm=1.0), "clip_grad_norm must be None"),
    (dict(clip_grad_norm=None, steps=200), "more than the 100 steps"),
])
def test_train_config_conflicts(config, message):
    private = make_private(zoo.build("mlp"), None, digits().train, target_epsilon=3.0, steps=100)
    with pytest.raises(UserInputError, match=message):
        private.train(TrainConfig(**{"steps": 10, "lr": 0.1, **config}))


@pytest.mark.parametrize("settings, message", [
    (dict(), "exactly one of noise_multiplier"),
    (dict(target_epsilon=3.0), "needs steps="),
    (dict(noise_multiplier=1.0, max_grad_norm=0), "max_grad_norm=0"),
    (dict(noise_multiplier=1.0, engine="fast"), "engine='fast'"),
])
def test_bad_config(settings, message):
    with pytest.raises(UserInputError, match=message):
        DPConfig(**settings)


def test_ghost_engine_names_parameters_it_cannot_cover():
    with pytest.raises(UserInputError, match=r"1\.weight.*engine='vmap'"):
        make_private(_small_cnn(), None, digits().train, noise_multiplier=1.0, engine="ghost")


def test_config_round_trip():
    config = DPConfig(target_epsilon=3.0, steps=100, poisson=True)
    assert DPConfig.from_dict(config.to_dict()) == config
    with pytest.raises(UserInputError, match="unknown DP-SGD setting"):
        DPConfig.from_dict({"noise_multiplier": 1.0, "sigma": 2})
