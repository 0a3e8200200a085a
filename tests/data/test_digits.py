import torch

from slimkit.data import digits


def test_split_sizes_cover_all_images_once():
    d = digits()
    assert (len(d.train), len(d.val), len(d.test)) == (1257, 270, 270)
    all_x = torch.cat([d.train.x, d.val.x, d.test.x]).flatten(1)
    assert torch.unique(all_x, dim=0).shape[0] >= 1790  # the digits set has a handful of exact duplicates
    assert d.train.x.shape[1:] == (1, 8, 8) and 0 <= d.train.x.min() and d.train.x.max() <= 1


def test_split_is_stratified():
    d = digits()
    for split in (d.train, d.val, d.test):
        counts = torch.bincount(split.y, minlength=10).float() / len(split)
        assert (counts - 0.1).abs().max() < 0.012  # every class within ~1 point of its 10% share


def test_split_is_deterministic():
    digits.cache_clear()
    first = digits()
    digits.cache_clear()
    second = digits()
    assert torch.equal(first.test.x, second.test.x) and torch.equal(first.train.y, second.train.y)
