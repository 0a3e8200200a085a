"""SmolLM2-135M-Instruct: activation quantization, pruning, low-rank, LoRA/QLoRA, distillation, DP-SGD, memory.

Run: nice -n 10 python benchmarks/bench_smollm2_techniques.py --rows w8a8-dynamic,smoothquant [--threads 1]
     [--out /work/team/out/smollm2_techniques.md] [--steps 100] [--work /tmp/smollm2_tech]

Every row goes through slimkit's public API on the real model (``zoo.reference("smollm2")``) and is
measured with ``slimkit.evaluation.evaluate(model, SmolLM2Task(windows=16))``: perplexity on 16 x 256-token
windows of held-out prose (the language reference's validation topics), next-token top-1 agreement and
greedy-32 agreement with the float model (8 prompts), artifact bytes (the model saved by ``slimkit.save``).
Calibration: 8 (4, 256)-token batches of the task's calibration text (``task.calibration(8)``); training
rows use the task's training windows (calibration topics, never validation text).

The ``command`` column gives the CLI line that corresponds to the row where one exists; the CLI has no
``--task smollm2`` (its Hugging Face folder task is ``causal-lm`` on the same prose, with its own window
count), so the figures here come from the API with the ``smollm2`` task. Each finished row is appended at
once to --out (markdown) and to --out with .jsonl (the raw record), so a partial run keeps what it measured.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

FLOAT_PPL = 17.874  # the float row (benchmarks/bench_smollm2.py, same task)
CALIB_BATCHES = 8
ROWS = ("w8a8-dynamic", "smoothquant", "magnitude50", "wanda50", "sparsegpt50", "nm24-wanda", "nm24-magnitude",
        "nm24-sparsegpt",
        "structured25", "structured05", "lowrank-mlp", "lora", "qlora", "distill", "dp-lora", "memory")
LINEARS = ("*.q_proj", "*.k_proj", "*.v_proj", "*.o_proj", "*.gate_proj", "*.up_proj", "*.down_proj")


class Bench:
    def __init__(self, args) -> None:
        from slimkit.models import zoo
        from slimkit.models.lm_task import SmolLM2Task

        self.args = args
        self.folder = zoo.hf_folder("smollm2")
        self.task = SmolLM2Task(windows=args.windows)
        self.base = zoo.reference("smollm2")
        self.base.eval()
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.out = Path(args.out)
        self._calib = None

    @property
    def calib(self):
        if self._calib is None:
            self._calib = self.task.calibration(CALIB_BATCHES)
        return self._calib

    def model(self):
        return copy.deepcopy(self.base)

    # ---- output -------------------------------------------------------------------------------
    def emit(self, label: str, command: str, model, seconds: float, notes: str = "", extra: dict | None = None):
        from slimkit.evaluation import evaluate

        t0 = time.perf_counter()
        record = evaluate(model, self.task, name=label, threads=self.args.threads)
        eval_s = time.perf_counter() - t0
        q = record.quality
        ppl = q["perplexity"]
        line = (f"| {label} | `{command}` | {ppl:.3f} | {ppl - FLOAT_PPL:+.3f} | {q['top1_agreement']:.4f} | "
                f"{q['greedy32_agreement']:.3f} | {record.artifact_bytes:,} | {seconds:.1f} | {notes} |")
        print(line, flush=True)
        with open(self.out, "a") as f:
            f.write(line + "\n")
        raw = {"label": label, "command": command, "quality": q, "artifact_bytes": record.artifact_bytes,
               "step_seconds": seconds, "eval_seconds": eval_s, "notes": notes, **(extra or {})}
        with open(self.out.with_suffix(".jsonl"), "a") as f:
            f.write(json.dumps(raw) + "\n")
        return record

    def note(self, text: str) -> None:
        print(text, flush=True)
        with open(self.out, "a") as f:
            f.write(text + "\n")

    # ---- rows ---------------------------------------------------------------------------------
    def w8a8_dynamic(self):
        from slimkit.quantization import ActivationQuantConfig, quantize

        m = self.model()
        t0 = time.perf_counter()
        quantize(m, ActivationQuantConfig(mode="dynamic"))
        self.emit("W8A8 dynamic (per-token)", "slimkit quantize SMOL --activations int8 --mode dynamic",
                  m, time.perf_counter() - t0,
                  "API: quantize(m, ActivationQuantConfig(mode='dynamic'))")

    def smoothquant(self):
        from slimkit.quantization import ActivationQuantConfig, quantize

        m = self.model()
        t0 = time.perf_counter()
        quantize(m, ActivationQuantConfig(mode="dynamic", smoothquant=0.5, calibration_batches=CALIB_BATCHES),
                 calib=self.calib)
        self.emit("W8A8 dynamic + SmoothQuant a=0.5",
                  "slimkit quantize SMOL --activations int8 --smoothquant 0.5 --calib-batches 8", m,
                  time.perf_counter() - t0,
                  "API: quantize(m, ActivationQuantConfig(mode='dynamic', smoothquant=0.5, calibration_batches=8), calib)")

    def _unstructured(self, label, command, config):
        from slimkit.pruning import prune

        m = self.model()
        t0 = time.perf_counter()
        report = prune(m, config, data=self.calib)
        seconds = time.perf_counter() - t0
        sparsity = _linear_sparsity(m)
        self.emit(label, command, m, seconds, f"block Linear sparsity {sparsity:.4f}; lm_head tied, not pruned",
                  {"report": str(report)[:2000]})

    def magnitude50(self):
        from slimkit.pruning import PruneConfig
        self._unstructured("50% unstructured, magnitude", "slimkit prune SMOL --sparsity 0.5 --method magnitude",
                           PruneConfig(sparsity=0.5, method="magnitude", calibration_batches=CALIB_BATCHES))

    def wanda50(self):
        from slimkit.pruning import PruneConfig
        self._unstructured("50% unstructured, Wanda", "slimkit prune SMOL --sparsity 0.5 --method wanda --calib-batches 8",
                           PruneConfig(sparsity=0.5, method="wanda", calibration_batches=CALIB_BATCHES))

    def sparsegpt50(self):
        from slimkit.pruning import PruneConfig
        self._unstructured("50% unstructured, SparseGPT",
                           "slimkit prune SMOL --sparsity 0.5 --method sparsegpt --calib-batches 8",
                           PruneConfig(sparsity=0.5, method="sparsegpt", calibration_batches=CALIB_BATCHES))

    def nm24_wanda(self):
        from slimkit.pruning import PruneConfig
        self._unstructured("2:4, Wanda", "slimkit prune SMOL --nm 2:4 --method wanda --calib-batches 8",
                           PruneConfig(nm=(2, 4), method="wanda", calibration_batches=CALIB_BATCHES))

    def nm24_magnitude(self):
        from slimkit.pruning import PruneConfig
        self._unstructured("2:4, magnitude", "slimkit prune SMOL --nm 2:4 --method magnitude",
                           PruneConfig(nm=(2, 4), method="magnitude"))

    def nm24_sparsegpt(self):
        from slimkit.pruning import PruneConfig
        self._unstructured("2:4, SparseGPT", "slimkit prune SMOL --nm 2:4 --method sparsegpt --calib-batches 8",
                           PruneConfig(nm=(2, 4), method="sparsegpt", calibration_batches=CALIB_BATCHES))

    def structured25(self):
        self._structured(0.25)

    def structured05(self):  # sanity check of the mechanism: a small ratio should stay near the float model
        self._structured(0.05)

    def _structured(self, ratio: float):
        import slimkit
        from slimkit.pruning import PruneConfig, prune

        m = self.model()
        before = sum(p.numel() for p in m.parameters())
        t0 = time.perf_counter()
        prune(m, PruneConfig(structured=True, ratio=ratio, method="l1", calibration_batches=CALIB_BATCHES),
              data=self.calib, example_inputs=self.calib[0][:1])
        seconds = time.perf_counter() - t0
        after = sum(p.numel() for p in m.parameters())
        cfg = m.config
        shape = (f"heads {cfg.num_attention_heads}/{cfg.num_key_value_heads} kv, "
                 f"intermediate {cfg.intermediate_size}; "
                 f"params {before:,} -> {after:,}")
        att = m.model.layers[0].self_attn
        shape += f"; layer0 q_proj {tuple(att.q_proj.weight.shape)} k_proj {tuple(att.k_proj.weight.shape)}"
        # export to a Hugging Face folder and compare transformers' logits with slimkit's
        art, hf = self.work / f"structured{ratio}", self.work / f"structured{ratio}-hf"
        for p in (art, hf):
            shutil.rmtree(p, ignore_errors=True)
        slimkit.save(m, art)
        cmd = ["slimkit", "export", str(art), "--to", "hf", "--out", str(hf), "--check"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        export = f"export rc {proc.returncode}: {(proc.stdout + proc.stderr).strip()[-600:]}"
        diff = "n/a"
        if proc.returncode == 0 or (hf / "config.json").is_file():
            try:
                from transformers import AutoModelForCausalLM

                loaded = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
                loaded.eval()
                ids = self.task.windows[0][None]
                with torch.no_grad():
                    a = loaded(ids).logits
                    b = m(ids).logits
                diff = f"{(a - b).abs().max().item():.3e}"
            except Exception as exc:  # reported, not hidden
                diff = f"load failed: {type(exc).__name__}: {str(exc)[:300]}"
        print(export, flush=True)
        self.emit(f"structured ratio {ratio} (heads by KV group + MLP channels), l1, no fine-tune",
                  f"slimkit prune SMOL --structured --ratio {ratio} --method l1; slimkit export P --to hf --check", m,
                  seconds, f"{shape}; transformers max abs logit diff {diff}",
                  {"export": export, "shape": shape, "hf_diff": diff})

    def lowrank_mlp(self):
        from slimkit.lowrank import LowRankConfig, factorize

        m = self.model()
        t0 = time.perf_counter()
        report = factorize(m, LowRankConfig(energy=self.args.energy, include=("*.mlp.*",)))
        seconds = time.perf_counter() - t0
        params = sum(p.numel() for p in m.parameters())
        self.emit(f"low-rank MLPs, SVD energy {self.args.energy}",
                  f"slimkit factorize SMOL --energy {self.args.energy} --include '*.mlp.*'", m, seconds,
                  f"params after {params:,} (float 134,515,008); "
                  f"{getattr(report, 'params_before', '?')} -> {getattr(report, 'params_after', '?')} in MLPs")

    def _lora(self, label, command, base):
        from slimkit.adapters.lora import LoRAConfig, inject, trainable_parameters
        from slimkit.training import TrainConfig, train

        m = self.model()
        inject(m, LoRAConfig(rank=8, alpha=16, include=LINEARS, base=base))
        trainable = trainable_parameters(m)
        if base != "float":
            self.note(f"<!-- {label}: before training -->")
            self.emit(f"{label}: NF4 base before training", "(LoRA B = 0: the NF4 base alone)", m, 0.0, "")
        steps = self.args.steps
        t0 = time.perf_counter()
        result = train(m, self.task.training_batches(m, self.args.batch),
                       TrainConfig(steps=steps, lr=self.args.lr, warmup=10, threads=self.args.threads))
        seconds = time.perf_counter() - t0
        self.emit(label, command, m, seconds,
                  f"{steps} steps x {self.args.batch} x 256 tokens, lr {self.args.lr}, rank 8 on all block Linears, "
                  f"trainable {trainable}; {seconds / steps:.2f} s/step; final loss "
                  f"{_last_loss(result)}; before training: perplexity "
                  f"{FLOAT_PPL if base == 'float' else 'see the NF4-base row'}")

    def lora(self):
        self._lora("LoRA r=8", f"slimkit train --model SMOL --lora r=8,alpha=16,targets=*_proj --steps {self.args.steps} --batch-size 1 "
                   f"--lr {self.args.lr} --warmup 10", "float")

    def qlora(self):
        self._lora("QLoRA r=8 (NF4 base, double quant)",
                   f"slimkit train --model SMOL --lora r=8,alpha=16,targets=*_proj,base=nf4 --steps {self.args.steps} --batch-size 1 "
                   f"--lr {self.args.lr} --warmup 10", "nf4")

    def distill(self):
        from transformers import LlamaForCausalLM

        from slimkit.distillation import DistillConfig, distill
        from slimkit.training import TrainConfig

        cfg = copy.deepcopy(self.base.config)
        keep = list(range(0, cfg.num_hidden_layers, 2))  # every other layer: 15 of 30
        cfg.num_hidden_layers = len(keep)
        if hasattr(cfg, "layer_types") and cfg.layer_types:
            cfg.layer_types = [cfg.layer_types[i] for i in keep]
        student = LlamaForCausalLM(cfg)
        sd = self.base.state_dict()
        mapped = {}
        for k, v in sd.items():
            if k.startswith("model.layers."):
                i = int(k.split(".")[2])
                if i in keep:
                    mapped[k.replace(f"model.layers.{i}.", f"model.layers.{keep.index(i)}.", 1)] = v.clone()
            else:
                mapped[k] = v.clone()
        missing, unexpected = student.load_state_dict(mapped, strict=False)
        student.eval()
        self.emit("student: 15 of 30 layers (every other), before distillation", "(layer-dropped init)", student,
                  0.0, f"missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}")
        steps = self.args.distill_steps or self.args.steps
        t0 = time.perf_counter()
        teacher = self.base
        for p in teacher.parameters():
            p.requires_grad_(False)
        distill(teacher, student, self.task.training_batches(student, self.args.batch),
                DistillConfig(temperature=2.0, alpha=0.9),
                TrainConfig(steps=steps, lr=self.args.distill_lr, warmup=10, threads=self.args.threads))
        seconds = time.perf_counter() - t0
        for p in teacher.parameters():  # later rows copy self.base: leave it trainable as loaded
            p.requires_grad_(True)
        student.eval()
        self.emit(f"student 15 layers, distilled {steps} steps",
                  "slimkit distill --teacher SMOL --student <15-layer spec> (no HF-Llama student spec in the CLI)",
                  student, seconds,
                  f"{steps} steps x {self.args.batch} x 256 tokens, T=2, alpha=0.9, lr {self.args.distill_lr}; "
                  f"{seconds / steps:.2f} s/step; student params {sum(p.numel() for p in student.parameters()):,}")

    def dp_lora(self):
        from slimkit.adapters.lora import LoRAConfig, inject
        from slimkit.privacy import make_private
        from slimkit.training import TrainConfig

        m = self.model()
        inject(m, LoRAConfig(rank=8, alpha=16, include=LINEARS))
        ids = self.task.calibration_ids
        block, n = 128, self.args.dp_examples
        usable = (len(ids) - 1) // block
        n = min(n, usable)
        starts = torch.arange(n) * block
        x = torch.stack([ids[s:s + block] for s in starts.tolist()])
        y = torch.stack([ids[s + 1:s + block + 1] for s in starts.tolist()])
        steps, batch = self.args.dp_steps, self.args.dp_batch
        private = make_private(m, None, (x, y), target_epsilon=self.args.dp_epsilon, steps=steps, batch_size=batch,
                               max_grad_norm=1.0, delta=1e-5, engine=self.args.dp_engine)
        t0 = time.perf_counter()
        private.train(TrainConfig(steps=steps, lr=self.args.lr, clip_grad_norm=None, threads=self.args.threads))
        seconds = time.perf_counter() - t0
        eps = private.epsilon()
        self.emit(f"DP-SGD on LoRA r=8 only, epsilon {eps:.2f}",
                  f"make_private(m, None, (x, y), target_epsilon={self.args.dp_epsilon}, steps={steps}, "
                  f"batch_size={batch}, engine='{self.args.dp_engine}') (CLI --dp-* is digits only)", m, seconds,
                  f"{n} examples of {block} tokens, {steps} steps of {batch}, delta 1e-5, C=1, noise "
                  f"{private.noise_multiplier:.3f}, engine {private.engine}; {seconds / steps:.2f} s/step",
                  {"epsilon": eps, "noise": private.noise_multiplier})

    def memory(self):
        from slimkit.memory import TrainSetup, from_hf_config, measure, plan

        lines = []
        for label, setup, flags in [
            ("full fine-tune fp32 AdamW", TrainSetup(batch=1, seq=256), "--batch 1 --seq 256"),
            ("LoRA r=8", TrainSetup(batch=1, seq=256, lora_rank=8), "--batch 1 --seq 256 --lora-rank 8"),
        ]:
            cmd = ["slimkit", "memory", str(self.folder), *flags.split(), "--json"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            cli = proc.stdout.strip() if proc.returncode == 0 else f"rc {proc.returncode}: {proc.stderr.strip()[-400:]}"
            shape = from_hf_config(json.loads((Path(self.folder) / "config.json").read_text()))
            predicted = plan(shape, setup)
            m = self.model()
            m.train()
            t0 = time.perf_counter()
            try:
                got = measure(m, setup, steps=3)
                measured = str(got)
            except Exception as exc:
                measured = f"measure failed: {type(exc).__name__}: {str(exc)[:300]}"
            seconds = time.perf_counter() - t0
            lines.append(f"- {label}: `slimkit memory SMOL {flags}` -> {cli[:1500]}\n  - API plan peak: "
                         f"{getattr(predicted, 'peak', predicted)}\n  - measured (3 steps, {seconds:.1f} s): "
                         f"{measured[:1500]}")
            del m
        self.note("\n### memory\n" + "\n".join(lines))


def _linear_sparsity(model) -> float:
    total = zeros = 0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.startswith("model.layers"):
            w = mod.weight.detach()
            total += w.numel()
            zeros += (w == 0).sum().item()
    return zeros / max(total, 1)


def _last_loss(result) -> str:
    for key in ("final_loss", "loss", "last_loss"):
        value = getattr(result, key, None)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return f"{value:.3f}"
    return "?"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows of {', '.join(ROWS)}")
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (at most 2 on the shared machine)")
    parser.add_argument("--out", default="smollm2_techniques.md")
    parser.add_argument("--work", default="/tmp/smollm2_tech")
    parser.add_argument("--steps", type=int, default=100, help="LoRA/QLoRA/distillation steps")
    parser.add_argument("--batch", type=int, default=1, help="256-token windows per training step")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--distill-steps", type=int, default=None, help="distillation steps (default --steps)")
    parser.add_argument("--distill-lr", type=float, default=1e-4)
    parser.add_argument("--energy", type=float, default=0.9)
    parser.add_argument("--dp-epsilon", type=float, default=8.0)
    parser.add_argument("--dp-engine", default="auto", help="per-sample gradients: auto (ghost here), ghost, vmap")
    parser.add_argument("--dp-steps", type=int, default=20)
    parser.add_argument("--dp-batch", type=int, default=4)
    parser.add_argument("--dp-examples", type=int, default=512)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    bench = Bench(args)
    for label in args.rows.split(","):
        t0 = time.perf_counter()
        try:
            getattr(bench, label.replace("-", "_"))()
        except Exception as exc:
            import traceback

            traceback.print_exc()
            bench.note(f"| {label} | FAILED | {type(exc).__name__}: {str(exc)[:400]} | | | | | "
                       f"{time.perf_counter() - t0:.1f} | |")
        print(f"[{label}: {time.perf_counter() - t0:.1f} s total]", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
