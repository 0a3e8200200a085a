"""W8A8 static int8 on resnet18: fp32 vs slimkit vs torch.ao's static int8 (x86 backend), one run.

resnet18 is written from the published architecture (tests/reference/vision.py: torchvision's
BasicBlock, one ReLU module called twice per block) at random init with BatchNorm statistics set as
a trained network has them; torchvision does not import beside the CPU torch of the project venv.
Both quantizers calibrate on the same 4 batches of 8 random 224x224 images (minmax observers;
torch.ao: FX graph mode with get_default_qconfig_mapping("x86")). Cosine: of the logits of 16 other
images to fp32's. Latency: batch 1 and 64, fixed threads, the median over --rounds interleaved rounds
of slimkit.timing.latency_ms (median of 5 after warm-up), so that load from other processes hits
every variant alike; the ratio column is (variant / fp32) per round, medians (``--no-fp32``: the
int8 models only, ratios to slimkit's, for large batches on a slow machine).

Run:
    python benchmarks/bench_static_resnet18.py [--threads 2] [--rounds 3] [--batches 1,64] [--no-fp32]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slimkit.machine import machine_line  # noqa: E402
from slimkit.quantization import ActivationQuantConfig, quantize  # noqa: E402
from slimkit.timing import latency_ms  # noqa: E402
from tests.reference.vision import resnet18, trained_statistics  # noqa: E402


def torch_ao_static(model, calib):
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices
        prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), (calib[0],))
        with torch.no_grad():
            for x in calib:
                prepared(x)
        return convert_fx(prepared)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--no-fp32", action="store_true", help="time the int8 models only (ratios to slimkit's)")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    fp32 = trained_statistics(resnet18())
    calib = [torch.randn(8, 3, 224, 224) for _ in range(4)]
    models = {"fp32": fp32,
              "slimkit static int8": quantize(copy.deepcopy(fp32), ActivationQuantConfig(mode="static"), calib=calib),
              "torch.ao static int8 (x86)": torch_ao_static(fp32, calib)}
    test = torch.randn(16, 3, 224, 224)
    with torch.no_grad():
        reference = fp32(test)
        cosines = {name: F.cosine_similarity(m(test), reference, dim=-1).mean().item() for name, m in models.items()}
    print(machine_line(args.threads))
    timed = {name: m for name, m in models.items() if not (args.no_fp32 and name == "fp32")}
    base = next(iter(timed))
    print(f"\n| batch | model | cosine to fp32 | median ms | ratio to {base} |\n|---|---|---|---|---|")
    for batch in [int(b) for b in args.batches.split(",")]:
        x = torch.randn(batch, 3, 224, 224)
        times = {name: [] for name in timed}
        with torch.no_grad():
            for _ in range(args.rounds):
                for name, model in timed.items():
                    times[name].append(latency_ms(lambda m=model: m(x), runs=5, warmup=1, threads=args.threads))
        for name, ts in times.items():
            ratio = statistics.median(t / b for t, b in zip(ts, times[base]))
            print(f"| {batch} | {name} | {cosines[name]:.5f} | {statistics.median(ts):.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
