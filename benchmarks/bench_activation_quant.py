"""Activation quantization on CPU: dynamic int8 MiniLM vs fp32 and torch.ao, W8A8 outlier handling,
static int8 and QAT on the digits CNN, all in one run.

Run:
    python benchmarks/bench_activation_quant.py [--threads 2] [--rounds 3] [--qat-steps 150]

Tables:
1. MiniLM (all-MiniLM-L6-v2), one call = 32 sentences padded to 128 tokens, fixed threads. Latency
   is the median over --rounds interleaved rounds of (variant / fp32 in the same round), each from
   slimkit.timing.latency_ms (median of 5 after warm-up), so load from other processes cancels as far
   as it can. Cosine: mean/min cosine of sentence embeddings to fp32 over the 400 fixed sentences.
   Peer: torch.ao.quantization.quantize_dynamic (int8 weights, per-tensor dynamic activations, fbgemm).
2. W8A8 on MiniLM and the reference GPT with static per-tensor activation scales (minmax observer),
   plain vs SmoothQuant (alpha 0.5) vs LLM.int8 decomposition (threshold 6.0); 16 calibration batches.
3. Digits CNN at batch 64: fp32 vs static int8 (fused Conv+BN(+ReLU), oneDNN int8 convs), accuracy and
   latency; PTQ vs QAT (--qat-steps fine-tuning steps from the trained CNN) at W4A8 and W2A8: accuracy
   and test cross-entropy (NLL, finer than accuracy when both are near 100%).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.data import digits
from slimkit.data.minilm import minilm, sentences
from slimkit.machine import machine_line
from slimkit.models.tasks import get_task
from slimkit.models import zoo
from slimkit.quantization import ActivationQuantConfig, QATSchedule, convert, prepare_qat, quantize
from slimkit.timing import latency_ms
from slimkit.training import TrainConfig, train


def interleaved_ratios(calls: dict, rounds: int, threads: int) -> dict[str, tuple[float, float]]:
    """{name: (median ms, median ratio to the first entry)} over interleaved rounds."""
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            times[name].append(latency_ms(call, runs=5, warmup=1, threads=threads))
    base = next(iter(times))
    return {name: (statistics.median(ts), statistics.median(t / b for t, b in zip(ts, times[base])))
            for name, ts in times.items()}


def minilm_table(threads: int, rounds: int) -> list[str]:
    reference = minilm()
    task = get_task("minilm")
    batch = reference.tokenizer(list(sentences()[:32]), padding="max_length", max_length=128, truncation=True,
                                return_tensors="pt")
    models = {"fp32": reference.model}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic as ao_quantize_dynamic  # the peer only
        models["torch.ao quantize_dynamic (qint8)"] = ao_quantize_dynamic(copy.deepcopy(reference.model),
                                                                          {nn.Linear}, dtype=torch.qint8)
    start = time.perf_counter()
    models["slimkit dynamic int8 (per-token)"] = quantize(copy.deepcopy(reference.model), ActivationQuantConfig())
    convert_s = time.perf_counter() - start
    calls = {name: (lambda m=m: m(**batch)) for name, m in models.items()}
    timed = interleaved_ratios(calls, rounds, threads)
    ao_ms = timed["torch.ao quantize_dynamic (qint8)"][0]
    rows = ["| MiniLM 32x128 | latency ms | vs fp32 | vs torch.ao | cosine mean | cosine min |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, model in models.items():
        q = task.quality(model)
        ms, ratio = timed[name]
        rows.append(f"| {name} | {ms:.1f} | {ratio:.2f}x | {ms / ao_ms:.2f}x | {q['cosine_mean']:.4f} | "
                    f"{q['cosine_min']:.4f} |")
    rows.append(f"\n(slimkit conversion {convert_s:.1f} s; first call includes torch.compile of the "
                "quantize/rescale chains, cached on disk afterwards)")
    return rows


def outlier_table() -> list[str]:
    rows = ["| W8A8 static (minmax, per tensor) | MiniLM cosine mean | MiniLM cosine min | GPT bits/byte |",
            "| --- | ---: | ---: | ---: |"]
    minilm_task, gpt_task = get_task("minilm"), get_task("pycorpus")
    gpt = zoo.reference("gpt")
    rows.append(f"| fp32 | 1.0000 | 1.0000 | {gpt_task.quality(gpt)['bits_per_byte']:.4f} |")
    variants = {"plain W8A8": {}, "SmoothQuant alpha 0.5": {"smoothquant": 0.5},
                "SmoothQuant alpha 0.75": {"smoothquant": 0.75},
                "LLM.int8 decomposition (|x| > 6)": {"outlier_threshold": 6.0}}
    for name, extra in variants.items():
        config = ActivationQuantConfig(mode="static", **extra)
        encoder = quantize(copy.deepcopy(minilm().model), config, calib=minilm_task.calibration(16))
        q = minilm_task.quality(encoder)
        lm = quantize(copy.deepcopy(gpt), config, calib=gpt_task.calibration(16))
        rows.append(f"| {name} | {q['cosine_mean']:.4f} | {q['cosine_min']:.4f} | "
                    f"{gpt_task.quality(lm)['bits_per_byte']:.4f} |")
    return rows


def test_nll(model: nn.Module) -> float:
    """Mean cross-entropy on the digits test split: finer than accuracy when both are near 100%."""
    test = digits().test
    with torch.no_grad():
        return F.cross_entropy(model(test.x), test.y).item()


def qat_model(cnn: nn.Module, bits: int, steps: int, threads: int) -> tuple[nn.Module, float]:
    task = get_task("digits")
    config = ActivationQuantConfig(mode="qat", weight_bits=bits, observer="moving_average",
                                   freeze_observers_step=steps // 2)
    model = prepare_qat(copy.deepcopy(cnn), config)
    start = time.perf_counter()
    train(model, task.training_batches(model, 64, seed=0), TrainConfig(steps=steps, lr=1e-3, warmup=10,
                                                                        threads=threads),
          callbacks=[QATSchedule(config)])
    return convert(model), time.perf_counter() - start


def cnn_table(threads: int, rounds: int, qat_steps: int) -> list[str]:
    task = get_task("digits")
    cnn = zoo.reference("cnn").eval()
    x = task.calibration(1)[0][:64]
    static = quantize(copy.deepcopy(cnn), ActivationQuantConfig(mode="static"), calib=task.calibration(16))
    timed = interleaved_ratios({"fp32": lambda: cnn(x), "static": lambda: static(x)}, rounds, threads)
    rows = ["| digits CNN, batch 64 | accuracy | vs fp32 (points) | test NLL | latency ms | speed-up vs fp32 |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    variants = [("fp32", cnn, timed["fp32"]), ("static int8 (W8A8, fused)", static, timed["static"])]
    for bits in (4, 2):
        ptq = quantize(copy.deepcopy(cnn), ActivationQuantConfig(mode="static", weight_bits=bits),
                       calib=task.calibration(16))
        qat, seconds = qat_model(cnn, bits, qat_steps, threads)
        variants += [(f"PTQ W{bits}A8 (static)", ptq, None),
                     (f"QAT W{bits}A8 ({qat_steps} steps, {seconds:.0f} s)", qat, None)]
    fp32_acc = task.quality(cnn)["accuracy"]
    for name, model, ms in variants:
        acc = task.quality(model)["accuracy"]
        latency = f"{ms[0]:.2f} | {1 / ms[1]:.2f}x" if ms else "- | -"
        rows.append(f"| {name} | {acc * 100:.2f}% | {(acc - fp32_acc) * 100:+.2f} | {test_nll(model):.4f} | "
                    f"{latency} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--qat-steps", type=int, default=150)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(machine_line(args.threads) + "\n")
    for table in (minilm_table(args.threads, args.rounds), outlier_table(),
                  cnn_table(args.threads, args.rounds, args.qat_steps)):
        print("\n".join(table) + "\n")
    print(f"command: python benchmarks/bench_activation_quant.py --threads {args.threads} --rounds {args.rounds} "
          f"--qat-steps {args.qat_steps}")


if __name__ == "__main__":
    main()
