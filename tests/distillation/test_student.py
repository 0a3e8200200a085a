"""The student builder: a Hugging Face teacher's own config with fewer layers and a narrower MLP, initialised
from the teacher's weights."""

import pytest
import torch

from slimkit.distillation.student import smaller_student, student_from_spec
from slimkit.errors import UserInputError

transformers = pytest.importorskip("transformers")


def _teacher(layers=4):
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def test_fewer_layers_are_the_teachers_evenly_spaced_ones():
    teacher = _teacher(layers=5)
    student = smaller_student(teacher, depth=0.6)  # 3 of 5: layers 0, 2 and 4
    assert student.config.num_hidden_layers == 3 and student.config.intermediate_size == 64
    for i, source in enumerate((0, 2, 4)):
        ours, theirs = student.model.layers[i].state_dict(), teacher.model.layers[source].state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    # with every layer kept it is the teacher, computing the same
    same = smaller_student(teacher, depth=1.0)
    ids = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        assert torch.equal(same(ids).logits, teacher(ids).logits)


def test_a_narrower_mlp_keeps_the_channels_with_the_largest_weights():
    teacher = _teacher()
    student = student_from_spec(teacher, "teacher:depth=0.5,mlp=0.25")
    assert student.config.num_hidden_layers == 2 and student.config.intermediate_size == 16
    mlp, source = student.model.layers[1].mlp, teacher.model.layers[3].mlp
    score = (source.gate_proj.weight.abs().sum(1) + source.up_proj.weight.abs().sum(1)
             + source.down_proj.weight.abs().sum(0))
    channels = score.argsort(descending=True)[:16].sort().values
    assert torch.equal(mlp.gate_proj.weight, source.gate_proj.weight[channels])
    assert torch.equal(mlp.down_proj.weight, source.down_proj.weight[:, channels])
    ids = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        assert student(ids).logits.shape == teacher(ids).logits.shape


def test_bad_specs_are_one_clear_error():
    with pytest.raises(UserInputError, match="unknown key 'width'"):
        student_from_spec(_teacher(), "teacher:width=0.5")
    with pytest.raises(UserInputError, match=r"depth=1.5: a fraction of the teacher's"):
        smaller_student(_teacher(), depth=1.5)
    with pytest.raises(UserInputError, match="not a Hugging Face decoder"):
        smaller_student(torch.nn.Linear(2, 2), depth=0.5)
