"""Tiny Hugging Face model folders (random init, small configs) with a tokenizer trained in-process.

Each folder is what ``save_pretrained`` writes for the architecture (config.json with its
``architectures``, weights, tokenizer files, generation config for causal LMs): the shape of a
folder a user downloads, built offline in well under a second.
"""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 512
SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=256, vocab_size=VOCAB)


def tokenizer():
    """A word-level tokenizer trained on Python's language reference (the default evaluation text)."""
    from pydoc_data.topics import topics
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(list(topics.values()), trainers.WordLevelTrainer(vocab_size=VOCAB, special_tokens=specials))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def build(family: str):
    """The transformers model of a family at random init (seeded)."""
    import transformers as t

    torch.manual_seed(0)
    heads = dict(num_key_value_heads=2)  # grouped-query attention, as the real checkpoints use
    if family == "llama":
        return t.LlamaForCausalLM(t.LlamaConfig(**SMALL, **heads, pad_token_id=0))
    if family == "qwen2":
        return t.Qwen2ForCausalLM(t.Qwen2Config(**SMALL, **heads, pad_token_id=0))
    if family == "mistral":
        return t.MistralForCausalLM(t.MistralConfig(**SMALL, **heads, pad_token_id=0))
    if family == "gpt2":
        return t.GPT2LMHeadModel(t.GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=256, vocab_size=VOCAB,
                                              bos_token_id=2, eos_token_id=3, pad_token_id=0))
    bert = t.BertConfig(**SMALL, pad_token_id=0, num_labels=3)
    if family == "bert":
        return t.BertModel(bert)
    if family == "bert-classifier":
        return t.BertForSequenceClassification(bert)
    raise ValueError(family)


def folder(family: str, directory: Path, tok=None) -> Path:
    """Save the family's tiny model and the tokenizer to ``directory`` as save_pretrained does."""
    model = build(family).eval()
    model.save_pretrained(directory)
    (tok or tokenizer()).save_pretrained(directory)
    return directory
