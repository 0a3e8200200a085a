"""Loading resolves class names only through the allow-list; user classes are saved once registered."""

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import slimkit
from slimkit import ArtifactError, UserInputError, load, register_class, save
from slimkit.description import digest
from slimkit.models import MLP, MLPConfig
from slimkit.quantization import WeightQuantConfig, quantize
from tests.security.hostile import edit_meta

FIXTURES = "tests/fixtures/v2"


@pytest.mark.parametrize("name", ["mlp", "int4", "lora"])
def test_format_2_artifacts_load_with_identical_outputs_and_one_warning(name):
    io = load_file(f"{FIXTURES}/{name}.io.safetensors")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load(f"{FIXTURES}/{name}")
    assert any("description is not" in str(w.message) for w in caught)
    with torch.no_grad():
        assert torch.equal(model(io["x"]), io["y"])  # bit-exact: same tensors, same modules


def test_format_2_artifact_with_a_non_allow_listed_import_path_is_refused(tmp_path):
    import shutil

    shutil.copytree(f"{FIXTURES}/mlp", tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "slimkit.json").read_text())
    meta["architecture"]["config_class"] = "os:system"
    (tmp_path / "a" / "slimkit.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r"architecture.config_class: class 'os:system' is not on"):
        load(tmp_path / "a")


@pytest.mark.parametrize("field, value", [
    ("class", "os:system"), ("class", "subprocess:getoutput"), ("class", "runpy:run_path"),
    ("class", "shutil:rmtree"), ("class", "builtins:eval"), ("config_class", "slimkit.naming:closest_names"),
    ("class", "GPT2Tokenizer"), ("class", "../../etc/passwd"), ("class", 3),
])
def test_architecture_names_outside_the_allow_list_are_refused(tmp_path, field, value):
    path = save(MLP(MLPConfig(16, (8,), 4)), tmp_path / "a")
    edit_meta(path, lambda m: m["architecture"].__setitem__(field, value))
    with pytest.raises(ArtifactError, match=f"architecture.{field}: "):
        load(path)


def test_replaced_module_names_outside_the_allow_list_are_refused(tmp_path):
    model = quantize(MLP(MLPConfig(16, (32,), 4)), WeightQuantConfig("int4", group_size=16))
    path = save(model, tmp_path / "a")
    edit_meta(path, lambda m: m["replaced_modules"]["net.1"].__setitem__("class", "posix:system"))
    with pytest.raises(ArtifactError, match=r"replaced_modules.net.1.class: class 'posix:system' is not"):
        load(path)


def test_config_keys_are_checked_against_the_config_class(tmp_path):
    path = save(MLP(MLPConfig(16, (8,), 4)), tmp_path / "a")
    edit_meta(path, lambda m: m["architecture"]["config"].__setitem__("__class__", "x"))
    with pytest.raises(ArtifactError, match=r"architecture.config.'__class__': not a field of MLPConfig"):
        load(path)
    edit_meta(path, lambda m: (m["architecture"]["config"].pop("__class__"),
                               m["architecture"]["config"].__setitem__("hidden", "8")))
    with pytest.raises(ArtifactError, match=r"architecture.config.hidden: '8' does not fit"):
        load(path)


class Plain(nn.Module):
    """A user model without a config dataclass: rebuilt from its recorded constructor arguments."""

    def __init__(self, width: int, depth: int = 1):
        super().__init__()
        self.layers = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])

    def forward(self, x):
        return self.layers(x)


def test_unregistered_user_class_is_refused_at_save_with_the_fix(tmp_path):
    class Local(Plain):
        pass

    with pytest.raises(UserInputError, match=r"slimkit.register_class\(.*Local\)"):
        save(Local(4), tmp_path / "a", init_args={"width": 4})
    assert not (tmp_path / "a").exists()


def test_registered_class_round_trips_with_init_args(tmp_path):
    register_class(Plain, name="tests.Plain")
    model = quantize(Plain(32, depth=2), WeightQuantConfig("int4", group_size=16))
    loaded = load(save(model, tmp_path / "a", init_args={"width": 32, "depth": 2}))
    x = torch.rand(3, 32)
    assert isinstance(loaded, Plain)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_registered_factory_builds_the_model(tmp_path):
    class Wide(Plain):
        pass

    calls = []

    def wide(size: int):  # a torchvision-style builder: the class's constructor takes other arguments
        calls.append(size)
        return Wide(size, depth=3)

    register_class(Wide, name=f"tests.wide.{id(Wide)}", factory=wide)  # a new class each run
    model = Wide(8, depth=3)
    loaded = load(save(model, tmp_path / "a", init_args={"size": 8}))
    assert calls == [8, 8]  # once on the meta device to check shapes, once for real
    x = torch.rand(2, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_register_class_refuses_taken_names():
    with pytest.raises(UserInputError, match="already resolves"):
        register_class(Plain, name="QuantLinear")
    with pytest.raises(UserInputError, match="takes a class"):
        register_class(lambda: None)


def test_transformers_model_round_trips_and_code_choosing_keys_are_refused(tmp_path):
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                                 vocab_size=99, max_position_embeddings=16)).eval()
    path = save(model, tmp_path / "a")
    ids = torch.randint(0, 99, (2, 8))
    with torch.no_grad():
        assert torch.equal(load(path)(ids).last_hidden_state, model(ids).last_hidden_state)
    for key, value in [("auto_map", {"AutoModel": "evil.Model"}), ("_attn_implementation", "kernels/evil"),
                       ("quantization_config", {"quant_method": "bitsandbytes"})]:
        edit_meta(path, lambda m: m["architecture"]["config"].__setitem__(key, value))
        with pytest.raises(ArtifactError, match=f"keys \\['{key}'\\] choose code to run"):
            load(path)
        edit_meta(path, lambda m: m["architecture"]["config"].pop(key))
    edit_meta(path, lambda m: m["architecture"].__setitem__("class", "BertTokenizer"))
    with pytest.raises(ArtifactError, match="not on slimkit's allow-list"):
        load(path)


def test_digest_covers_the_description(tmp_path):
    path = save(MLP(MLPConfig(16, (8,), 4)), tmp_path / "a")
    meta = json.loads((path / "slimkit.json").read_text())
    assert meta["format_version"] == 3 and meta["integrity"]["sha256"] == digest(meta)
    assert slimkit.io.FORMAT_VERSION == 3


@pytest.mark.parametrize("text, message", [
    ("[" * 1000 + "]" * 1000, "nest"),
    ('{"vocab_size": 1' + "0" * 5000 + ', "quantization_config": {}}', "digit|long|number"),
    ('{"vocab_size": 8}', "quantization_config"),
    ("[1, 2]", "quantization_config"),
])
def test_a_foreign_checkpoints_config_is_parsed_with_bounds(tmp_path, text, message):
    """compressed-tensors/GPTQ/AWQ folders' config.json go through the same bounded parser as slimkit.json."""
    from slimkit.untrusted import read_quantized_config

    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ArtifactError, match=message):
        read_quantized_config(tmp_path)


def test_a_config_read_from_a_gguf_keeps_its_name_and_loads(tmp_path):
    # transformers records a GGUF's model name as _model_name_or_path (SmolLM2's zoo folder has one): a name,
    # which chooses no code; the same key holding anything but a string is still refused
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                         num_attention_heads=2, max_position_embeddings=16)).eval()
    model.config._model_name_or_path = "Smollm2 135M 8k Lc100K Mix1 Ep2"
    path = save(model, tmp_path / "a")
    assert load(path).config._model_name_or_path == "Smollm2 135M 8k Lc100K Mix1 Ep2"
    edit_meta(path, lambda m: m["architecture"]["config"].__setitem__("_model_name_or_path", {"x": 1}))
    with pytest.raises(ArtifactError, match="keys \\['_model_name_or_path'\\] choose code to run"):
        load(path)
