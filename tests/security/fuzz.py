"""A seeded mutation fuzzer of slimkit artifacts, shared by the CI test and scripts/fuzz_artifacts.py.

Each case takes one of a few small seed artifacts (MLP, int4 QuantLinear, LoRA, low-rank, sparse CSR,
GPT), mutates it one way (bytes flipped or cut in either file; a JSON value replaced, deleted or
duplicated and the description re-signed as an attacker would; a safetensors header value replaced
and every checksum recomputed), loads it and runs one forward. Outcome classes: ``refused`` (a
SlimkitError from a check), ``refused:last-resort`` (only load's final wrapper turned some other
exception into an ArtifactError), ``loaded-same`` (output equal to the seed's), ``loaded-changed`` (a re-signed edit
that describes another valid model), and the failures ``crash:<exception>`` (any other exception
from load) and ``forward:<exception>`` (loaded, then failed at the first forward).
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import struct
from collections import Counter
from pathlib import Path

import torch

from slimkit import SlimkitError, load, save
from slimkit.description import ALGORITHM, digest

POOL = [0, 1, -1, 2, 3, 7, 2 ** 31, 2 ** 63, -2 ** 40, 10 ** 30, 0.5, -1e308, 1e-300, True, False, None, "",
        "int4", "nf4", "int8", "float32", "int32", "uint8", "bool", "csr", "bitmask", "raw", "os:system",
        "subprocess:getoutput", "builtins:eval", "QuantLinear", "LoRALinear", "MLP", "GPT", "BertModel",
        "../../etc/passwd", "net.1", "net.1.weight", "x" * 300, [], [1], [2 ** 40], [1] * 9, {}, {"a": 1},
        {"class": "os:system", "spec": {}}]


def seed_artifacts(folder: Path) -> list[tuple[Path, torch.Tensor]]:
    """(artifact, example input) for each seed model, saved under ``folder``."""
    from slimkit.adapters import LoRAConfig
    from slimkit.adapters.lora import inject
    from slimkit.lowrank import LowRankConfig, factorize
    from slimkit.models import GPT, MLP, GPTConfig, MLPConfig
    from slimkit.pruning import PruneConfig, prune
    from slimkit.quantization import WeightQuantConfig, quantize

    torch.manual_seed(0)
    x = torch.rand(2, 1, 4, 4)
    models = {
        "mlp": MLP(MLPConfig(16, (8,), 4)),
        "int4": quantize(MLP(MLPConfig(16, (32,), 4)), WeightQuantConfig("int4", group_size=16)),
        "lowrank": MLP(MLPConfig(16, (32,), 4)),
        "sparse": MLP(MLPConfig(16, (64,), 4)),
    }
    factorize(models["lowrank"], LowRankConfig(rank=4))
    lora = MLP(MLPConfig(16, (8,), 4))
    inject(lora, LoRAConfig(rank=2))
    models["lora"] = lora
    prune(models["sparse"], PruneConfig(sparsity=0.9))
    seeds = [(save(m.eval(), folder / name), x) for name, m in models.items()]
    gpt = GPT(GPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=16, vocab_size=32)).eval()
    seeds.append((save(gpt, folder / "gpt"), torch.randint(0, 32, (2, 8))))
    return seeds


def _nodes(value, path=()):
    """Every (path, value) inside a parsed JSON value."""
    yield path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _nodes(child, path + (key,))


def _set(root, path, value):
    node = root
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _resign(meta: dict, weights: bytes) -> bytes:
    if isinstance(meta.get("weights"), dict):
        meta["weights"].update(bytes=len(weights), sha256=hashlib.sha256(weights).hexdigest())
    meta.pop("integrity", None)
    try:
        meta["integrity"] = {"algorithm": ALGORITHM, "sha256": digest(meta)}
    except (TypeError, ValueError):
        pass
    return json.dumps(meta).encode()


def mutate(rng: random.Random, meta_bytes: bytes, weights: bytes) -> tuple[str, bytes, bytes]:
    """(kind, new slimkit.json bytes, new model.safetensors bytes)."""
    kind = rng.choice(["flip-json", "flip-weights", "cut-json", "cut-weights", "json-value", "json-value",
                       "json-delete", "json-copy", "header-value"])
    if kind.startswith(("flip", "cut")):
        data = bytearray(meta_bytes if kind.endswith("json") else weights)
        if kind.startswith("flip"):
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        else:
            del data[rng.randrange(len(data)):]
        return (kind, bytes(data), weights) if kind.endswith("json") else (kind, meta_bytes, bytes(data))
    if kind == "header-value":
        (length,) = struct.unpack("<Q", weights[:8])
        header = json.loads(weights[8:8 + length])
        path, _ = rng.choice([n for n in _nodes(header) if n[0]])
        _set(header, path, copy.deepcopy(rng.choice(POOL)))
        raw = json.dumps(header).encode()
        weights = struct.pack("<Q", len(raw)) + raw + weights[8 + length:]
        return kind, _resign(json.loads(meta_bytes), weights), weights
    meta = json.loads(meta_bytes)
    path, _ = rng.choice([n for n in _nodes(meta) if n[0] and n[0][0] != "integrity"])
    if kind == "json-value":
        _set(meta, path, copy.deepcopy(rng.choice(POOL)))
    elif kind == "json-delete":
        parent = meta
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]
    else:
        _, other = rng.choice(list(_nodes(meta)))
        _set(meta, path, copy.deepcopy(other))
    return kind, _resign(meta, weights), weights


def run_case(folder: Path, meta_bytes: bytes, weights: bytes, x: torch.Tensor, expected: torch.Tensor) -> str:
    """Write the artifact to ``folder``, load it, run it; the outcome class."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "slimkit.json").write_bytes(meta_bytes)
    (folder / "model.safetensors").write_bytes(weights)
    try:
        model = load(folder)
    except SlimkitError as exc:  # the last-resort wrapper in load says "cannot be loaded (<exception>"
        return "refused:last-resort" if ": cannot be loaded (" in str(exc) else "refused"
    except Exception as exc:  # noqa: BLE001 - the fuzzer's finding
        return f"crash:{type(exc).__name__}"
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # noqa: BLE001
        return f"forward:{type(exc).__name__}"
    return "loaded-same" if torch.equal(out, expected) else "loaded-changed"


def fuzz(folder: Path, cases: int, seed: int = 0) -> tuple[Counter, list]:
    """Run ``cases`` mutations; (Counter of outcome classes, failing examples (kind, outcome, seed name))."""
    rng = random.Random(seed)
    seeds = []
    for path, x in seed_artifacts(folder / "seeds"):
        with torch.no_grad():
            expected = load(path)(x)
        seeds.append((path, (path / "slimkit.json").read_bytes(), (path / "model.safetensors").read_bytes(), x,
                      expected))
    counts, failures = Counter(), []
    for case in range(cases):
        path, meta_bytes, weights, x, expected = rng.choice(seeds)
        kind, new_meta, new_weights = mutate(rng, meta_bytes, weights)
        outcome = run_case(folder / "case", new_meta, new_weights, x, expected)
        counts[outcome] += 1
        if outcome.startswith(("crash", "forward")):
            failures.append((case, kind, outcome, path.name))
    return counts, failures
