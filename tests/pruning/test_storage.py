import pytest
import torch

from slimkit.errors import ArtifactError
from slimkit.formats.sparse import decode_sparse, encode_sparse
from slimkit.io import artifact_bytes, load, save
from slimkit.models import from_spec
from slimkit.pruning import PruneConfig, prune
from tests.security.hostile import edit_meta


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("density, expected", [(0.3, "bitmask"), (0.01, "csr")])
def test_sparse_encodings_decode_bit_for_bit(dtype, density, expected):
    t = torch.randn(64, 96).to(dtype)
    t[torch.rand(t.shape) > density] = 0
    t[0, 0] = -0.0  # a signed zero is kept as a value, so decoding is exact to the bit
    encoding, parts = encode_sparse(t)
    decoded = decode_sparse(encoding, parts, t.shape, dtype)
    assert encoding == expected
    assert torch.equal(decoded.view(torch.int16 if t.element_size() == 2 else torch.int32),
                       t.view(torch.int16 if t.element_size() == 2 else torch.int32))


def test_dense_and_integer_tensors_stay_raw():
    assert encode_sparse(torch.randn(64, 64)) is None
    assert encode_sparse(torch.zeros(64, 64, dtype=torch.int8)) is None


def test_artifact_bytes_fall_with_sparsity_and_load_exactly(tmp_path):
    x = torch.randn(4, 64)
    sizes = []
    for sparsity in (0.0, 0.5, 0.9):
        mlp = from_spec("mlp:hidden=256-128").eval()
        if sparsity:
            prune(mlp, PruneConfig(sparsity=sparsity, scope="global"))
        directory = save(mlp, tmp_path / f"s{sparsity}")
        sizes.append(artifact_bytes(directory))
        restored = load(directory)
        assert torch.equal(restored(x), mlp(x))
        assert restored.state_dict().keys() == mlp.state_dict().keys()
    assert sizes[1] < 0.75 * sizes[0] and sizes[2] < 0.2 * sizes[0]


def test_a_tensor_that_cannot_be_decoded_names_the_file_and_tensor(tmp_path):
    mlp = from_spec("mlp:hidden=256")
    prune(mlp, PruneConfig(sparsity=0.9))
    directory = save(mlp, tmp_path / "m")
    # re-signed, as whoever edits the description would (unsigned, the integrity digest refuses it first);
    # the unknown encoding is then refused from the description, before any tensor is decoded
    edit_meta(directory, lambda meta: meta["tensors"]["net.1.weight"].__setitem__("encoding", "zstd"))
    with pytest.raises(ArtifactError, match=r"slimkit.json: tensors.'net.1.weight': encoding 'zstd' is not raw, bitmask or csr"):
        load(directory)
