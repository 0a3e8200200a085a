"""Layer-by-layer quantization of a folder larger than comfortable: peak RSS against the float size.

Run: python benchmarks/bench_layerwise.py FOLDER [--hidden 2048 --layers 16 --mlp 5632] [--method rtn]
Writes a random Llama-architecture model into FOLDER one decoder layer per safetensors shard (bf16;
never whole in memory) unless FOLDER already holds one, then quantizes it with
``slimkit.quantization.layerwise.quantize_folder`` (int4 g128) and prints wall time per layer, the
process's peak RSS and the model's float sizes.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from slimkit.quantization import WeightQuantConfig
from slimkit.quantization.layerwise import quantize_folder

VOCAB = 32000


def build(out: Path, hidden: int, layers: int, mlp: int) -> None:
    """A random Llama written one layer per shard, with its index and config."""
    from transformers import LlamaConfig

    out.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                         num_attention_heads=hidden // 128, num_key_value_heads=hidden // 512,
                         tie_word_embeddings=False)
    config.save_pretrained(out)
    generator = torch.Generator().manual_seed(0)

    def rand(*shape):
        return (torch.randn(*shape, generator=generator) * 0.02).to(torch.bfloat16)

    def ones():
        return torch.ones(hidden, dtype=torch.bfloat16)  # a fresh tensor each: safetensors refuses shared ones
    kv = config.num_key_value_heads * 128
    weight_map, total = {}, 0

    def write(name: str, tensors: dict) -> None:
        nonlocal total
        save_file(tensors, out / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in tensors})
        total += sum(t.numel() * 2 for t in tensors.values())

    write("model-head.safetensors", {"model.embed_tokens.weight": rand(VOCAB, hidden),
                                     "lm_head.weight": rand(VOCAB, hidden), "model.norm.weight": ones()})
    for i in range(layers):
        p = f"model.layers.{i}."
        write(f"model-{i:05d}.safetensors", {
            p + "self_attn.q_proj.weight": rand(hidden, hidden), p + "self_attn.k_proj.weight": rand(kv, hidden),
            p + "self_attn.v_proj.weight": rand(kv, hidden), p + "self_attn.o_proj.weight": rand(hidden, hidden),
            p + "mlp.gate_proj.weight": rand(mlp, hidden), p + "mlp.up_proj.weight": rand(mlp, hidden),
            p + "mlp.down_proj.weight": rand(hidden, mlp),
            p + "input_layernorm.weight": ones(), p + "post_attention_layernorm.weight": ones()})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--mlp", type=int, default=5632)
    parser.add_argument("--method", choices=["rtn", "gptq"], default="rtn")
    args = parser.parse_args(argv)
    if not (args.folder / "model.safetensors.index.json").exists():
        build(args.folder, args.hidden, args.layers, args.mlp)
    torch.set_num_threads(2)
    bf16 = json.loads((args.folder / "model.safetensors.index.json").read_text())["metadata"]["total_size"]
    calib = ([torch.randint(0, VOCAB, (1, 128), generator=torch.Generator().manual_seed(i)) for i in range(2)]
             if args.method == "gptq" else None)
    start = time.perf_counter()
    model = quantize_folder(args.folder, WeightQuantConfig("int4", group_size=128, method=args.method), calib)
    wall = time.perf_counter() - start
    layers = model.config.num_hidden_layers
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    held = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    gib = 2 ** 30
    print(f"{args.method}: {layers} layers in {wall:.0f} s ({wall / layers:.1f} s/layer); peak RSS {peak / gib:.2f} GiB; "
          f"float weights: bf16 {bf16 / gib:.2f} GiB, float32 {2 * bf16 / gib:.2f} GiB; quantized model held "
          f"{held / gib:.2f} GiB")


if __name__ == "__main__":
    main()
