"""slimkit.distributed on 2 gloo processes: DDP and FSDP equal one process, tensor parallelism equals one
process, sharded checkpoints resume (QLoRA; 8-bit AdamW + fp16 loss scaling resharded to 1 rank),
consolidation, a dead rank, a missing torchrun environment."""

from __future__ import annotations

import json
import socket
import time

import pytest
import torch

from slimkit import distributed
from slimkit.errors import UserInputError
from slimkit.training import TrainConfig
from tests.distributed import workers

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One spawn of 2 ranks running every 2-rank check; (figures rank 0 wrote, its folder)."""
    out = tmp_path_factory.mktemp("two_ranks")
    assert workers.spawn(workers.two_rank_checks, 2, str(out)) == [0, 0]
    return json.loads((out / "results.json").read_text()), out


def _equals_one_process(results: dict, strategy: str) -> None:
    """A data-parallel run equals the one-process run up to float32 rounding, measured, not guessed.

    Two ranks sum every gradient in another order than one process, so the two float32 runs round
    differently. AdamW's update m / sqrt(v) is ~lr in size whatever the gradient's size, so a gradient
    entry that is a near-cancelling sum (relative rounding error far above eps_fp32) moves its weight
    by up to ~lr * that relative error: no closed-form bound holds for every entry, and the observed
    difference (4.0e-6 on Intel Xeon, under 1e-6 on AMD EPYC, for lr=1e-3 over 4 steps) depends on the
    CPU's summation kernels. The scale it must be compared with is how far the one-process float32 run
    itself lies from the same run in float64 (8e-6 on Xeon): each float32 run sits that far from the
    exact one, so two of them differ by at most about twice that; 4x leaves room for the maximum over
    ~100k weights landing on another entry. A wrong reduction is far outside it: ranks keeping their
    own gradient (no all-reduce) differ by 5e-3, 600x the rounding scale.
    """
    rounding = results["one_process_rounding"]
    assert rounding <= 0.01 * 4 * 1e-3  # the float64 reference is sound: rounding is 1% of 4 AdamW steps of lr
    assert results[f"{strategy}_vs_one_process"] <= 4 * rounding
    # AdamW and norm clipping (to 1.0) hide a gradient scaled by a constant factor from the parameters
    # (a missing average doubles every gradient and the weights come out identical), so the norms
    # before clipping are compared too: a sum of ~1e5 positive squares, no cancellation, so float32
    # rounding changes it by ~sqrt(1e5) * eps_fp32 = 4e-5 relative at most; a missing average is 2x.
    for got, want in zip(results[f"{strategy}_grad_norms"], results["one_process_grad_norms"], strict=True):
        assert got == pytest.approx(want, rel=1e-4)


def test_ddp_equals_one_process(two_ranks):
    _equals_one_process(two_ranks[0], "ddp")  # issue 8: 4 steps of 2 accumulated micro-batches


def test_fsdp_equals_one_process(two_ranks):
    results, _ = two_ranks
    _equals_one_process(results, "fsdp")
    assert results["sharded_local_rows"] == 96  # qkv (192, 64): each rank holds half the rows


def test_fsdp_bf16_mixed_precision(two_ranks):
    results, _ = two_ranks
    # bf16 compute changes the first loss in its third significant digit, no more (8 bits of mantissa)
    assert 0 < results["fsdp_bf16_first_loss_change"] < 1e-2
    assert results["fsdp_bf16_param_dtype"] == "torch.float32"  # the sharded master weights stay fp32


def test_tensor_parallel_equals_one_process(two_ranks):
    results, _ = two_ranks
    assert results["tp_forward"] <= 1e-5  # logits of order 1: float32 sums in another order
    assert results["tp_backward"] <= 1e-6


def test_qlora_resumes_under_fsdp(two_ranks):
    results, _ = two_ranks
    assert results["qlora_steps_after_resume"] == 1  # the resumed run made only the step left
    assert results["qlora_resume_vs_straight"] <= 1e-6


def test_reshard_to_one_rank_and_consolidate(two_ranks, tmp_path, monkeypatch):
    """The 2-rank FSDP checkpoint (AdamW8bit codes and absmax, GradScaler) loads on 1 rank with every
    value as the 2 ranks saved it and training goes on; consolidation gives the saved weights."""
    from slimkit.distributed.checkpoint import saved_world_size
    from slimkit.io import load

    _, out = two_ranks
    saved = torch.load(out / "params.pt")["saved"]
    assert saved_world_size(out / "ckpt") == 2
    assert saved["blocks.0.attn.qkv.weight.exp_avg_codes"].dtype == torch.uint8  # 8-bit state was sharded
    distributed.consolidate(out / "ckpt", workers.fresh_gpt(), tmp_path / "gpt")
    consolidated = dict(load(tmp_path / "gpt").named_parameters())
    assert all(torch.equal(p.detach(), saved[name]) for name, p in consolidated.items())

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                            MASTER_PORT=str(port)).items():
        monkeypatch.setenv(name, value)
    info = distributed.init("gloo", timeout_s=30)
    try:
        capture, counter = workers.Capture(), workers.StepCounter()
        config = TrainConfig(steps=4, lr=1e-2, schedule="constant", optimizer="adamw8bit", precision="fp16",
                             seed=0, checkpoint_dir=str(out / "ckpt"), resume=True)
        with pytest.warns(UserWarning, match="fp16"):
            distributed.train(workers.fresh_gpt(), workers.batches(), config, strategy="fsdp", info=info,
                              callbacks=[capture, counter])
    finally:
        distributed.destroy()
    assert counter.steps == 2
    assert sorted(capture.at_start) == sorted(saved)
    assert all(torch.equal(capture.at_start[name], value) for name, value in saved.items())


def test_dead_rank_stops_the_others(tmp_path):
    start = time.monotonic()
    assert workers.spawn(workers.dead_rank, 2, str(tmp_path), timeout_s=60) == [0, 3]
    result = json.loads((tmp_path / "dead.json").read_text())
    assert "another rank died or did not answer within 5 s" in result["message"]
    assert result["seconds"] < 10  # the collective timeout is 5 s; no hang
    assert time.monotonic() - start < 60


def test_missing_torchrun_environment(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(UserInputError, match="torchrun --standalone --nproc-per-node 2"):
        distributed.init()
    with pytest.raises(UserInputError, match="RANK, WORLD_SIZE"):
        distributed.check_env()


def test_bad_settings():
    with pytest.raises(UserInputError, match="param_dtype='fp8' is unknown"):
        distributed.FSDPConfig(param_dtype="fp8")
    with pytest.raises(UserInputError, match="unknown FSDP setting"):
        distributed.FSDPConfig.from_dict({"offload": True})
    with pytest.raises(UserInputError, match="on the CPU already"):
        distributed.shard(workers.fresh_gpt(), distributed.FSDPConfig(cpu_offload=True))
    with pytest.raises(UserInputError, match="no ModuleList named blocks"):
        distributed.shard(torch.nn.Linear(2, 2))
    with pytest.raises(UserInputError, match="does not split evenly over 3 ranks"):
        distributed.RankShare([(torch.zeros(4, 2), torch.zeros(4))], 0, 3).next()


def test_sampled_batches_split_an_epoch_and_resume():
    from torch.utils.data import TensorDataset

    dataset = TensorDataset(torch.arange(20))
    ranks = [distributed.SampledBatches(dataset, 5, rank, 2, seed=3) for rank in range(2)]
    epoch = [torch.cat([r.next()[0] for _ in range(2)]) for r in ranks]  # 2 batches of 5 per rank = 20
    assert sorted(torch.cat(epoch).tolist()) == list(range(20))  # disjoint ranks, the whole dataset
    state = ranks[0].state_dict()
    next_epoch = ranks[0].next()[0]
    assert state == {"epoch": 0, "taken": 2} and ranks[0].epoch == 1
    assert not torch.equal(torch.sort(next_epoch).values, torch.sort(epoch[0][:5]).values)  # reshuffled
    again = distributed.SampledBatches(dataset, 5, 0, 2, seed=3)
    again.load_state_dict(state)
    assert torch.equal(again.next()[0], next_epoch)
    with pytest.raises(UserInputError, match="larger than this rank's share"):
        distributed.SampledBatches(dataset, 11, 0, 2)
