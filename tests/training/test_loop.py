import json
import math

import pytest
import torch
import torch.nn.functional as F

from slimkit.errors import ArtifactError, UserInputError
from slimkit.models.gpt import GPT, GPTConfig
from slimkit.training import GeneratorBatches, TrainConfig, TrainingError, train
from slimkit.training.loop import lr_factor
from slimkit.training.checkpoint import read_state

FP16_ON_CPU = "ignore:precision='fp16' on a CPU"  # the warning itself is tested at the end


def tiny_gpt(dropout: float = 0.0) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=dropout))


def token_batches(batch_size: int, seed: int = 0) -> GeneratorBatches:
    def draw(g):
        x = torch.randint(0, 256, (batch_size, 16), generator=g)
        return x, torch.roll(x, -1, dims=1)

    return GeneratorBatches(draw, seed)


def params_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_accumulation_equals_one_big_batch_with_ragged_targets():
    # 4 micro-batches with very different numbers of real targets (the rest is -100 padding):
    # the right loss is the mean over all targets of the step, not the mean of per-micro-batch means.
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (8, 16), generator=g)
    y = torch.roll(x, -1, dims=1)
    for row, keep in enumerate([16, 1, 3, 16, 2, 16, 5, 9]):
        y[row, keep:] = -100
    big, small = tiny_gpt(), tiny_gpt()
    # SGD: the update is linear in the gradient (Adam's first step divides tiny gradients by their own size)
    config = dict(steps=1, lr=1e-2, clip_grad_norm=None, schedule="constant", optimizer="sgd")
    train(big, [(x, y)], TrainConfig(**config))
    train(small, [(x[i:i + 2], y[i:i + 2]) for i in range(0, 8, 2)], TrainConfig(**config, accumulate=4))
    for key, value in params_of(big).items():
        torch.testing.assert_close(params_of(small)[key], value, rtol=0, atol=1e-6)


def test_accumulated_gradient_matches_naive_reference():
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (6, 16), generator=g)
    y = torch.roll(x, -1, dims=1)
    y[1, 4:] = -100
    y[4, 10:] = -100
    model, reference = tiny_gpt(), tiny_gpt()
    grads = {}

    class Capture:
        def on_before_optimizer_step(self, state):
            grads.update({n: p.grad.clone() for n, p in state.model.named_parameters()})

    train(model, [(x[i:i + 3], y[i:i + 3]) for i in (0, 3)],
          TrainConfig(steps=1, accumulate=2, clip_grad_norm=None), callbacks=[Capture()])
    logits = reference(x)
    F.cross_entropy(logits.reshape(-1, 256), y.reshape(-1), ignore_index=-100).backward()  # mean over all targets
    for name, p in reference.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-7)


def run(tmp_path, steps, *, stop_at=None, resume=False, **extra):
    model = tiny_gpt(dropout=0.1)  # dropout: the RNG state must be restored for an exact resume
    config = TrainConfig(steps=steps, lr=3e-3, warmup=2, checkpoint_dir=str(tmp_path / "ckpt"),
                         checkpoint_every=3, resume=resume, **extra)

    class Interrupt:
        def on_step_end(self, state):
            if state.step == stop_at:
                raise KeyboardInterrupt

    try:
        result = train(model, token_batches(4), config, callbacks=[Interrupt()])
    except KeyboardInterrupt:
        return model, None
    return model, result


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.filterwarnings(FP16_ON_CPU)
def test_resume_continues_exactly(tmp_path, precision):
    straight, result = run(tmp_path / "a", 8, precision=precision)
    run(tmp_path / "b", 8, stop_at=4, precision=precision)  # interrupted after step 4; checkpoint at 3
    resumed, resumed_result = run(tmp_path / "b", 8, resume=True, precision=precision)
    assert resumed_result.losses == result.losses  # pinned losses continue identically
    for key, value in params_of(straight).items():
        assert torch.equal(params_of(resumed)[key], value), key


@pytest.mark.filterwarnings(FP16_ON_CPU)
def test_grad_scaler_state_round_trips(tmp_path):
    run(tmp_path, 4, precision="fp16")
    saved = read_state(tmp_path / "ckpt")["scaler"]
    assert saved["scale"] > 0 and set(saved) >= {"scale", "growth_factor", "backoff_factor", "_growth_tracker"}
    scaler = torch.amp.GradScaler("cpu")
    scaler.load_state_dict(saved)
    assert scaler.state_dict() == saved


def test_resume_from_mismatched_checkpoint_names_the_mismatch(tmp_path):
    run(tmp_path, 3)
    with pytest.raises(ArtifactError, match="optimizer: checkpoint 'adamw', now 'sgd'"):
        train(tiny_gpt(), token_batches(4), TrainConfig(steps=3, lr=3e-3, warmup=2, optimizer="sgd",
                                                        checkpoint_dir=str(tmp_path / "ckpt"), resume=True))
    wider = GPT(GPTConfig(block_size=16, n_layer=2, n_head=2, n_embd=64))
    with pytest.raises(ArtifactError, match=r"does not fit this model: .*blocks.0.attn.proj.weight: checkpoint \(32, 32\), model \(64, 64\)"):
        train(wider, token_batches(4), TrainConfig(steps=3, lr=3e-3, warmup=2, checkpoint_dir=str(tmp_path / "ckpt"),
                                                   resume=True))


def test_nan_loss_stops_after_max_bad_steps_with_a_message():
    def nan_loss(model, batch):
        loss = model(batch[0]).sum() * float("nan")
        return loss, 1

    model = tiny_gpt()
    before = params_of(model)
    with pytest.raises(TrainingError, match="NaN/inf for 3 steps in a row"):
        train(model, token_batches(2), TrainConfig(steps=10, max_bad_steps=3), loss_fn=nan_loss)
    assert all(torch.equal(v, params_of(model)[k]) for k, v in before.items())  # no step was taken


@pytest.mark.filterwarnings(FP16_ON_CPU)
def test_fp16_scaler_skips_steps_with_inf_gradients():
    calls = {"n": 0}

    def overflow_once(model, batch):
        loss, count = torch.nn.functional.cross_entropy(model(batch[0]).reshape(-1, 256), batch[1].reshape(-1),
                                                        reduction="sum"), batch[1].numel()
        calls["n"] += 1
        # a finite loss whose gradient overflows fp16 after scaling on the first step only
        return (loss * 1e30 if calls["n"] == 1 else loss), count

    result = train(tiny_gpt(), token_batches(2), TrainConfig(steps=3, precision="fp16"), loss_fn=overflow_once)
    assert result.skipped_steps == 1 and result.steps == 3


def counting_batches(batch_size: int) -> GeneratorBatches:
    """Learnable sequences: each token is the previous one plus one."""
    def draw(g):
        x = (torch.randint(0, 256, (batch_size, 1), generator=g) + torch.arange(17)) % 256
        return x[:, :-1], x[:, 1:]

    return GeneratorBatches(draw)


def test_bf16_follows_fp32_and_tf32_falls_back_on_cpu():
    config = dict(steps=60, lr=1e-2, warmup=5)
    fp32 = train(tiny_gpt(), counting_batches(8), TrainConfig(**config))
    bf16 = train(tiny_gpt(), counting_batches(8), TrainConfig(**config, precision="bf16"))
    assert fp32.losses[-1] < 0.5 * fp32.losses[0]  # the task is learnt
    assert bf16.precision == "bf16"
    assert bf16.losses[-1] == pytest.approx(fp32.losses[-1], rel=0.1)  # autocast keeps the curve
    tf32 = train(tiny_gpt(), token_batches(4), TrainConfig(steps=2, precision="tf32"))
    assert tf32.precision == "fp32"  # a CPU has no TF32: documented fallback


def test_metrics_are_written_as_json_lines_and_tensorboard(tmp_path):
    result = train(tiny_gpt(), token_batches(2), TrainConfig(steps=4, log_dir=str(tmp_path), log_every=2))
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    assert lines[-1]["loss"] == pytest.approx(result.final_loss) and lines[-1]["tokens"] == 4 * 2 * 16
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4]


def test_lr_schedule_warmup_then_cosine():
    config = TrainConfig(steps=12, warmup=2)
    assert [lr_factor(s, config) for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(2, config) == 1.0
    assert lr_factor(7, config) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(5, TrainConfig(steps=12, warmup=2, schedule="constant")) == 1.0


def test_dataloader_position_is_resumed(tmp_path):
    x = torch.randint(0, 256, (20, 16))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.roll(x, -1, 1)), batch_size=3)

    class Interrupt:
        def on_step_end(self, state):
            if state.step == 5:
                raise KeyboardInterrupt

    config = dict(steps=9, lr=1e-3, checkpoint_every=4)  # 7 batches per epoch: the resumed run crosses an epoch
    straight = train(tiny_gpt(), loader, TrainConfig(**config, checkpoint_dir=str(tmp_path / "a")))
    with pytest.raises(KeyboardInterrupt):
        train(tiny_gpt(), loader, TrainConfig(**config, checkpoint_dir=str(tmp_path / "b")), callbacks=[Interrupt()])
    resumed = train(tiny_gpt(), loader, TrainConfig(**config, checkpoint_dir=str(tmp_path / "b"), resume=True))
    assert resumed.losses == straight.losses


@pytest.mark.parametrize("kwargs, message", [
    (dict(precision="int8"), "precision='int8' is not one of fp32, tf32, bf16, fp16"),
    (dict(accumulate=0), "accumulate=0 must be a whole number >= 1"),
    (dict(steps=5, warmup=5), r"warmup=5 must be in \[0, steps=5\)"),
    (dict(resume=True), "resume=True needs checkpoint_dir"),
    (dict(lr=-1.0), "lr=-1.0 must be positive"),
    (dict(optimizer="adam"), "optimizer='adam' is not one of adamw, adamw8bit, sgd"),
])
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(UserInputError, match=message):
        TrainConfig(**kwargs)


def test_model_without_trainable_parameters_is_refused():
    model = tiny_gpt().requires_grad_(False)
    with pytest.raises(UserInputError, match="GPT has no trainable parameters"):
        train(model, token_batches(2), TrainConfig(steps=1))


def test_precision_without_autocast_on_the_device_is_refused(monkeypatch):
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    with pytest.raises(UserInputError, match="precision='fp16': torch has no autocast on device 'cpu'; use fp32"):
        train(tiny_gpt(), token_batches(2), TrainConfig(steps=1, precision="fp16"))


def test_fp16_on_cpu_warns_that_bf16_is_the_fast_choice():
    with pytest.warns(UserWarning, match="bf16 is the fast choice on CPU"):
        train(tiny_gpt(), token_batches(2), TrainConfig(steps=1, precision="fp16"))
