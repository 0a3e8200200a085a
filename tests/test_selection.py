import pytest
from torch import nn

from slimkit.errors import UserInputError
from slimkit.models import from_spec
from slimkit.naming import closest_names
from slimkit.pruning.modules import PrunedLinear
from slimkit.quantization.activation import ActivationQuantConfig
from slimkit.selection import as_patterns, select_layers

# the Linear layers of from_spec("gpt:n_layer=2,n_embd=64"), in module order, written out by hand
BLOCK = ("attn.qkv", "attn.proj", "mlp.0", "mlp.2")
LINEARS = [f"blocks.{i}.{layer}" for i in range(2) for layer in BLOCK] + ["lm_head"]
TIED = "doing it would store it twice"


def select(model, include=(), exclude=(), types=(nn.Linear,), **kwargs):
    return select_layers(model, include, exclude, types, action="to test", tied=TIED, **kwargs)


@pytest.fixture
def gpt():
    return from_spec("gpt:n_layer=2,n_embd=64")


def test_empty_include_chooses_every_untied_linear(gpt):
    chosen, skipped = select(gpt)
    assert [name for name, _ in chosen] == LINEARS[:-1]
    assert all(module is gpt.get_submodule(name) for name, module in chosen)
    assert skipped == {"lm_head": f"weight tied to wte.weight; {TIED}"}


def test_patterns_match_the_full_dotted_name(gpt):
    chosen, skipped = select(gpt, include=("*.attn.*", "blocks.1.mlp.?"), exclude=("blocks.0.attn.proj",))
    assert [name for name, _ in chosen] == ["blocks.0.attn.qkv", "blocks.1.attn.qkv", "blocks.1.attn.proj",
                                            "blocks.1.mlp.0", "blocks.1.mlp.2"]
    assert skipped["blocks.0.attn.proj"] == "matched by exclude ['blocks.0.attn.proj']"
    assert skipped["blocks.0.mlp.0"] == "not matched by include ['*.attn.*', 'blocks.1.mlp.?']"
    assert set(chosen_names := [n for n, _ in chosen]).isdisjoint(skipped) and \
        sorted(chosen_names + list(skipped)) == sorted(LINEARS)
    # "qkv" alone names no layer: a pattern is matched against the whole name, not its last part
    with pytest.raises(UserInputError, match="include pattern 'qkv' matches no Linear layer"):
        select(gpt, include=("qkv",))


def test_types_include_subclasses_and_embeddings(gpt):
    gpt.blocks[0].mlp[0] = PrunedLinear(64, 256)
    chosen, skipped = select(gpt, types=(nn.Linear, nn.Embedding))
    assert [name for name, _ in chosen] == ["wpe"] + LINEARS[:-1]
    assert set(skipped) == {"wte", "lm_head"}  # each tied to the other
    assert skipped["wte"] == f"weight tied to lm_head.weight; {TIED}"


def test_own_rules_and_the_include_name_appear_in_the_reasons(gpt):
    chosen, skipped = select(gpt, include=("blocks.*",), include_name="targets",
                             leave_out=lambda name, m: "too wide" if m.out_features > 128 else None)
    assert [name for name, _ in chosen] == ["blocks.0.attn.proj", "blocks.0.mlp.2", "blocks.1.attn.proj",
                                            "blocks.1.mlp.2"]
    assert skipped == {"blocks.0.attn.qkv": "too wide", "blocks.0.mlp.0": "too wide", "blocks.1.attn.qkv": "too wide",
                       "blocks.1.mlp.0": "too wide", "lm_head": "not matched by targets ['blocks.*']"}


def test_multihead_attention_out_proj_is_left_out_with_the_reason():
    model = nn.Sequential(nn.Linear(8, 8), nn.MultiheadAttention(8, 2))
    chosen, skipped = select(model)
    assert [name for name, _ in chosen] == ["0"]
    assert skipped == {"1.out_proj": "inside nn.MultiheadAttention '1', which reads this layer's weight itself"}


@pytest.mark.parametrize(("include", "exclude", "message"), [
    (("blocks.*.mpl.*",), (), "include pattern 'blocks.*.mpl.*' matches no Linear layer; closest names: "
                              "blocks.0.mlp.0, blocks.0.mlp.2, blocks.0.attn.qkv"),
    (("*.qkvv",), (), "include pattern '*.qkvv' matches no Linear layer; closest names: blocks.0.attn.qkv, "),
    ((), ("lm_haed",), "exclude pattern 'lm_haed' matches no Linear layer; closest names: lm_head, "),
])
def test_a_pattern_matching_nothing_names_it_and_real_layers(gpt, include, exclude, message):
    with pytest.raises(UserInputError) as info:
        select(gpt, include, exclude)
    assert str(info.value).startswith(message)


def test_a_model_without_candidates_is_rejected():
    with pytest.raises(UserInputError, match=r"^LayerNorm has no nn.Linear or nn.Conv2d layer to test; its layers "
                       r"with weights are LayerNorm \(1\)$"):
        select(nn.LayerNorm(4), types=(nn.Linear, nn.Conv2d))


def test_a_model_whose_candidates_are_all_left_out_is_rejected_with_what_it_has(gpt):
    # a transform that would touch nothing is an error, not a silent no-op
    with pytest.raises(UserInputError, match=r"no layer of GPT is left to test: .*blocks.0.attn.qkv: matched by "
                       r"exclude.*its layers with weights are Linear \(9\), LayerNorm \(5\), Embedding \(2\)"):
        select(gpt, exclude=("blocks.*",))


def test_closest_names_lists_each_block_layer_once_by_its_best_index():
    assert closest_names("blocks.1.mlp.00", LINEARS, n=3) == ["blocks.1.mlp.0", "blocks.1.mlp.2", "blocks.1.attn.qkv"]


def test_a_lone_string_is_one_pattern_in_every_config():
    assert as_patterns("blocks.*") == ("blocks.*",) and as_patterns(["a", "b"]) == ("a", "b")
    config = ActivationQuantConfig(include="net.*", exclude=["net.5"])  # was ('n', 'e', 't', '.', '*')
    assert (config.include, config.exclude) == (("net.*",), ("net.5",))
