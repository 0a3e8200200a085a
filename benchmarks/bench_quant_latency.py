"""Latency of one quantized Linear on CPU: slimkit's execution paths vs fp32/bf16 F.linear and peers.

Run (peers are optional; each one that does not import is reported as skipped):
    python -m venv /tmp/peers/venv && . /tmp/peers/venv/bin/activate
    pip install torch==2.13.0 torchao==0.18.0 bitsandbytes==0.50.2 safetensors tqdm matplotlib scikit-learn \
        --extra-index-url https://download.pytorch.org/whl/cpu
    pip install --no-deps -e .
    python benchmarks/bench_quant_latency.py [--threads 2] [--rounds 3] [--runs 7] [--sizes 4096 1024]

Prints the machine line, one markdown table per shape (K = N = size, rows M = 1 and 64), then the
command. Every latency is slimkit.timing.latency_ms (median of --runs calls after warm-up, fixed
threads); each round times every variant once, interleaved, and the table gives the median over
rounds of (variant time / fp32 F.linear time in the same round), so load from other processes on
a shared CPU cancels out as far as it can. "rel err" is max |y - y_fp32| / max |y_fp32| over both M.
"weight bytes": fp32/bf16 = the weight tensor; slimkit = the layer's persistent w_* buffers (what is
saved), "+cache" = the non-persistent kernel/float copies the chosen path keeps in memory; peers =
bytes of torch.save(state_dict) without the bias (packed weight + scales + save overhead).
Caveat: if other processes keep every core busy, multi-threaded (OpenMP) kernels stall for whole
scheduler slices (~4 ms) whenever one of their threads is preempted; the load line printed at the end
shows whether that was the case; --threads 1 is not affected that way.
"""

from __future__ import annotations

import argparse
import copy
import io
import logging
import os
import statistics
import sys
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.machine import machine_line
from slimkit.quantization import QuantLinear, WeightQuantConfig, quantize
from slimkit.quantization.paths import choose_paths
from slimkit.timing import latency_ms

ROWS = (1, 64)
SLIMKIT = [("int8 per-channel", WeightQuantConfig("int8", group_size=None), ("dequant", "int8pack")),
           ("int4 g128", WeightQuantConfig("int4", group_size=128), ("dequant", "int4pack")),
           ("nf4 g64", WeightQuantConfig("nf4", group_size=64), ("dequant",))]


def saved_bytes(module: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save({k: v for k, v in module.state_dict().items() if not k.endswith("bias")}, buf)
    return buf.tell()


def slimkit_variants(linear: nn.Linear, threads: int, skipped: list[str]):
    """(label, module, input dtype, weight bytes, cache bytes) for every slimkit row."""
    for label, config, paths in SLIMKIT:
        model = nn.Sequential(copy.deepcopy(linear))
        quantize(model, config)
        layer = model[0]
        assert isinstance(layer, QuantLinear)
        stored = sum(b.nbytes for n, b in layer.named_buffers() if n.startswith("w_"))
        for path in paths + ("chosen",):
            variant = copy.deepcopy(layer)
            if path == "chosen":
                choose_paths(nn.Sequential(variant), probe_rows=ROWS, threads=threads)
                name = "chosen: " + ", ".join(f"{'≤' + str(r) if r else 'rest'}→{p}" for r, p in variant.paths)
            elif path in variant.available_paths():
                variant.set_path(path)
                name = path
            else:
                skipped.append(f"slimkit {label} {path}: not available ({variant.available_paths()})")
                continue
            cache = variant.resident_bytes() - stored  # copies the path holds beyond the stored codes
            yield f"slimkit {label}, {name}", variant, torch.float32, stored, cache


def peer_variants(linear: nn.Linear, skipped: list[str]):
    """torchao and bitsandbytes rows; a peer that fails to import or quantize is skipped with the reason."""
    def ao_int8():
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
        m = nn.Sequential(copy.deepcopy(linear))
        quantize_(m, Int8WeightOnlyConfig())
        return m, torch.float32

    def ao_int4():
        from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig
        from torchao.quantization import quantize_
        m = nn.Sequential(copy.deepcopy(linear)).to(torch.bfloat16)
        quantize_(m, PrototypeInt4WeightOnlyConfig(group_size=128))
        return m, torch.bfloat16

    def bnb_int8():
        import bitsandbytes as bnb
        q = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=True, has_fp16_weights=False,
                                threshold=0.0)
        q.load_state_dict(linear.state_dict())
        return q.to("cpu"), torch.float32  # .to(device) quantizes

    def bnb_nf4():
        import bitsandbytes as bnb
        q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=True, compute_dtype=torch.float32,
                              quant_type="nf4", compress_statistics=False)
        q.weight = bnb.nn.Params4bit(linear.weight.data.clone(), requires_grad=False, quant_type="nf4",
                                     blocksize=64, compress_statistics=False)
        q.bias = nn.Parameter(linear.bias.data.clone(), requires_grad=False)
        return q.to("cpu"), torch.float32

    for label, make in [("torchao Int8WeightOnlyConfig (fp32)", ao_int8),
                        ("torchao PrototypeInt4WeightOnlyConfig g128 (bf16 model+input)", ao_int4),
                        ("bitsandbytes Linear8bitLt", bnb_int8), ("bitsandbytes Linear4bit nf4 bs64", bnb_nf4)]:
        try:
            module, dtype = make()
            yield label, module, dtype, saved_bytes(module), 0
        except Exception as exc:  # noqa: BLE001 - any failure of an optional peer is reported, not fatal
            reason = str(exc).splitlines()[0][:120] if str(exc) else ""
            skipped.append(f"{label}: skipped ({type(exc).__name__}: {reason})")


@torch.no_grad()
def bench_shape(size: int, threads: int, rounds: int, runs: int, skipped: list[str]) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(size, size).eval()
    w, b = linear.weight, linear.bias
    wb, bb = w.bfloat16(), b.bfloat16()
    xs = {m: torch.randn(m, size) for m in ROWS}
    ref = {m: F.linear(x, w, b) for m, x in xs.items()}
    # Each variant: (label, call(x) -> output, input dtype, weight bytes, cache bytes)
    variants = [("fp32 F.linear (baseline)", lambda x: F.linear(x, w, b), torch.float32, w.nbytes, 0),
                ("bf16 F.linear (input cast to bf16 and back)", lambda x: F.linear(x.bfloat16(), wb, bb).float(),
                 torch.float32, wb.nbytes, 0)]
    for label, module, dtype, stored, cache in [*slimkit_variants(linear, threads, skipped),
                                                *peer_variants(linear, skipped)]:
        variants.append((label, module, dtype, stored, cache))
    ratios = {(v[0], m): [] for v in variants for m in ROWS}
    for _ in range(rounds):
        for m, x in xs.items():
            times = {}
            for label, call, dtype, _, _ in variants:
                xin = x.to(dtype)
                times[label] = latency_ms(lambda: call(xin), runs=runs, warmup=3, threads=threads)
            for label in times:
                ratios[(label, m)].append(times[label] / times[variants[0][0]])
    bf16 = variants[1][0]
    print(f"\n### Linear K=N={size}, rows M in {ROWS}: time / fp32 F.linear (lower is faster)\n")
    head = " | ".join(f"M={m} vs fp32 | M={m} vs bf16" for m in ROWS)
    print(f"| variant | {head} | rel err | weight bytes | +cache bytes |")
    print("|---" * (4 + 2 * len(ROWS)) + "|")
    for label, call, dtype, stored, cache in variants:
        cells = []
        for m in ROWS:
            r = statistics.median(ratios[(label, m)])
            r16 = statistics.median(a / c for a, c in zip(ratios[(label, m)], ratios[(bf16, m)]))
            cells += [f"{r:.2f}", f"{r16:.2f}"]
        err = max(((call(xs[m].to(dtype)).float() - ref[m]).abs().max() / ref[m].abs().max()).item() for m in ROWS)
        print(f"| {label} | {' | '.join(cells)} | {err:.1e} | {stored / 2**20:.2f} MiB | "
              f"{cache / 2**20:.2f} MiB |")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table shows their median")
    parser.add_argument("--runs", type=int, default=7, help="timed calls per latency_ms (>= 5)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 1024])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    print(machine_line(args.threads))
    load_start = os.getloadavg()[0]
    skipped: list[str] = []
    for size in args.sizes:
        bench_shape(size, args.threads, args.rounds, args.runs, skipped)
    print()
    for line in dict.fromkeys(skipped) if skipped else ["Skipped: nothing (every variant and peer ran)."]:
        print(line)
    print(f"1-min load average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end (load beyond this run's "
          f"own {args.threads} thread(s) on {os.cpu_count()} cores = other processes competing for them).")
    print(f"\nReproduce: python benchmarks/bench_quant_latency.py --threads {args.threads} --rounds {args.rounds} "
          f"--runs {args.runs} --sizes {' '.join(map(str, args.sizes))}")


if __name__ == "__main__":
    main()
