import pytest

from slimkit.adapters import LoRAConfig
from slimkit.errors import UserInputError


def test_parse_reads_every_kind_of_value():
    config = LoRAConfig.parse("r=16, alpha=32,dropout=0.05,targets=*.qkv|*.proj,base=nf4,double_quant=false,"
                              "group_size=128,dtype=bfloat16,init=gaussian,exclude=blocks.0.*")
    assert config == LoRAConfig(rank=16, alpha=32.0, dropout=0.05, targets=("*.qkv", "*.proj"), base="nf4",
                                double_quant=False, group_size=128, dtype="bfloat16", init="gaussian",
                                exclude=("blocks.0.*",))
    assert config.scale == 2.0


def test_dict_round_trip():
    config = LoRAConfig(rank=4, targets=("*.query",), base="nf4")
    assert LoRAConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("text, message", [
    ("r=8,rnk=4", "unknown --lora key 'rnk'; known keys: r, rank, alpha"),
    ("r=8,alpha", "--lora item 'alpha' is not key=value"),
    ("r=eight", "--lora rank='eight': expected a whole number"),
    ("double_quant=maybe", "--lora double_quant='maybe': expected true or false"),
    ("base=nf5", "LoRA base='nf5': choose one of float, nf4"),
])
def test_parse_errors_name_the_problem(text, message):
    with pytest.raises(UserInputError, match=message.replace("|", r"\|").replace("(", r"\(")):
        LoRAConfig.parse(text)


@pytest.mark.parametrize("kwargs, message", [
    ({"rank": 0}, "LoRA rank=0: must be a positive whole number"),
    ({"rank": -2}, "LoRA rank=-2: must be a positive whole number"),
    ({"alpha": 0}, "LoRA alpha=0: must be positive"),
    ({"dropout": 1.0}, r"LoRA dropout=1.0: must lie in \[0, 1\)"),
    ({"dtype": "float16"}, "LoRA dtype='float16': choose one of float32, bfloat16"),
    ({"init": "pissa"}, "LoRA init='pissa': choose one of default, gaussian"),
    ({"group_size": 0}, "LoRA group_size=0: must be a positive whole number"),
])
def test_bad_values_are_rejected(kwargs, message):
    with pytest.raises(UserInputError, match=message):
        LoRAConfig(**kwargs)


def test_from_dict_rejects_unknown_settings():
    with pytest.raises(UserInputError, match="unknown LoRA setting"):
        LoRAConfig.from_dict({"rank": 4, "lora_rank": 4})
