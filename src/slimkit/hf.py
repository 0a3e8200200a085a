"""Hugging Face model folders: the class a folder was saved as, loaded offline, and the files that travel with it.

A folder's ``config.json`` names its architecture (``"architectures": ["LlamaForCausalLM"]``); that
name decides the kind of model and the transformers Auto class that loads it, so ``slimkit.load``
gives back a causal LM with its head, a classifier with its classification head, or a base encoder:

- ``...ForCausalLM`` / ``...LMHeadModel``: "causal-lm" (``AutoModelForCausalLM``)
- ``...ForSequenceClassification``: "classifier" (``AutoModelForSequenceClassification``)
- ``...ForMaskedLM``: "masked-lm" (``AutoModelForMaskedLM``)
- ``...Model`` (a base model, e.g. ``BertModel``): "encoder" (``AutoModel``)

Any other architecture is refused with one line saying what is supported. A model loaded from
such a folder (or from an artifact made from one) remembers it, and ``slimkit.save`` copies the
folder's config, tokenizer and generation config beside the artifact and records the float
folder as ``metrics.source``: whatever verb made it, the output still carries what the model
needs to be used and measured.

>>> kind_of_architecture("Qwen2ForCausalLM")
'causal-lm'
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from torch import nn

from slimkit.errors import ArtifactError, UserInputError

KINDS = {"ForCausalLM": "causal-lm", "LMHeadModel": "causal-lm", "ForSequenceClassification": "classifier",
         "ForMaskedLM": "masked-lm", "Model": "encoder"}
AUTO_CLASSES = {"causal-lm": "AutoModelForCausalLM", "classifier": "AutoModelForSequenceClassification",
                "masked-lm": "AutoModelForMaskedLM", "encoder": "AutoModel"}
# what a Hugging Face folder holds besides its weights, copied beside an artifact made from it
COMPANIONS = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt",
              "tokenizer.model", "chat_template.jinja")
_SOURCE = "_slimkit_hf_source"  # attribute: (folder with the companion files, float model's folder)
SUPPORTED = "*ForCausalLM, *LMHeadModel, *ForSequenceClassification, *ForMaskedLM or a base *Model"


def kind_of_architecture(name: str) -> str:
    """"causal-lm", "classifier", "masked-lm" or "encoder" for a transformers class name; error otherwise."""
    for suffix, kind in KINDS.items():
        if name.endswith(suffix) and name != suffix:
            return kind
    raise UserInputError(f"architecture {name} is not supported; slimkit loads {SUPPORTED} folders")


def model_kind(model: nn.Module) -> str | None:
    """The kind of a transformers model by its class name (None for any other model)."""
    from slimkit.classes import is_transformers_model

    return kind_of_architecture(type(model).__name__) if is_transformers_model(model) else None


def folder_architecture(directory: Path) -> str:
    """The first of ``config.json``'s ``architectures`` (a base model's name when the list is absent)."""
    path = directory / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable JSON config ({exc})") from None
    names = config.get("architectures") if isinstance(config, dict) else None
    if names is None:
        return "Model"  # no head recorded: load the base model
    if not isinstance(names, list) or not names or not isinstance(names[0], str):
        raise ArtifactError(f"{path}: \"architectures\" should be a list of class names")
    return names[0]


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def load_folder(directory: str | Path) -> nn.Module:
    """The transformers model saved in a Hugging Face folder, as the class its config names (eval mode)."""
    directory = Path(directory)
    try:
        import transformers
    except ImportError:
        raise ArtifactError(f"{directory}: a Hugging Face model folder, which needs transformers: "
                            "pip install transformers") from None
    name = folder_architecture(directory)
    kind = "encoder" if name == "Model" else kind_of_architecture(name)
    auto = getattr(transformers, AUTO_CLASSES[kind])
    pickles = sorted(p.name for pattern in PICKLE_WEIGHTS for p in directory.glob(pattern))
    if pickles and not any(directory.glob("*.safetensors")):
        raise ArtifactError(f"{directory}: its weights are pickle files ({', '.join(pickles)}), which can run code "
                            "when loaded; slimkit reads safetensors only: convert them where you trust the file, "
                            "e.g. AutoModel.from_pretrained(folder).save_pretrained(folder) (writes model.safetensors)")
    try:  # never falls back to a pickle file lying beside the safetensors ones
        model = auto.from_pretrained(directory, local_files_only=True, use_safetensors=True).eval()
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{directory}: cannot load as a Hugging Face model folder: {exc}") from None
    remember_source(model, directory, directory.resolve())
    return model


def remember_source(model: nn.Module, files: str | Path, source: str | Path | None) -> None:
    """Keep on ``model`` where its companion files and its float folder are, for ``slimkit.save`` to carry on."""
    if source is not None and companion_files(files):
        object.__setattr__(model, _SOURCE, (str(files), str(source)))


def provenance(model: nn.Module) -> tuple[str | None, dict]:
    """(the folder whose companion files go beside an artifact of ``model``, {"source": float folder} or {})."""
    files, source = getattr(model, _SOURCE, (None, None))
    return files, ({"source": source} if source else {})


def companion_files(directory: str | Path) -> list[Path]:
    """The config, tokenizer and generation-config files of a folder (a Hugging Face folder or an artifact)."""
    return [Path(directory) / name for name in COMPANIONS if (Path(directory) / name).is_file()]


def copy_companions(source: str | Path, target: str | Path) -> list[str]:
    """Copy ``source``'s companion files into ``target``; returns their names."""
    copied = []
    for path in companion_files(source):
        shutil.copyfile(path, Path(target) / path.name)
        copied.append(path.name)
    return copied


def float_source(model_dir: str | Path) -> str | None:
    """The Hugging Face folder of a model's float weights: MODEL_DIR itself when it is one, the folder an
    artifact records as ``metrics.source`` (the command line records it), else None."""
    from slimkit.io import META_FILE, read_meta

    model_dir = Path(model_dir)
    if not (model_dir / META_FILE).exists():
        return str(model_dir.resolve()) if (model_dir / "config.json").is_file() else None
    source = read_meta(model_dir).get("metrics", {}).get("source")
    return source if isinstance(source, str) else None


def load_tokenizer(directory: str | Path):
    """The folder's own tokenizer (offline); error naming the folder when it has none."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise UserInputError(f"{directory}: no usable tokenizer beside the model ({str(exc).splitlines()[0]}); "
                             "save one there with tokenizer.save_pretrained(dir)") from None
