import copy

import pytest
import torch
from torch import nn

from slimkit.models import GPT, GPTConfig
from slimkit.quantization import WeightQuantConfig, quantize
from slimkit.calibration.layer_inputs import sequential_inputs
from tests.reference.calibrate import naive_layer_inputs


def _rtn_swap(model, name, layer):
    """What quantize does between layers: swap in a quantized copy, so later inputs change."""
    single = nn.Sequential(copy.deepcopy(layer))
    quantize(single, WeightQuantConfig("int3", group_size=16))
    model.set_submodule(name, single[0])


def _naive_sequence(model, names, calib, **options):
    out = []
    for name in names:
        layer = model.get_submodule(name)
        out.append(naive_layer_inputs(model, layer, calib, **options))
        _rtn_swap(model, name, layer)
    return out


def _fast_sequence(model, names, calib, **options):
    out = []
    chosen = [(name, model.get_submodule(name)) for name in names]
    for name, layer, stats in sequential_inputs(model, chosen, calib, **options):
        out.append((stats.hessian, stats.sample, stats.tokens))
        _rtn_swap(model, name, layer)
    return out


def _assert_same(fast, naive):
    assert len(fast) == len(naive)
    for (h1, s1, t1), (h2, s2, t2) in zip(fast, naive):
        assert t1 == t2
        assert torch.equal(h1, h2) and torch.equal(s1, s2)  # bit for bit: the same tensors reach each layer


def test_block_replay_gives_the_statistics_of_running_from_the_start():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=3, n_embd=32, n_head=2)).eval()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]
    calib = [torch.randint(0, 256, (2, 24)) for _ in range(3)]
    naive = _naive_sequence(copy.deepcopy(model), names, calib)
    _assert_same(_fast_sequence(model, names, calib), naive)


def _padded_batches(vocab, batches=3, rows=3, length=12):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(batches):
        mask = torch.ones(rows, length, dtype=torch.long)
        for r in range(1, rows):
            mask[r, length - 3 * r:] = 0  # right padding of different lengths
        out.append({"input_ids": torch.randint(0, vocab, (rows, length), generator=g), "attention_mask": mask})
    return out


@pytest.mark.parametrize("skip_padding", [True, False])
def test_bert_groups_query_key_value_and_matches_the_naive_pass(skip_padding):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=48, max_position_embeddings=32)
    model = transformers.BertModel(config).eval()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    calib = _padded_batches(60)
    naive = _naive_sequence(copy.deepcopy(model), names, calib, skip_padding=skip_padding)
    fast = _fast_sequence(model, names, calib, skip_padding=skip_padding)
    _assert_same(fast, naive)
    real = sum(int(b["attention_mask"].sum()) for b in calib)
    assert fast[0][2] == (real if skip_padding else 3 * 3 * 12)


def test_a_decoder_with_a_key_value_cache_replays_each_block_from_a_fresh_copy():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=60, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    model = transformers.LlamaForCausalLM(config).eval()  # use_cache=True: blocks receive a mutable cache
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]
    calib = [torch.randint(0, 60, (2, 10)) for _ in range(2)]
    naive = _naive_sequence(copy.deepcopy(model), names, calib)
    _assert_same(_fast_sequence(model, names, calib), naive)


def test_the_module_and_the_activation_calibrate_function_have_distinct_names():
    import slimkit.calibration.layer_inputs as module
    from slimkit.quantization import calibrate
    from slimkit.quantization.activation.static import calibrate as activation_calibrate

    # the module was calibrate.py: `import slimkit.quantization.calibrate as m` gave the function
    assert module.sequential_inputs is sequential_inputs
    assert calibrate is activation_calibrate
