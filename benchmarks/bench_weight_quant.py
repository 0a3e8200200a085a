"""Weight-only quantization quality and bytes: the GPT (bits per byte) and MiniLM (fidelity).

Run: python benchmarks/bench_weight_quant.py
Prints markdown tables (machine on the first line): GPTQ calibration time with each layer's inputs
computed from the model input against block replay (same codes, checked); GPT bits/byte per format
and method (RTN, GPTQ and its options, AWQ) with the increase over fp32; MiniLM fidelity at int4
g128; bits per weight of MiniLM's Linear weights on disk; NF4 vs int4 MSE at block 64 on real
weights.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

from slimkit.data import minilm
from slimkit.machine import machine_line
from slimkit.models.tasks import get_task
from slimkit.formats import quantize as quantize_tensor
from slimkit.io import save
from slimkit.models import zoo
from slimkit.quantization import QuantLinear, WeightQuantConfig, quantize
from slimkit.calibration.layer_inputs import layer_inputs

api = sys.modules["slimkit.quantization.api"]  # the module (the package exports a function of that name)
_REPLAY = api.sequential_inputs

# (label, config, whether the GPTQ option rows run too: only where they matter, to keep the run short)
GPT_ROWS = [
    ("int8 per-channel", WeightQuantConfig("int8", group_size=None), False),
    ("int4 g128", WeightQuantConfig("int4", group_size=128), True),
    ("int3 g128", WeightQuantConfig("int3", group_size=128), True),
    ("int4 g32", WeightQuantConfig("int4", group_size=32), False),
]
OPTION_ROWS = ("gptq-mse-clip", "gptq-awq-scale")


# method label -> WeightQuantConfig settings on top of each row's format and group size
METHODS = {
    "rtn": {"method": "rtn"},
    "gptq": {"method": "gptq"},
    "gptq-act-order": {"method": "gptq", "act_order": True},
    "gptq-mse-clip": {"method": "gptq", "mse_clip": True},
    "gptq-awq-scale": {"method": "gptq", "awq_scale": True},
    "awq": {"method": "awq"},
}


def quantized(base, config, settings, calib):
    """A quantized copy of ``base`` (``config`` with ``settings`` on top) and the seconds it took."""
    model = copy.deepcopy(base)
    start = time.perf_counter()
    cfg = WeightQuantConfig(**{**config.to_dict(), **settings})
    quantize(model, cfg, calib=calib if cfg.method != "rtn" else None)
    return model, time.perf_counter() - start


def gpt_table() -> None:
    task, base = get_task("pycorpus"), zoo.reference("gpt")
    calib = task.calibration(16)
    fp32 = task.quality(base)["bits_per_byte"]
    print("\n### GPT (pycorpus validation bits per byte; fp32 = %.4f)\n" % fp32)
    print("| format | method | bits/byte | increase over fp32 | increase / RTN's | quantize s |")
    print("|---|---|---|---|---|---|")
    for label, config, options in GPT_ROWS:
        rtn_increase = None
        for method, settings in METHODS.items():
            if method in OPTION_ROWS and not options:
                continue
            model, seconds = quantized(base, config, settings, calib)
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
    symmetric, asymmetric = WeightQuantConfig("int4", group_size=128), WeightQuantConfig("int4", symmetric=False)
    best = {"method": "gptq", "act_order": True, "mse_clip": True}
    rows = [(method, symmetric, METHODS[method]) for method in METHODS if method != "gptq-awq-scale"] + [
        ("gptq-act-order-mse-clip, asymmetric", asymmetric, best),
        ("gptq-act-order-mse-clip-awq-scale, asymmetric", asymmetric, {**best, "awq_scale": True})]
    for label, config, settings in rows:
        model, seconds = quantized(base, config, settings, calib)
        q = task.quality(model)
        print(f"| {label} | {q['cosine_mean']:.4f} | {q['cosine_min']:.4f} | {q['top10_agreement']:.4f} | {seconds:.1f} |")
        if label == "rtn":
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


def _from_the_start(model, layers, calib, *, skip_padding=True):
    """The calibration slimkit had before block replay: the model run from its input for every layer."""
    for name, layer in layers:
        yield name, layer, layer_inputs(model, layer, calib, skip_padding=skip_padding)


def calibration_speed_table() -> None:
    """GPTQ int4 g128 with each layer's inputs from the model start vs from its block's captured
    inputs (q/k/v in one pass); both give the same codes, checked here."""
    print("\n### GPTQ calibration: per layer from the model input vs block replay (int4 g128)\n")
    print("| model | calibration batches | from the start s | block replay s | speed-up | same codes |")
    print("|---|---|---|---|---|---|")
    config = WeightQuantConfig("int4", group_size=128, method="gptq")
    for name, base, calib in (("gpt", zoo.reference("gpt"), get_task("pycorpus").calibration(16)),
                              ("minilm", minilm().model, get_task("minilm").calibration(8))):
        models, seconds = {}, {}
        for label, source in (("start", _from_the_start), ("replay", api.sequential_inputs)):
            api.sequential_inputs = source
            try:
                models[label], seconds[label] = quantized(base, config, {}, calib)
            finally:
                api.sequential_inputs = _REPLAY
        same = all(torch.equal(a.dequantized_weight(), b.dequantized_weight()) for a, b in zip(*(
            [m for m in models[k].modules() if isinstance(m, QuantLinear)] for k in ("start", "replay"))))
        print(f"| {name} | {len(calib)} | {seconds['start']:.1f} | {seconds['replay']:.1f} | "
              f"{seconds['start'] / seconds['replay']:.2f}x | {same} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    torch.set_num_threads(2)
    print(f"Machine: {machine_line(2)}")
    calibration_speed_table()
    gpt_table()
    minilm_table()
    nf4_vs_int4()


if __name__ == "__main__":
    main()
