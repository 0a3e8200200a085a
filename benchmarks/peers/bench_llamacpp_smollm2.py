"""llama.cpp as a peer on SmolLM2-135M-Instruct, measured on exactly slimkit's ``smollm2`` task (issues 20, 22).

Run with the PEERS venv's python (llama-cpp-python built from source, slimkit installed editable there),
never the project venv:

    nice -n 10 /work/peers/llamacpp/bin/python benchmarks/peers/bench_llamacpp_smollm2.py \
        --llama-src /work/peers/src/llama_cpp_python-0.3.36/vendor/llama.cpp --workdir /work/peers/gguf

What it does:
1. the float Hugging Face folder from slimkit's zoo (``zoo.hf_folder("smollm2")``) is converted to an F16
   GGUF by llama.cpp's own ``convert_hf_to_gguf.py`` (f32 if the converter refuses f16), then quantized by
   llama.cpp (``llama_model_quantize`` with its default params, 2 threads) to Q8_0, Q4_0 and Q4_K_M;
2. for every file, on slimkit's ``SmolLM2Task(windows=16)``: perplexity on exactly ``task.windows``
   (tokens 1..255 of each 256-token window, per-token NLL from a float32 log-softmax, summed in float64:
   the formula of ``CausalLMTask.quality``), next-token top-1 agreement with the float torch model on the
   same positions, greedy-32 agreement on the task's 8 prompts (argmax, no stop at EOS), file bytes and
   bits per weight, and decode tokens/s at batch 1 on 2 threads (128-token prompt from
   ``task.calibration_ids``, then the same single position decoded again and again, as slimkit's
   ``example_call`` does; median of the steps). Timings are of llama.cpp's own engine through the
   ctypes binding (one Python ``Llama.eval`` call per token), not of slimkit's torch path;
3. optional ``--extra NAME=FILE.gguf[,SLIMKIT_DIR]``: a GGUF written elsewhere (e.g. by ``slimkit export``),
   measured the same way; with SLIMKIT_DIR, llama.cpp's greedy tokens are also compared with the greedy
   tokens of slimkit's own model loaded from that artifact.

Prints a markdown table, machine line first.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

QUANTS = (("Q8_0", "LLAMA_FTYPE_MOSTLY_Q8_0"), ("Q4_0", "LLAMA_FTYPE_MOSTLY_Q4_0"),
          ("Q4_K_M", "LLAMA_FTYPE_MOSTLY_Q4_K_M"))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def convert(folder: Path, llama_src: Path, workdir: Path, reuse: bool) -> tuple[Path, str]:
    """llama.cpp's own HF->GGUF converter: F16, or F32 where it refuses F16 (the reason is printed)."""
    for outtype in ("f16", "f32"):
        out = workdir / f"smollm2-{outtype}.gguf"
        if reuse and out.exists():
            return out, outtype.upper()
        cmd = [sys.executable, str(llama_src / "convert_hf_to_gguf.py"), str(folder), "--outtype", outtype,
               "--outfile", str(out)]
        log("convert: " + " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        (workdir / f"convert-{outtype}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode == 0:
            return out, outtype.upper()
        log(f"convert_hf_to_gguf.py --outtype {outtype} failed (exit {proc.returncode}): "
            + (proc.stderr.strip().splitlines() or ["no output"])[-1])
    raise SystemExit("llama.cpp's converter failed for f16 and f32; see the convert-*.log files")


def quantize(source: Path, name: str, ftype_name: str, workdir: Path, reuse: bool) -> tuple[Path, float]:
    import llama_cpp

    out = workdir / f"smollm2-{name.lower()}.gguf"
    if reuse and out.exists():
        return out, float("nan")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype_name)
    params.nthread = 2
    start = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    seconds = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"llama_model_quantize {name} returned {rc}")
    return out, seconds


def gguf_facts(path: Path) -> dict:
    """Parameter count (elements of every tensor in the file), tensor bytes and the tensor types used."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    params = sum(int(t.n_elements) for t in reader.tensors)
    tensor_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    types = Counter(t.tensor_type.name for t in reader.tensors)
    embd = next((t.tensor_type.name for t in reader.tensors if t.name == "token_embd.weight"), "?")
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    return {"params": params, "tensor_bytes": tensor_bytes, "types": dict(types), "token_embd": embd,
            "has_output": has_output, "count": len(reader.tensors)}


def open_llama(path: Path, logits_all: bool, threads: int = 2):
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=512, n_threads=threads, n_threads_batch=threads,
                 logits_all=logits_all, verbose=False)


def measure_quality(llm, task, float_top1: torch.Tensor) -> tuple[float, float]:
    nats, agree = 0.0, 0
    for window, ref in zip(task.windows, float_top1):
        llm.reset()
        llm.eval(window.tolist())
        logits = torch.from_numpy(np.array(llm.scores[: window.shape[0] - 1], dtype=np.float32))  # (255, V)
        nats += F.cross_entropy(logits, window[1:], reduction="none").double().sum().item()
        agree += (logits.argmax(-1) == ref).sum().item()
    count = task.windows.shape[0] * (task.windows.shape[1] - 1)
    return math.exp(nats / count), agree / count


def greedy(llm, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """The first ``new_tokens`` argmax tokens after ``prompt`` (no stop at end-of-text)."""
    llm.reset()
    llm.eval(prompt[0].tolist())
    out = []
    for _ in range(new_tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        llm.eval([token])
    return torch.tensor(out)


def agreement(texts: list[torch.Tensor], refs: list[torch.Tensor]) -> tuple[float, float]:
    """Share of identical continuations and the mean length of the common prefix."""
    same = [a.equal(b) for a, b in zip(texts, refs)]
    prefixes = []
    for a, b in zip(texts, refs):
        diff = (a != b).nonzero()
        prefixes.append(len(a) if len(diff) == 0 else int(diff[0]))
    return sum(same) / len(same), statistics.mean(prefixes)


def decode_speed(path: Path, task, steps: int, warmup: int, threads: int = 2) -> tuple[float, float, float]:
    """Median tokens/s of one decode step at batch 1 after a 128-token prompt (same position each step),
    with the interquartile range (slow quartile, fast quartile)."""
    llm = open_llama(path, logits_all=False, threads=threads)
    context = task.context
    llm.reset()
    llm.eval(task.calibration_ids[:context].tolist())
    step = [int(task.calibration_ids[context])]
    times = []
    for i in range(warmup + steps):
        llm.n_tokens = context  # eval() drops the KV cache from here on: the same position every step
        start = time.perf_counter()
        llm.eval(step)
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed)
    del llm
    times.sort()
    median = statistics.median(times)
    q1, q3 = times[len(times) // 4], times[(3 * len(times)) // 4]
    return 1.0 / median, 1.0 / q3, 1.0 / q1


def float_reference(task) -> tuple[torch.Tensor, list[torch.Tensor], float]:
    """slimkit's float outputs (top-1 and greedy), plus the float32 torch model's perplexity on the windows."""
    from slimkit.models import smollm2, zoo

    start = time.perf_counter()
    float_top1, float_texts = task._float_outputs
    log(f"float outputs in {time.perf_counter() - start:.0f} s")
    model, _ = smollm2.load(zoo.hf_folder("smollm2"))
    nats = 0.0
    with torch.no_grad():
        for window in task.windows:
            logits = model(window[None]).logits[0, :-1]
            nats += F.cross_entropy(logits.float(), window[1:], reduction="none").double().sum().item()
    count = task.windows.shape[0] * (task.windows.shape[1] - 1)
    return float_top1, float_texts, math.exp(nats / count)


def slimkit_reference(directory: str, task, float_top1: torch.Tensor) -> tuple[list[torch.Tensor], float, float]:
    """slimkit's own model from the artifact: its greedy tokens, perplexity and top-1 agreement (torch)."""
    import slimkit
    from slimkit.models.lm_task import _greedy

    model = slimkit.load(directory)
    nats, agree = 0.0, 0
    with torch.no_grad():
        for window, ref in zip(task.windows, float_top1):
            logits = model(window[None]).logits[0, :-1]
            nats += F.cross_entropy(logits.float(), window[1:], reduction="none").double().sum().item()
            agree += (logits.argmax(-1) == ref).sum().item()
    count = task.windows.shape[0] * (task.windows.shape[1] - 1)
    return [_greedy(model, p, task.new_tokens) for p in task.prompts], math.exp(nats / count), agree / count


def timing_table(files: list[tuple[str, Path]], task, steps: int, warmup: int, threads: list[int]) -> list[str]:
    """Decode tokens/s of every file at every thread count, with the 1-minute load average before each."""
    lines = ["| file | llama.cpp threads | decode tok/s, batch 1 (median) | IQR tok/s | ms/token (median) | "
             "load average before |", "|---|---:|---:|---:|---:|---:|"]
    for name, path in files:
        for n in threads:
            load = os.getloadavg()[0]
            tps, lo, hi = decode_speed(path, task, steps, warmup, n)
            log(f"timing {name} {n} thread(s): {tps:.1f} tok/s ({lo:.1f}-{hi:.1f}), load before {load:.2f}")
            lines.append(f"| {name} | {n} | {tps:.1f} | {lo:.1f}-{hi:.1f} | {1000 / tps:.1f} | {load:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-src", type=Path, required=True,
                        help="llama.cpp source tree with convert_hf_to_gguf.py and gguf-py (the sdist's vendor/llama.cpp)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/llamacpp-smollm2"))
    parser.add_argument("--reuse", action="store_true", help="reuse GGUF files already in --workdir")
    parser.add_argument("--steps", type=int, default=64, help="timed decode steps per file (median reported)")
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=FILE.gguf[,SLIMKIT_DIR]")
    parser.add_argument("--skip-peers", action="store_true", help="measure only the --extra files")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--timing-only", action="store_true",
                        help="only the decode timing (files from --workdir, as written by an earlier run)")
    parser.add_argument("--threads", default="2", help="comma-separated llama.cpp thread counts to time, e.g. 2,1")
    args = parser.parse_args()

    torch.set_num_threads(1)  # the float reference; llama.cpp gets its own 2 threads
    import llama_cpp
    from slimkit.machine import machine_line
    from slimkit.models import zoo
    from slimkit.models.lm_task import SmolLM2Task

    args.workdir.mkdir(parents=True, exist_ok=True)
    folder = zoo.hf_folder("smollm2")
    task = SmolLM2Task(windows=16)
    threads = [int(n) for n in args.threads.split(",")]
    extras = []
    for spec in args.extra:
        name, _, rest = spec.partition("=")
        path, _, slim_dir = rest.partition(",")
        extras.append((name, Path(path), slim_dir or None))
    if args.timing_only:
        files = [] if args.skip_peers else [
            (n, args.workdir / f"smollm2-{n.lower()}.gguf") for n in ("F16", *(q for q, _ in QUANTS))]
        files += [(name, path) for name, path, _ in extras]
        lines = timing_table(files, task, args.steps, args.warmup, threads)
        print(machine_line(2))
        print(f"llama-cpp-python {llama_cpp.__version__}; {args.steps} timed steps after {args.warmup} warm-up "
              f"steps per row; load average at end {os.getloadavg()[0]:.2f}")
        print()
        print("\n".join(lines))
        return
    float_top1, float_texts, float_ppl = float_reference(task)
    log(f"float32 torch perplexity {float_ppl:.3f}")

    files: list[tuple[str, Path, str | None, float]] = []
    if not args.skip_peers:
        base, base_type = convert(folder, args.llama_src, args.workdir, args.reuse)
        files.append((base_type, base, None, float("nan")))
        for name, ftype in QUANTS:
            path, seconds = quantize(base, name, ftype, args.workdir, args.reuse)
            log(f"quantized {name} in {seconds:.1f} s")
            files.append((name, path, None, seconds))
    files += [(name, path, slim_dir, float("nan")) for name, path, slim_dir in extras]

    rows = []
    for name, path, slim_dir, qseconds in files:
        facts = gguf_facts(path)
        file_bytes = path.stat().st_size
        llm = open_llama(path, logits_all=True)
        start = time.perf_counter()
        ppl, top1 = measure_quality(llm, task, float_top1)
        texts = [greedy(llm, p, task.new_tokens) for p in task.prompts]
        quality_s = time.perf_counter() - start
        del llm
        g_share, g_prefix = agreement(texts, float_texts)
        row = {"name": name, "file": str(path), "perplexity": ppl, "top1_agreement": top1,
               "greedy32_agreement": g_share, "greedy32_mean_prefix": g_prefix, "file_bytes": file_bytes,
               "bpw_file": file_bytes * 8 / facts["params"], "bpw_tensors": facts["tensor_bytes"] * 8 / facts["params"],
               "params": facts["params"], "types": facts["types"], "token_embd": facts["token_embd"],
               "quantize_seconds": qseconds, "quality_seconds": quality_s}
        if slim_dir:
            ref, row["slimkit_perplexity"], row["slimkit_top1_agreement"] = slimkit_reference(slim_dir, task, float_top1)
            row["greedy32_vs_slimkit"], row["greedy32_prefix_vs_slimkit"] = agreement(texts, ref)
            row["slimkit_greedy32_vs_float"] = agreement(ref, float_texts)[0]
        tps, lo, hi = decode_speed(path, task, args.steps, args.warmup, threads[0])
        row.update(tokens_per_s=tps, tokens_per_s_q3=lo, tokens_per_s_q1=hi)
        log(json.dumps({k: v for k, v in row.items() if k != "types"}))
        rows.append(row)

    print(machine_line(2))
    print(f"llama-cpp-python {llama_cpp.__version__} (llama.cpp built from the sdist), 2 llama.cpp threads; "
          f"float reference: torch {torch.__version__} float32, 1 thread; load average at end "
          f"{os.getloadavg()[0]:.2f}")
    print(f"parameters counted: {rows[0]['params']:,} (elements of all tensors in the GGUF, tied embedding once)"
          if rows else "")
    print()
    print("| file | perplexity | vs float32 | top-1 agreement | greedy-32 agreement (mean prefix) | bytes | "
          f"bits/weight (file / tensors) | decode tok/s, batch 1, {threads[0]} thread(s) (IQR) | tensor types |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    print(f"| float32 torch (slimkit reference) | {float_ppl:.3f} | +0.000 | 1.0000 | 8/8 | - | 32 | - | float32 |")
    for r in rows:
        types = ", ".join(f"{k} {v}" for k, v in sorted(r["types"].items()))
        greedy_cell = f"{round(r['greedy32_agreement'] * 8)}/8 ({r['greedy32_mean_prefix']:.1f})"
        if "greedy32_vs_slimkit" in r:
            greedy_cell += (f"; vs slimkit's own model {round(r['greedy32_vs_slimkit'] * 8)}/8 "
                            f"({r['greedy32_prefix_vs_slimkit']:.1f}); slimkit's own: perplexity "
                            f"{r['slimkit_perplexity']:.3f}, top-1 {r['slimkit_top1_agreement']:.4f}, "
                            f"greedy {round(r['slimkit_greedy32_vs_float'] * 8)}/8")
        print(f"| {r['name']} | {r['perplexity']:.3f} | {r['perplexity'] - float_ppl:+.3f} | "
              f"{r['top1_agreement']:.4f} | {greedy_cell} | {r['file_bytes']:,} | "
              f"{r['bpw_file']:.2f} / {r['bpw_tensors']:.2f} | {r['tokens_per_s']:.1f} "
              f"({r['tokens_per_s_q3']:.1f}-{r['tokens_per_s_q1']:.1f}) | {types}; token_embd {r['token_embd']} |")
    if len(threads) > 1:
        print()
        print("\n".join(timing_table([(r["name"], Path(r["file"])) for r in rows], task, args.steps,
                                       args.warmup, threads)))
    if args.json:
        args.json.write_text(json.dumps({"float32_perplexity": float_ppl, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
