"""The memory planner's per-rank model states under ZeRO stages, against the ZeRO paper's figures."""

import json

import pytest

from slimkit.memory import TrainSetup, from_params, plan
from slimkit.memory.estimate import model_state_bytes

pytestmark = pytest.mark.distributed

PSI = 7_500_000_000  # ZeRO (Rajbhandari et al. 2020), figure 1: 7.5B parameters, Adam (K = 12), 64 ranks


@pytest.mark.parametrize("stage, gigabytes", [(0, 120.0), (1, 31.4), (2, 16.6), (3, 1.9)])
def test_zero_paper_figure_1(stage, gigabytes):
    p = plan(from_params(PSI), TrainSetup(precision="amp-bf16", zero_stage=stage, world_size=64, batch=1))
    assert p.model_states() / 1e9 == pytest.approx(gigabytes, abs=0.05)
    assert p.to_dict()["model_states"] == int(p.model_states())


def test_zero_formulas_by_hand():
    # (2 + 2 + K) Psi, 2 Psi + 2 Psi + K Psi / N, 2 Psi + (2 + K) Psi / N, (2 + 2 + K) Psi / N
    n, k = 8, 12
    expected = {0: 16 * PSI, 1: 4 * PSI + k * PSI / n, 2: 2 * PSI + (2 + k) * PSI / n, 3: 16 * PSI / n}
    for stage, value in expected.items():
        states = model_state_bytes(from_params(PSI), TrainSetup(precision="amp-fp16", zero_stage=stage, world_size=n))
        assert sum(states.values()) == pytest.approx(value)


def test_fp32_and_8bit_states_shard_the_same_way():
    shape = from_params(PSI)
    full = model_state_bytes(shape, TrainSetup(optimizer="adamw8bit"))
    stage3 = model_state_bytes(shape, TrainSetup(optimizer="adamw8bit", zero_stage=3, world_size=4))
    assert stage3 == pytest.approx({k: v / 4 for k, v in full.items()})
    one_rank = model_state_bytes(shape, TrainSetup(precision="fp32", zero_stage=3, world_size=1))
    assert one_rank == model_state_bytes(shape, TrainSetup(precision="fp32"))


def test_cli_prints_per_rank_model_states(capsys):
    from slimkit.cli import main

    assert main(["memory", "--params", "7.5e9", "--precision", "amp-bf16", "--zero-stage", "2", "--world-size",
                 "64", "--batch", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model_states"] / 1e9 == pytest.approx(16.6, abs=0.05)
    assert (out["setup"]["zero_stage"], out["setup"]["world_size"]) == (2, 64)
