"""A GGUF file's tokenizer: a Hugging Face byte-level BPE tokenizer (tokenizer.json) as llama.cpp's
"gpt2" vocabulary, the way llama.cpp's converter writes it (convert_hf_to_gguf.py, _set_vocab_gpt2).

llama.cpp cannot load a GGUF without its vocabulary, and it picks the regex that splits text before
BPE by the name in ``tokenizer.ggml.pre``. The converter finds that name by encoding a fixed text
and hashing the token ids; ``PRE_TOKENIZERS`` is its whole table (95 tokenizers, copied in
llama_cpp_pretokenizers.py). A tokenizer outside it is refused: written under a wrong name, llama.cpp would
split text differently from transformers and give other tokens without saying so.
"""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path

from slimkit.deployment import ExportRefused
from slimkit.deployment.llama_cpp_pretokenizers import PRE_TOKENIZERS

# llama.cpp's convert_hf_to_gguf.py, get_vocab_base_pre: the text whose token ids identify the pre-tokenizer
CHECK_TEXT = ("\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) "
              "✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作"
              "1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been "
              "'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL")
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5  # llama.cpp's token types
_SPECIAL = {"bos": "bos", "eos": "eos", "unk": "unknown", "pad": "padding"}  # tokenizer_config -> GGUF key


def tokenizer_metadata(folder: str | Path, vocab_size: int) -> dict:
    """The ``tokenizer.*`` key-values of the tokenizer in ``folder`` (tokenizer.json and its config)."""
    folder = Path(folder)
    spec = _read_json(folder / "tokenizer.json")
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise ExportRefused(f"{folder}/tokenizer.json: a {model.get('type')} tokenizer; slimkit writes byte-level BPE "
                            "vocabularies to GGUF only: convert this model with llama.cpp's convert_hf_to_gguf.py")
    ids = dict(model["vocab"])
    added = {t["content"]: t for t in spec.get("added_tokens", [])}
    ids.update({content: t["id"] for content, t in added.items()})
    tokens = [f"[PAD{i}]" for i in range(max(vocab_size, max(ids.values()) + 1))]
    types = [UNUSED] * len(tokens)
    for token, i in ids.items():
        tokens[i] = token
        types[i] = (CONTROL if added[token].get("special") else USER_DEFINED) if token in added else NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    pre, adds_bos = _pre_tokenizer(folder)
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre,
            "tokenizer.ggml.tokens": ("str[]", tokens), "tokenizer.ggml.token_type": ("i32[]", types),
            "tokenizer.ggml.merges": ("str[]", merges)}
    settings = _read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
    for kind, key in _SPECIAL.items():
        content = settings.get(f"{kind}_token")
        content = content.get("content") if isinstance(content, dict) else content
        if content in ids:
            meta[f"tokenizer.ggml.{key}_token_id"] = ("u32", ids[content])
    meta["tokenizer.ggml.add_bos_token"] = ("bool", adds_bos)  # what transformers does, so llama.cpp does it too
    template = folder / "chat_template.jinja"
    chat = template.read_text() if template.is_file() else settings.get("chat_template")
    if isinstance(chat, str):
        meta["tokenizer.chat_template"] = chat
    return meta


def _pre_tokenizer(folder: Path) -> tuple[str, bool]:
    """llama.cpp's name for the tokenizer's pre-tokenizer, and whether the tokenizer starts text with BOS."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    adds_bos = tokenizer.bos_token_id is not None and tokenizer.encode("a")[:1] == [tokenizer.bos_token_id]
    check = sha256(str(tokenizer.encode(CHECK_TEXT)).encode()).hexdigest()
    if check not in PRE_TOKENIZERS:
        raise ExportRefused(f"{folder}: its tokenizer's pre-tokenizer (check hash {check[:16]}...) is not among the "
                            f"{len(PRE_TOKENIZERS)} that llama.cpp's table names (deployment/llama_cpp_pretokenizers.py), "
                            "so llama.cpp would split its text differently; convert this model with a newer llama.cpp's "
                            "convert_hf_to_gguf.py")
    return PRE_TOKENIZERS[check], adds_bos


def _read_json(path: Path) -> dict:
    from slimkit.untrusted import parse_json

    value = parse_json(path.read_bytes(), path)
    if not isinstance(value, dict):
        raise ExportRefused(f"{path}: expected a JSON object")
    return value
