"""Weight-only quantization quality and bytes: the GPT (bits per byte) and MiniLM (fidelity).

Run: python benchmarks/bench_weight_quant.py [--peers]
Prints markdown tables (machine on the first line): GPT bits/byte per format and method with the
increase over fp32; MiniLM fidelity at int4 g128; bits per weight of MiniLM's Linear weights on
disk; NF4 vs int4 MSE at block 64 on real weights. With --peers, torchao's weight-only int8/int4
on the same models, in the same run, where torchao imports.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from slimkit.data import minilm
from slimkit.demo import machine_line
from slimkit.evaluation.tasks import get_task
from slimkit.formats import quantize as quantize_tensor
from slimkit.io import save
from slimkit.models import zoo
from slimkit.quantization import QuantLinear, WeightQuantConfig, quantize

GPT_ROWS = [
    ("int8 per-channel", WeightQuantConfig("int8", group_size=None)),
    ("int4 g128", WeightQuantConfig("int4", group_size=128)),
    ("int3 g128", WeightQuantConfig("int3", group_size=128)),
    ("int4 g32", WeightQuantConfig("int4", group_size=32)),
]


def quantized(base, config, method, calib):
    model = copy.deepcopy(base)
    start = time.perf_counter()
    act_order = method == "gptq-act-order"
    cfg = WeightQuantConfig(**{**config.to_dict(), "method": method.split("-")[0], "act_order": act_order})
    quantize(model, cfg, calib=calib if method != "rtn" else None)
    return model, time.perf_counter() - start


def gpt_table() -> None:
    task, base = get_task("pycorpus"), zoo.reference("gpt")
    calib = task.calibration(16)
    fp32 = task.quality(base)["bits_per_byte"]
    print("\n### GPT (pycorpus validation bits per byte; fp32 = %.4f)\n" % fp32)
    print("| format | method | bits/byte | increase over fp32 | increase / RTN's | quantize s |")
    print("|---|---|---|---|---|---|")
    for label, config in GPT_ROWS:
        rtn_increase = None
        for method in ("rtn", "gptq", "gptq-act-order", "awq"):
            model, seconds = quantized(base, config, method, calib)
            bpb = task.quality(model)["bits_per_byte"]
            increase = (bpb - fp32) / fp32
            rtn_increase = increase if method == "rtn" else rtn_increase
            share = "—" if method == "rtn" else f"{increase / rtn_increase:.2f}"
            print(f"| {label} | {method} | {bpb:.4f} | {100 * increase:+.3f}% | {share} | {seconds:.1f} |")


def minilm_table() -> None:
    task, base = get_task("minilm"), minilm().model
    calib = task.calibration(16)
    print("\n### MiniLM (fidelity to fp32 on 400 sentences), int4 g128\n")
    print("| method | cosine mean | cosine min | top-10 agreement | quantize s |\n|---|---|---|---|---|")
    for method in ("rtn", "gptq", "gptq-act-order", "awq"):
        model, seconds = quantized(base, WeightQuantConfig("int4", group_size=128), method, calib)
        q = task.quality(model)
        print(f"| {method} | {q['cosine_mean']:.4f} | {q['cosine_min']:.4f} | {q['top10_agreement']:.4f} | {seconds:.1f} |")
        if method == "rtn":
            rtn_model = model
    linear_bits(rtn_model)


def linear_bits(model) -> None:
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    weights = sum(m.in_features * m.out_features for m in layers)
    with tempfile.TemporaryDirectory() as tmp:
        save(model, tmp)
        from safetensors import safe_open

        with safe_open(str(Path(tmp) / "model.safetensors"), "pt") as f:
            stored = sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size()
                         for k in f.keys() if ".w_" in k)
    theory = 4 + 16 / 128
    print(f"\nMiniLM Linear weights at int4 g128 on disk: {stored:,} bytes for {weights:,} weights = "
          f"{8 * stored / weights:.4f} bits/weight (theory with float16 scales: 4 + 16/128 = {theory})")


def nf4_vs_int4() -> None:
    print("\n### NF4 vs int4 absmax, block 64, MSE on real weights\n")
    print("| model | int4 MSE | nf4 MSE | nf4 / int4 |\n|---|---|---|---|")
    for name, model in (("gpt", zoo.reference("gpt")), ("minilm", minilm().model)):
        err = {fmt: 0.0 for fmt in ("int4", "nf4")}
        count = 0
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight.detach().float()
                for fmt in err:
                    deq = quantize_tensor(w, fmt, granularity="group", axis=0, group_size=64).dequantize()
                    err[fmt] += (deq - w).pow(2).sum().item()
                count += w.numel()
        print(f"| {name} | {err['int4'] / count:.3e} | {err['nf4'] / count:.3e} | {err['nf4'] / err['int4']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    torch.set_num_threads(2)
    print(f"Machine: {machine_line(2)}")
    gpt_table()
    minilm_table()
    nf4_vs_int4()


if __name__ == "__main__":
    main()
