import pytest

from slimkit.errors import UserInputError
from slimkit.pruning import PruneConfig


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_sparsity_outside_zero_one_is_an_error(sparsity):
    with pytest.raises(UserInputError, match=rf"sparsity={sparsity} must lie in \[0, 1\)"):
        PruneConfig(sparsity=sparsity)


def test_bad_values_name_the_field():
    with pytest.raises(UserInputError, match=r"ratio=1.0 must lie in \[0, 1\)"):
        PruneConfig(structured=True, ratio=1.0)
    with pytest.raises(UserInputError, match="structured=True needs ratio > 0"):
        PruneConfig(structured=True)
    with pytest.raises(UserInputError, match=r"nm=\(4, 2\): need whole numbers 0 < N < M"):
        PruneConfig(nm=(4, 2))
    with pytest.raises(UserInputError, match="'bn_scale' is not among the unstructured importances"):
        PruneConfig(sparsity=0.5, method="bn_scale")
    with pytest.raises(UserInputError, match="'wanda' compares weights within a layer"):
        PruneConfig(sparsity=0.5, method="wanda", scope="global")
    with pytest.raises(UserInputError, match=r"layer_sparsity\['fc\*'\]=1.2"):
        PruneConfig(layer_sparsity={"fc*": 1.2})


def test_round_trips_through_a_dict_and_refuses_unknown_keys():
    config = PruneConfig(sparsity=0.5, method="wanda", nm=(2, 4), layer_sparsity={"head": 0.0}, exclude="head")
    assert PruneConfig.from_dict(config.to_dict()) == config
    with pytest.raises(UserInputError, match="unknown pruning setting"):
        PruneConfig.from_dict({"sparsity": 0.5, "sparstiy": 0.9})
