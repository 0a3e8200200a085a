import pytest
import torch

from slimkit.errors import UserInputError
from slimkit.models import from_spec
from slimkit.pruning.sensitivity import sensitivity


def test_each_layer_is_swept_alone_and_the_model_is_left_unchanged(tmp_path):
    mlp = from_spec("mlp:hidden=32-16").eval()
    x = torch.randn(32, 64)
    reference = mlp(x).detach()
    before = {k: v.clone() for k, v in mlp.state_dict().items()}

    def fidelity(model):  # 1 at the dense model, falling as a layer is pruned
        return float(torch.cosine_similarity(model(x).flatten(), reference.flatten(), dim=0))

    result = sensitivity(mlp, fidelity, levels=(0.0, 0.5, 0.9))
    assert list(result.curves) == ["net.1", "net.3", "net.5"] and result.baseline == pytest.approx(1.0)
    for values in result.curves.values():
        assert values[0] == pytest.approx(1.0) and values[2] < values[0]
    assert all(torch.equal(before[k], v) for k, v in mlp.state_dict().items())
    assert "| net.1 |" in result.table() and result.plot(tmp_path / "s.png").stat().st_size > 1000
    with pytest.raises(UserInputError, match=r"levels=\(0.5, 1.0\): every sparsity must lie in \[0, 1\)"):
        sensitivity(mlp, fidelity, levels=(0.5, 1.0))
