"""Dense vs 2:4 semi-structured sparse matmul on CUDA: where does torch's sparse kernel actually win?

Stand-alone (needs only torch and a CUDA GPU): ``python benchmarks/bench_sparse_gpu.py``.
For each weight shape (out x in: squares 1024..16384 and LLM MLP projections) and batch size
(tokens 1..4096), in bf16 and fp16, it times y = x @ W^T dense and with W converted by
torch.sparse.to_sparse_semi_structured (CUDA events, median of 20 after warm-up) and prints a
markdown table of the speedups (> 1: the sparse kernel is faster), then the shapes where it helps.
"""

from __future__ import annotations

import statistics
import sys

import torch
import torch.nn.functional as F

SHAPES = [(1024, 1024), (4096, 4096), (8192, 8192), (16384, 16384),  # square
          (11008, 4096), (4096, 11008),  # Llama-2-7B MLP up / down
          (14336, 4096), (4096, 14336),  # Llama-3-8B / Mistral MLP up / down
          (28672, 8192), (8192, 28672)]  # Llama-70B MLP up / down
BATCHES = [1, 16, 64, 256, 1024, 4096]
DTYPES = [torch.bfloat16, torch.float16]
RUNS, WARMUP = 20, 5


def two_four(out_features: int, in_features: int, dtype: torch.dtype) -> torch.Tensor:
    """A random weight with exactly 2 nonzeros in every 4 consecutive inputs."""
    w = torch.randn(out_features, in_features, device="cuda", dtype=dtype)
    groups = w.view(out_features, -1, 4)
    keep = groups.abs().topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return (groups * mask).view(out_features, in_features)


def time_ms(fn) -> float:
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(RUNS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


CALLS = {"F.linear(x, W)": lambda x, w: F.linear(x, w),  # how nn.Linear calls it: y = x W^T
         "W @ x^T": lambda x, w: torch.mm(w, x.t())}  # the sparse operand first, as the kernels compute it


def measure(convert, call, dtype: torch.dtype, out_f: int, in_f: int, label: str, wins: list) -> str:
    """The table cells of one weight: dense time at the largest batch, then the speedup per batch size."""
    w = two_four(out_f, in_f, dtype)
    try:
        sparse_w = convert(w)
    except (RuntimeError, NotImplementedError) as exc:
        return f"conversion failed: {str(exc).splitlines()[0][:60]}"
    cells, dense_last = [], 0.0
    for b in BATCHES:
        x = torch.randn(b, in_f, device="cuda", dtype=dtype)
        try:
            dense = time_ms(lambda: call(x, w))
            speed = dense / time_ms(lambda: call(x, sparse_w))
        except (RuntimeError, NotImplementedError) as exc:
            cells.append(f"n/a ({str(exc).splitlines()[0][:25]})")
            continue
        cells.append(f"{speed:.2f}x")
        dense_last = dense
        if speed > 1.05:
            wins.append(f"{label.replace(' |', '')} b={b}: {speed:.2f}x")
    return f"{dense_last:.3f} | " + " | ".join(cells)


def sweep(backend: str, convert, wins: list) -> None:
    """Print one row per call, dtype and shape; stop at the first row where this kernel cannot run at all."""
    for call_name, call in CALLS.items():
        for dtype in DTYPES:
            for out_f, in_f in SHAPES:
                label = f"{backend} | {call_name} | {str(dtype)[6:]} | {out_f}x{in_f}"
                cells = measure(convert, call, dtype, out_f, in_f, label, wins)
                print(f"| {label} | {cells} |")
                torch.cuda.empty_cache()
                if cells.startswith(("conversion failed", "0.000")):
                    return


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA GPU: this benchmark measures torch's semi-structured sparse kernels on a GPU")
        return 0
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    name = torch.cuda.get_device_name()
    print(f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}; y = x @ W^T, W 2:4 sparse; "
          f"median of {RUNS} runs (CUDA events); speedup = dense time / sparse time\n")
    cols = " | ".join(f"b={b}" for b in BATCHES)
    print(f"| kernel | call | dtype | W (out x in) | dense ms at b={BATCHES[-1]} | {cols} |")
    print("| --- | --- | --- | --- | ---: | " + " | ".join("---:" for _ in BATCHES) + " |")
    wins = []
    for backend in ("cuSPARSELt", "CUTLASS"):
        SparseSemiStructuredTensor._FORCE_CUTLASS = backend == "CUTLASS"  # which kernel torch dispatches to
        sweep(backend, to_sparse_semi_structured, wins)
    print("\nfaster than dense by more than 5%: " + ("; ".join(wins) if wins else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
