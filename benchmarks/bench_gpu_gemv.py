"""Weight-only GEMV on CUDA: slimkit's Triton int4/int8 kernels vs bf16 F.linear and the peers.

    python benchmarks/bench_gpu_gemv.py [--sweep]

Times each kernel with ``triton.testing.do_bench`` (median; the L2 cache is flushed before every
call, so a weight that would fit in L2 is still read from memory, as in a real model) on the same
bf16 activations, and prints time, speed-up over bf16 ``F.linear`` and the memory bandwidth the
kernel reaches (weight + scale bytes / time). Peers: torch's tinygemm int4 kernel
(``_weight_int4pack_mm``, the layout torchao's int4 weight-only uses on CUDA), torch's
``_weight_int8pack_mm``, and bitsandbytes' NF4 (``matmul_4bit``) where it imports.
Targets (issue 3): int4 at 8192x8192, one row: >= 2.2x bf16 (aim 3x); int8 >= 1.6x.
``--sweep`` first times the GEMV kernels over launch shapes and uses the fastest for the table.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from slimkit.formats import quantize
from slimkit.quantization import kernels
from slimkit.quantization import triton_kernels as gemv

SHAPES = [(8192, 8192), (4096, 4096), (14336, 4096), (4096, 14336)]  # (out, in)
ROWS = (1, 2, 4, 8, 16)


def ms(call) -> float:
    return do_bench(call, warmup=25, rep=200, return_mode="median")


def int4_tinygemm(w: torch.Tensor, group_size: int):
    """torch's tinygemm int4: codes q in [0, 15], w = (q - 8) * scale + zero, packed high nibble first."""
    out_features, in_features = w.shape
    groups = w.reshape(out_features, -1, group_size).float()
    scale = groups.abs().amax(-1).clamp(min=1e-8) / 7  # (out, groups)
    q = (groups / scale[..., None]).round().clamp(-8, 7).add(8).to(torch.uint8).reshape(out_features, in_features)
    packed = torch.ops.aten._convert_weight_to_int4pack((q[:, ::2] << 4) | q[:, 1::2], 8)
    scale_zero = torch.stack([scale, torch.zeros_like(scale)], -1).transpose(0, 1).contiguous().bfloat16()
    return lambda x: torch.ops.aten._weight_int4pack_mm(x, packed, group_size, scale_zero)


def int8_torch(w: torch.Tensor):
    scale = w.float().abs().amax(1).clamp(min=1e-8) / 127
    q = (w.float() / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
    return lambda x: torch.ops.aten._weight_int8pack_mm(x, q, scale.bfloat16())


def nf4_bnb(w: torch.Tensor):
    import bitsandbytes as bnb
    import bitsandbytes.functional as bf

    packed, state = bf.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    return lambda x: bnb.matmul_4bit(x, packed.t(), quant_state=state)


def slimkit_kernel(w: torch.Tensor, fmt: str, **launch):
    enc = (quantize(w.float(), "int4", group_size=128, scale_dtype=torch.float16) if fmt == "int4"
           else quantize(w.float(), "int8", granularity="channel", scale_dtype=torch.float16))
    kernel = kernels.kernel_for(enc)
    codes, scale = kernels.prepare(enc, kernel)
    if kernel == "gemv_int4":
        call = lambda x: gemv.int4_gemv(x, codes, scale[0], None, 128, **launch)  # noqa: E731
    else:
        call = lambda x: gemv.int8_gemv(x, codes, scale[0, :, 0], **launch)  # noqa: E731
    return call, enc.nbytes(), enc.dequantize().bfloat16()


def table(shapes, rows_list) -> None:
    print("| shape (out x in) | rows | bf16 F.linear us | slimkit int4 g128 | slimkit int8 | torch tinygemm int4 g128 "
          "| torch int8pack | bnb nf4 | slimkit int4 GB/s | int4 max rel. err |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for out_features, in_features in shapes:
        torch.manual_seed(0)
        w = torch.randn(out_features, in_features, device="cuda", dtype=torch.bfloat16) * 0.02
        s4, bytes4, w4 = slimkit_kernel(w, "int4")
        s8, _, _ = slimkit_kernel(w, "int8")
        peers = {"tinygemm": int4_tinygemm(w, 128), "int8pack": int8_torch(w)}
        try:
            peers["bnb"] = nf4_bnb(w)
        except Exception as exc:  # noqa: BLE001 - the peer is optional; say why it is missing
            print(f"(bitsandbytes NF4 unavailable: {type(exc).__name__}: {str(exc)[:80]})")
        for rows in rows_list:
            x = torch.randn(rows, in_features, device="cuda", dtype=torch.bfloat16)
            reference = (x.float() @ w4.float().T)
            error = ((s4(x).float() - reference).abs().max() / reference.abs().max()).item()
            base = ms(lambda: F.linear(x, w))
            cells = [ms(lambda: s4(x)), ms(lambda: s8(x)), ms(lambda: peers["tinygemm"](x)),
                     ms(lambda: peers["int8pack"](x))]
            cells.append(ms(lambda: peers["bnb"](x)) if "bnb" in peers else None)
            ratio = " | ".join("n/a" if c is None else f"{1e3 * c:.1f} ({base / c:.2f}x)" for c in cells)
            print(f"| {out_features}x{in_features} | {rows} | {1e3 * base:.1f} | {ratio} | "
                  f"{bytes4 / (cells[0] * 1e-3) / 1e9:.0f} | {error:.1e} |", flush=True)


def sweep() -> None:
    """Time the launch shapes at 8192x8192 and one row, then refine the best; the winners become the defaults."""
    torch.manual_seed(0)
    w = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) * 0.02
    x1 = torch.randn(1, 8192, device="cuda", dtype=torch.bfloat16)
    x16 = torch.randn(16, 8192, device="cuda", dtype=torch.bfloat16)
    base = ms(lambda: F.linear(x1, w))
    print("| kernel | block_n | block_k | split_k | warps | stages | split nibbles | us, 1 row | vs bf16 | "
          "us, 16 rows |\n|---|---|---|---|---|---|---|---|---|---|")
    for fmt, defaults in (("int4", gemv.INT4_LAUNCH), ("int8", gemv.INT8_LAUNCH)):
        timings = {}

        def time_launch(launch):
            call, _, _ = slimkit_kernel(w, fmt, **launch)
            timings[tuple(launch.items())] = t = ms(lambda: call(x1))
            cells = " | ".join(str(v) for v in launch.values()) + ("" if "split_nibbles" in launch else " | -")
            print(f"| {fmt} | {cells} | {1e3 * t:.1f} | {base / t:.2f}x | {1e3 * ms(lambda: call(x16)):.1f} |",
                  flush=True)

        for variant in ([{"split_nibbles": False}, {"split_nibbles": True}] if fmt == "int4" else [{}]):
            for block_n in (16, 32, 64):
                for block_k in (512, 1024):  # 128/256 and split-K measured slower at every shape tried
                    time_launch(dict(block_n=block_n, block_k=block_k, split_k=1, num_warps=4, num_stages=3,
                                     **variant))
        best = dict(min(timings, key=timings.get))
        for warps in (2, 4, 8):
            for stages in (2, 3, 4, 5):
                if (warps, stages) != (4, 3):
                    time_launch({**best, "num_warps": warps, "num_stages": stages})
        best = dict(min(timings, key=timings.get))
        defaults.update(best)
        print(f"{fmt} best: {best}: {1e3 * timings[tuple(best.items())]:.1f} us, "
              f"{base / timings[tuple(best.items())]:.2f}x bf16", flush=True)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="also sweep the GEMV launch shapes")
    args = parser.parse_args()
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, bf16 activations, "
          f"median of do_bench with L2 flushed\n")
    if args.sweep:
        sweep()
    print(f"launch: int4 {gemv.INT4_LAUNCH}, int8 {gemv.INT8_LAUNCH}\n")
    table(SHAPES, ROWS)


if __name__ == "__main__":
    main()
