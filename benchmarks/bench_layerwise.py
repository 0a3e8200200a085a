"""Layer-by-layer quantization of a folder larger than comfortable: peak RSS against the float size.

Run: python benchmarks/bench_layerwise.py FOLDER [--hidden 2048 --layers 16 --mlp 5632] [--method rtn]
                                         [--out ARTIFACT] [--check-layer N]
Writes a random Llama-architecture model into FOLDER one decoder layer per safetensors shard (bf16;
never whole in memory) unless FOLDER already holds one, then quantizes it with
``slimkit.quantization.layerwise.quantize_folder`` (int4 g128) and prints wall time per layer, the
process's peak RSS and the model's float sizes. With ``--out`` each quantized layer is written as
its own shard of the artifact and dropped (``slimkit.io.saving``); ``--check-layer N`` then loads
the artifact, runs a forward pass, and compares layer N's codes with that layer quantized alone in
memory from the same float weights.
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
    parser.add_argument("--out", type=Path, help="write the artifact layer by layer here (one shard per layer)")
    parser.add_argument("--check-layer", type=int, help="with --out: load it back (in a fresh process, so that its "
                        "peak RSS is the load's own) and compare this layer's codes")
    parser.add_argument("--check-only", action="store_true", help="only the --check-layer step, on an existing --out")
    args = parser.parse_args(argv)
    config = WeightQuantConfig("int4", group_size=128, method=args.method)
    if args.check_only:
        return check(args.folder, args.out, args.check_layer, config)
    gib = 2 ** 30
    if not (args.folder / "model.safetensors.index.json").exists():
        start = time.perf_counter()
        build(args.folder, args.hidden, args.layers, args.mlp)
        print(f"built {args.folder} in {time.perf_counter() - start:.0f} s", flush=True)
    torch.set_num_threads(2)
    available = _mem_available()
    bf16 = json.loads((args.folder / "model.safetensors.index.json").read_text())["metadata"]["total_size"]
    print(f"MemAvailable {available / gib:.2f} GiB; the model's bf16 weights {bf16 / gib:.2f} GiB "
          f"({bf16 / available:.2f}x), float32 {2 * bf16 / gib:.2f} GiB", flush=True)
    calib = ([torch.randint(0, VOCAB, (1, 128), generator=torch.Generator().manual_seed(i)) for i in range(2)]
             if args.method == "gptq" else None)
    times = [time.perf_counter()]
    start = times[0]
    if args.out is None:
        model = quantize_folder(args.folder, config, calib, prepare=lambda _: times.append(time.perf_counter()))
    else:
        from slimkit.io import saving

        with saving(args.out) as writer:
            model = quantize_folder(args.folder, config, calib, writer=writer,
                                    prepare=lambda _: times.append(time.perf_counter()))
            writer.finish(model, companions=args.folder)
    wall = time.perf_counter() - start
    layers = model.config.num_hidden_layers
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    held = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    per_layer = [b - a for a, b in zip(times, times[1:])]
    others = per_layer[1:] or per_layer
    print(f"{args.method}: {layers} layers in {wall:.0f} s ({wall / layers:.1f} s/layer; the first with the model's "
          f"set-up {per_layer[0]:.1f} s, the others {min(others):.1f}-{max(others):.1f} s); peak RSS {peak / gib:.2f} GiB; float weights: bf16 "
          f"{bf16 / gib:.2f} GiB, float32 {2 * bf16 / gib:.2f} GiB; held in memory at the end {held / gib:.2f} GiB")
    if args.out is not None:
        written = sum(f.stat().st_size for f in args.out.iterdir())
        print(f"wrote {args.out}: {written / gib:.2f} GiB in {len(list(args.out.glob('model-*.safetensors')))} shards")
        if args.check_layer is not None:
            import multiprocessing

            child = multiprocessing.get_context("spawn").Process(
                target=check, args=(args.folder, args.out, args.check_layer, config))
            child.start()
            child.join()
            print(f"check process exit code {child.exitcode}")


def check(folder: Path, out: Path, index: int, config: WeightQuantConfig) -> None:
    """Load the artifact, run it on 8 tokens, and quantize layer ``index`` alone in memory to compare codes."""
    import slimkit
    from safetensors import safe_open
    from slimkit.quantization.api import quantize

    gib = 2 ** 30
    torch.set_num_threads(2)
    start = time.perf_counter()
    model = slimkit.load(out)
    print(f"loaded {out} in {time.perf_counter() - start:.0f} s; peak RSS now "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / gib:.2f} GiB", flush=True)
    with torch.no_grad():
        logits = model(torch.arange(8)[None]).logits
    print(f"forward on 8 tokens: logits finite {bool(torch.isfinite(logits).all())}, shape {tuple(logits.shape)}")
    layer = model.model.layers[index]
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    prefix = f"model.layers.{index}."
    same = []
    for name, module in layer.named_modules():
        if not hasattr(module, "encoded"):
            continue
        key = f"{prefix}{name}.weight"
        with safe_open(folder / weight_map[key], "pt") as f:
            alone = torch.nn.Sequential(torch.nn.Linear(*reversed(f.get_slice(key).get_shape()), bias=False))
            alone[0].weight.data = f.get_tensor(key).float()
        quantize(alone, config)
        same.append(torch.equal(alone[0].encoded().codes, module.encoded().codes)
                    and torch.equal(alone[0].encoded().scales(), module.encoded().scales()))
    print(f"layer {index}: {sum(same)} of {len(same)} Linears have the same codes and scales as quantized alone "
          "in memory")


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


if __name__ == "__main__":
    main()
