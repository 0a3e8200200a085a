"""The model cache: entries written atomically under a lock, a bad entry rebuilt with one line saying so."""

import threading

import torch

from slimkit.models import MLP, MLPConfig
from slimkit.models.zoo import cached


def _make(calls):
    def make():
        calls.append(1)
        torch.manual_seed(0)
        return MLP(MLPConfig(64, (8,), 10)), {"built": len(calls)}
    return make


def test_a_bad_entry_is_rebuilt_with_a_line_saying_so(tmp_path, capsys):
    calls = []
    entry = tmp_path / "mlp-abc"
    first = cached(entry, _make(calls))
    assert calls == [1] and torch.equal(cached(entry, _make(calls)).net[1].weight, first.net[1].weight)
    (entry / "model.safetensors").write_bytes(b"garbage")
    rebuilt = cached(entry, _make(calls))
    assert calls == [1, 1] and torch.equal(rebuilt.net[1].weight, first.net[1].weight)
    err = capsys.readouterr().err
    assert f"the cache entry {entry} is unreadable" in err and err.count("\n") == 1


def test_concurrent_builders_build_once(tmp_path):
    calls, results = [], []
    entry = tmp_path / "mlp-abc"
    threads = [threading.Thread(target=lambda: results.append(cached(entry, _make(calls)))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1] and len(results) == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["mlp-abc"]
