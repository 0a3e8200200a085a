import copy

import pytest
import torch
from torch import nn

from slimkit.distillation import DistillConfig, FeatureCapture, distill, pseudo_label
from slimkit.distillation.losses import kd_loss
from slimkit.errors import UserInputError
from slimkit.manifest import get_manifest
from slimkit.models.gpt import GPT, GPTConfig
from slimkit.models.mlp import MLP, MLPConfig
from slimkit.training import TrainConfig, random_examples


def gpt(width=32, layers=2):
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=16, n_layer=layers, n_head=2, n_embd=width))


def token_batches(batch=4):
    x = torch.randint(0, 256, (64, 16), generator=torch.Generator().manual_seed(0))
    return random_examples(x, torch.roll(x, -1, 1), batch)


def test_hooks_capture_the_named_outputs():
    model = gpt()
    x = torch.randint(0, 256, (2, 16))
    with FeatureCapture(model, ["blocks.0", "blocks.1.mlp"]) as capture:
        model(x)
    h = model.wte(x) + model.wpe(torch.arange(16))
    h0 = model.blocks[0](h)
    torch.testing.assert_close(capture.captured["blocks.0"], h0)
    torch.testing.assert_close(capture.captured["blocks.1.mlp"], model.blocks[1].mlp(model.blocks[1].ln2(
        h0 + model.blocks[1].attn(model.blocks[1].ln1(h0)))))
    assert not model.blocks[0]._forward_hooks  # removed on exit


def test_offline_distillation_moves_the_student_towards_the_frozen_teacher():
    teacher, student = gpt(width=64), gpt(width=32)
    before_teacher = copy.deepcopy(teacher.state_dict())
    x = torch.randint(0, 256, (8, 16), generator=torch.Generator().manual_seed(5))

    def gap():
        with torch.no_grad():
            return kd_loss(student(x), teacher(x), 2.0).item()

    start = gap()
    result = distill(teacher, student, token_batches(), DistillConfig(alpha=1.0), TrainConfig(steps=30, lr=3e-3))
    assert gap() < 0.5 * start and result.steps == 30
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before_teacher.items())  # teacher untouched
    entry = get_manifest(student)[-1]
    assert entry["technique"] == "distillation" and entry["mode"] == "offline"


def test_reverse_distillation_a_small_teacher_guides_a_larger_student():
    teacher, student = gpt(width=16, layers=1), gpt(width=64)
    distill(teacher, student, token_batches(), DistillConfig(alpha=1.0), TrainConfig(steps=20, lr=3e-3))
    x = torch.randint(0, 256, (4, 16))
    with torch.no_grad():
        assert kd_loss(student(x), teacher(x), 1.0).item() < kd_loss(gpt(width=64)(x), teacher(x), 1.0).item()


def test_online_mode_trains_both_and_self_mode_uses_a_moving_average():
    teacher, student = gpt(), gpt(width=48)
    before = copy.deepcopy(teacher.state_dict())
    distill(teacher, student, token_batches(), DistillConfig(mode="online"), TrainConfig(steps=3))
    assert not torch.equal(before["wte.weight"], teacher.state_dict()["wte.weight"])
    student = gpt()
    distill(None, student, token_batches(), DistillConfig(mode="self", ema_decay=0.5), TrainConfig(steps=3))
    with pytest.raises(UserInputError, match="mode='self' distils the student from its own moving average"):
        distill(gpt(), student, token_batches(), DistillConfig(mode="self"), TrainConfig(steps=1))


def test_feature_distillation_learns_a_projection_between_widths():
    teacher, student = gpt(width=64), gpt(width=32)
    config = DistillConfig(alpha=1.0, features=(("blocks.1", "blocks.1"),), feature_weight=1.0, feature_loss="cosine")
    captured = {}

    class Grab:
        def on_train_start(self, state):
            captured["projections"] = state.model.projections

    distill(teacher, student, token_batches(), config, TrainConfig(steps=5), callbacks=[Grab()])
    projection = captured["projections"]["0"]
    assert isinstance(projection, nn.Linear) and tuple(projection.weight.shape) == (64, 32)


def test_relation_and_attention_terms_run_on_feature_pairs():
    config = DistillConfig(features=(("blocks.0", "blocks.1"),), relation="sp", relation_weight=1.0,
                           attention_weight=1.0)
    result = distill(gpt(width=64), gpt(), token_batches(), config, TrainConfig(steps=2))
    assert all(torch.isfinite(torch.tensor(result.losses)))


def test_teacher_outputs_are_cached_per_input():
    calls = []
    teacher = gpt(width=64)
    teacher.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randint(0, 256, (4, 16))
    batches = [(x, torch.roll(x, -1, 1))]  # one batch, cycled
    distill(teacher, gpt(), batches, DistillConfig(cache_teacher=True), TrainConfig(steps=4))
    assert len(calls) == 1


def test_pseudo_labels_keep_confident_teacher_predictions():
    teacher = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor([[5.0, 0, 0], [0, 5.0, 0]]))
    x = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0.01, 0, 0]])  # the last one is a near coin-flip
    kept, labels = pseudo_label(teacher, x, threshold=0.9)
    torch.testing.assert_close(kept, x[:2])
    assert labels.tolist() == [0, 1]
    with pytest.raises(UserInputError, match="threshold=1.5 must lie in"):
        pseudo_label(teacher, x, threshold=1.5)


def test_unlabelled_examples_get_only_the_distillation_loss():
    teacher, student = MLP(MLPConfig(hidden=(16,))), MLP(MLPConfig(hidden=(8,)))
    x = torch.randn(32, 64)
    y = torch.full((32,), -100)  # nothing labelled: the hard-label term must vanish, not turn NaN
    result = distill(teacher, student, random_examples(x, y, 8), DistillConfig(alpha=0.5), TrainConfig(steps=3))
    assert all(torch.isfinite(torch.tensor(result.losses)))


def test_output_shape_mismatch_names_both_shapes():
    teacher = MLP(MLPConfig(hidden=(16,), classes=10))
    student = MLP(MLPConfig(hidden=(8,), classes=5))
    data = random_examples(torch.randn(16, 64), torch.zeros(16, dtype=torch.long), 4)
    with pytest.raises(UserInputError, match=r"teacher output \(4, 10\) and student output \(4, 5\) differ"):
        distill(teacher, student, data, DistillConfig(), TrainConfig(steps=1))


def test_unknown_feature_layer_lists_the_closest_names():
    config = DistillConfig(features=(("blocks.1.mlpp", "blocks.1.mlp"),), feature_weight=1.0)
    with pytest.raises(UserInputError, match=r"the student has no module named 'blocks.1.mlpp'; closest names: "
                                             r"blocks.1.mlp"):
        distill(gpt(width=64), gpt(), token_batches(), config, TrainConfig(steps=1))


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=0), "temperature=0 must be positive"),
    (dict(alpha=1.5), r"alpha=1.5 must lie in \[0, 1\]"),
    (dict(mode="mutual"), "mode='mutual' is not one of offline, online, self"),
    (dict(output_loss="kl"), "output_loss='kl' is not one of kd, cosine, mse"),
    (dict(feature_weight=1.0), "feature_weight/attention_weight need features"),
    (dict(relation="rkd"), "relation='rkd' needs relation_weight > 0"),
])
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(UserInputError, match=message):
        DistillConfig(**kwargs)


def tiny_bert(layers: int):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(layers)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32)
    return transformers.BertModel(config)


def bert_batches():
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        ids = torch.randint(1, 100, (8, 12), generator=g)
        mask = torch.ones_like(ids)
        mask[:4, 7:] = 0  # padded sentences: their padding must not count
        batches.append({"input_ids": ids * mask, "attention_mask": mask})
    return batches


def test_hugging_face_encoder_is_distilled_on_its_hidden_states():
    teacher, student = tiny_bert(2).eval(), tiny_bert(1)
    batch = bert_batches()[0]
    real = batch["attention_mask"].bool()

    def gap():
        with torch.no_grad():
            s, t = student(**batch).last_hidden_state[real], teacher(**batch).last_hidden_state[real]
        return (1 - torch.nn.functional.cosine_similarity(s, t, dim=-1)).mean().item()

    start = gap()
    distill(teacher, student, bert_batches(), DistillConfig(output_loss="cosine"), TrainConfig(steps=40, lr=3e-3))
    assert gap() < 0.5 * start


def test_padding_positions_are_left_out_of_the_output_loss():
    from slimkit.distillation.distiller import Distillation

    teacher, student = tiny_bert(2).eval(), tiny_bert(1)
    module = Distillation(student, teacher, DistillConfig(output_loss="mse"), {})
    batch = bert_batches()[0]
    _, count = module.loss(batch)
    assert count == int(batch["attention_mask"].sum())  # 8 x 12 tokens minus 4 x 5 padding
