import torch

from slimkit.data import eval_windows, pycorpus, random_windows
from slimkit.data.pycorpus import _bucket


def test_split_by_file_is_disjoint_and_stable():
    c = pycorpus()
    train, val, test = (set(c.files[s]) for s in ("train", "val", "test"))
    assert not (train & val or train & test or val & test)
    assert len(val) > 20 and len(test) > 20 and len(train) > 10 * len(val)
    assert "os.py" in train | val | test
    assert not any("/test/" in f or f.startswith("test/") or "site-packages" in f for f in train)
    # the bucket of a path depends only on the path (sha256), never on the run
    assert _bucket("os.py") == _bucket("os.py") and 0 <= _bucket("json/decoder.py") < 100


def test_corpus_bytes_are_the_files_bytes():
    c = pycorpus()
    from pathlib import Path

    expected = sum(len((Path(c.root) / f).read_bytes()) for f in c.files["val"])
    assert len(c.val) == expected and c.val.dtype == torch.uint8


def test_random_windows_shift_targets_by_one_and_repeat_with_seed():
    data = torch.arange(1000, dtype=torch.int64).to(torch.uint8)
    x1, y1 = random_windows(data, 4, 16, torch.Generator().manual_seed(3))
    x2, y2 = random_windows(data, 4, 16, torch.Generator().manual_seed(3))
    assert x1.shape == y1.shape == (4, 16) and x1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1[:, 1:], y1[:, :-1])


def test_eval_windows_are_fixed_and_span_the_data():
    data = torch.randint(0, 256, (5000,), dtype=torch.uint8)
    x, y = eval_windows(data, 32, 10)
    assert torch.equal(x[0], data[:32].long()) and torch.equal(y[-1], data[-32:].long())
