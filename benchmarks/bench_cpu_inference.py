"""CPU inference per machine (issue 21): MiniLM encoder and the small GPT's decode/prefill, every slimkit
path forced, the measured choice, and the peers, with fidelity and resident weight memory beside speed.

Run:
    python benchmarks/bench_cpu_inference.py [--threads 2] [--rounds 3] [--skip-minilm] [--skip-gpt]

First line: the machine, then the CPU flags that decide the paths (avx2 avx512f avx512_vnni avx512_bf16
amx_tile amx_int8 amx_bf16). Speed-up = median over --rounds interleaved rounds of the per-round ratio
fp32 time / variant time (each time from slimkit.timing.latency_ms: median of 5 after warm-up), so load
from other processes cancels as far as it can. Resident MB: the weights of the Linear layers as held in
memory (QuantLinear/Int8Linear: codes, scales and kernel layouts; torch.ao: its int8 packing, estimated
as one byte per weight plus the fp32 bias).

1. MiniLM (all-MiniLM-L6-v2), one call = 32 sentences padded to 128 tokens; cosine = mean/min cosine of
   sentence embeddings to fp32 over the 400 fixed sentences. Rows: fp32; bf16 (the whole model cast);
   slimkit W8A8 dynamic with each Int8Linear path forced (int_mm: per-token int8 + torch._int_mm; x86:
   torch's x86 quantized linear, per-tensor uint8) and the measured choice; slimkit int8 weight-only
   (per channel) with its CPU kernel forced and the measured choice; torch.ao quantize_dynamic;
   ONNX Runtime quantize_dynamic (per-channel QInt8 weights) when onnxruntime imports.
2. The small GPT, reference architecture (4 layers, 128 wide, 4 heads) at seeded random init (the zoo's
   trained weights take hours to train on a loaded 2-core machine; speed does not depend on them):
   greedy decode tokens/s at batch 1 (16-token prompt then 32 tokens, KV cache kept by this script,
   attention through SDPA; the prompt's prefill is inside the timed call) and prefill tokens/s of one
   128-token sequence; fp32, int8 (per channel) and int4 (groups of 32) weight-only, each path forced
   and the measured choice; fidelity = cosine of the 128-token logits to fp32's and the share of the
   32 greedy tokens equal to fp32's.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import slimkit
from slimkit.machine import machine_line
from slimkit.models.tasks import get_task
from slimkit.quantization import ActivationQuantConfig, WeightQuantConfig, cpu
from slimkit.quantization.activation.modules import Int8Linear
from slimkit.quantization.modules import QuantLinear
from slimkit.quantization.paths import choose_paths
from slimkit.timing import latency_ms


def interleaved(calls: dict, rounds: int, threads: int) -> dict[str, tuple[float, float]]:
    """{name: (median ms, median over rounds of first-entry ms / this ms)}."""
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            times[name].append(latency_ms(call, runs=5, warmup=1, threads=threads))
    base = times[next(iter(times))]
    return {name: (statistics.median(ts), statistics.median(b / t for b, t in zip(base, ts)))
            for name, ts in times.items()}


def resident_mb(model: nn.Module) -> float:
    total = 0
    for module in model.modules():
        if isinstance(module, (QuantLinear, Int8Linear)):
            total += module.resident_bytes()
        elif isinstance(module, nn.Linear):
            total += sum(p.nbytes for p in module.parameters(recurse=False))
        elif type(module).__name__ == "Linear" and hasattr(module, "_packed_params"):  # torch.ao dynamic
            total += module.in_features * module.out_features + 4 * module.out_features
    return total / 1e6


def forced(model: nn.Module, kind: type, path: str) -> nn.Module:
    variant = copy.deepcopy(model)
    for module in variant.modules():
        if isinstance(module, kind):
            module.set_path(path)
    return variant


def chosen(model: nn.Module, threads: int, **options) -> nn.Module:
    variant = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        choose_paths(variant, threads=threads, rounds=2, **options)
    return variant


def paths_used(model: nn.Module) -> str:
    used = sorted({path for m in model.modules() if isinstance(m, (QuantLinear, Int8Linear)) for _, path in m.paths})
    return "+".join(used)


# ----- MiniLM -----

class OrtEncoder(nn.Module):
    """An onnxruntime session called like the transformers encoder (``.last_hidden_state``)."""

    def __init__(self, session) -> None:
        super().__init__()
        self.session = session

    def forward(self, input_ids, attention_mask, **_):
        from transformers.modeling_outputs import BaseModelOutput

        hidden = self.session.run(None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})[0]
        return BaseModelOutput(last_hidden_state=torch.from_numpy(hidden))


def ort_variant(fp32: nn.Module, batch: dict, threads: int, skipped: list[str]):
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic

        from slimkit.deployment.onnx import write_onnx
    except ImportError as exc:
        skipped.append(f"ONNX Runtime: {exc}")
        return None
    work = Path(tempfile.mkdtemp())
    (work / "fp32").mkdir()
    feeds = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    write_onnx(fp32, work / "fp32", feeds)
    quantize_dynamic(str(work / "fp32" / "model.onnx"), str(work / "int8.onnx"), weight_type=QuantType.QInt8,
                     per_channel=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(work / "int8.onnx"), options, providers=["CPUExecutionProvider"])
    return OrtEncoder(session), f"ONNX Runtime {ort.__version__} quantize_dynamic (per-channel QInt8)"


def minilm_table(threads: int, rounds: int) -> list[str]:
    from slimkit.data.minilm import minilm, sentences

    bundle = minilm()
    fp32 = bundle.model.eval()
    batch = bundle.tokenizer(list(sentences()[:32]), padding="max_length", max_length=128, truncation=True,
                             return_tensors="pt")
    skipped: list[str] = []
    w8a8 = slimkit.quantize(copy.deepcopy(fp32), ActivationQuantConfig())
    weight8 = slimkit.quantize(copy.deepcopy(fp32), WeightQuantConfig("int8", group_size=None))
    models = {"fp32": fp32, "bf16 (model cast)": copy.deepcopy(fp32).to(torch.bfloat16)}
    for path in ("int_mm", "x86"):
        if path in next(m for m in w8a8.modules() if isinstance(m, Int8Linear)).available_paths():
            models[f"slimkit W8A8 dynamic, {path} forced"] = forced(w8a8, Int8Linear, path)
        else:
            skipped.append(f"slimkit W8A8 {path}: not available on this CPU")
    w8a8_choice = chosen(w8a8, threads)
    models[f"slimkit W8A8 dynamic, measured choice ({paths_used(w8a8_choice)})"] = w8a8_choice
    models["slimkit int8 weight-only, int8pack forced"] = forced(weight8, QuantLinear, "int8pack")
    choice = chosen(weight8, threads)
    models[f"slimkit int8 weight-only, measured choice ({paths_used(choice)})"] = choice
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic as ao_quantize_dynamic  # the peer only
        models["torch.ao quantize_dynamic (qint8, fbgemm)"] = ao_quantize_dynamic(copy.deepcopy(fp32), {nn.Linear},
                                                                                  dtype=torch.qint8)
    ort = ort_variant(fp32, batch, threads, skipped)
    if ort:
        models[ort[1]] = ort[0]
    with torch.no_grad():
        timed = interleaved({name: (lambda m=m: m(**batch)) for name, m in models.items()}, rounds, threads)
    task = get_task("minilm")
    rows = ["| MiniLM 32x128 | latency ms | speed-up vs fp32 | resident Linear MB | cosine mean | cosine min |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, model in models.items():
        q = task.quality(model)
        ms, ratio = timed[name]
        memory = "-" if isinstance(model, OrtEncoder) else f"{resident_mb(model):.1f}"
        rows.append(f"| {name} | {ms:.1f} | {ratio:.2f}x | {memory} | {q['cosine_mean']:.4f} | {q['cosine_min']:.4f} |")
    return rows + [f"\nskipped: {s}" for s in skipped]


# ----- GPT decode / prefill -----

@torch.no_grad()
def cached_forward(model, idx: torch.Tensor, start: int, cache: list) -> torch.Tensor:
    """Logits of the last position of ``idx`` (positions start..), keys/values appended to ``cache``."""
    x = model.wte(idx) + model.wpe(torch.arange(start, start + idx.shape[1]))
    for i, block in enumerate(model.blocks):
        attn = block.attn
        B, T, C = x.shape
        q, k, v = attn.qkv(block.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2) for t in (q, k, v))
        if cache[i] is not None:
            k, v = torch.cat([cache[i][0], k], 2), torch.cat([cache[i][1], v], 2)
        cache[i] = (k, v)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=start == 0 and T > 1)
        x = x + attn.proj(y.transpose(1, 2).reshape(B, T, C))
        x = x + block.mlp(block.ln2(x))
    return model.lm_head(model.ln_f(x[:, -1:]))


def greedy_decode(model, prompt: torch.Tensor, steps: int) -> torch.Tensor:
    cache = [None] * len(model.blocks)
    logits = cached_forward(model, prompt, 0, cache)
    tokens = []
    for step in range(steps):
        token = logits.argmax(-1)  # (1, 1)
        tokens.append(token)
        logits = cached_forward(model, token, prompt.shape[1] + step, cache)
    return torch.cat(tokens, 1)


def gpt_table(threads: int, rounds: int, prompt_len: int = 16, steps: int = 32) -> list[str]:
    from slimkit.models import GPT, GPTConfig

    torch.manual_seed(0)
    fp32 = GPT(GPTConfig()).eval()
    prompt = torch.randint(0, 256, (1, prompt_len))
    prefill = torch.randint(0, 256, (1, 128))
    models = {"fp32": fp32}
    for fmt, group, kernel in (("int8", None, "int8pack"), ("int4", 32, "int4pack")):
        quantized = slimkit.quantize(copy.deepcopy(fp32), WeightQuantConfig(fmt, group_size=group))
        label = f"{fmt}" + (f" g{group}" if group else " per channel")
        for path in ("dequant", kernel):
            models[f"slimkit {label} weight-only, {path} forced"] = forced(quantized, QuantLinear, path)
        choice = chosen(quantized, threads)
        models[f"slimkit {label} weight-only, measured choice ({paths_used(choice)})"] = choice
    with torch.no_grad():
        decode = interleaved({n: (lambda m=m: greedy_decode(m, prompt, steps)) for n, m in models.items()},
                             rounds, threads)
        full = interleaved({n: (lambda m=m: m(prefill)) for n, m in models.items()}, rounds, threads)
    with torch.no_grad():
        reference_tokens, reference_logits = greedy_decode(fp32, prompt, steps), fp32(prefill).flatten(0, 1)
    rows = [f"| GPT 4x128, {threads} threads | decode tok/s, batch 1 | vs fp32 | prefill tok/s, 128 | vs fp32 | "
            "resident Linear MB | logits cosine | same greedy tokens |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, model in models.items():
        with torch.no_grad():
            same = (greedy_decode(model, prompt, steps) == reference_tokens).float().mean().item()
            cosine = F.cosine_similarity(model(prefill).flatten(0, 1), reference_logits, dim=-1).mean().item()
        rows.append(f"| {name} | {steps / decode[name][0] * 1e3:.0f} | {decode[name][1]:.2f}x | "
                    f"{128 / full[name][0] * 1e3:.0f} | {full[name][1]:.2f}x | {resident_mb(model):.2f} | "
                    f"{cosine:.4f} | {same:.0%} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--skip-gpt", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"{machine_line(args.threads)}; CPU flags: {' '.join(cpu.flags()) or 'none of ' + ' '.join(cpu.FLAGS)}; "
          f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}\n", flush=True)
    if not args.skip_gpt:
        print("\n".join(gpt_table(args.threads, args.rounds)) + "\n", flush=True)
    if not args.skip_minilm:
        print("\n".join(minilm_table(args.threads, args.rounds)), flush=True)
    print(f"\ncommand: python benchmarks/bench_cpu_inference.py --threads {args.threads} --rounds {args.rounds}")


if __name__ == "__main__":
    main()
