"""Layer-by-layer quantization of a Hugging Face folder equals quantizing the whole model in memory."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from slimkit.errors import UserInputError  # noqa: E402
from slimkit.manifest import get_manifest  # noqa: E402
from slimkit.quantization import WeightQuantConfig  # noqa: E402
from slimkit.quantization.api import quantize  # noqa: E402
from slimkit.quantization.layerwise import quantize_folder  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=False)
    path = tmp_path_factory.mktemp("llama")
    # small shards, so that layers are spread over several files as in a real checkpoint
    transformers.LlamaForCausalLM(config).save_pretrained(path, max_shard_size="60KB")
    assert (path / "model.safetensors.index.json").exists()
    return path


@pytest.mark.parametrize("method", ["rtn", pytest.param("gptq", marks=pytest.mark.slow)])
@torch.no_grad()
def test_same_codes_as_whole_model_in_memory(folder, method):
    calib = [torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    config = WeightQuantConfig("int4", group_size=32, method=method, exclude=("lm_head",))
    whole = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
    quantize(whole, config, calib=calib if method == "gptq" else None)
    layered = quantize_folder(folder, config, calib if method == "gptq" else None)
    expected, got = whole.state_dict(), layered.state_dict()
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():  # same operations on the same inputs: bit for bit
        assert torch.equal(got[name], tensor), name
    ids = calib[0]
    assert torch.equal(layered(ids).logits, whole(ids).logits)
    assert {e["layer"] for e in get_manifest(layered) if "skipped" not in e} == \
        {e["layer"] for e in get_manifest(whole) if "skipped" not in e}


@torch.no_grad()
def test_written_layer_by_layer_the_artifact_holds_the_same_codes_and_no_layer_stays_in_memory(folder, tmp_path):
    import slimkit
    from slimkit.io import read_meta, saving

    config = WeightQuantConfig("int4", group_size=32, method="rtn")
    in_memory = quantize_folder(folder, config)
    seen = []
    with saving(tmp_path / "q") as writer:
        rest = quantize_folder(folder, config, writer=writer, prepare=lambda layer: seen.append(type(layer).__name__))
        assert all(not list(layer.parameters()) for layer in rest.model.layers)  # dropped once written
        writer.finish(rest, companions=folder)
    assert seen == ["LlamaDecoderLayer", "LlamaDecoderLayer"]
    shards = read_meta(tmp_path / "q")["weights"]["shards"]
    assert [s["file"] for s in shards] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert (tmp_path / "q" / "config.json").exists()  # the folder's companions travel with it
    got = slimkit.load(tmp_path / "q")
    assert got.state_dict().keys() == in_memory.state_dict().keys()
    for name, tensor in in_memory.state_dict().items():
        assert torch.equal(got.state_dict()[name], tensor), name
    ids = torch.randint(0, 128, (1, 12))
    assert torch.equal(got(ids).logits, in_memory(ids).logits)
    assert get_manifest(got) == get_manifest(in_memory)


def test_refuses_before_reading_when_a_layer_does_not_fit(folder):
    with pytest.raises(UserInputError) as info:
        quantize_folder(folder, WeightQuantConfig("int4", method="rtn"), available_bytes=lambda: 100_000)
    message = str(info.value)
    assert "model.layers." in message and "GiB" in message and "available" in message


@pytest.mark.slow  # GPTQ over a tiny Llama folder twice, through the command line and the API: ~10 s
def test_the_command_line_writes_what_the_api_computes_on_the_folders_own_text(tmp_path, capsys):
    import slimkit
    from slimkit.cli import main
    from slimkit.models import hf_tasks
    from tests.reference.hf_folders import folder as hf_folder, tokenizer

    source = hf_folder("llama", tmp_path / "llama", tokenizer())  # with a tokenizer: the causal-LM task's text
    argv = ["quantize", str(source), "--weights", "int4", "--group-size", "32", "--method", "gptq",
            "--calib-batches", "2", "--layerwise", "--keep-dequant", "--out", str(tmp_path / "q")]
    assert main(argv) == 0
    assert "wrote " + str(tmp_path / "q") + " (layer by layer" in capsys.readouterr().out
    shell = slimkit.load(source)
    calib = hf_tasks.hf_task(shell, source).calibration(2)
    expected = quantize_folder(source, WeightQuantConfig("int4", group_size=32, method="gptq", calibration_batches=2),
                               calib)
    got = slimkit.load(tmp_path / "q")
    for name, tensor in expected.state_dict().items():
        assert torch.equal(got.state_dict()[name], tensor), name
    assert main(["quantize", str(source), "--weights", "int8", "--activations", "int8", "--layerwise",
                 "--out", str(tmp_path / "a")]) == 2
    assert "--layerwise quantizes the weights" in capsys.readouterr().err
