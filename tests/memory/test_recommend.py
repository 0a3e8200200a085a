"""Budget parsing and the cheapest set-up that fits."""

import pytest

from slimkit.errors import UserInputError
from slimkit.memory import TrainSetup, plan, preset
from slimkit.memory.recommend import parse_bytes, recommend


def test_parse_bytes():
    assert parse_bytes("24GB") == 24e9
    assert parse_bytes("1.5 GiB") == 1.5 * 2**30
    with pytest.raises(UserInputError, match="not a size"):
        parse_bytes("24 potatoes")


def test_recommendation_fits_and_is_cheapest():
    shape = preset("gpt2-1.5b")
    setup = TrainSetup(precision="amp-bf16", batch=32, seq=1024, device="cuda")
    budget = 80e9
    assert plan(shape, setup).peak > budget
    found = recommend(shape, setup, budget)
    assert found.plan.peak <= budget
    # the same effective batch
    assert found.setup.batch * found.setup.accumulate == 32
    # nothing costlier than needed: halving the micro-batch alone fits, so no LoRA or bf16 weights
    assert not found.setup.lora and found.setup.precision == "amp-bf16"


def test_qlora_for_65b_on_48gb():
    found = recommend(preset("llama-65b"), TrainSetup(precision="bf16", batch=1, seq=512, device="cuda"), 48e9)
    assert found.setup.qlora and found.plan.peak <= 48e9


def test_nothing_fits():
    assert recommend(preset("llama-65b"), TrainSetup(batch=1, seq=512), 1e9) is None
