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


GRAPHS = False  # --graphs: time CUDA-graph replays (no Python launch cost in any column)


def ms(call) -> float:
    return do_bench(graphed(call) if GRAPHS else call, warmup=25, rep=200, return_mode="median")


def graphed(call):
    """The call captured in a CUDA graph (its replay), or the call itself where capture fails."""
    try:
        for _ in range(3):
            call()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            call()
        return graph.replay
    except Exception as exc:  # noqa: BLE001 - e.g. a peer that synchronises inside: timed eagerly instead
        print(f"(not capturable, timed eagerly: {type(exc).__name__})")
        torch.cuda.synchronize()
        return call


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


_ENCODED = {}  # (weight pointer, format) -> encoded weight: the sweep launches one weight many ways


def slimkit_kernel(w: torch.Tensor, fmt: str, **launch):
    key = (w.data_ptr(), tuple(w.shape), fmt)
    if key not in _ENCODED:
        _ENCODED.clear()
        _ENCODED[key] = (quantize(w.float(), "int4", group_size=128, scale_dtype=torch.float16) if fmt == "int4"
                         else quantize(w.float(), "int8", granularity="channel", scale_dtype=torch.float16))
    enc = _ENCODED[key]
    kernel = kernels.kernel_for(enc.meta(), enc.codes.device)
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
    """Time the kernel variants and launch shapes at 8192x8192 (1 and 16 rows), refine the best, then time
    the best of each variant's launch at every benchmark shape with a few block_n; the winners at 8192x8192
    become the defaults for the table."""
    torch.manual_seed(0)
    w = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) * 0.02
    x1 = torch.randn(1, 8192, device="cuda", dtype=torch.bfloat16)
    x16 = torch.randn(16, 8192, device="cuda", dtype=torch.bfloat16)
    base = ms(lambda: F.linear(x1, w))
    print("| kernel | variant | block_n | block_k | warps | stages | us, 1 row | vs bf16 | us, 16 rows |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for fmt, defaults, row_defaults in (("int4", gemv.INT4_LAUNCH, gemv.INT4_ROW_LAUNCH),
                                        ("int8", gemv.INT8_LAUNCH, gemv.INT8_ROW_LAUNCH)):
        timings = {}

        def time_launch(launch, weight=w, x=x1, label="", record=True):
            call, _, _ = slimkit_kernel(weight, fmt, **launch)
            t = ms(lambda: call(x))
            if record:
                timings[tuple(launch.items())] = t
            variant = launch["mode"] + (" split nibbles" if launch.get("split_nibbles") else "")
            rows16 = f"{1e3 * ms(lambda: call(x16)):.1f}" if record and launch["mode"] == "tiles" else "-"
            dense = ms(lambda: F.linear(x, weight)) if not record else base
            print(f"| {fmt}{label} | {variant} | {launch['block_n']} | {launch['block_k']} | {launch['num_warps']} | "
                  f"{launch['num_stages']} | {1e3 * t:.1f} | {dense / t:.2f}x | {rows16} |", flush=True)
            return t

        common = {"split_k": 1, "num_warps": 4, "num_stages": 3}
        tiles = {"mode": "tiles", "block_m": 16, "split_nibbles": False, **common,
                 "num_warps": defaults["num_warps"], "num_stages": defaults["num_stages"]}
        launches = [{**tiles, **{k: v for k, v in defaults.items() if k in tiles or k.startswith("block")}}]
        launches.append(dict(row_defaults))  # the current default, timed in the same run
        launches += [{**row_defaults, "block_n": bn, "block_k": bk} for bn in (8, 16, 32) for bk in (512, 1024)]
        for launch in launches:
            try:
                time_launch(launch)
            except Exception as exc:  # noqa: BLE001 - a launch that does not compile is reported, not fatal
                print(f"| {fmt} | {launch} failed: {type(exc).__name__}: {str(exc)[:100]} |", flush=True)
        for mode in ("tiles", "row"):
            best = dict(min((k for k in timings if dict(k)["mode"] == mode), key=timings.get))
            for warps in ((2, 8) if mode == "row" else ()):
                try:
                    time_launch({**best, "num_warps": warps})
                except Exception as exc:  # noqa: BLE001
                    print(f"| {fmt} | {warps} warps failed: {type(exc).__name__} |")
            best = dict(min((k for k in timings if dict(k)["mode"] == mode), key=timings.get))
            (row_defaults if mode == "row" else defaults).clear()
            (row_defaults if mode == "row" else defaults).update(best)
            t = timings[tuple(best.items())]
            print(f"{fmt} {mode} best: {best}: {1e3 * t:.1f} us, {base / t:.2f}x bf16", flush=True)
        for rows in (2, 4):
            x = torch.randn(rows, 8192, device="cuda", dtype=torch.bfloat16)
            time_launch(row_defaults, w, x, f" {rows} rows", record=False)
        for out_features, in_features in SHAPES[1:]:  # how the launch should change with the shape
            weight = torch.randn(out_features, in_features, device="cuda", dtype=torch.bfloat16) * 0.02
            x = torch.randn(1, in_features, device="cuda", dtype=torch.bfloat16)
            for block_n in sorted({8, 16, row_defaults["block_n"]}):
                for split_k in (1,):  # split-K (2) lost at every shape in the earlier sweeps
                    time_launch({**row_defaults, "block_n": block_n, "split_k": split_k}, weight, x,
                                f" {out_features}x{in_features} split {split_k}", record=False)
    print()


def variants() -> None:
    """The row kernel's launch shapes and the tiles kernel at 8192x8192, one row, next to bf16 and tinygemm."""
    torch.manual_seed(0)
    w = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) * 0.02
    x = torch.randn(1, 8192, device="cuda", dtype=torch.bfloat16)
    base, tiny = ms(lambda: F.linear(x, w)), int4_tinygemm(w, 128)
    print(f"bf16 {1e3 * base:.1f} us; tinygemm {base / ms(lambda: tiny(x)):.2f}x")
    for fmt, row in (("int4", gemv.INT4_ROW_LAUNCH), ("int8", gemv.INT8_ROW_LAUNCH)):
        tiles = gemv.INT4_LAUNCH if fmt == "int4" else gemv.INT8_LAUNCH
        for name, launch in [("tiles", tiles), ("row default", row)] + [
                (f"row bn {bn} bk {bk}", {**row, "block_n": bn, "block_k": bk})
                for bn, bk in ((8, 1024), (16, 1024), (32, 512), (8, 512), (16, 512))]:
            call, _, _ = slimkit_kernel(w, fmt, **launch)
            t = ms(lambda: call(x))
            print(f"{fmt} {name}: {1e3 * t:.1f} us, {base / t:.2f}x bf16", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="also sweep the GEMV launch shapes")
    parser.add_argument("--graphs", action="store_true",
                        help="time CUDA-graph replays: the kernels' GPU time without Python launch overhead")
    parser.add_argument("--variants", action="store_true", help="only time the row-kernel variants at 8192x8192")
    args = parser.parse_args()
    global GRAPHS
    GRAPHS = args.graphs
    if args.variants:
        variants()
        return
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, bf16 activations, "
          f"median of do_bench with L2 flushed\n")
    if args.sweep:
        sweep()
    print(f"launch: up to {gemv.ROW_KERNEL_ROWS} row(s) int4 {gemv.INT4_ROW_LAUNCH}, int8 {gemv.INT8_ROW_LAUNCH}; "
          f"more rows int4 {gemv.INT4_LAUNCH}, int8 {gemv.INT8_LAUNCH}\n")
    table(SHAPES, ROWS)


if __name__ == "__main__":
    main()
