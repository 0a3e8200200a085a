"""Coverage matrix: every model family x every technique is a fidelity check or a tested refusal (issue 19).

Families are built at random init from small configs: Hugging Face Llama, Qwen2, Mistral, GPT-2 and
BERT; stand-ins written from the published architectures for torchvision's resnet18 (BasicBlock
reusing one ReLU), mobilenet_v2 (depthwise-separable inverted residuals), mobilenet_v3_small
(squeeze-excite with Hardsigmoid, Hardswish) and a ViT with a class token; slimkit's zoo models.
Each supported cell checks the output against the float model (cosine >= the technique's bound in
BOUNDS), that the transform counted a non-zero number of layers in the manifest, and that
save/load gives back exactly the same outputs. docs/coverage.md is this module's table
(``python tests/test_coverage_matrix.py`` rewrites it; a test checks it is in sync).
"""

from __future__ import annotations

import copy
import functools
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import slimkit
from slimkit.adapters import lora
from slimkit.adapters.lora import LoRAConfig
from slimkit.errors import SlimkitError
from slimkit.lowrank import LowRankConfig
from slimkit.manifest import get_manifest
from slimkit.pruning import PruneConfig
from slimkit.quantization import ActivationQuantConfig, WeightQuantConfig, convert, prepare_qat

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python tests/test_coverage_matrix.py` regenerates the doc
    sys.path.insert(0, str(ROOT))

from tests.reference import hf_folders, vision  # noqa: E402

HF = ("llama", "qwen2", "mistral", "gpt2", "bert")
VISION = {"resnet18": vision.tiny_resnet, "mobilenet_v2": vision.MobileNetV2,
          "mobilenet_v3_small": vision.MobileNetV3Small, "vit": vision.ViT}
ZOO = {"zoo-mlp": "mlp", "zoo-cnn": "cnn:widths=8-16", "zoo-gpt": "gpt:n_layer=2,n_embd=32,n_head=2"}
FAMILIES = HF + tuple(VISION) + tuple(ZOO)
TECHNIQUES = ("int8", "int4", "w8a8-dynamic", "w8a8-static", "qat", "prune", "prune-structured", "lowrank", "lora")

# Output cosine to the float model each technique keeps on these random-init models, with why:
BOUNDS = {
    "int8": 0.999,  # per-channel int8 weights: relative weight error ~0.4%
    "int4": 0.98,  # int4 groups of 32: ~7% per weight, averaging out over a dot product
    "w8a8-dynamic": 0.99,  # per-token int8 activations on top of int8 weights
    "w8a8-static": 0.98,  # one calibrated scale per tensor, outliers of unseen inputs clip
    "qat": 0.98,  # W8A8 simulated (observers only, no training steps): as static
    "prune": 0.9,  # the 30% smallest weights per layer zeroed: ~3% of each layer's energy (seen: >= 0.97)
    "prune-structured": 0.5,  # 25% of coupled channels removed without fine-tuning (seen: >= 0.61, the MLP)
    # 80% of the parameters: random weights have flat spectra, so truncation drops much of their energy
    # (seen: >= 0.47 on the ViT, whose class-token LayerNorm magnifies it); trained weights keep far more
    "lowrank": 0.3,
    "lora": 1.0 - 1e-6,  # adapters start at zero (B = 0): the output is the float model's
}
# Grouped-query attention loses whole key/value groups: these families have 2, so a quarter would be half a
# group (refused, naming 0.5); at 0.5 one group and half the MLP channels leave (seen: cosine >= 0.95)
GQA, GQA_RATIO = {"llama", "qwen2", "mistral"}, 0.5
# Cells that refuse, with the message that says why; the rest must pass the checks above.
# (none left: GPT-2's attention became a unit of the dependency graph, after Llama/Qwen2/Mistral attention
# with GQA and Hardsigmoid, in issue 19)
REFUSED: dict[tuple[str, str], str] = {}


def cell_bound(family: str, technique: str) -> float | str:
    return REFUSED.get((family, technique), BOUNDS[technique])


@functools.lru_cache(maxsize=None)
def _float_model(family: str):
    torch.manual_seed(0)
    if family in HF:
        return hf_folders.build(family).eval()
    if family in VISION:
        return vision.trained_statistics(VISION[family]())
    from slimkit.models import from_spec

    return from_spec(ZOO[family]).eval()


def float_model(family: str):
    return copy.deepcopy(_float_model(family))


def inputs(family: str, batches: int = 1, seed: int = 1) -> list:
    g = torch.Generator().manual_seed(seed)
    if family in HF:
        return [{"input_ids": torch.randint(5, hf_folders.VOCAB, (2, 16), generator=g)} for _ in range(batches)]
    if family in VISION:
        return [torch.randn(4, 3, 32 if family != "vit" else 16, 32 if family != "vit" else 16, generator=g)
                for _ in range(batches)]
    if family == "zoo-gpt":
        return [torch.randint(0, 256, (2, 16), generator=g) for _ in range(batches)]
    return [torch.rand(4, 1, 8, 8, generator=g) * 16 for _ in range(batches)]


def run(model, x):
    out = model(**x) if isinstance(x, dict) else model(x)
    for key in ("logits", "last_hidden_state"):
        if hasattr(out, key):
            return getattr(out, key)
    return out


def apply(technique: str, model, family: str) -> None:
    calib = inputs(family, batches=2, seed=2)
    if technique in ("int8", "int4"):
        group = None if technique == "int8" else 32
        slimkit.quantize(model, WeightQuantConfig(technique, group_size=group))
    elif technique.startswith("w8a8"):
        mode = technique.removeprefix("w8a8-")
        slimkit.quantize(model, ActivationQuantConfig(mode=mode), calib=calib if mode == "static" else None)
    elif technique == "qat":
        prepare_qat(model, ActivationQuantConfig(mode="qat"))
        with torch.no_grad():
            for x in calib:
                run(model, x)  # training mode: the observers see the batches
        convert(model.eval())
    elif technique == "prune":
        slimkit.prune(model, PruneConfig(sparsity=0.3))
    elif technique == "prune-structured":
        ratio = GQA_RATIO if family in GQA else 0.25
        slimkit.prune(model, PruneConfig(structured=True, ratio=ratio), data=calib, example_inputs=calib[0])
    elif technique == "lowrank":
        slimkit.factorize(model, LowRankConfig(param_budget=0.8, conv="skip"))
    else:
        lora.inject(model, LoRAConfig(rank=2))


def transformed(model) -> int:
    """Layers the manifest records as transformed (not skipped); LoRA counts its adapters."""
    done = [e for e in get_manifest(model) if "skipped" not in e and e.get("technique") != "fusion"]
    return max(len(done), len(lora.adapter_layers(model)))


def save_kwargs(family: str) -> dict:
    if family not in VISION:
        return {}
    slimkit.register_class(type(_float_model(family)), name=f"tests.coverage.{family}", factory=VISION[family])
    return {"init_args": {}}


def cosine(a, b) -> float:
    return F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


CELLS = [(f, t) for f in FAMILIES for t in TECHNIQUES]
SLOW = {"bert", "mistral", "qwen2"}  # the HF families also covered by llama's cells run only in the slow suite


@pytest.mark.parametrize("family, technique", [
    pytest.param(f, t, marks=pytest.mark.slow) if f in SLOW else (f, t) for f, t in CELLS])
def test_cell(family, technique, tmp_path):
    model, x = float_model(family), inputs(family)[0]
    with torch.no_grad():
        expected = run(model, x)
    bound = cell_bound(family, technique)
    if isinstance(bound, str):
        with pytest.raises(SlimkitError, match=bound):
            apply(technique, model, family)
        return
    apply(technique, model, family)
    model.eval()
    with torch.no_grad():
        got = run(model, x)
        assert cosine(got, expected) >= bound
        assert transformed(model) > 0
        saved = slimkit.save(model, tmp_path / "m", **save_kwargs(family))
        assert torch.equal(run(slimkit.load(saved), x), got)


def table() -> str:
    """The matrix as markdown: each cell's bound (cosine to the float model) or "refused"."""
    lines = ["| family | " + " | ".join(TECHNIQUES) + " |", "|---" * (len(TECHNIQUES) + 1) + "|"]
    for f in FAMILIES:
        cells = ["refused" if isinstance(b := cell_bound(f, t), str) else f">= {b:g}" for t in TECHNIQUES]
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


DOC = ROOT / "docs" / "coverage.md"
BEGIN, END = "<!-- matrix: generated by tests/test_coverage_matrix.py -->", "<!-- end of matrix -->"


def test_docs_coverage_is_the_tests_own_table():
    text = DOC.read_text()
    assert text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip() == table()


if __name__ == "__main__":
    text = DOC.read_text()
    DOC.write_text(text[:text.index(BEGIN) + len(BEGIN)] + "\n" + table() + "\n" + text[text.index(END):])
